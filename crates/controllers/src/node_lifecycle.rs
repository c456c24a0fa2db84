//! Node lifecycle and taint-based eviction, as upstream's `pkg/controller/nodelifecycle`
//! and `pkg/controller/tainteviction`.
//!
//! The monitor judges every node's health by its own observation clock: each time it sees
//! the node's Lease (in `kube-node-lease`) renewed or the Ready condition's
//! `lastHeartbeatTime` change, it records "now". A node not heard from for the grace period
//! gets its Ready, MemoryPressure, DiskPressure and PIDPressure conditions set to Unknown
//! (`NodeStatusUnknown`), and the pods on it are marked not Ready. Taints follow the
//! conditions: `node.kubernetes.io/unreachable` and `node.kubernetes.io/not-ready` as
//! NoSchedule and NoExecute, plus the pressure, network and unschedulable NoSchedule taints;
//! they go when the node recovers. New NoExecute taints are rate-limited per zone and
//! withheld altogether when every node is down (upstream's "master disruption" mode, which
//! protects workloads when the control plane rather than the nodes lost connectivity).
//!
//! The taint-eviction loop deletes pods on nodes with NoExecute taints they do not
//! tolerate at once, and those that tolerate them for `tolerationSeconds` when that time,
//! counted from the taint's `timeAdded`, has passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::applier;
use kube::runtime::controller::{self, Action, ReconcileRequest, trigger_self, trigger_with};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use crate::endpoints::{ErrorBackoff, informer, key_of};
use crate::{Context, FIELD_MANAGER};

/// Taint of nodes whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of nodes whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Conditions a silent node gets as Unknown.
const MONITORED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// NoSchedule taints derived from conditions: (condition, status, taint key).
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
];

/// Timing and rate settings of the node lifecycle loop; the defaults are upstream's
/// kube-controller-manager flags.
#[derive(Clone, Debug)]
pub struct NodeLifecycleConfig {
    /// How often node health is checked (`--node-monitor-period`; upstream 5 s, kumo 2 s).
    pub node_monitor_period: Duration,
    /// How long a node may stay silent before it is Unknown
    /// (`--node-monitor-grace-period`; upstream 40 s (50 s since 1.32), kumo 35 s).
    pub node_monitor_grace_period: Duration,
    /// How long a node that never posted a status gets after its creation
    /// (`--node-startup-grace-period`, 60 s).
    pub node_startup_grace_period: Duration,
    /// Nodes per second that may get a NoExecute taint in a healthy zone
    /// (`--node-eviction-rate`, 0.1).
    pub node_eviction_rate: f64,
    /// The same in a partially disrupted zone of a large cluster
    /// (`--secondary-node-eviction-rate`, 0.01).
    pub secondary_node_eviction_rate: f64,
    /// Share of not-ready nodes (more than two) that makes a zone partially disrupted
    /// (`--unhealthy-zone-threshold`, 0.55).
    pub unhealthy_zone_threshold: f64,
    /// Zones with more nodes than this keep evicting, slowly, when partially disrupted
    /// (`--large-cluster-size-threshold`, 50).
    pub large_cluster_size_threshold: usize,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            // kumo promises NotReady within 40 s of a node's last renewal: 35 s of grace
            // plus at most one 2 s check. Nodes renew every 10 s, so a healthy node can
            // still miss three renewals in a row.
            node_monitor_period: Duration::from_secs(2),
            node_monitor_grace_period: Duration::from_secs(35),
            node_startup_grace_period: Duration::from_secs(60),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
        }
    }
}

/// Runs the loop with the default timings.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    run_with(ctx, NodeLifecycleConfig::default()).await
}

/// Runs the node monitor and the taint-eviction loop with `config` until they fail.
pub async fn run_with(ctx: Context, config: NodeLifecycleConfig) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (nodes, node_events) = informer(Api::<Node>::all(client.clone()));
    let (leases, lease_events) = informer(Api::<Lease>::namespaced(
        client.clone(),
        NODE_LEASE_NAMESPACE,
    ));
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()));
    let shared = Arc::new(Shared {
        ctx,
        config,
        nodes,
        leases,
        pods,
        health: Mutex::default(),
        zone_next_taint: Mutex::default(),
        taint_first_seen: Mutex::default(),
        backoff: ErrorBackoff::default(),
    });
    let leases_driver = lease_events.for_each(|_| std::future::ready(()));
    let eviction = taint_eviction(shared.clone(), node_events, pod_events);
    let monitor = monitor(shared.clone());
    tokio::join!(leases_driver, eviction, monitor);
    Ok(())
}

struct Shared {
    ctx: Context,
    config: NodeLifecycleConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    /// What the monitor last observed of each node.
    health: Mutex<HashMap<String, Health>>,
    /// Per zone, when the next node may get a NoExecute taint.
    zone_next_taint: Mutex<HashMap<String, Instant>>,
    /// When a NoExecute taint without `timeAdded` was first seen (node, key).
    taint_first_seen: Mutex<HashMap<(String, String), jiff::Timestamp>>,
    backoff: ErrorBackoff,
}

/// The monitor's observation of one node.
struct Health {
    /// When (on this controller's clock) the node last showed a sign of life.
    probe: Instant,
    /// The Ready condition's lastHeartbeatTime last seen.
    heartbeat: Option<jiff::Timestamp>,
    /// The Lease's renewTime last seen.
    lease_renewed: Option<jiff::Timestamp>,
}

/// Health of the zones for taint rate limiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

async fn monitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.node_monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.nodes.wait_until_ready().await.is_err()
            || shared.leases.wait_until_ready().await.is_err()
            || shared.pods.wait_until_ready().await.is_err()
        {
            return;
        }
        monitor_once(&shared).await;
    }
}

/// One pass over every node: conditions, taints, and the pods of silent nodes.
async fn monitor_once(shared: &Shared) {
    let api = Api::<Node>::all(shared.ctx.client.clone());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut nodes: Vec<Node> = shared.nodes.state().iter().map(|n| (**n).clone()).collect();
    nodes.sort_by_key(|n| n.name_any());
    {
        let mut health = shared.health.lock().unwrap();
        health.retain(|name, _| {
            nodes
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(name))
        });
    }
    // Conditions first: a silent node's turn Unknown.
    for node in &mut nodes {
        if !silent(shared, node) {
            continue;
        }
        let mut updated = node.clone();
        if !mark_unknown(&mut updated, jiff::Timestamp::now()) {
            continue;
        }
        match api
            .replace_status(&node.name_any(), &params, &updated)
            .await
        {
            Ok(stored) => {
                tracing::info!(node = %node.name_any(), "node stopped posting status; conditions set to Unknown");
                let reference = node.object_ref(&());
                let event = Event {
                    type_: EventType::Normal,
                    reason: "NodeNotReady".into(),
                    note: Some(format!(
                        "Node {} status is now: NodeNotReady",
                        node.name_any()
                    )),
                    action: "NodeNotReady".into(),
                    secondary: None,
                };
                let recorder = shared.ctx.recorder("node-controller");
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::debug!(error = %e, "recording node event");
                }
                *node = stored;
            }
            Err(e) => {
                tracing::debug!(node = %node.name_any(), error = %e, "updating node conditions")
            }
        }
    }
    // Zone states decide whether new NoExecute taints may be added.
    let zones = zone_states(&shared.config, &nodes);
    let master_disruption = !zones.is_empty()
        && zones
            .values()
            .all(|(state, _)| *state == ZoneState::FullDisruption);
    if master_disruption {
        tracing::debug!("every node is not ready; NoExecute taints are withheld");
    }
    let now = Instant::now();
    for node in &nodes {
        let zone = zone_key(node);
        let allow_new_no_execute = !master_disruption && {
            let (state, size) = zones.get(&zone).copied().unwrap_or((ZoneState::Normal, 0));
            let rate = match state {
                ZoneState::Normal | ZoneState::FullDisruption => shared.config.node_eviction_rate,
                ZoneState::PartialDisruption
                    if size > shared.config.large_cluster_size_threshold =>
                {
                    shared.config.secondary_node_eviction_rate
                }
                ZoneState::PartialDisruption => 0.0,
            };
            let next = shared.zone_next_taint.lock().unwrap().get(&zone).copied();
            rate > 0.0 && next.is_none_or(|t| now >= t)
        };
        let Some((taints, added_no_execute)) = desired_taints(
            node,
            master_disruption,
            allow_new_no_execute,
            jiff::Timestamp::now(),
        ) else {
            continue;
        };
        let mut updated = node.clone();
        updated.spec.get_or_insert_default().taints = (!taints.is_empty()).then_some(taints);
        match api.replace(&node.name_any(), &params, &updated).await {
            Ok(_) => {
                if added_no_execute {
                    let (state, size) = zones.get(&zone).copied().unwrap_or((ZoneState::Normal, 0));
                    let rate = match state {
                        ZoneState::PartialDisruption
                            if size > shared.config.large_cluster_size_threshold =>
                        {
                            shared.config.secondary_node_eviction_rate
                        }
                        _ => shared.config.node_eviction_rate,
                    };
                    if rate > 0.0 {
                        shared
                            .zone_next_taint
                            .lock()
                            .unwrap()
                            .insert(zone.clone(), now + Duration::from_secs_f64(1.0 / rate));
                    }
                }
            }
            Err(e) => tracing::debug!(node = %node.name_any(), error = %e, "updating node taints"),
        }
    }
    // Pods on nodes nobody hears from are no longer Ready.
    for node in &nodes {
        if condition_status(node, "Ready") != Some("Unknown") {
            continue;
        }
        mark_pods_not_ready(shared, &node.name_any()).await;
    }
}

/// Updates the observation of `node` and says whether it has been silent for longer than
/// its grace period.
fn silent(shared: &Shared, node: &Node) -> bool {
    let name = node.name_any();
    let now = Instant::now();
    let ready = condition(node, "Ready");
    let heartbeat = ready
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let lease_renewed = shared
        .leases
        .get(&ObjectRef::new(&name).within(NODE_LEASE_NAMESPACE))
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let mut health = shared.health.lock().unwrap();
    let grace = if ready.is_none() {
        shared.config.node_startup_grace_period
    } else {
        shared.config.node_monitor_grace_period
    };
    let entry = health.entry(name).or_insert_with(|| {
        // A node that never posted a status is judged from its creation; any other from
        // the moment this controller first sees it.
        let probe = match (ready, node.metadata.creation_timestamp.as_ref()) {
            (None, Some(created)) => {
                let age = jiff::Timestamp::now().duration_since(created.0);
                let age = Duration::try_from(age).unwrap_or_default();
                now.checked_sub(age).unwrap_or(now)
            }
            _ => now,
        };
        Health {
            probe,
            heartbeat,
            lease_renewed,
        }
    });
    if heartbeat.is_some() && heartbeat != entry.heartbeat {
        entry.heartbeat = heartbeat;
        entry.probe = now;
    }
    if lease_renewed.is_some() && lease_renewed > entry.lease_renewed {
        entry.lease_renewed = lease_renewed;
        entry.probe = now;
    }
    now > entry.probe + grace
}

/// Sets the monitored conditions of a silent node to Unknown; false when nothing changed.
fn mark_unknown(node: &mut Node, now: jiff::Timestamp) -> bool {
    let status = node.status.get_or_insert_default();
    let conditions = status.conditions.get_or_insert_default();
    let mut changed = false;
    for type_ in MONITORED_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

/// The node's taints as this controller wants them, and whether a NoExecute taint is
/// added to a node that had none of ours; `None` when they are already right.
fn desired_taints(
    node: &Node,
    master_disruption: bool,
    allow_new_no_execute: bool,
    now: jiff::Timestamp,
) -> Option<(Vec<Taint>, bool)> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    let mut no_schedule: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, status, _)| condition_status(node, type_) == Some(*status))
        .map(|(_, _, key)| *key)
        .collect();
    if unschedulable {
        no_schedule.push(TAINT_UNSCHEDULABLE);
    }
    let has = |key: &str, effect: &str| current.iter().any(|t| t.key == key && t.effect == effect);
    let had_no_execute = has(TAINT_NOT_READY, "NoExecute") || has(TAINT_UNREACHABLE, "NoExecute");
    let wanted_no_execute = if master_disruption {
        None
    } else {
        match condition_status(node, "Ready") {
            Some("False") => Some(TAINT_NOT_READY),
            Some("Unknown") => Some(TAINT_UNREACHABLE),
            _ => None,
        }
    };
    // A new NoExecute taint waits for the zone's rate limiter; swapping one for the other
    // does not.
    let wanted_no_execute = wanted_no_execute.filter(|_| had_no_execute || allow_new_no_execute);
    let managed_no_schedule = CONDITION_TAINTS
        .iter()
        .map(|(_, _, key)| *key)
        .chain([TAINT_UNSCHEDULABLE]);
    let mut taints: Vec<Taint> = Vec::new();
    for taint in &current {
        let ours_no_schedule =
            taint.effect == "NoSchedule" && managed_no_schedule.clone().any(|k| k == taint.key);
        let ours_no_execute = taint.effect == "NoExecute"
            && (taint.key == TAINT_NOT_READY || taint.key == TAINT_UNREACHABLE);
        let keep = if ours_no_schedule {
            no_schedule.contains(&taint.key.as_str())
        } else if ours_no_execute {
            wanted_no_execute == Some(taint.key.as_str())
        } else {
            true
        };
        if keep
            && !taints
                .iter()
                .any(|t| t.key == taint.key && t.effect == taint.effect)
        {
            taints.push(taint.clone());
        }
    }
    for key in no_schedule {
        if !taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
    }
    let mut added_no_execute = false;
    if let Some(key) = wanted_no_execute
        && !taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoExecute")
    {
        taints.push(Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(now)),
            ..Default::default()
        });
        added_no_execute = !had_no_execute;
    }
    (taints != current).then_some((taints, added_no_execute))
}

/// Each zone's state and size, from the nodes' Ready conditions.
fn zone_states(
    config: &NodeLifecycleConfig,
    nodes: &[Node],
) -> HashMap<String, (ZoneState, usize)> {
    let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
    for node in nodes {
        let entry = counts.entry(zone_key(node)).or_default();
        if condition_status(node, "Ready") == Some("True") {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    counts
        .into_iter()
        .map(|(zone, (ready, not_ready))| {
            let state = if ready == 0 && not_ready > 0 {
                ZoneState::FullDisruption
            } else if not_ready > 2
                && not_ready as f64 / (ready + not_ready) as f64 >= config.unhealthy_zone_threshold
            {
                ZoneState::PartialDisruption
            } else {
                ZoneState::Normal
            };
            (zone, (state, ready + not_ready))
        })
        .collect()
}

/// The node's region and zone, from the topology labels.
fn zone_key(node: &Node) -> String {
    let labels = node.labels();
    let region = labels
        .get("topology.kubernetes.io/region")
        .or_else(|| labels.get("failure-domain.beta.kubernetes.io/region"))
        .cloned()
        .unwrap_or_default();
    let zone = labels
        .get("topology.kubernetes.io/zone")
        .or_else(|| labels.get("failure-domain.beta.kubernetes.io/zone"))
        .cloned()
        .unwrap_or_default();
    format!("{region}:\0:{zone}")
}

/// Sets the Ready condition of the pods on `node` to False.
async fn mark_pods_not_ready(shared: &Shared, node: &str) {
    let on_node = shared.pods.state().into_iter().filter(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
            && crate::pods::is_ready(p)
    });
    for pod in on_node {
        let mut updated = (*pod).clone();
        let now = Time(jiff::Timestamp::now());
        for c in updated
            .status
            .get_or_insert_default()
            .conditions
            .get_or_insert_default()
            .iter_mut()
            .filter(|c| c.type_ == "Ready")
        {
            c.status = "False".into();
            c.last_transition_time = Some(now.clone());
        }
        let api = Api::<Pod>::namespaced(
            shared.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        if let Err(e) = api.replace_status(&pod.name_any(), &params, &updated).await {
            tracing::debug!(pod = %key_of(pod.as_ref()), error = %e, "marking pod not ready");
        }
    }
}

/// The condition `type_` of the node.
fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn condition_status<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    condition(node, type_).map(|c| c.status.as_str())
}

/// The taint-eviction loop: one reconcile per pod on a node with NoExecute taints.
async fn taint_eviction(
    shared: Arc<Shared>,
    node_events: impl futures::Stream<Item = Result<Node, kube::runtime::watcher::Error>>
    + Send
    + 'static,
    pod_events: impl futures::Stream<Item = Result<Pod, kube::runtime::watcher::Error>> + Send + 'static,
) {
    let pods = shared.pods.clone();
    let node_mapper = move |node: Node| {
        let name = node.name_any();
        let tainted = no_execute_taints(&node).next().is_some();
        let on_node: Vec<ReconcileRequest<Pod>> = if tainted {
            pods.state()
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
                })
                .map(|p| ReconcileRequest::from(ObjectRef::from_obj(p.as_ref())))
                .collect()
        } else {
            Vec::new()
        };
        on_node
    };
    let queue = futures::stream::select(
        trigger_self(pod_events, ()).boxed(),
        trigger_with(node_events, node_mapper).boxed(),
    );
    applier(
        |pod, shared: Arc<Shared>| Box::pin(reconcile_pod(pod, shared)),
        |pod, error, shared| {
            tracing::debug!(pod = %key_of(pod.as_ref()), %error, "taint eviction failed");
            Action::requeue(shared.backoff.failed(&key_of(pod.as_ref())))
        },
        shared.clone(),
        shared.pods.clone(),
        queue,
        controller::Config::default(),
    )
    .for_each(|_| std::future::ready(()))
    .await;
}

fn no_execute_taints(node: &Node) -> impl Iterator<Item = &Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoExecute")
}

/// Whether `toleration` tolerates `taint`, as upstream's `ToleratesTaint`.
pub(crate) fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if toleration
        .key
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != taint.key)
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// What the NoExecute taints mean for a pod.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Every taint is tolerated for ever (or there are none).
    Stay,
    /// Delete the pod at this time (now or in the past: at once).
    EvictAt(jiff::Timestamp),
}

/// Upstream's rule: a taint the pod does not tolerate evicts it now; otherwise the first
/// toleration matching each taint gives that taint's time, and the earliest one wins.
fn verdict(
    tolerations: &[Toleration],
    taints: &[(Taint, jiff::Timestamp)],
    now: jiff::Timestamp,
) -> Verdict {
    let mut earliest: Option<jiff::Timestamp> = None;
    for (taint, added) in taints {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Verdict::EvictAt(now);
        };
        let Some(seconds) = toleration.toleration_seconds else {
            continue;
        };
        let at = if seconds <= 0 {
            now
        } else {
            added
                .saturating_add(jiff::SignedDuration::from_secs(seconds))
                .unwrap_or(*added)
        };
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    earliest.map_or(Verdict::Stay, Verdict::EvictAt)
}

async fn reconcile_pod(
    pod: Arc<Pod>,
    shared: Arc<Shared>,
) -> Result<Action, crate::endpoints::Error> {
    shared.nodes.wait_until_ready().await?;
    let key = key_of(pod.as_ref());
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    if node_name.is_empty() || pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(node) = shared.nodes.get(&ObjectRef::new(&node_name)) else {
        return Ok(Action::await_change());
    };
    let now = jiff::Timestamp::now();
    let taints: Vec<(Taint, jiff::Timestamp)> = {
        let mut first_seen = shared.taint_first_seen.lock().unwrap();
        first_seen
            .retain(|(n, k), _| n != &node_name || no_execute_taints(&node).any(|t| &t.key == k));
        no_execute_taints(&node)
            .map(|t| {
                let added = match &t.time_added {
                    Some(time) => time.0,
                    None => *first_seen
                        .entry((node_name.clone(), t.key.clone()))
                        .or_insert(now),
                };
                (t.clone(), added)
            })
            .collect()
    };
    if taints.is_empty() {
        return Ok(Action::await_change());
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let at = match verdict(&tolerations, &taints, now) {
        Verdict::Stay => return Ok(Action::await_change()),
        Verdict::EvictAt(at) => at,
    };
    if at > now {
        let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
        return Ok(Action::requeue(wait + Duration::from_millis(10)));
    }
    evict(&shared, &pod).await?;
    shared.backoff.succeeded(&key);
    Ok(Action::await_change())
}

/// Marks the pod with a DisruptionTarget condition and deletes it.
async fn evict(shared: &Shared, pod: &Pod) -> Result<(), kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api = Api::<Pod>::namespaced(shared.ctx.client.clone(), &namespace);
    tracing::info!(pod = %key_of(pod), "deleting pod for a NoExecute taint it does not tolerate");
    let condition = serde_json::json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": Time(jiff::Timestamp::now()),
    }]}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch_status(&name, &params, &Patch::Strategic(condition))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    let event = Event {
        type_: EventType::Normal,
        reason: "TaintManagerEviction".into(),
        note: Some(format!("Marking for deletion Pod {namespace}/{name}")),
        action: "Delete".into(),
        secondary: None,
    };
    let recorder = shared.ctx.recorder("taint-eviction-controller");
    if let Err(e) = recorder.publish(&event, &pod.object_ref(&())).await {
        tracing::debug!(error = %e, "recording eviction event");
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn toleration(key: &str, operator: &str, effect: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(operator.into()),
            effect: Some(effect.into()),
            toleration_seconds: seconds,
            ..Default::default()
        }
    }

    #[test]
    fn toleration_matching() {
        let t = taint(TAINT_UNREACHABLE, "NoExecute");
        assert!(tolerates(
            &toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", None),
            &t
        ));
        assert!(tolerates(&toleration("", "Exists", "", None), &t));
        assert!(!tolerates(
            &toleration(TAINT_NOT_READY, "Exists", "NoExecute", None),
            &t
        ));
        assert!(!tolerates(
            &toleration(TAINT_UNREACHABLE, "Exists", "NoSchedule", None),
            &t
        ));
        assert!(tolerates(
            &toleration(TAINT_UNREACHABLE, "Equal", "", None),
            &t
        ));
        let mut valued = t.clone();
        valued.value = Some("x".into());
        assert!(!tolerates(
            &toleration(TAINT_UNREACHABLE, "Equal", "", None),
            &valued
        ));
    }

    #[test]
    fn verdicts() {
        let now = ts(1000);
        let taints = vec![(taint(TAINT_UNREACHABLE, "NoExecute"), ts(990))];
        assert_eq!(verdict(&[], &taints, now), Verdict::EvictAt(now));
        let forever = [toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", None)];
        assert_eq!(verdict(&forever, &taints, now), Verdict::Stay);
        let five = [toleration(
            TAINT_UNREACHABLE,
            "Exists",
            "NoExecute",
            Some(5),
        )];
        assert_eq!(verdict(&five, &taints, now), Verdict::EvictAt(ts(995)));
        let zero = [toleration(
            TAINT_UNREACHABLE,
            "Exists",
            "NoExecute",
            Some(0),
        )];
        assert_eq!(verdict(&zero, &taints, now), Verdict::EvictAt(now));
        // Two taints: the earliest deadline wins; an untolerated one evicts now.
        let both = vec![
            (taint(TAINT_UNREACHABLE, "NoExecute"), ts(990)),
            (taint("other", "NoExecute"), ts(999)),
        ];
        let tolerations = [
            toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", Some(300)),
            toleration("other", "Exists", "NoExecute", Some(5)),
        ];
        assert_eq!(
            verdict(&tolerations, &both, now),
            Verdict::EvictAt(ts(1004))
        );
        assert_eq!(
            verdict(&tolerations[..1], &both, now),
            Verdict::EvictAt(now)
        );
    }

    fn node(conditions: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::core::v1::NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| NodeCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn taints_follow_conditions() {
        let now = ts(5);
        let unknown = node(&[("Ready", "Unknown")], vec![taint("user", "NoSchedule")]);
        let (taints, added) = desired_taints(&unknown, false, true, now).unwrap();
        assert_eq!(
            keys(&taints),
            [
                "user:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert!(added);
        assert_eq!(taints[2].time_added, Some(Time(now)));
        // Rate-limited: only the NoSchedule taint.
        let (taints, _) = desired_taints(&unknown, false, false, now).unwrap();
        assert_eq!(
            keys(&taints),
            [
                "user:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule"
            ]
        );
        // Master disruption: no NoExecute taint.
        let (taints, _) = desired_taints(&unknown, true, true, now).unwrap();
        assert_eq!(
            keys(&taints),
            [
                "user:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule"
            ]
        );
        // Not ready swaps the NoExecute taint regardless of the rate limiter.
        let tainted = node(
            &[("Ready", "False")],
            vec![
                taint(TAINT_UNREACHABLE, "NoSchedule"),
                taint(TAINT_UNREACHABLE, "NoExecute"),
            ],
        );
        let (taints, added) = desired_taints(&tainted, false, false, now).unwrap();
        assert_eq!(
            keys(&taints),
            [
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        assert!(!added);
        // Recovery removes them; a healthy node is left alone.
        let recovered = node(
            &[("Ready", "True")],
            tainted.spec.clone().unwrap().taints.unwrap(),
        );
        let (taints, _) = desired_taints(&recovered, false, true, now).unwrap();
        assert!(taints.is_empty());
        assert_eq!(
            desired_taints(&node(&[("Ready", "True")], vec![]), false, true, now),
            None
        );
        let pressure = node(&[("Ready", "True"), ("DiskPressure", "True")], vec![]);
        let (taints, _) = desired_taints(&pressure, false, true, now).unwrap();
        assert_eq!(
            keys(&taints),
            ["node.kubernetes.io/disk-pressure:NoSchedule"]
        );
    }

    #[test]
    fn unknown_conditions() {
        let mut n = node(&[("Ready", "True"), ("MemoryPressure", "False")], vec![]);
        assert!(mark_unknown(&mut n, ts(7)));
        let conditions = n.status.as_ref().unwrap().conditions.as_ref().unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        let disk = conditions
            .iter()
            .find(|c| c.type_ == "DiskPressure")
            .unwrap();
        assert_eq!(disk.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(conditions.len(), 4);
        assert!(!mark_unknown(&mut n, ts(8)));
    }

    #[test]
    fn zones() {
        let config = NodeLifecycleConfig::default();
        let ready = node(&[("Ready", "True")], vec![]);
        let down = node(&[("Ready", "Unknown")], vec![]);
        let states = zone_states(&config, &[ready.clone(), down.clone()]);
        assert_eq!(states.values().next().unwrap().0, ZoneState::Normal);
        let states = zone_states(&config, &[down.clone(), down.clone()]);
        assert_eq!(states.values().next().unwrap().0, ZoneState::FullDisruption);
        let states = zone_states(&config, &[ready, down.clone(), down.clone(), down]);
        assert_eq!(
            states.values().next().unwrap().0,
            ZoneState::PartialDisruption
        );
    }
}
