//! Namespace deletion: a deleted namespace turns `Terminating` (new objects are refused),
//! everything in it is deleted through the normal delete path (so pods are deleted
//! gracefully and finalizers are honoured), and once nothing is left the namespace itself
//! goes. This is the namespace controller's job upstream; it runs beside the API server
//! here because it needs every stored kind, including ones no client can discover yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use apimachinery::object::ObjectExt;
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;
use crate::query::Query;
use crate::resource::Scope;

/// The finalizer a namespace carries in `spec.finalizers` until its content is gone.
pub const FINALIZER: &str = "kubernetes";

/// Namespaces that may not be deleted, as upstream's NamespaceLifecycle admission keeps them.
pub const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

/// Refuses the deletion of an immortal namespace with upstream's 403.
pub fn check_deletable(name: &str) -> Result<(), apimachinery::status::ApiError> {
    if IMMORTAL.contains(&name) {
        return Err(apimachinery::status::ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    Ok(())
}

/// True for the core Namespace kind.
pub fn is_namespace(kind: &apimachinery::kinds::KindInfo) -> bool {
    kind.group.is_empty() && kind.kind == "Namespace"
}

/// Deletes everything in a terminating namespace, then the namespace. Runs in the
/// background; safe to run twice.
pub fn spawn_finalizer(cp: Arc<ControlPlane>, namespace: String) {
    tokio::spawn(async move {
        if let Err(e) = finalize(&cp, &namespace).await {
            tracing::warn!(cluster = %cp.id, namespace, error = %e, "namespace cleanup failed");
        }
    });
}

async fn finalize(cp: &ControlPlane, namespace: &str) -> Result<(), store::Error> {
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        let registry = cp.registry();
        // One kind per storage prefix: several versions of a kind share their objects.
        let mut kinds = BTreeMap::new();
        for kind in registry
            .kinds()
            .iter()
            .filter(|k| k.namespaced && k.verbs.iter().any(|v| v == "deletecollection"))
        {
            kinds
                .entry(cp.store.prefix(kind, Some(namespace)))
                .or_insert_with(|| kind.clone());
        }
        for kind in kinds.values() {
            let scope = Scope {
                cp,
                kind: kind.clone(),
                namespace: Some(namespace.to_owned()),
                name: None,
                subresource: None,
                duplicates: Vec::new(),
                custom: registry.custom(kind),
                manager: "namespace-controller".into(),
            };
            if let Err(e) = scope
                .delete_collection(&Query::default(), &bytes::Bytes::new())
                .await
            {
                tracing::debug!(cluster = %cp.id, namespace, kind = %kind.kind, error = %e.message, "deleting namespace content");
            }
        }
        // What remains is held by finalizers or being deleted gracefully (pods whose node
        // has not finished them yet): wait for it, as upstream's namespace controller does.
        let mut remaining = 0;
        for prefix in kinds.keys() {
            remaining += cp.store.backend().count(prefix).await?;
        }
        if remaining == 0 {
            finish(cp, &registry, namespace).await?;
            if crate::server::SYSTEM_NAMESPACES.contains(&namespace) {
                // A system namespace that may be deleted (kube-node-lease) comes back at
                // once, as upstream's system-namespaces controller brings it back.
                recreate(cp, &registry, namespace).await;
            }
            return Ok(());
        }
        tracing::debug!(cluster = %cp.id, namespace, remaining, "namespace content remaining");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}

async fn recreate(cp: &ControlPlane, registry: &crate::control_plane::Registry, namespace: &str) {
    let Some(ns_kind) = registry.by_kind("", "Namespace") else {
        return;
    };
    let scope = Scope {
        cp,
        kind: ns_kind.clone(),
        namespace: None,
        name: None,
        subresource: None,
        duplicates: Vec::new(),
        custom: None,
        manager: "system-namespaces-controller".into(),
    };
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    match scope.create(&Query::default(), body).await {
        Ok(_) => tracing::info!(cluster = %cp.id, namespace, "system namespace recreated"),
        Err(e) if e.code == 409 => {}
        Err(e) => {
            tracing::warn!(cluster = %cp.id, namespace, error = %e.message, "recreating a system namespace failed")
        }
    }
}

async fn finish(
    cp: &ControlPlane,
    registry: &crate::control_plane::Registry,
    namespace: &str,
) -> Result<(), store::Error> {
    let Some(ns_kind) = registry.by_kind("", "Namespace") else {
        return Ok(());
    };
    let key = cp.store.key(&ns_kind, "", namespace);
    for _ in 0..8 {
        let Some(ns) = cp
            .store
            .get(&key)
            .await
            .map_err(|e| store::Error::Backend(e.message))?
        else {
            return Ok(());
        };
        let rev = ns.resource_version().parse().unwrap_or(0);
        let finalizers: Vec<Value> = ns
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .map(|f| f.iter().filter(|v| *v != FINALIZER).cloned().collect())
            .unwrap_or_default();
        let result = if finalizers.is_empty() && ns.finalizers().is_empty() {
            cp.store.delete(&key, Some(rev)).await.map(|_| ())
        } else {
            let mut updated = ns.clone();
            updated["spec"]["finalizers"] = json!(finalizers);
            cp.store.update(&key, &updated, rev).await.map(|_| ())
        };
        match result {
            Ok(()) | Err(store::Error::NotFound(_)) => return Ok(()),
            Err(store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
