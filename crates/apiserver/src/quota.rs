//! ResourceQuota admission (upstream's `ResourceQuota` admission plugin): a create in a
//! namespace is checked against every quota there that applies to it, and charged to their
//! `status.used` in the same request.
//!
//! The charge is a compare-and-swap on each quota's revision, so concurrent creates cannot
//! overshoot a limit together: a lost race reads the quota again from the store and
//! evaluates anew. Quotas another write changed keep the charges already made to the others.
//! The resource quota controller later recomputes usage from what exists, which also returns
//! charges of creates that failed after admission.

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use apimachinery::quota::{self, ResourceList};
use apimachinery::status::ApiError;
use serde_json::Value;

use crate::control_plane::ControlPlane;
use crate::storage::store_error;

/// Resources quota admission ignores, as upstream's default configuration does.
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// How many times admission re-reads quotas that changed under it.
const MAX_ATTEMPTS: usize = 10;

/// Checks the creation of `obj` (of `kind`, already defaulted and validated) against the
/// quotas of its namespace, and charges them unless `dry_run`.
pub async fn admit_create(
    cp: &ControlPlane,
    kind: &KindInfo,
    obj: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    if !kind.namespaced
        || IGNORED
            .iter()
            .any(|(g, r)| kind.group == *g && kind.plural == *r)
    {
        return Ok(());
    }
    let Some(rq_kind) = cp.registry().by_kind("", "ResourceQuota") else {
        return Ok(());
    };
    let prefix = cp.store.prefix(&rq_kind, Some(obj.namespace()));
    // The watch cache answers the common case (no quota) without a store read.
    let mut quotas = match cp
        .cache(&rq_kind)
        .list(&prefix, 0, 0, |q| q.pointer("/status/hard").is_some())
        .await
    {
        Some((items, _, _)) => items
            .into_iter()
            .map(std::sync::Arc::unwrap_or_clone)
            .collect(),
        None => read_quotas(cp, &prefix).await?,
    };
    let now = jiff::Timestamp::now();
    for _ in 0..MAX_ATTEMPTS {
        if quotas.is_empty() {
            return Ok(());
        }
        let mut charges = Vec::new();
        for q in &quotas {
            if let Some(used) = evaluate(kind, q, obj, now)? {
                charges.push((q, used));
            }
        }
        if dry_run || charges.is_empty() {
            return Ok(());
        }
        let mut lost = Vec::new();
        for (q, used) in charges {
            let key = cp.store.key(&rq_kind, q.namespace(), q.name());
            let rev = crate::resource::parse_rv(q.resource_version())?.unwrap_or(0);
            let mut charged = q.clone();
            charged["status"]["used"] = quota::to_json(&used);
            match cp.store.update(&key, &charged, rev).await {
                Ok(_) => {}
                Err(store::Error::Conflict { .. }) => lost.push(key),
                // A quota deleted meanwhile limits nothing.
                Err(store::Error::NotFound(_)) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        quotas.clear();
        for key in lost {
            if let Some(q) = cp.store.get(&key).await? {
                quotas.push(q);
            }
        }
    }
    Err(ApiError::new(
        500,
        "InternalError",
        "Internal error occurred: resource quota evaluation timed out",
    ))
}

/// Every quota under `prefix`, from the store.
async fn read_quotas(cp: &ControlPlane, prefix: &str) -> Result<Vec<Value>, ApiError> {
    let page = cp
        .store
        .backend()
        .range(store::RangeRequest {
            prefix: prefix.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(store_error)?;
    page.kvs.iter().map(crate::storage::decode).collect()
}

/// Checks `obj` against one quota: `None` when the quota is not affected, else its new
/// `status.used`; a quota the object would exceed is a 403.
fn evaluate(
    kind: &KindInfo,
    q: &Value,
    obj: &Value,
    now: jiff::Timestamp,
) -> Result<Option<ResourceList>, ApiError> {
    let (group, resource) = (kind.group.as_str(), kind.plural.as_str());
    if !quota::quota_matches(q, group, resource, obj) {
        return Ok(None);
    }
    let forbidden = |why: String| {
        let what = kind.qualified_resource();
        ApiError::forbidden(if obj.name().is_empty() {
            format!("{what} is forbidden: {why}")
        } else {
            format!("{what} \"{}\" is forbidden: {why}", obj.name())
        })
    };
    let hard = quota::parse_list(q.pointer("/status/hard"));
    let used = quota::parse_list(q.pointer("/status/used"));
    let restricted = quota::matching_resources(group, resource, hard.keys());
    if group.is_empty() && resource == "pods" {
        quota::pod_constraints(obj, &restricted)
            .map_err(|e| forbidden(format!("failed quota: {}: {e}", q.name())))?;
    }
    let mut unknown: Vec<&str> = restricted
        .iter()
        .filter(|r| !used.contains_key(*r))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(forbidden(format!(
            "status unknown for quota: {}, resources: {}",
            q.name(),
            unknown.join(",")
        )));
    }
    let requested: ResourceList = quota::usage(group, resource, obj, now)
        .into_iter()
        .filter(|(k, _)| hard.contains_key(k))
        .collect();
    if requested.is_empty() {
        return Ok(None);
    }
    let mut new_used = used.clone();
    let mut exceeded = Vec::new();
    for (name, amount) in &requested {
        let total = new_used
            .get(name)
            .copied()
            .unwrap_or(apimachinery::quantity::Quantity::ZERO)
            + *amount;
        if hard.get(name).is_some_and(|limit| total > *limit) {
            exceeded.push(name.clone());
        }
        new_used.insert(name.clone(), total);
    }
    if !exceeded.is_empty() {
        let mask = |list: &ResourceList| -> ResourceList {
            list.iter()
                .filter(|(k, _)| exceeded.contains(k))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        return Err(forbidden(format!(
            "exceeded quota: {}, requested: {}, used: {}, limited: {}",
            q.name(),
            quota::pretty(&mask(&requested)),
            quota::pretty(&mask(&used)),
            quota::pretty(&mask(&hard)),
        )));
    }
    Ok(Some(new_used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods_kind() -> KindInfo {
        apimachinery::kinds::builtin()
            .into_iter()
            .find(|k| k.group.is_empty() && k.kind == "Pod")
            .expect("pod kind")
    }

    #[test]
    fn charges_and_rejects_with_upstream_messages() {
        let kind = pods_kind();
        let q = json!({"metadata": {"name": "q", "namespace": "ns"}, "status": {
            "hard": {"pods": "2", "requests.cpu": "1"},
            "used": {"pods": "1", "requests.cpu": "500m"},
        }});
        let pod = |cpu: &str| {
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}})
        };
        let used = evaluate(&kind, &q, &pod("250m"), jiff::Timestamp::now())
            .ok()
            .flatten()
            .expect("admitted");
        assert_eq!(quota::pretty(&used), "pods=2,requests.cpu=750m");
        let err = evaluate(&kind, &q, &pod("600m"), jiff::Timestamp::now()).err();
        assert_eq!(
            err.map(|e| (e.code, e.message)),
            Some((
                403,
                "pods \"p\" is forbidden: exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1".to_owned()
            ))
        );
        let no_requests =
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let err = evaluate(&kind, &q, &no_requests, jiff::Timestamp::now()).err();
        assert_eq!(
            err.map(|e| e.message),
            Some(
                "pods \"p\" is forbidden: failed quota: q: must specify requests.cpu for: c"
                    .to_owned()
            )
        );
        let unknown = json!({"metadata": {"name": "q"}, "status": {"hard": {"pods": "2"}}});
        let err = evaluate(&kind, &unknown, &pod("1"), jiff::Timestamp::now()).err();
        assert_eq!(
            err.map(|e| e.message),
            Some(
                "pods \"p\" is forbidden: status unknown for quota: q, resources: pods".to_owned()
            )
        );
    }
}
