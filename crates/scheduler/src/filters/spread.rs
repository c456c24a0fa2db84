//! PodTopologySpread filter: DoNotSchedule constraints, with `maxSkew`, `minDomains`,
//! `matchLabelKeys` and the node inclusion policies (`nodeAffinityPolicy` Honor and
//! `nodeTaintsPolicy` Ignore by default); and the constraints scoring uses, including the
//! system defaults for pods without any.

use std::collections::HashMap;

use super::{Code, CycleState, Plugin, Rejection};
use crate::cache::Snapshot;
use crate::info::{NodeInfo, PodInfo};
use crate::selectors::Selector;
use crate::workloads::PodSelectors;

/// Reason when a constraint's skew would be exceeded.
pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
/// Reason when the node lacks a constraint's topology key.
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// The node label naming each node (`kubernetes.io/hostname`).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The node label naming a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Upstream's system default constraints (`systemDefaultConstraints`): topology key and
/// `maxSkew`, all ScheduleAnyway.
const SYSTEM_DEFAULTS: [(&str, i64); 2] = [(HOSTNAME_LABEL, 3), (ZONE_LABEL, 5)];

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

    /// The ScheduleAnyway constraints scoring uses, and whether nodes must carry every
    /// topology key to be scored: the pod's own when it has any constraint, otherwise the
    /// system defaults over the pods grouped with it by Services and controllers (none
    /// when nothing groups it), which nodes lacking a key still get scored by.
    pub fn for_scoring(pod: &PodInfo, pod_selectors: &PodSelectors) -> (Vec<Self>, bool) {
        let has_own = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        if has_own {
            return (Self::of(pod, "ScheduleAnyway"), true);
        }
        let Some(selector) = pod_selectors.default_selector(&pod.pod) else {
            return (Vec::new(), false);
        };
        let defaults = SYSTEM_DEFAULTS
            .iter()
            .map(|&(topology_key, max_skew)| Self {
                max_skew,
                topology_key: topology_key.to_owned(),
                selector: selector.clone(),
                min_domains: None,
                honor_node_affinity: true,
                honor_taints: false,
            })
            .collect();
        (defaults, false)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;
    use crate::info::PriorityClasses;

    fn pod(spec: serde_json::Value) -> PodInfo {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": spec
        }))
        .unwrap();
        PodInfo::new(Arc::new(pod), &PriorityClasses::default())
    }

    fn grouping_web() -> PodSelectors {
        let mut selectors = PodSelectors::default();
        selectors.set_service("ns", "web", Some([("app".into(), "web".into())].into()));
        selectors
    }

    #[test]
    fn system_defaults_apply_to_grouped_pods_without_constraints() {
        let (constraints, require_all_keys) =
            SpreadConstraint::for_scoring(&pod(json!({"containers": []})), &grouping_web());
        assert!(!require_all_keys);
        let keys: Vec<(&str, i64)> = constraints
            .iter()
            .map(|c| (c.topology_key.as_str(), c.max_skew))
            .collect();
        assert_eq!(keys, [(HOSTNAME_LABEL, 3), (ZONE_LABEL, 5)]);
        assert!(
            constraints
                .iter()
                .all(|c| c.honor_node_affinity && !c.honor_taints)
        );
        // Nothing groups the pod: no constraints at all.
        let (none, _) = SpreadConstraint::for_scoring(
            &pod(json!({"containers": []})),
            &PodSelectors::default(),
        );
        assert!(none.is_empty());
    }

    #[test]
    fn own_constraints_replace_the_defaults() {
        // A pod with only DoNotSchedule constraints scores without any spreading.
        let hard = pod(json!({"containers": [], "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "web"}}}
        ]}));
        let (constraints, require_all_keys) = SpreadConstraint::for_scoring(&hard, &grouping_web());
        assert!(constraints.is_empty());
        assert!(require_all_keys);
        let soft = pod(json!({"containers": [], "topologySpreadConstraints": [
            {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app": "web"}}}
        ]}));
        let (constraints, _) = SpreadConstraint::for_scoring(&soft, &grouping_web());
        assert_eq!(constraints.len(), 1);
        assert_eq!(
            (
                constraints[0].topology_key.as_str(),
                constraints[0].max_skew
            ),
            ("zone", 2)
        );
    }
}
