//! ClusterRole aggregation: a ClusterRole with an `aggregationRule` gets as rules the union
//! of the rules of every ClusterRole its selectors match (admin gathers edit, which gathers
//! view, which gathers everything labelled `aggregate-to-view`).
//!
//! Upstream this is the clusterrole-aggregation controller in kube-controller-manager. Here
//! the API server's RBAC index task does it, after each change it publishes, until the
//! controllers crate takes it over: the write goes through the generic update path (so
//! watchers and `kubectl get clusterrole admin -o yaml` see the rules) but skips
//! authorization, as the controller's own `escalate` permission would allow it.

use std::sync::Arc;

use apimachinery::selector::label::LabelSelector;
use bytes::Bytes;
use serde_json::json;

use super::{PolicyRule, Role, Snapshot};
use crate::control_plane::ControlPlane;
use crate::negotiate::BodyFormat;
use crate::query::Query;
use crate::resource::Scope;

/// The field manager aggregation writes under.
const MANAGER: &str = "clusterrole-aggregation-controller";

/// The rules `role` aggregates from the ClusterRoles of `snapshot`: each matching role's
/// rules in name order, without repeats. `None` for roles without an aggregation rule.
pub fn aggregated_rules(snapshot: &Snapshot, role: &Role) -> Option<Vec<PolicyRule>> {
    let selectors = role.aggregation.as_ref()?;
    let mut sources: Vec<&Arc<Role>> = snapshot.cluster_roles().collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in selectors {
        let Ok(selector) = LabelSelector::from_json(selector) else {
            continue;
        };
        for source in &sources {
            if source.name == role.name || !selector.matches_map(&source.labels) {
                continue;
            }
            for rule in &source.rules {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

/// Writes the aggregated ClusterRoles whose stored rules differ from what they aggregate;
/// false if a write failed (the caller retries).
pub async fn reconcile(cp: &ControlPlane, snapshot: &Snapshot) -> bool {
    let mut stale: Vec<(Arc<Role>, Vec<PolicyRule>)> = snapshot
        .cluster_roles()
        .filter_map(|role| {
            let rules = aggregated_rules(snapshot, role)?;
            (rules != role.rules).then(|| (role.clone(), rules))
        })
        .collect();
    if stale.is_empty() {
        return true;
    }
    stale.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let Some(kind) = cp.registry().by_kind(super::GROUP, "ClusterRole") else {
        return true;
    };
    let mut ok = true;
    for (role, rules) in stale {
        let scope = Scope {
            cp,
            kind: kind.clone(),
            namespace: None,
            name: Some(role.name.clone()),
            subresource: None,
            duplicates: Vec::new(),
            custom: None,
            manager: MANAGER.to_owned(),
        };
        // The resourceVersion makes the patch conditional on what was aggregated from.
        let patch = json!({
            "metadata": {"resourceVersion": role.resource_version},
            "rules": rules,
        });
        let body = Bytes::from(patch.to_string());
        let result = scope
            .patch(&Query::default(), BodyFormat::MergePatch, &body)
            .await;
        // A role deleted meanwhile needs nothing; anything else is retried.
        if let Err(e) = result
            && e.code != 404
        {
            tracing::debug!(role = %role.name, error = %e.message, "aggregating ClusterRole rules");
            ok = false;
        }
    }
    ok
}
