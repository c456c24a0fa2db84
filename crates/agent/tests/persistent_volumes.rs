//! PersistentVolumeClaims on a real containerd with the binder and local-path
//! provisioner running: a pod waits while its claim is unbound, writes through a subPath
//! once it is bound, a second pod reads the data (read-only) after the first is gone,
//! and deleting the claim removes the directory from the node.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use apiserver::authn::Identity;
use common::{Env, NODE, container_status};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// Polls `check` every 200 ms until it returns `Some`, failing with `what` after `timeout`.
async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Aborts the spawned tasks when the test ends, however it ends.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn wait_gone(pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    wait_for(
        Duration::from_secs(60),
        &format!("pod {name} gone"),
        || async { pods.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_keeps_its_data_across_pods_and_goes_with_its_directory() -> anyhow::Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    // A short sync interval, so the pod waiting for its claim retries soon.
    let mut config = env.agent_config();
    config.sync_interval = Duration::from_secs(1);
    let storage = config.data_dir.join("storage");
    let ctx = controllers::Context {
        client: env.api.client_as(Identity::controller_manager()),
        cluster: "default".into(),
        root_ca_pem: "".into(),
        pod_network: Default::default(),
    };
    let mut tasks = Tasks(Vec::new());
    tasks.0.push(tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let _ = controllers::persistent_volume::run(ctx).await;
        }
    }));
    // The protection loops release the claim, then the volume, for their deletion.
    tasks.0.push(tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let _ = controllers::volume_protection::run_claims(ctx).await;
        }
    }));
    tasks.0.push(tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let _ = controllers::volume_protection::run_volumes(ctx).await;
        }
    }));
    tasks.0.push(tokio::spawn(async move {
        let _ = controllers::local_path::run(ctx).await;
    }));
    tasks.0.push(tokio::spawn({
        let (client, cri) = (env.api.client(), env.cri.clone());
        async move {
            if let Err(e) = agent::run(client, cri, config).await {
                eprintln!("agent stopped: {e}");
            }
        }
    }));

    let client = env.api.client();
    let nodes = Api::<Node>::all(client.clone());
    let published = wait_for(
        Duration::from_secs(30),
        "the node's storage directory",
        || async {
            let node = nodes.get_opt(NODE).await.ok()??;
            node.annotations().get("kumo.dev/storage-dir").cloned()
        },
    )
    .await?;
    assert_eq!(Path::new(&published), storage);

    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))?;
    let claim = claims.create(&PostParams::default(), &claim).await?;
    let uid = claim.uid().unwrap();
    let dir = storage.join(format!("pvc-{uid}_default_data"));

    // The pod is on the node before its claim is bound: it waits in ContainerCreating.
    env.create_pod(json!({
        "metadata": {"name": "writer"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "writer",
                "image": agent::images::BUSYBOX_IMAGE,
                "command": ["sh", "-c", "echo kept > /data/file && exec sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "sub"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }))
    .await?;
    env.wait_pod(
        "writer",
        Duration::from_secs(30),
        "ContainerCreating on the unbound claim",
        |p| {
            container_status(p, "writer")
                .and_then(|s| s.state?.waiting)
                .is_some_and(|w| {
                    w.reason.as_deref() == Some("ContainerCreating")
                        && w.message.unwrap_or_default().contains("PVC is not bound")
                })
        },
    )
    .await?;
    let events = Api::<Event>::namespaced(client.clone(), "default");
    wait_for(Duration::from_secs(20), "a FailedMount event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedMount")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("writer")
        })
    })
    .await?;
    assert!(!dir.exists());

    // The scheduler's PreBind, by hand: the node of the first consumer.
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": NODE}}}),
            ),
        )
        .await?;
    let writer = env.wait_ready("writer").await?;
    assert_eq!(
        env.exec(&writer, "writer", &["cat", "/data/file"]).await?,
        "kept\n"
    );
    assert_eq!(std::fs::read_to_string(dir.join("sub/file"))?, "kept\n");
    let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o777, "local-path directories are world-writable");

    let pods = env.pods();
    pods.delete("writer", &DeleteParams::default()).await?;
    wait_gone(&pods, "writer").await?;
    assert_eq!(std::fs::read_to_string(dir.join("sub/file"))?, "kept\n");

    // A second pod, read-only through the claim, sees the data.
    env.create_pod(json!({
        "metadata": {"name": "reader"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "reader",
                "image": agent::images::BUSYBOX_IMAGE,
                "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}}],
        },
    }))
    .await?;
    let reader = env.wait_ready("reader").await?;
    assert_eq!(
        env.exec(&reader, "reader", &["cat", "/data/sub/file"])
            .await?,
        "kept\n"
    );
    let (code, _, _) = env
        .exec_status(&reader, "reader", &["touch", "/data/new"])
        .await?;
    assert_ne!(code, 0, "a readOnly claim is mounted read-only");
    pods.delete("reader", &DeleteParams::default()).await?;
    wait_gone(&pods, "reader").await?;

    // The claim goes: a helper pod on the node removes the directory, then the volume goes.
    claims.delete("data", &DeleteParams::default()).await?;
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let pv_name = format!("pvc-{uid}");
    wait_for(Duration::from_secs(60), "the volume deleted", || async {
        volumes
            .get_opt(&pv_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(storage.exists(), "only the volume's directory goes");
    let helpers = Api::<Pod>::namespaced(client.clone(), "kube-system");
    wait_gone(&helpers, &format!("helper-pod-delete-{pv_name}")).await?;
    drop(tasks);
    Ok(())
}
