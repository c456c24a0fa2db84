//! Hollow nodes: simulated nodes, as kubemark and kwok provide, for tests and benchmarks of
//! the control plane at a scale no test machine could run for real.
//!
//! A hollow node registers a Node, renews its Lease in `kube-node-lease` like a kubelet,
//! posts its status now and then, and runs the pods bound to it on paper: they become
//! Running and Ready at once, with a pod IP from the node's pod CIDR. Pods that are being
//! deleted are finished (deleted with grace period 0), as a kubelet does once containers stop.
//!
//! Pods can ask for a script through annotations, so that controllers' reactions to
//! terminating and unready pods can be tested:
//! - [`EXIT_AFTER_ANNOTATION`]: seconds after which the pod's containers exit (pods whose
//!   restartPolicy is not `Always` only); the pod becomes Succeeded, or Failed when
//! - [`EXIT_CODE_ANNOTATION`] is a non-zero exit code.
//! - [`NOT_READY_ANNOTATION`] = `"true"`: the pod runs but never becomes Ready.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;

/// Seconds after which a hollow pod's containers exit.
pub const EXIT_AFTER_ANNOTATION: &str = "hollow.kumo.dev/exit-after-seconds";
/// Exit code of a hollow pod's containers (default 0).
pub const EXIT_CODE_ANNOTATION: &str = "hollow.kumo.dev/exit-code";
/// `"true"` keeps a hollow pod from becoming Ready.
pub const NOT_READY_ANNOTATION: &str = "hollow.kumo.dev/not-ready";

/// Writes in flight at once per hollow node set: enough to keep up with a fast scheduler
/// without flooding the API server.
const CONCURRENCY: usize = 32;

/// A set of hollow nodes named `<name_prefix><index>`.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many nodes.
    pub count: usize,
    /// Index of the first node (names are `<name_prefix><first_index + i>`).
    pub first_index: usize,
    /// Node name prefix.
    pub name_prefix: String,
    /// CPU capacity (a quantity).
    pub cpu: String,
    /// Memory capacity (a quantity).
    pub memory: String,
    /// Pod capacity.
    pub pods: String,
    /// Extra node labels.
    pub labels: BTreeMap<String, String>,
    /// Taints registered with the node.
    pub taints: Vec<Taint>,
    /// Lease duration, as a kubelet's `nodeLeaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// How often Leases are renewed (a kubelet renews at a quarter of the duration).
    pub renew_interval: Duration,
    /// How often the node status (heartbeat) is posted.
    pub status_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            count: 1,
            first_index: 0,
            name_prefix: "hollow-".into(),
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: "110".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// The nodes' names, in index order.
    pub fn node_names(&self) -> Vec<String> {
        (self.first_index..self.first_index + self.count)
            .map(|i| format!("{}{i}", self.name_prefix))
            .collect()
    }
}

/// The nodes' registry: name → index, for pod IPs.
struct Nodes {
    index: HashMap<String, usize>,
    /// Pod IPs handed out per node: a counter per node.
    next_ip: Mutex<HashMap<String, u32>>,
}

impl Nodes {
    /// A pod IP from the node's /24 (10.A.B.0/24 for node index A*256+B), skipping .0.
    fn pod_ip(&self, node: &str) -> Option<Ipv4Addr> {
        let i = *self.index.get(node)?;
        let mut next = self.next_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = next.entry(node.to_owned()).or_insert(0);
        *n += 1;
        let host = (*n - 1) % 254 + 1;
        Some(Ipv4Addr::new(
            10,
            (i >> 8) as u8 & 0x7f,
            i as u8,
            host as u8,
        ))
    }
}

/// Registers the nodes and runs them until the future is dropped; then they stop renewing
/// and, to the control plane, become unreachable.
pub async fn run(client: Client, config: Config) -> anyhow::Result<()> {
    let names = config.node_names();
    let first_index = config.first_index;
    let registrations = names.iter().cloned().enumerate().map(|(i, name)| {
        let client = client.clone();
        let config = config.clone();
        async move { register(&client, &config, first_index + i, &name).await }
    });
    futures::stream::iter(registrations)
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    tracing::info!(count = names.len(), prefix = %config.name_prefix, "hollow nodes registered");
    let nodes = Arc::new(Nodes {
        index: names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), config.first_index + i))
            .collect(),
        next_ip: Mutex::new(HashMap::new()),
    });
    tokio::select! {
        r = renew_leases(&client, &config, &names) => r,
        r = post_status(&client, &config, &names) => r,
        r = run_pods(&client, nodes) => r,
    }
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn node_status(config: &Config, index: usize) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", config.cpu.as_str()),
        ("memory", config.memory.as_str()),
        ("pods", config.pods.as_str()),
        ("ephemeral-storage", "100Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), quantity(v)))
    .collect();
    let now = Time(jiff::Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "hollow kubelet is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip(index).to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: String::new(),
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: String::new(),
            container_runtime_version: "hollow://1.0".into(),
            kernel_version: "hollow".into(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.33.0-hollow".into(),
            machine_id: String::new(),
            operating_system: "linux".into(),
            os_image: "kumo hollow node".into(),
            system_uuid: String::new(),
            swap: None,
        }),
        ..Default::default()
    }
}

/// The node's own address: 172.16.0.0/12, one per index.
fn node_ip(index: usize) -> Ipv4Addr {
    let i = index as u32 + 1;
    Ipv4Addr::from(0xac10_0000 | (i & 0x000f_ffff))
}

/// Creates the Node (or takes over an existing one of the same name) and its Lease.
async fn register(
    client: &Client,
    config: &Config,
    index: usize,
    name: &str,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert("kumo.dev/hollow".into(), "true".into());
    let mut status = node_status(config, index);
    if let Some(addresses) = status.addresses.as_mut() {
        addresses[1].address = name.to_owned();
    }
    let pod_cidr = format!("10.{}.{}.0/24", (index >> 8) & 0x7f, index & 0xff);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr.clone()),
            pod_cidrs: Some(vec![pod_cidr]),
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..Default::default()
        }),
        status: Some(status.clone()),
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // A node of that name exists (a restarted hollow set): report Ready again.
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
        }
        Err(e) => return Err(e.into()),
    }
    renew_lease(client, config, name).await
}

/// Creates or renews the node's Lease, as a kubelet does.
async fn renew_lease(client: &Client, config: &Config, name: &str) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(jiff::Timestamp::now());
    let patch = json!({"spec": {"renewTime": now}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let node: Node = Api::all(client.clone()).get(name).await?;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: Some(vec![
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.into(),
                            uid: node.metadata.uid.unwrap_or_default(),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.into()),
                    lease_duration_seconds: Some(config.lease_duration_seconds),
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

async fn renew_leases(client: &Client, config: &Config, names: &[String]) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(config.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let renewals = names.iter().cloned().map(|name| {
            let client = client.clone();
            let config = config.clone();
            async move {
                if let Err(e) = renew_lease(&client, &config, &name).await {
                    tracing::warn!(node = %name, error = %e, "renewing hollow node lease");
                }
            }
        });
        futures::stream::iter(renewals)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }
}

/// Posts the Ready heartbeat, as a kubelet's periodic status report.
async fn post_status(client: &Client, config: &Config, names: &[String]) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval(config.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let heartbeats = names.iter().cloned().map(|name| {
            let api = api.clone();
            async move {
                if let Err(e) = heartbeat(&api, &name).await {
                    tracing::warn!(node = %name, error = %e, "posting hollow node status");
                }
            }
        });
        futures::stream::iter(heartbeats)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }
}

/// Refreshes the heartbeat of every condition; a condition the control plane changed (to
/// Unknown while the node was away) is set back to what this node reports.
async fn heartbeat(api: &Api<Node>, name: &str) -> anyhow::Result<()> {
    let node = api.get_status(name).await?;
    let now = Time(jiff::Timestamp::now());
    let mut conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
    for c in &mut conditions {
        let healthy = if c.type_ == "Ready" { "True" } else { "False" };
        if c.status != healthy {
            c.status = healthy.into();
            c.last_transition_time = Some(now.clone());
            c.reason = Some(if c.type_ == "Ready" {
                "KubeletReady".into()
            } else {
                format!("KubeletHasNo{}", c.type_)
            });
            c.message = None;
        }
        c.last_heartbeat_time = Some(now.clone());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({"status": {"conditions": conditions}})),
    )
    .await?;
    Ok(())
}

/// Watches every pod and plays kubelet for those bound to one of these nodes.
async fn run_pods(client: &Client, nodes: Arc<Nodes>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(client.clone());
    // Pods whose exit is already scheduled, so a repeated event does not schedule it twice.
    let exiting: Arc<Mutex<HashSet<String>>> = Arc::default();
    let config = watcher::Config::default().fields("spec.nodeName!=");
    watcher(api.clone(), config)
        .try_filter_map(|event| async move {
            Ok(match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => Some(pod),
                _ => None,
            })
        })
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(CONCURRENCY, |pod| {
            let api = api.clone();
            let nodes = nodes.clone();
            let exiting = exiting.clone();
            async move {
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                if node.as_ref().is_none_or(|n| !nodes.index.contains_key(n)) {
                    return Ok(());
                }
                if let Err(e) = run_pod(&api, &nodes, &exiting, pod).await {
                    tracing::debug!(error = %e, "hollow pod update");
                }
                Ok(())
            }
        })
        .await
}

/// One step of a pod's hollow life.
async fn run_pod(
    api: &Api<Pod>,
    nodes: &Nodes,
    exiting: &Mutex<HashSet<String>>,
    pod: Pod,
) -> anyhow::Result<()> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api = Api::<Pod>::namespaced(api.clone().into_client(), &namespace);
    if pod.metadata.deletion_timestamp.is_some() {
        // Containers stopped at once: finish the graceful deletion.
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        exiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        return Ok(());
    }
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Succeeded" || phase == "Failed" {
        return Ok(());
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    if phase != "Running" {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let ip = nodes
            .pod_ip(&node)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let host_ip = nodes
            .index
            .get(&node)
            .map(|i| node_ip(*i).to_string())
            .unwrap_or_default();
        let ready = annotations.get(NOT_READY_ANNOTATION).map(String::as_str) != Some("true");
        let status = running_status(&pod, &ip, &host_ip, ready);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
    if restart_policy != "Always"
        && let Some(after) = annotations
            .get(EXIT_AFTER_ANNOTATION)
            .and_then(|s| s.parse::<u64>().ok())
        && exiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone())
    {
        let code: i32 = annotations
            .get(EXIT_CODE_ANNOTATION)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now);
        let elapsed = (jiff::Timestamp::now().as_second() - started.as_second()).max(0) as u64;
        let wait = Duration::from_secs(after.saturating_sub(elapsed));
        let pod = pod.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let status = exited_status(&pod, code);
            if let Err(e) = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
            {
                tracing::debug!(pod = %name, error = %e, "hollow pod exit");
            }
        });
    }
    Ok(())
}

fn container_names(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn running_status(pod: &Pod, ip: &str, host_ip: &str, ready: bool) -> serde_json::Value {
    let now = Time(jiff::Timestamp::now());
    let ready_status = if ready { "True" } else { "False" };
    let containers: Vec<serde_json::Value> = container_names(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name,
                "image": image,
                "imageID": format!("hollow://{image}"),
                "containerID": format!("hollow://{}-{name}", pod.metadata.uid.as_deref().unwrap_or("")),
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    json!({
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": now,
        "qosClass": qos_class(pod),
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": ready_status, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": ready_status, "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    })
}

fn exited_status(pod: &Pod, code: i32) -> serde_json::Value {
    let now = Time(jiff::Timestamp::now());
    let reason = if code == 0 { "Completed" } else { "Error" };
    let containers: Vec<serde_json::Value> = container_names(pod)
        .into_iter()
        .map(|(name, image)| {
            json!({
                "name": name,
                "image": image,
                "imageID": format!("hollow://{image}"),
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": now}},
            })
        })
        .collect();
    json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    })
}

/// The pod's QoS class, as the API server would compute it.
fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let r = c.resources.clone().unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        if !requests.is_empty() || !limits.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (requests.get(res), limits.get(res)) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let config = Config {
            count: 3,
            first_index: 5,
            ..Default::default()
        };
        assert_eq!(config.node_names(), ["hollow-5", "hollow-6", "hollow-7"]);
        assert_eq!(node_ip(0), Ipv4Addr::new(172, 16, 0, 1));
        let nodes = Nodes {
            index: [("n".to_owned(), 258)].into_iter().collect(),
            next_ip: Mutex::new(HashMap::new()),
        };
        assert_eq!(nodes.pod_ip("n"), Some(Ipv4Addr::new(10, 1, 2, 1)));
        assert_eq!(nodes.pod_ip("n"), Some(Ipv4Addr::new(10, 1, 2, 2)));
        assert_eq!(nodes.pod_ip("other"), None);
    }
}
