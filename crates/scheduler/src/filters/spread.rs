//! PodTopologySpread filter: DoNotSchedule constraints, with `maxSkew`, `minDomains`,
//! `matchLabelKeys` and the node inclusion policies (`nodeAffinityPolicy` Honor and
//! `nodeTaintsPolicy` Ignore by default).

use std::collections::HashMap;

use super::{Code, CycleState, Plugin, Rejection};
use crate::cache::Snapshot;
use crate::info::{NodeInfo, PodInfo};
use crate::selectors::Selector;

/// Reason when a constraint's skew would be exceeded.
pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
/// Reason when the node lacks a constraint's topology key.
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// One topology spread constraint, parsed.
#[derive(Clone, Debug)]
pub struct SpreadConstraint {
    /// Allowed difference to the least loaded domain.
    pub max_skew: i64,
    /// Node label naming the domains.
    pub topology_key: String,
    /// Pods counted (with `matchLabelKeys` merged in).
    pub selector: Selector,
    /// Below this many domains, the global minimum counts as 0.
    pub min_domains: Option<i64>,
    /// Count only nodes matching the pod's node affinity (`nodeAffinityPolicy: Honor`).
    pub honor_node_affinity: bool,
    /// Count only nodes whose taints the pod tolerates (`nodeTaintsPolicy: Honor`).
    pub honor_taints: bool,
}

impl SpreadConstraint {
    /// The pod's constraints with `whenUnsatisfiable` equal to `when`.
    pub fn of(pod: &PodInfo, when: &str) -> Vec<Self> {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return Vec::new();
        };
        spec.topology_spread_constraints
            .iter()
            .flatten()
            .filter(|c| c.when_unsatisfiable == when)
            .map(|c| {
                let mut selector = Selector::parse(c.label_selector.as_ref());
                for key in c.match_label_keys.iter().flatten() {
                    if let Some(v) = pod.labels().get(key) {
                        selector.require(key, v);
                    }
                }
                Self {
                    max_skew: i64::from(c.max_skew),
                    topology_key: c.topology_key.clone(),
                    selector,
                    min_domains: c.min_domains.map(i64::from),
                    honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                }
            })
            .collect()
    }

    /// Whether pods on a node count towards this constraint, by the inclusion policies.
    pub fn includes(&self, matches_affinity: bool, tolerates_taints: bool) -> bool {
        (!self.honor_node_affinity || matches_affinity) && (!self.honor_taints || tolerates_taints)
    }

    /// How many pods on `node` this constraint counts for `incoming`.
    pub fn count_on(&self, incoming: &PodInfo, node: &NodeInfo) -> i64 {
        node.pods
            .iter()
            .filter(|p| self.counts(incoming, p))
            .count() as i64
    }

    /// Whether `pod` counts for `incoming`: same namespace, not terminating, selected.
    pub fn counts(&self, incoming: &PodInfo, pod: &PodInfo) -> bool {
        pod.namespace == incoming.namespace
            && !pod.terminating
            && pod.uid != incoming.uid
            && self.selector.matches(pod.labels())
    }
}

/// The PreFilter counts of PodTopologySpread.
#[derive(Clone, Debug)]
pub struct SpreadState {
    constraints: Vec<SpreadConstraint>,
    /// Per constraint: matching pods per domain (every eligible domain present).
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: the smallest count over its domains.
    min: Vec<i64>,
}

impl SpreadState {
    /// Counts matching pods per domain over the eligible nodes of `snapshot`.
    pub fn new(
        state: &CycleState,
        constraints: Vec<SpreadConstraint>,
        snapshot: &Snapshot,
    ) -> Self {
        let mut counts = vec![HashMap::new(); constraints.len()];
        for node in &snapshot.nodes {
            let labels = node.labels();
            if !constraints
                .iter()
                .all(|c| labels.contains_key(&c.topology_key))
            {
                continue;
            }
            let matches_affinity = state.matches_node_affinity(node);
            let tolerates = state.untolerated_taint(node).is_none();
            for (i, c) in constraints.iter().enumerate() {
                if c.includes(matches_affinity, tolerates) {
                    *counts[i]
                        .entry(labels[&c.topology_key].clone())
                        .or_insert(0) += c.count_on(&state.pod, node);
                }
            }
        }
        let mut s = Self {
            constraints,
            counts,
            min: Vec::new(),
        };
        s.recompute_min();
        s
    }

    fn recompute_min(&mut self) {
        self.min = self
            .counts
            .iter()
            .map(|c| c.values().copied().min().unwrap_or(0))
            .collect();
    }

    /// Adds (`delta` 1) or removes (-1) `pod` on `node` from the counts.
    pub fn update_with_pod(
        &mut self,
        incoming: &PodInfo,
        pod: &PodInfo,
        node: &NodeInfo,
        matches_affinity: bool,
        tolerates: bool,
        delta: i64,
    ) {
        let labels = node.labels();
        if !self
            .constraints
            .iter()
            .all(|c| labels.contains_key(&c.topology_key))
        {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if c.includes(matches_affinity, tolerates) && c.counts(incoming, pod) {
                *self.counts[i]
                    .entry(labels[&c.topology_key].clone())
                    .or_insert(0) += delta;
            }
        }
        self.recompute_min();
    }

    /// The filter for one node.
    pub fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let labels = node.labels();
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else {
                return Err(Rejection::new(
                    Plugin::PodTopologySpread,
                    Code::UnschedulableAndUnresolvable,
                    ERR_MISSING_LABEL,
                ));
            };
            let domains = self.counts[i].len() as i64;
            let min = if c.min_domains.is_some_and(|m| domains < m) {
                0
            } else {
                self.min[i]
            };
            let self_match = i64::from(c.selector.matches(pod.labels()));
            let matching = self.counts[i].get(value).copied().unwrap_or(0);
            if matching + self_match - min > c.max_skew {
                return Err(Rejection::new(
                    Plugin::PodTopologySpread,
                    Code::Unschedulable,
                    ERR_CONSTRAINTS,
                ));
            }
        }
        Ok(())
    }
}
