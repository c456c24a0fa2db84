//! InterPodAffinity filter: required pod affinity and anti-affinity of the incoming pod,
//! and the required anti-affinity of pods already placed, counted per topology domain.

use std::collections::HashMap;

use super::{Code, Plugin, Rejection};
use crate::cache::Snapshot;
use crate::info::{NodeInfo, PodInfo};
use crate::selectors::Labels;

/// Reason when an existing pod's anti-affinity excludes the incoming pod.
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Reason when the pod's affinity is not met.
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Reason when the pod's anti-affinity is not met.
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

/// Matching pods per topology key and value.
type Counts = HashMap<String, HashMap<String, i64>>;

/// The PreFilter counts of InterPodAffinity.
#[derive(Clone, Debug, Default)]
pub struct InterPodState {
    /// Domains where an existing pod's required anti-affinity term matches the incoming pod.
    existing_anti: Counts,
    /// Domains with pods matching all of the incoming pod's required affinity terms.
    affinity: Counts,
    /// Domains with pods matching one of the incoming pod's required anti-affinity terms.
    anti: Counts,
}

impl InterPodState {
    /// No counts.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Counts over `snapshot`; `None` when neither the pod nor any placed pod has a
    /// required (anti-)affinity term.
    pub fn new(pod: &PodInfo, snapshot: &Snapshot) -> Option<Self> {
        let own_terms = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !own_terms && snapshot.pods_with_required_anti_affinity == 0 {
            return None;
        }
        let mut state = Self::default();
        for node in &snapshot.nodes {
            if !own_terms && node.pods_with_required_anti_affinity == 0 {
                continue;
            }
            for existing in &node.pods {
                state.update_with_pod(pod, existing, node, &snapshot.namespaces, 1);
            }
        }
        Some(state)
    }

    /// Adds (`delta` 1) or removes (-1) `existing` on `node` from the counts.
    pub fn update_with_pod(
        &mut self,
        incoming: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        namespaces: &HashMap<String, Labels>,
        delta: i64,
    ) {
        if existing.uid == incoming.uid {
            return;
        }
        let labels = node.labels();
        for term in &existing.required_anti_affinity {
            if term.matches(incoming, namespaces) {
                bump(&mut self.existing_anti, labels, &term.topology_key, delta);
            }
        }
        if !incoming.required_affinity.is_empty()
            && incoming
                .required_affinity
                .iter()
                .all(|t| t.matches(existing, namespaces))
        {
            for term in &incoming.required_affinity {
                bump(&mut self.affinity, labels, &term.topology_key, delta);
            }
        }
        for term in &incoming.required_anti_affinity {
            if term.matches(existing, namespaces) {
                bump(&mut self.anti, labels, &term.topology_key, delta);
            }
        }
    }

    /// The filter for one node: the pod's affinity, then its anti-affinity, then the
    /// anti-affinity of placed pods, as upstream checks them.
    pub fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
        let labels = node.labels();
        if !pod.required_affinity.is_empty() {
            let mut pods_exist = true;
            for term in &pod.required_affinity {
                match labels.get(&term.topology_key) {
                    Some(v) => pods_exist &= count(&self.affinity, &term.topology_key, v) > 0,
                    None => {
                        return Err(Rejection::new(
                            Plugin::InterPodAffinity,
                            Code::UnschedulableAndUnresolvable,
                            ERR_AFFINITY,
                        ));
                    }
                }
            }
            // The first pod of a group with affinity to itself may go anywhere its
            // topology keys exist, or it would wait forever.
            let first_of_group = self.affinity.is_empty()
                && pod.required_affinity.iter().all(|t| {
                    t.namespaces.contains(&pod.namespace) && t.selector.matches(pod.labels())
                });
            if !pods_exist && !first_of_group {
                return Err(Rejection::new(
                    Plugin::InterPodAffinity,
                    Code::UnschedulableAndUnresolvable,
                    ERR_AFFINITY,
                ));
            }
        }
        for term in &pod.required_anti_affinity {
            if let Some(v) = labels.get(&term.topology_key)
                && count(&self.anti, &term.topology_key, v) > 0
            {
                return Err(Rejection::new(
                    Plugin::InterPodAffinity,
                    Code::Unschedulable,
                    ERR_ANTI_AFFINITY,
                ));
            }
        }
        if !self.existing_anti.is_empty()
            && labels
                .iter()
                .any(|(k, v)| count(&self.existing_anti, k, v) > 0)
        {
            return Err(Rejection::new(
                Plugin::InterPodAffinity,
                Code::Unschedulable,
                ERR_EXISTING_ANTI_AFFINITY,
            ));
        }
        Ok(())
    }
}

fn count(counts: &Counts, key: &str, value: &str) -> i64 {
    counts
        .get(key)
        .and_then(|m| m.get(value))
        .copied()
        .unwrap_or(0)
}

fn bump(counts: &mut Counts, labels: &Labels, key: &str, delta: i64) {
    let Some(value) = labels.get(key) else {
        return;
    };
    let values = counts.entry(key.to_owned()).or_default();
    let n = values.entry(value.clone()).or_insert(0);
    *n += delta;
    if *n == 0 {
        values.remove(value);
        if values.is_empty() {
            counts.remove(key);
        }
    }
}
