//! PodDisruptionBudgets as preemption sees them: which potential victims could be evicted
//! without exceeding a budget's `status.disruptionsAllowed` (upstream's
//! `filterPodsWithPDBViolation`). Preemption honours budgets on a best-effort basis: it
//! prefers victims and nodes that violate none, but violates them when nothing else helps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::info::PodInfo;
use crate::selectors::Selector;

/// What preemption needs of one PodDisruptionBudget.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// The budget's namespace; it covers pods of that namespace only.
    pub namespace: String,
    /// Pods covered; a missing or empty selector covers none.
    pub selector: Selector,
    /// `status.disruptionsAllowed`.
    pub allowed: i32,
    /// Pods in `status.disruptedPods`: evictions the API server already counted.
    pub disrupted: HashSet<String>,
}

impl Budget {
    /// Parses a PodDisruptionBudget.
    pub fn new(pdb: &PodDisruptionBudget) -> Self {
        let status = pdb.status.as_ref();
        Self {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector: Selector::parse(pdb.spec.as_ref().and_then(|s| s.selector.as_ref())),
            allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    fn covers(&self, pod: &PodInfo) -> bool {
        // An empty selector selects nothing here, as upstream's preemption reads it.
        pod.namespace == self.namespace
            && !self.selector.is_empty()
            && self.selector.matches(pod.labels())
    }
}

/// The PodDisruptionBudgets of the cluster, by `namespace/name`.
#[derive(Clone, Debug, Default)]
pub struct DisruptionBudgets {
    budgets: BTreeMap<String, Arc<Budget>>,
}

impl DisruptionBudgets {
    /// Sets (or, with `None`, removes) the budget `key`; returns whether anything changed.
    pub fn set(&mut self, key: &str, budget: Option<Budget>) -> bool {
        match budget {
            Some(b) if self.budgets.get(key).is_some_and(|old| **old == b) => false,
            Some(b) => {
                self.budgets.insert(key.to_owned(), Arc::new(b));
                true
            }
            None => self.budgets.remove(key).is_some(),
        }
    }

    /// The budget `key`.
    pub fn get(&self, key: &str) -> Option<&Budget> {
        self.budgets.get(key).map(|b| &**b)
    }

    /// Keys of the budgets known.
    pub fn keys(&self) -> Vec<String> {
        self.budgets.keys().cloned().collect()
    }

    /// Splits `pods` (most important first) into those whose eviction would exceed a
    /// budget and those whose would not, keeping their order. Each covered pod spends
    /// one disruption of every budget covering it, in the order given; pods the API
    /// server already counted as disrupted spend nothing.
    pub fn split_violating(
        &self,
        pods: Vec<Arc<PodInfo>>,
    ) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
        let (mut violating, mut fine) = (Vec::new(), Vec::new());
        if self.budgets.is_empty() {
            return (violating, pods);
        }
        let mut left: HashMap<&str, i32> = HashMap::new();
        for pod in pods {
            let mut violates = false;
            // A pod without labels matches no selector that has requirements.
            if !pod.labels().is_empty() {
                let name = pod.pod.metadata.name.as_deref().unwrap_or_default();
                for (key, budget) in &self.budgets {
                    if !budget.covers(&pod) || budget.disrupted.contains(name) {
                        continue;
                    }
                    let allowed = left.entry(key).or_insert(budget.allowed);
                    *allowed -= 1;
                    violates |= *allowed < 0;
                }
            }
            if violates {
                violating.push(pod);
            } else {
                fine.push(pod);
            }
        }
        (violating, fine)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;
    use crate::info::PriorityClasses;

    fn pod(name: &str, namespace: &str, labels: serde_json::Value) -> Arc<PodInfo> {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": name}
        }))
        .unwrap();
        Arc::new(PodInfo::new(Arc::new(pod), &PriorityClasses::default()))
    }

    fn budget(namespace: &str, selector: serde_json::Value, allowed: i32) -> Budget {
        Budget::new(
            &serde_json::from_value(json!({
                "metadata": {"name": "b", "namespace": namespace},
                "spec": {"selector": selector},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
            }))
            .unwrap(),
        )
    }

    fn names(pods: &[Arc<PodInfo>]) -> Vec<&str> {
        pods.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn exhausted_budgets_are_violated_and_allowances_are_spent_in_order() {
        let mut budgets = DisruptionBudgets::default();
        budgets.set(
            "ns/web",
            Some(budget("ns", json!({"matchLabels": {"app": "web"}}), 1)),
        );
        budgets.set(
            "ns/db",
            Some(budget("ns", json!({"matchLabels": {"app": "db"}}), 0)),
        );
        let pods = vec![
            pod("web-1", "ns", json!({"app": "web"})),
            pod("db-1", "ns", json!({"app": "db"})),
            pod("web-2", "ns", json!({"app": "web"})),
            pod("other", "ns", json!({"app": "other"})),
            pod("bare", "ns", json!({})),
            pod("web-elsewhere", "other-ns", json!({"app": "web"})),
        ];
        let (violating, fine) = budgets.split_violating(pods);
        assert_eq!(names(&violating), ["ns/db-1", "ns/web-2"]);
        assert_eq!(
            names(&fine),
            ["ns/web-1", "ns/other", "ns/bare", "other-ns/web-elsewhere"]
        );
    }

    #[test]
    fn empty_selectors_cover_nothing_and_counted_disruptions_are_free() {
        let mut budgets = DisruptionBudgets::default();
        budgets.set("ns/all", Some(budget("ns", json!({}), 0)));
        let mut counted = budget("ns", json!({"matchLabels": {"app": "web"}}), 0);
        counted.disrupted.insert("web-1".into());
        budgets.set("ns/web", Some(counted));
        let (violating, fine) = budgets.split_violating(vec![
            pod("web-1", "ns", json!({"app": "web"})),
            pod("web-2", "ns", json!({"app": "web"})),
        ]);
        assert_eq!(names(&violating), ["ns/web-2"]);
        assert_eq!(names(&fine), ["ns/web-1"]);
    }

    #[test]
    fn unchanged_budgets_are_not_reported() {
        let mut budgets = DisruptionBudgets::default();
        let b = budget("ns", json!({"matchLabels": {"app": "web"}}), 1);
        assert!(budgets.set("ns/web", Some(b.clone())));
        assert!(!budgets.set("ns/web", Some(b)));
        assert!(budgets.set(
            "ns/web",
            Some(budget("ns", json!({"matchLabels": {"app": "web"}}), 0))
        ));
        assert_eq!(budgets.keys(), ["ns/web"]);
        assert!(budgets.set("ns/web", None));
        assert!(budgets.keys().is_empty());
    }
}
