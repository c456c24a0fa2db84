//! What a container sees: command and args, env (values, ConfigMap and Secret keys, the
//! downward API, resources, envFrom, $(VAR) expansion), working directory, volumes
//! (emptyDir on disk and in memory, configMap, secret, downwardAPI, projected, hostPath,
//! subPath), init containers run first, and the security context.

mod common;

use common::Env;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_sees_its_env_volumes_and_security_context() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    let client = env.api.client();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"color": "blue", "size": "large", "conf.ini": "[main]\nx=1\n"},
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        // base64 of "hunter2" and "admin".
        "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="},
    }))?;
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await?;
    let host_dir = env.dir.path().join("host-data");
    std::fs::create_dir_all(&host_dir)?;
    std::fs::write(host_dir.join("greeting"), "hello from the host\n")?;
    env.start_agent();

    env.create_pod(json!({
        "metadata": {"name": "cfg", "labels": {"app": "cfg"}, "annotations": {"note": "n1"}},
        "spec": {
            "initContainers": [{
                "name": "init",
                "image": agent::images::BUSYBOX_IMAGE,
                "command": ["sh", "-c", "echo initialized > /work/init.txt"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/work"}],
            }],
            "containers": [{
                "name": "main",
                "image": agent::images::BUSYBOX_IMAGE,
                "command": ["sh", "-c"],
                "args": ["echo $(LATE) > /work/args.txt; exec sleep 3600"],
                "workingDir": "/work",
                "env": [
                    {"name": "GREETING", "value": "hi-$(COLOR)"},
                    {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                    {"name": "LATE", "value": "color=$(COLOR)"},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                ],
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "readOnlyRootFilesystem": true},
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/work"},
                    {"name": "memory", "mountPath": "/mem"},
                    {"name": "config", "mountPath": "/etc/config", "readOnly": true},
                    {"name": "secret", "mountPath": "/etc/secret"},
                    {"name": "podinfo", "mountPath": "/etc/podinfo"},
                    {"name": "projected", "mountPath": "/etc/projected"},
                    {"name": "host", "mountPath": "/host", "readOnly": true},
                    {"name": "config", "mountPath": "/etc/single.ini", "subPath": "conf.ini"},
                    {"name": "scratch", "mountPath": "/sub", "subPath": "nested/dir"},
                ],
            }],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "memory", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                {"name": "config", "configMap": {"name": "settings", "items": [
                    {"key": "color", "path": "colors/favorite"}, {"key": "conf.ini", "path": "conf.ini"}]}},
                {"name": "secret", "secret": {"secretName": "creds", "defaultMode": 0o444}},
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "cpu_limit", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu", "divisor": "1m"}}]}},
                {"name": "projected", "projected": {"sources": [
                    {"configMap": {"name": "settings", "items": [{"key": "size", "path": "size"}]}},
                    {"secret": {"name": "creds", "items": [{"key": "user", "path": "user"}]}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}},
                {"name": "host", "hostPath": {"path": host_dir.display().to_string(), "type": "Directory"}},
            ],
        },
    }))
    .await?;
    let pod = env.wait_ready("cfg").await?;
    let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let init = pod
        .status
        .as_ref()
        .unwrap()
        .init_container_statuses
        .clone()
        .unwrap();
    assert_eq!(
        init[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );

    let environment = env.exec(&pod, "main", &["env"]).await?;
    let has = |line: &str| {
        assert!(
            environment.lines().any(|l| l == line),
            "{line:?} missing from:\n{environment}"
        )
    };
    // GREETING was defined before COLOR, so its reference stays unexpanded.
    has("GREETING=hi-$(COLOR)");
    has("COLOR=blue");
    has("LATE=color=blue");
    has("PASSWORD=hunter2");
    has("POD_NAME=cfg");
    has(&format!("POD_IP={pod_ip}"));
    has(&format!("NODE={}", common::NODE));
    has("APP=cfg");
    has("MEM_MI=64");
    has("CFG_size=large");
    assert!(!environment.contains("MISSING="));

    macro_rules! sh {
        ($script:expr) => {
            env.exec(&pod, "main", &["sh", "-c", $script])
        };
    }
    assert_eq!(sh!("pwd").await?.trim(), "/work");
    assert_eq!(sh!("cat /work/init.txt").await?.trim(), "initialized");
    assert_eq!(sh!("cat /work/args.txt").await?.trim(), "color=blue");
    assert_eq!(
        sh!("id -u; id -g")
            .await?
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000", "2000"]
    );
    // Read-only root; the volumes stay writable.
    let (code, _, _) = env
        .exec_status(&pod, "main", &["touch", "/rootfile"])
        .await?;
    assert_ne!(code, 0, "the root filesystem should be read-only");
    sh!("echo x > /mem/file && echo y > /work/file").await?;
    let mounts = sh!("cat /proc/mounts").await?;
    assert!(
        mounts.lines().any(|l| l.contains(" /mem tmpfs ")),
        "/mem is not tmpfs:\n{mounts}"
    );
    assert_eq!(sh!("cat /etc/config/colors/favorite").await?, "blue");
    let (code, _, _) = env
        .exec_status(&pod, "main", &["sh", "-c", "echo x > /etc/config/new"])
        .await?;
    assert_ne!(code, 0, "a readOnly mount should refuse writes");
    assert_eq!(sh!("cat /etc/secret/password").await?, "hunter2");
    assert_eq!(
        sh!("stat -L -c %a /etc/secret/password").await?.trim(),
        "444"
    );
    assert_eq!(sh!("cat /etc/podinfo/name").await?, "cfg");
    assert_eq!(sh!("cat /etc/podinfo/labels").await?, "app=\"cfg\"");
    assert_eq!(sh!("cat /etc/podinfo/cpu_limit").await?, "500");
    assert_eq!(sh!("cat /etc/projected/size").await?, "large");
    assert_eq!(sh!("cat /etc/projected/user").await?, "admin");
    assert_eq!(sh!("cat /etc/projected/ns").await?, "default");
    assert_eq!(sh!("cat /host/greeting").await?, "hello from the host\n");
    assert_eq!(sh!("cat /etc/single.ini").await?, "[main]\nx=1\n");
    sh!("echo deep > /sub/file").await?;
    assert_eq!(sh!("cat /work/nested/dir/file").await?.trim(), "deep");
    // Limits reach the cgroup (v1 or v2 layout).
    let memory_limit = sh!(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
    )
    .await?;
    assert_eq!(memory_limit.trim(), (64 << 20).to_string());
    // /etc/hosts names the pod.
    let hosts = sh!("cat /etc/hosts").await?;
    assert!(hosts.contains(&format!("{pod_ip}\tcfg")), "{hosts}");
    assert_eq!(
        pod.status.as_ref().unwrap().qos_class.as_deref(),
        Some("Burstable")
    );
    Ok(())
}
