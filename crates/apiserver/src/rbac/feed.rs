//! The background task that keeps a cluster's RBAC snapshot current: it loads the four RBAC
//! collections from their watch caches, follows their events, and after each burst of
//! changes publishes a new snapshot and brings aggregated ClusterRoles up to date.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{SelectAll, StreamExt};
use store::Revision;
use tokio::sync::watch;

use super::{Binding, KINDS, Role, Snapshot};
use crate::control_plane::ControlPlane;

/// How long to wait before retrying a failed aggregation write.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the task; it ends when the control plane is dropped.
pub(super) fn spawn(cp: Weak<ControlPlane>, tx: watch::Sender<Arc<Snapshot>>) {
    tokio::spawn(async move {
        loop {
            match follow(&cp, &tx).await {
                Ok(()) => return,
                Err(e) => {
                    if cp.strong_count() == 0 {
                        return;
                    }
                    tracing::warn!(error = %e, "RBAC index feed ended; reloading");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
}

/// The objects of the four kinds, by store key.
#[derive(Default)]
struct Objects {
    roles: [BTreeMap<String, Arc<Role>>; 2],
    bindings: [BTreeMap<String, Arc<Binding>>; 2],
    revisions: [Revision; 4],
}

impl Objects {
    fn put(&mut self, idx: usize, key: String, obj: &serde_json::Value) {
        if idx < 2 {
            self.roles[idx].insert(key, Arc::new(Role::from_object(obj)));
        } else {
            self.bindings[idx - 2].insert(key, Arc::new(Binding::from_object(obj)));
        }
    }

    fn remove(&mut self, idx: usize, key: &str) {
        if idx < 2 {
            self.roles[idx].remove(key);
        } else {
            self.bindings[idx - 2].remove(key);
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::new(
            self.roles.iter().flat_map(|m| m.values().cloned()),
            self.bindings.iter().flat_map(|m| m.values().cloned()),
            self.revisions,
        )
    }
}

/// Loads and follows until the feed fails (`Err`) or the control plane is gone (`Ok`).
async fn follow(
    weak: &Weak<ControlPlane>,
    tx: &watch::Sender<Arc<Snapshot>>,
) -> Result<(), String> {
    let Some(cp) = weak.upgrade() else {
        return Ok(());
    };
    let registry = cp.registry();
    let mut caches = Vec::new();
    for kind in KINDS {
        let info = registry
            .by_kind(super::GROUP, kind)
            .ok_or_else(|| format!("{kind} is not a served kind"))?;
        caches.push((cp.cache(&info), cp.store.prefix(&info, None)));
    }
    drop(cp);
    let mut objects = Objects::default();
    let mut streams = SelectAll::new();
    for (idx, (cache, prefix)) in caches.iter().enumerate() {
        let (items, revision, _) = cache
            .list(prefix, 0, 0, |_| true)
            .await
            .ok_or_else(|| format!("the {} cache did not load", KINDS[idx]))?;
        for obj in &items {
            let ns = obj.pointer("/metadata/namespace").and_then(|v| v.as_str());
            let name = obj
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let key = match ns {
                Some(ns) if idx % 2 == 1 => format!("{prefix}{ns}/{name}"),
                _ => format!("{prefix}{name}"),
            };
            objects.put(idx, key, obj);
        }
        objects.revisions[idx] = revision;
        let events = cache
            .watch(revision)
            .await
            .ok_or_else(|| format!("the {} cache lost its history", KINDS[idx]))?;
        streams.push(events.map(move |e| (idx, e)).boxed());
    }
    // The event streams do not keep the caches alive; the control plane does.
    drop(caches);
    let mut retry_at = publish(weak, tx, &objects).await;
    loop {
        let next = match retry_at {
            Some(at) => tokio::select! {
                next = streams.next() => Some(next),
                _ = tokio::time::sleep_until(at) => None,
            },
            None => Some(streams.next().await),
        };
        let mut next = match next {
            // Time to retry a failed aggregation.
            None => {
                retry_at = publish(weak, tx, &objects).await;
                continue;
            }
            Some(None) => return Err("the watch feeds ended".into()),
            Some(Some(event)) => Some(event),
        };
        // Apply the whole burst of ready events, then publish once.
        while let Some((idx, event)) = next {
            let change = event.map_err(|e| e.to_string())?;
            match &change.object {
                Some(obj) => objects.put(idx, change.key.clone(), obj),
                None => objects.remove(idx, &change.key),
            }
            objects.revisions[idx] = objects.revisions[idx].max(change.revision);
            next = streams.next().now_or_never().flatten();
        }
        if weak.strong_count() == 0 {
            return Ok(());
        }
        retry_at = publish(weak, tx, &objects).await;
    }
}

/// Publishes a snapshot of `objects` and writes aggregated ClusterRoles whose rules are
/// stale; returns when to retry if a write failed.
async fn publish(
    weak: &Weak<ControlPlane>,
    tx: &watch::Sender<Arc<Snapshot>>,
    objects: &Objects,
) -> Option<tokio::time::Instant> {
    let snapshot = Arc::new(objects.snapshot());
    tx.send_replace(snapshot.clone());
    let cp = weak.upgrade()?;
    let ok = super::aggregation::reconcile(&cp, &snapshot).await;
    (!ok).then(|| tokio::time::Instant::now() + RETRY)
}
