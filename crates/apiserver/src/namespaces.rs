//! Namespace deletion: a deleted namespace turns `Terminating` (new objects are refused),
//! everything in it is deleted, then the namespace itself goes. This is the namespace
//! controller's job upstream; it runs here until kumo's controllers arrive, and moves there.

use std::collections::BTreeSet;
use std::sync::Arc;

use apimachinery::object::ObjectExt;
use serde_json::{Value, json};
use store::RangeRequest;

use crate::control_plane::ControlPlane;

/// The finalizer a namespace carries in `spec.finalizers` until its content is gone.
pub const FINALIZER: &str = "kubernetes";

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
    let registry = cp.registry();
    let mut prefixes = BTreeSet::new();
    for kind in registry.kinds().iter().filter(|k| k.namespaced) {
        prefixes.insert(cp.store.prefix(kind, Some(namespace)));
    }
    // Two passes: a create admitted just before the namespace turned Terminating (admission
    // reads a cache) lands after the first.
    for pass in 0..2 {
        if pass > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        delete_content(cp, &prefixes).await?;
    }
    finish(cp, &registry, namespace).await
}

async fn delete_content(
    cp: &ControlPlane,
    prefixes: &BTreeSet<String>,
) -> Result<(), store::Error> {
    for prefix in prefixes {
        loop {
            let page = cp
                .store
                .backend()
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    limit: 500,
                    ..Default::default()
                })
                .await?;
            for kv in &page.kvs {
                match cp.store.backend().delete(&kv.key, None).await {
                    Ok(_) | Err(store::Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if !page.more {
                break;
            }
        }
    }
    Ok(())
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
