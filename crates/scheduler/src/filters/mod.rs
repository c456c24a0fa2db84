//! Filters: whether a pod may run on a node, with upstream's plugins in upstream's order
//! (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit, VolumeBinding, PodTopologySpread, InterPodAffinity) and their
//! failure reasons.
//!
//! A node's readiness is not a filter: like upstream, the scheduler relies on the
//! `node.kubernetes.io/not-ready` and `unreachable` taints the node lifecycle controller
//! places.

mod interpod;
mod spread;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Taint, Toleration};

pub use interpod::InterPodState;
pub use spread::{HOSTNAME_LABEL, SpreadConstraint, SpreadState, ZONE_LABEL};

use crate::cache::Snapshot;
use crate::info::{NodeInfo, PodInfo};
use crate::selectors::{node_matches_terms, tolerated};
use crate::volumes::PodVolumes;

/// A filter or score plugin, named as upstream names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plugin {
    /// `spec.unschedulable` nodes.
    NodeUnschedulable,
    /// `spec.nodeName`.
    NodeName,
    /// Taints and tolerations.
    TaintToleration,
    /// `nodeSelector` and node affinity.
    NodeAffinity,
    /// Host ports.
    NodePorts,
    /// Requests against allocatable.
    NodeResourcesFit,
    /// Topology spread constraints.
    PodTopologySpread,
    /// Inter-pod affinity and anti-affinity.
    InterPodAffinity,
    /// PersistentVolumeClaims and their volumes' nodes.
    VolumeBinding,
}

/// How a node failed a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The pod does not fit now; removing pods (preemption) might help.
    Unschedulable,
    /// Removing pods would not help.
    UnschedulableAndUnresolvable,
}

/// Why a node was filtered out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The plugin that rejected the node.
    pub plugin: Plugin,
    /// Whether preemption could help.
    pub code: Code,
    /// Upstream's reason strings (`Insufficient cpu`, …), counted in the FitError message.
    pub reasons: Vec<String>,
}

impl Rejection {
    fn new(plugin: Plugin, code: Code, reason: impl Into<String>) -> Self {
        Self {
            plugin,
            code,
            reasons: vec![reason.into()],
        }
    }
}

/// Reason of NodeUnschedulable.
pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// Reason of NodeName.
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
/// Reason of NodeAffinity.
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// Reason of NodePorts.
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
/// Reason of NodeResourcesFit when the node holds its maximum number of pods.
pub const ERR_TOO_MANY_PODS: &str = "Too many pods";

/// The taint NodeUnschedulable looks for in tolerations.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// What the filters of one scheduling cycle precompute about the pod (upstream's
/// PreFilter results in the CycleState).
#[derive(Clone)]
pub struct CycleState {
    /// The pod being scheduled.
    pub pod: Arc<PodInfo>,
    /// Its tolerations.
    pub tolerations: Vec<Toleration>,
    /// Its `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Its required node affinity terms (`None`: no requirement).
    pub required_node_affinity: Option<Vec<NodeSelectorTerm>>,
    /// Inter-pod affinity counts, when the pod or existing pods have terms.
    pub interpod: Option<InterPodState>,
    /// Topology spread counts for DoNotSchedule constraints.
    pub spread: Option<SpreadState>,
    /// The pod's claims (`None`: it uses none), or why it fits no node at all.
    pub volumes: Result<Option<Arc<PodVolumes>>, String>,
}

impl CycleState {
    /// Runs the PreFilter step for `pod` over `snapshot`.
    pub fn new(pod: Arc<PodInfo>, snapshot: &Snapshot) -> Self {
        let spec = pod.pod.spec.as_ref();
        let tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
        let node_selector = spec
            .and_then(|s| s.node_selector.clone())
            .unwrap_or_default();
        let required_node_affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|s| s.node_selector_terms.clone());
        let mut state = Self {
            pod: pod.clone(),
            tolerations,
            node_selector,
            required_node_affinity,
            interpod: None,
            spread: None,
            volumes: crate::volumes::pre_filter(&pod.pod, &snapshot.volumes)
                .map(|v| v.map(Arc::new)),
        };
        state.interpod = InterPodState::new(&state.pod, snapshot);
        let constraints = SpreadConstraint::of(&state.pod, "DoNotSchedule");
        if !constraints.is_empty() {
            state.spread = Some(SpreadState::new(&state, constraints, snapshot));
        }
        state
    }

    /// Whether `node` matches the pod's `nodeSelector` and required node affinity.
    pub fn matches_node_affinity(&self, node: &NodeInfo) -> bool {
        let Some(n) = node.node.as_deref() else {
            return false;
        };
        let labels = node.labels();
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self
                .required_node_affinity
                .as_ref()
                .is_none_or(|terms| node_matches_terms(n, terms))
    }

    /// The first NoSchedule or NoExecute taint of `node` the pod does not tolerate.
    pub fn untolerated_taint<'a>(&self, node: &'a NodeInfo) -> Option<&'a Taint> {
        taints(node).iter().find(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute")
                && !tolerated(&self.tolerations, t)
        })
    }

    /// Accounts `pod` (nominated or removed by preemption) on `node` in the precomputed
    /// counts: `delta` 1 adds it, -1 removes it.
    pub fn update_with_pod(
        &mut self,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
        delta: i64,
    ) {
        let incoming = self.pod.clone();
        if let Some(interpod) = &mut self.interpod {
            interpod.update_with_pod(&incoming, pod, node, &snapshot.namespaces, delta);
        } else if delta > 0 && pod.has_affinity() {
            // A nominated pod with anti-affinity may now constrain the incoming one.
            let mut interpod = InterPodState::empty();
            interpod.update_with_pod(&incoming, pod, node, &snapshot.namespaces, delta);
            self.interpod = Some(interpod);
        }
        let matches_affinity = self.matches_node_affinity(node);
        let tolerates = self.untolerated_taint(node).is_none();
        if let Some(spread) = &mut self.spread {
            spread.update_with_pod(&incoming, pod, node, matches_affinity, tolerates, delta);
        }
    }
}

/// The taints of a node.
pub fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Runs the filters with the pods nominated to the node (by preemption, with at least the
/// pod's priority) counted as if placed, then without them, as upstream does: a nominated
/// pod reserves room, yet the pod must not depend on it being there for affinity.
pub fn run_with_nominated(
    state: &CycleState,
    node: &NodeInfo,
    nominated: &[Arc<PodInfo>],
    snapshot: &Snapshot,
) -> Result<(), Rejection> {
    if nominated.is_empty() {
        return run(state, node);
    }
    let mut node_with = node.clone();
    let mut state_with = state.clone();
    for p in nominated {
        node_with.add_pod(p.clone());
        state_with.update_with_pod(p, &node_with, snapshot, 1);
    }
    run(&state_with, &node_with)?;
    run(state, node)
}

/// Why a pod fits no node: the rejection of each node evaluated.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    /// Node name and why it was rejected.
    pub rejections: Vec<(String, Rejection)>,
    /// Why PreFilter rejected the pod before any node was looked at.
    pub pre_filter: Option<String>,
}

impl Diagnosis {
    /// Plugins that rejected some node.
    pub fn rejected_by(&self) -> crate::queue::Plugins {
        let mut plugins = crate::queue::Plugins::default();
        for (_, r) in &self.rejections {
            plugins.insert(r.plugin);
        }
        plugins
    }

    /// Upstream's FitError message: `0/3 nodes are available: 1 node(s) had untolerated
    /// taint {k: v}, 2 Insufficient cpu.` followed by the PostFilter (preemption) message.
    pub fn message(&self, num_nodes: usize, post_filter: &str) -> String {
        if let Some(reason) = &self.pre_filter {
            // Upstream's FitError with a PreFilter message: that message instead of the
            // per-node histogram.
            let mut message = format!("0/{num_nodes} nodes are available: {reason}.");
            if !post_filter.is_empty() {
                message.push(' ');
                message.push_str(post_filter);
            }
            return message;
        }
        let reasons = self
            .rejections
            .iter()
            .flat_map(|(_, r)| r.reasons.iter().map(String::as_str));
        fit_message(num_nodes, reasons, post_filter)
    }
}

/// Formats `0/N nodes are available: <count reason, …>.` with reasons counted and sorted
/// as strings, plus ` <post>` when there is one.
pub fn fit_message<'a>(
    num_nodes: usize,
    reasons: impl Iterator<Item = &'a str>,
    post: &str,
) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_insert(0) += 1;
    }
    let mut histogram: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    histogram.sort();
    let mut message = format!("0/{num_nodes} nodes are available:");
    if !histogram.is_empty() {
        message.push_str(&format!(" {}.", histogram.join(", ")));
    }
    if !post.is_empty() {
        message.push(' ');
        message.push_str(post);
    }
    message
}

/// Runs every filter; the first that rejects the node decides.
pub fn run(state: &CycleState, node: &NodeInfo) -> Result<(), Rejection> {
    let Some(n) = node.node.as_deref() else {
        return Err(Rejection::new(
            Plugin::NodeName,
            Code::UnschedulableAndUnresolvable,
            "node(s) not found",
        ));
    };
    let spec = n.spec.as_ref();
    // NodeUnschedulable.
    if spec.and_then(|s| s.unschedulable) == Some(true) {
        let taint = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !tolerated(&state.tolerations, &taint) {
            return Err(Rejection::new(
                Plugin::NodeUnschedulable,
                Code::UnschedulableAndUnresolvable,
                ERR_UNSCHEDULABLE,
            ));
        }
    }
    // NodeName.
    if let Some(wanted) = state.pod.node_name()
        && wanted != node.name
    {
        return Err(Rejection::new(
            Plugin::NodeName,
            Code::UnschedulableAndUnresolvable,
            ERR_NODE_NAME,
        ));
    }
    // TaintToleration.
    if let Some(taint) = state.untolerated_taint(node) {
        return Err(Rejection::new(
            Plugin::TaintToleration,
            Code::UnschedulableAndUnresolvable,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ),
        ));
    }
    // NodeAffinity.
    if !state.matches_node_affinity(node) {
        return Err(Rejection::new(
            Plugin::NodeAffinity,
            Code::UnschedulableAndUnresolvable,
            ERR_NODE_AFFINITY,
        ));
    }
    // NodePorts.
    if state
        .pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)))
    {
        return Err(Rejection::new(
            Plugin::NodePorts,
            Code::Unschedulable,
            ERR_NODE_PORTS,
        ));
    }
    fits_resources(&state.pod, node)?;
    // VolumeBinding (PreFilter failures never reach the filters).
    if let Ok(Some(volumes)) = &state.volumes
        && let Err(reason) = volumes.filter(n)
    {
        return Err(Rejection::new(
            Plugin::VolumeBinding,
            Code::UnschedulableAndUnresolvable,
            reason,
        ));
    }
    if let Some(spread) = &state.spread {
        spread.filter(&state.pod, node)?;
    }
    if let Some(interpod) = &state.interpod {
        interpod.filter(&state.pod, node)?;
    }
    Ok(())
}

/// NodeResourcesFit: the pod's requests against what the node has left, reporting every
/// insufficient resource.
pub fn fits_resources(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allocatable.pods {
        reasons.push(ERR_TOO_MANY_PODS.to_owned());
    }
    let want = &pod.requests.requests;
    if !want.is_zero() {
        let (alloc, used) = (&node.allocatable, &node.requested);
        if want.milli_cpu > 0 && want.milli_cpu > alloc.milli_cpu - used.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if want.memory > 0 && want.memory > alloc.memory - used.memory {
            reasons.push("Insufficient memory".into());
        }
        if want.ephemeral_storage > 0
            && want.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, &amount) in &want.scalar {
            let free = alloc.scalar.get(name).copied().unwrap_or(0)
                - used.scalar.get(name).copied().unwrap_or(0);
            if amount > 0 && amount > free {
                reasons.push(format!("Insufficient {name}"));
            }
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            plugin: Plugin::NodeResourcesFit,
            code: Code::Unschedulable,
            reasons,
        })
    }
}
