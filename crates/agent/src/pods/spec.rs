//! Pod and container specs translated to CRI configs, with kubelet's labels and
//! annotations, so the runtime's objects can be matched back to pods after a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use sha2::{Digest, Sha256};

use super::{Error, Result};
use crate::cri::api;

/// Label: the pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label: the pod's uid; the key that ties runtime objects to pods.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Label: the container's name in the pod spec.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Label: the node whose agent made the sandbox (an agent only adopts or cleans up its own).
pub const NODE_NAME: &str = "kumo.dev/node-name";
/// Annotation: the container's restart count.
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Annotation: a hash of the container's spec; a change (a new image) replaces it.
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
/// Annotation: where the termination message file is on the host.
pub const TERMINATION_MESSAGE_HOST_PATH: &str = "kumo.dev/termination-message-host-path";
/// Annotation: the container's terminationMessagePolicy.
pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";

/// Everything the sandbox config needs besides the pod.
pub struct SandboxInputs<'a> {
    pub node_name: &'a str,
    pub attempt: u32,
    pub log_directory: PathBuf,
    pub dns: api::DnsConfig,
}

/// The CRI sandbox config of a pod.
pub fn sandbox_config(pod: &Pod, inputs: &SandboxInputs<'_>) -> api::PodSandboxConfig {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = meta
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(pod_labels(pod, inputs.node_name));
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = if host_network {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    } else {
        spec.hostname
            .clone()
            .unwrap_or_else(|| meta.name.clone().unwrap_or_default())
    };
    let namespace_mode = |host: Option<bool>| {
        if host.unwrap_or(false) {
            api::NamespaceMode::Node as i32
        } else {
            api::NamespaceMode::Pod as i32
        }
    };
    let pid = if spec.share_process_namespace.unwrap_or(false) {
        api::NamespaceMode::Pod as i32
    } else if spec.host_pid.unwrap_or(false) {
        api::NamespaceMode::Node as i32
    } else {
        api::NamespaceMode::Container as i32
    };
    let pod_security = spec.security_context.clone().unwrap_or_default();
    let privileged = all_containers(&spec).any(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    });
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = p.host_port.filter(|h| *h > 0)?;
            Some(api::PortMapping {
                protocol: protocol(p.protocol.as_deref()) as i32,
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect();
    let sysctls = pod_security
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            attempt: inputs.attempt,
        }),
        hostname,
        log_directory: inputs.log_directory.display().to_string(),
        dns_config: (!host_network
            || spec.dns_policy.as_deref() == Some("ClusterFirstWithHostNet"))
        .then(|| inputs.dns.clone()),
        port_mappings,
        labels,
        annotations: meta
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: namespace_mode(spec.host_network),
                    pid,
                    ipc: namespace_mode(spec.host_ipc),
                    ..Default::default()
                }),
                run_as_user: pod_security
                    .run_as_user
                    .map(|v| api::Int64Value { value: v }),
                run_as_group: pod_security
                    .run_as_group
                    .map(|v| api::Int64Value { value: v }),
                supplemental_groups: pod_security.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    }
}

/// The labels that identify a pod's runtime objects.
pub fn pod_labels(pod: &Pod, node_name: &str) -> HashMap<String, String> {
    let meta = &pod.metadata;
    [
        (POD_NAME, meta.name.clone().unwrap_or_default()),
        (POD_NAMESPACE, meta.namespace.clone().unwrap_or_default()),
        (POD_UID, meta.uid.clone().unwrap_or_default()),
        (NODE_NAME, node_name.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

fn protocol(p: Option<&str>) -> api::Protocol {
    match p {
        Some("UDP") => api::Protocol::Udp,
        Some("SCTP") => api::Protocol::Sctp,
        _ => api::Protocol::Tcp,
    }
}

/// A hash of the container's spec: a running container whose hash differs from its spec's
/// is replaced.
pub fn container_hash(container: &Container) -> String {
    let json = serde_json::to_vec(container).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Everything the container config needs besides the container.
pub struct ContainerInputs<'a> {
    pub pod: &'a Pod,
    pub node_name: &'a str,
    pub attempt: u32,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<api::Mount>,
    pub termination_message_host_path: &'a Path,
    pub node_memory_bytes: i64,
}

/// The CRI container config of one of the pod's containers.
pub fn container_config(
    container: &Container,
    inputs: &ContainerInputs<'_>,
) -> Result<api::ContainerConfig> {
    let pod = inputs.pod;
    let mut labels = pod_labels(pod, inputs.node_name);
    labels.insert(CONTAINER_NAME.into(), container.name.clone());
    let message_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let annotations: HashMap<String, String> = [
        (RESTART_COUNT, inputs.attempt.to_string()),
        (CONTAINER_HASH, container_hash(container)),
        (
            TERMINATION_MESSAGE_HOST_PATH,
            inputs.termination_message_host_path.display().to_string(),
        ),
        (
            TERMINATION_MESSAGE_POLICY,
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let defined: BTreeMap<&str, &str> = inputs
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expand_all = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter()
            .flatten()
            .map(|s| super::env::expand(s, &defined))
            .collect()
    };
    let mut mounts = inputs.mounts.clone();
    mounts.push(api::Mount {
        container_path: message_path,
        host_path: inputs.termination_message_host_path.display().to_string(),
        ..Default::default()
    });
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.name.clone(),
            attempt: inputs.attempt,
        }),
        image: Some(api::ImageSpec {
            image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: inputs
            .env
            .iter()
            .map(|(key, value)| api::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts,
        labels,
        annotations,
        log_path: format!("{}/{}.log", container.name, inputs.attempt),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(linux_resources(pod, container, inputs.node_memory_bytes)?),
            security_context: Some(security_context(pod, container)),
        }),
        ..Default::default()
    })
}

/// Requests and limits as cgroup settings: shares from the CPU request, a CFS quota from
/// the CPU limit, the memory limit, and the OOM score of the pod's QoS class.
pub fn linux_resources(
    pod: &Pod,
    container: &Container,
    node_memory_bytes: i64,
) -> Result<api::LinuxContainerResources> {
    let resources = container.resources.clone().unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    let mut requests = resources.requests.unwrap_or_default();
    // A limit without a request requests the limit (the API server defaults it too).
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let nanos = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| -> Result<Option<i128>> {
        q.map(|q| {
            apimachinery::quantity::parse(&q.0)
                .map(|q| q.nanos())
                .map_err(|e| Error::config(format!("quantity {:?}: {e}", q.0)))
        })
        .transpose()
    };
    let cpu_request_millis = nanos(requests.get("cpu"))?.map(|n| (n + 999_999) / 1_000_000);
    let cpu_limit_millis = nanos(limits.get("cpu"))?.map(|n| (n + 999_999) / 1_000_000);
    let memory_limit = nanos(limits.get("memory"))?.map(|n| (n + 999_999_999) / 1_000_000_000);
    let memory_request = nanos(requests.get("memory"))?.map(|n| (n + 999_999_999) / 1_000_000_000);
    let shares = cpu_request_millis.map_or(2, |m| (m * 1024 / 1000).max(2)) as i64;
    const PERIOD: i64 = 100_000;
    let quota = cpu_limit_millis.map_or(0, |m| ((m as i64) * PERIOD / 1000).max(1000));
    let oom_score_adj = match super::status::qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = memory_request.unwrap_or(0) as i64;
            let adj = 1000 - (1000 * request) / node_memory_bytes.max(1);
            adj.clamp(2, 999)
        }
    };
    Ok(api::LinuxContainerResources {
        cpu_period: if quota > 0 { PERIOD } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory_limit.unwrap_or(0) as i64,
        oom_score_adj,
        ..Default::default()
    })
}

/// The container's effective security context (pod-level settings under container-level).
pub fn security_context(pod: &Pod, container: &Container) -> api::LinuxContainerSecurityContext {
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_sc = spec.security_context.unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(pod_sc.run_as_user);
    let run_as_group = sc.run_as_group.or(pod_sc.run_as_group);
    let capabilities = sc.capabilities.clone().unwrap_or_default();
    let pid = if spec.share_process_namespace.unwrap_or(false) {
        api::NamespaceMode::Pod
    } else if spec.host_pid.unwrap_or(false) {
        api::NamespaceMode::Node
    } else {
        api::NamespaceMode::Container
    };
    let host = |b: Option<bool>| {
        if b.unwrap_or(false) {
            api::NamespaceMode::Node
        } else {
            api::NamespaceMode::Pod
        }
    };
    api::LinuxContainerSecurityContext {
        capabilities: Some(api::Capability {
            add_capabilities: capabilities.add.unwrap_or_default(),
            drop_capabilities: capabilities.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(api::NamespaceOption {
            network: host(spec.host_network) as i32,
            pid: pid as i32,
            ipc: host(spec.host_ipc) as i32,
            ..Default::default()
        }),
        run_as_user: run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: run_as_group.map(|value| api::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: pod_sc.supplemental_groups.unwrap_or_default(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn resources_become_cgroup_settings() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "c", "resources": {
                "requests": {"cpu": "250m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "128Mi"}}}]}
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = linux_resources(&p, c, 1 << 30).unwrap();
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000));
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        // Burstable: 1000 - 1000 * 64Mi / 1Gi.
        assert_eq!(r.oom_score_adj, 938);

        let best_effort = pod(json!({"spec": {"containers": [{"name": "c"}]}}));
        let c = &best_effort.spec.as_ref().unwrap().containers[0];
        let r = linux_resources(&best_effort, c, 1 << 30).unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (2, 0, 0)
        );
        assert_eq!(r.oom_score_adj, 1000);
    }

    #[test]
    fn security_context_merges_pod_and_container() {
        let p = pod(json!({"spec": {
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000},
            "containers": [{"name": "c", "securityContext": {
                "runAsUser": 2000, "readOnlyRootFilesystem": true,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}]}}));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let sc = security_context(&p, c);
        assert_eq!(sc.run_as_user.unwrap().value, 2000);
        assert_eq!(sc.run_as_group.unwrap().value, 3000);
        assert!(sc.readonly_rootfs);
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add_capabilities, ["NET_ADMIN"]);
        assert_eq!(caps.drop_capabilities, ["ALL"]);
    }
}
