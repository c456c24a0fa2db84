//! Storage classes at admission, as upstream's `DefaultStorageClass` plugin: a new
//! PersistentVolumeClaim that names no class gets the cluster's default one. Every
//! cluster starts with a default `local-path` class (bootstrap creates it), whose volumes
//! the `local_path` controller provisions on the node's disk, as in k3s.

use apimachinery::status::ApiError;
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;

/// The annotation that marks the default class.
pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// Its beta spelling, still honoured upstream.
const IS_DEFAULT_CLASS_BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The claim annotation that named a class before `spec.storageClassName` existed.
const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// The StorageClass bootstrap creates when absent: node-local directories, provisioned
/// once a pod using the claim is scheduled.
pub fn local_path_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "local-path",
            "annotations": {IS_DEFAULT_CLASS: "true"},
        },
        "provisioner": "kumo.dev/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

/// Sets `spec.storageClassName` of a claim being created that has no class (neither the
/// field, even empty, nor the beta annotation) to the default class, if there is one.
pub async fn admit_claim(cp: &ControlPlane, claim: &mut Value) -> Result<(), ApiError> {
    let has_class = claim
        .pointer("/spec/storageClassName")
        .is_some_and(|c| !c.is_null())
        || claim
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(BETA_CLASS_ANNOTATION))
            .is_some();
    if has_class {
        return Ok(());
    }
    let Some(default) = default_class(cp).await? else {
        return Ok(());
    };
    if let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("storageClassName".into(), json!(default));
    }
    Ok(())
}

/// The name of the default class: of several, the newest wins (then the first by name),
/// as upstream decides since 1.26.
async fn default_class(cp: &ControlPlane) -> Result<Option<String>, ApiError> {
    let Some(kind) = cp.registry().by_kind("storage.k8s.io", "StorageClass") else {
        return Ok(None);
    };
    let prefix = cp.store.prefix(&kind, None);
    let classes: Vec<Value> = match cp.cache(&kind).list(&prefix, 0, 0, is_default).await {
        Some((items, _, _)) => items
            .into_iter()
            .map(std::sync::Arc::unwrap_or_clone)
            .collect(),
        None => {
            let range = cp
                .store
                .backend()
                .range(store::RangeRequest {
                    prefix,
                    ..Default::default()
                })
                .await
                .map_err(crate::storage::store_error)?;
            range
                .kvs
                .iter()
                .filter_map(|kv| crate::storage::decode(kv).ok())
                .filter(is_default)
                .collect()
        }
    };
    Ok(pick_default(&classes))
}

fn is_default(class: &Value) -> bool {
    let annotations = class.pointer("/metadata/annotations");
    [IS_DEFAULT_CLASS, IS_DEFAULT_CLASS_BETA]
        .iter()
        .any(|a| annotations.and_then(|m| m.get(*a)).and_then(Value::as_str) == Some("true"))
}

fn pick_default(classes: &[Value]) -> Option<String> {
    let created = |c: &Value| {
        c.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let name = |c: &Value| {
        c.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    classes
        .iter()
        .min_by(|a, b| {
            created(b)
                .cmp(&created(a))
                .then_with(|| name(a).cmp(&name(b)))
        })
        .map(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, created: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created,
            "annotations": {IS_DEFAULT_CLASS: "true"}}})
    }

    #[test]
    fn newest_default_wins_then_name() {
        let older = class("older", "2024-01-01T00:00:00Z");
        let newer = class("newer", "2024-06-01T00:00:00Z");
        let twin = class("a-twin", "2024-06-01T00:00:00Z");
        assert_eq!(
            pick_default(std::slice::from_ref(&older)).as_deref(),
            Some("older")
        );
        assert_eq!(
            pick_default(&[older.clone(), newer.clone()]).as_deref(),
            Some("newer")
        );
        assert_eq!(
            pick_default(&[newer, twin, older]).as_deref(),
            Some("a-twin")
        );
        assert_eq!(pick_default(&[]), None);
    }

    #[test]
    fn only_true_marks_the_default() {
        assert!(is_default(&class("x", "")));
        let beta = json!({"metadata": {"annotations": {IS_DEFAULT_CLASS_BETA: "true"}}});
        assert!(is_default(&beta));
        let off = json!({"metadata": {"annotations": {IS_DEFAULT_CLASS: "false"}}});
        assert!(!is_default(&off));
    }
}
