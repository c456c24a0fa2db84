//! Priority admission, as upstream's `Priority` plugin: a new pod's `priorityClassName`
//! (or the cluster's `globalDefault` class) resolves to `spec.priority` and
//! `spec.preemptionPolicy`; an unknown class is refused. The two system classes exist in
//! every cluster (bootstrap creates them).

use apimachinery::status::ApiError;
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;

/// The built-in classes: (name, value, description).
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The PriorityClass objects bootstrap creates.
pub fn system_class_objects() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "description": description,
                "preemptionPolicy": "PreemptLowerPriority",
            })
        })
        .collect()
}

/// Resolves the priority of a pod being created; other kinds pass untouched.
pub async fn admit_pod(cp: &ControlPlane, pod: &mut Value) -> Result<(), ApiError> {
    let class_name = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let class = match &class_name {
        Some(name) => match find_class(cp, name).await? {
            Some(class) => Some(class),
            None => {
                return Err(ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: no PriorityClass with name {name} was found",
                    pod_name(pod)
                )));
            }
        },
        None => global_default(cp).await?,
    };
    let (value, policy, name) = match &class {
        Some(c) => (
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_owned(),
            c.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        None => (0, "PreemptLowerPriority".to_owned(), None),
    };
    let spec = &mut pod["spec"];
    if let Some(given) = spec.get("priority").and_then(Value::as_i64)
        && given != value
    {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name",
            pod_name(pod)
        )));
    }
    spec["priority"] = json!(value);
    if spec.get("preemptionPolicy").is_none_or(Value::is_null) {
        spec["preemptionPolicy"] = json!(policy);
    }
    if class_name.is_none()
        && let Some(name) = name
    {
        spec["priorityClassName"] = json!(name);
    }
    Ok(())
}

fn pod_name(pod: &Value) -> String {
    let meta = pod.get("metadata");
    meta.and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            meta.and_then(|m| m.get("generateName"))
                .and_then(Value::as_str)
        })
        .unwrap_or("")
        .to_owned()
}

/// A class by name: from the watch cache when it knows it, else from the store (a class
/// created a moment ago).
async fn find_class(cp: &ControlPlane, name: &str) -> Result<Option<Value>, ApiError> {
    let Some(kind) = cp.registry().by_kind("scheduling.k8s.io", "PriorityClass") else {
        return Ok(None);
    };
    let key = cp.store.key(&kind, "", name);
    if let Some(found) = cp.cache(&kind).peek(&key).flatten() {
        return Ok(Some(found));
    }
    cp.store.get(&key).await
}

/// The class marked `globalDefault`, if any (the lowest value wins a tie, as upstream).
async fn global_default(cp: &ControlPlane) -> Result<Option<Value>, ApiError> {
    let Some(kind) = cp.registry().by_kind("scheduling.k8s.io", "PriorityClass") else {
        return Ok(None);
    };
    let prefix = cp.store.prefix(&kind, None);
    let cache = cp.cache(&kind);
    let listed = cache
        .list(&prefix, 0, 0, |c| {
            c.get("globalDefault") == Some(&json!(true))
        })
        .await;
    let classes = match listed {
        Some((items, _, _)) => items,
        None => return Ok(None),
    };
    Ok(classes
        .into_iter()
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
        .map(std::sync::Arc::unwrap_or_clone))
}
