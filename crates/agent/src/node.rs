//! The Node object of this host: registration with capacity and system info read from
//! the host and the runtime, the Lease in `kube-node-lease` renewed like a kubelet's, and
//! the conditions posted when they change (and as a heartbeat now and then).
//!
//! `hollow` does the same for simulated nodes with made-up numbers; the two are kept apart
//! so that neither crate depends on the other (hollow must not build the CRI stack).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cri::Cri;
use crate::{Config, Shared};

/// What the agent knows about its host.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The node's InternalIP.
    pub host_ip: String,
    /// CPUs, in millicores.
    pub cpu_millis: i64,
    /// Memory, in bytes.
    pub memory_bytes: i64,
    /// Disk under the data directory, in bytes.
    pub storage_bytes: i64,
    /// The runtime's name (`containerd`).
    pub runtime_name: String,
    /// The runtime's version (`1.6.20`).
    pub runtime_version: String,
}

/// Reads the host's resources and the runtime's version.
pub async fn facts(cri: &Cri, config: &Config) -> anyhow::Result<Facts> {
    let version = cri.version().await?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i64>().ok())
        })
        .unwrap_or(0);
    let storage_bytes = rustix::fs::statvfs(&config.data_dir)
        .map(|s| (s.f_blocks as i64).saturating_mul(s.f_frsize as i64))
        .unwrap_or(0);
    Ok(Facts {
        host_ip: config.node_ip.clone().unwrap_or_else(default_host_ip),
        cpu_millis: cpus * 1000,
        memory_bytes: memory_kib * 1024,
        storage_bytes,
        runtime_name: version.runtime_name,
        runtime_version: version.runtime_version,
    })
}

/// The IPv4 address of the interface with the default route (127.0.0.1 without one).
pub fn default_host_ip() -> String {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let interface = routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000")).then(|| fields[0].to_owned())
    });
    let Some(interface) = interface else {
        return "127.0.0.1".into();
    };
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &interface])
        .output();
    output
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|cidr| cidr.split('/').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "127.0.0.1".into())
}

fn resources(facts: &Facts, config: &Config) -> BTreeMap<String, Quantity> {
    [
        ("cpu", format!("{}m", facts.cpu_millis)),
        ("memory", format!("{}Ki", facts.memory_bytes / 1024)),
        (
            "ephemeral-storage",
            format!("{}Ki", facts.storage_bytes / 1024),
        ),
        ("pods", config.max_pods.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v)))
    .collect()
}

fn system_info(facts: &Facts) -> NodeSystemInfo {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into());
    NodeSystemInfo {
        architecture: match std::env::consts::ARCH {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            other => other.into(),
        },
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: format!("{}://{}", facts.runtime_name, facts.runtime_version),
        kernel_version: read("/proc/sys/kernel/osrelease"),
        kube_proxy_version: String::new(),
        kubelet_version: format!("v1.33.0-kumo.{}", env!("CARGO_PKG_VERSION")),
        machine_id: read("/etc/machine-id"),
        operating_system: "linux".into(),
        os_image,
        system_uuid: read("/sys/class/dmi/id/product_uuid"),
        swap: None,
    }
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str) -> NodeCondition {
    let now = Time(jiff::Timestamp::now());
    NodeCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// The node's conditions: pressure conditions, and Ready from the runtime's own
/// RuntimeReady and NetworkReady.
async fn conditions(cri: &Cri) -> Vec<NodeCondition> {
    let (ready, message) = match cri.status().await {
        Ok(status) => {
            let failing: Vec<String> = status
                .conditions
                .iter()
                .filter(|c| (c.r#type == "RuntimeReady" || c.r#type == "NetworkReady") && !c.status)
                .map(|c| format!("{} is false: {}: {}", c.r#type, c.reason, c.message))
                .collect();
            if failing.is_empty() {
                (true, "kubelet is posting ready status".to_owned())
            } else {
                (
                    false,
                    format!("container runtime not ready: {}", failing.join("; ")),
                )
            }
        }
        Err(e) => (false, format!("container runtime is down: {e}")),
    };
    vec![
        condition(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        condition(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        condition(
            "Ready",
            ready,
            if ready {
                "KubeletReady"
            } else {
                "KubeletNotReady"
            },
            &message,
        ),
    ]
}

/// The node's pod CIDRs from its Node object (`spec.podCIDRs`, or `spec.podCIDR`), waiting
/// up to `config.pod_cidr_wait` for the node IPAM controller to assign them, as kubelet
/// takes its pod CIDR from the Node. A `--pod-cidr` that differs loses to the Node's, as
/// in kubelet, with a warning.
pub async fn wait_pod_cidrs(shared: &Shared) -> anyhow::Result<Vec<String>> {
    let config = &shared.config;
    let api: Api<Node> = Api::all(shared.client.clone());
    let started = tokio::time::Instant::now();
    let mut last_said: Option<tokio::time::Instant> = None;
    loop {
        let cidrs = api
            .get_opt(&config.node_name)
            .await?
            .map(|n| pod_cidrs(&n))
            .unwrap_or_default();
        if !cidrs.is_empty() {
            if let Some(flag) = &config.pod_cidr
                && cidrs.first() != Some(flag)
            {
                tracing::warn!(
                    node = %config.node_name,
                    flag = %flag,
                    node_pod_cidrs = %cidrs.join(","),
                    "the Node's podCIDR differs from --pod-cidr; using the Node's, as kubelet does"
                );
            }
            return Ok(cidrs);
        }
        anyhow::ensure!(
            started.elapsed() < config.pod_cidr_wait,
            "Node {} got no spec.podCIDR within {:?}: is the node IPAM controller running?",
            config.node_name,
            config.pod_cidr_wait
        );
        if last_said.is_none_or(|at| at.elapsed() >= config.lease_renew_interval) {
            tracing::info!(node = %config.node_name, "waiting for the node IPAM controller to assign the Node's spec.podCIDR");
            last_said = Some(tokio::time::Instant::now());
            // The node is alive meanwhile: its Lease says so.
            if let Err(e) = renew_lease(shared).await {
                tracing::warn!(error = %e, "renewing node lease");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The pod CIDRs a Node holds: `spec.podCIDRs`, else `spec.podCIDR`.
fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.clone().unwrap_or_default();
    match spec.pod_cidrs {
        Some(cidrs) if !cidrs.is_empty() => cidrs,
        _ => spec.pod_cidr.into_iter().collect(),
    }
}

/// Creates the Node (with `config.pod_cidr` as its podCIDR when given; the node IPAM
/// controller leaves such a Node's CIDR alone), or updates the status of an existing one.
pub async fn register(shared: &Shared) -> anyhow::Result<()> {
    let config = &shared.config;
    let api: Api<Node> = Api::all(shared.client.clone());
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), config.node_name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert(
        "kubernetes.io/arch".into(),
        system_info(&shared.facts).architecture,
    );
    let status = node_status(shared).await;
    // Where the local-path provisioner puts this node's volumes.
    let storage_annotation = (
        crate::pods::volumes::STORAGE_DIR_ANNOTATION.to_owned(),
        crate::pods::volumes::storage_dir(&config.data_dir)
            .display()
            .to_string(),
    );
    let node = Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            annotations: Some([storage_annotation.clone()].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: config.pod_cidr.clone(),
            pod_cidrs: config.pod_cidr.clone().map(|c| vec![c]),
            ..Default::default()
        }),
        status: Some(status.clone()),
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %config.node_name, "registered node"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let (key, dir) = &storage_annotation;
            api.patch(
                &config.node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: dir}}})),
            )
            .await?;
            api.patch_status(
                &config.node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
            tracing::info!(node = %config.node_name, "node already registered; status updated");
        }
        Err(e) => return Err(e.into()),
    }
    renew_lease(shared).await
}

async fn node_status(shared: &Shared) -> NodeStatus {
    let resources = resources(&shared.facts, &shared.config);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| shared.config.node_name.clone());
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(conditions(&shared.cri).await),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: shared.facts.host_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: hostname,
            },
        ]),
        node_info: Some(system_info(&shared.facts)),
        ..Default::default()
    }
}

/// Creates or renews the node's Lease.
async fn renew_lease(shared: &Shared) -> anyhow::Result<()> {
    let name = shared.config.node_name.as_str();
    let api: Api<Lease> = Api::namespaced(shared.client.clone(), "kube-node-lease");
    let now = MicroTime(jiff::Timestamp::now());
    let patch = json!({"spec": {"renewTime": now, "holderIdentity": name}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let node: Node = Api::all(shared.client.clone()).get(name).await?;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.into(),
                        uid: node.metadata.uid.unwrap_or_default(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.into()),
                    lease_duration_seconds: Some(shared.config.lease_duration_seconds),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Renews the Lease and posts conditions until the future is dropped: conditions when they
/// change, and every `status_report_interval` regardless.
pub async fn run(shared: &Shared) -> anyhow::Result<()> {
    let config = &shared.config;
    let mut lease_tick = tokio::time::interval(config.lease_renew_interval);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status_tick = tokio::time::interval(Duration::from_secs(10));
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_posted: Option<(Vec<(String, String)>, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(e) = renew_lease(shared).await {
                    tracing::warn!(error = %e, "renewing node lease");
                }
            }
            _ = status_tick.tick() => {
                let conditions = conditions(&shared.cri).await;
                let summary: Vec<(String, String)> =
                    conditions.iter().map(|c| (c.type_.clone(), c.status.clone())).collect();
                let stale = last_posted.as_ref().is_none_or(|(s, at)| {
                    *s != summary || at.elapsed() >= config.status_report_interval
                });
                if stale {
                    match post_conditions(shared, conditions).await {
                        Ok(()) => last_posted = Some((summary, tokio::time::Instant::now())),
                        Err(e) => tracing::warn!(error = %e, "posting node status"),
                    }
                }
            }
        }
    }
}

/// Posts conditions, keeping each one's transition time while its status is unchanged.
async fn post_conditions(
    shared: &Shared,
    mut conditions: Vec<NodeCondition>,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let node = api.get(&shared.config.node_name).await?;
    let old = node.status.and_then(|s| s.conditions).unwrap_or_default();
    for c in &mut conditions {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
    api.patch_status(
        &shared.config.node_name,
        &PatchParams::default(),
        &Patch::Strategic(json!({"status": {"conditions": conditions}})),
    )
    .await?;
    Ok(())
}
