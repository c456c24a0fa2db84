//! Plumbing shared by the Job, CronJob, StatefulSet and DaemonSet loops: informer caches
//! that also feed the work queue, owner lookups, label selectors, expectations and
//! per-key error backoff.
//!
//! Each loop is built on kube-runtime's `applier` (the engine under `Controller`) so that
//! the caches of the secondary kinds (pods, nodes, revisions) are the same reflectors
//! whose events enqueue the owners: one watch per kind and loop, and reconciles read the
//! caches instead of listing the API.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, applier};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, reflector as reflect};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::FIELD_MANAGER;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The object cannot be reconciled as written (the loop waits for a change).
    #[error("invalid object: {0}")]
    Invalid(String),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// An informer for `K`: its cache and the stream of objects it touched (applied or
/// deleted). The stream must be polled for the cache to fill.
pub(crate) fn informer<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, impl Stream<Item = Arc<K>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflect(writer, watcher(api, config))
        .default_backoff()
        .touched_objects()
        .filter_map(|event| async move {
            match event {
                Ok(obj) => Some(Arc::new(obj)),
                Err(e) => {
                    tracing::debug!(error = %e, "watch failed; retrying");
                    None
                }
            }
        });
    (reader, stream)
}

/// Runs `reconcile` over `store` for every key `queue` yields (and every requeue it asks
/// for), one worker per key at a time, until the queue ends. Errors requeue the key with a
/// per-key exponential backoff (5 ms doubling up to 5 min, as upstream's rate limiter).
pub(crate) async fn run_loop<K, C, F, Fut>(
    name: &'static str,
    store: Store<K>,
    queue: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    ctx: Arc<C>,
    reconcile: F,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let failures: Arc<Mutex<HashMap<ObjectRef<K>, u32>>> = Arc::default();
    let reconcile = Arc::new(reconcile);
    let wrapped = {
        let failures = failures.clone();
        move |obj: Arc<K>, ctx: Arc<C>| {
            let reconcile = reconcile.clone();
            let failures = failures.clone();
            let key = ObjectRef::from_obj(obj.as_ref());
            Box::pin(async move {
                let result = tokio::spawn(reconcile(obj, ctx))
                    .await
                    .unwrap_or_else(|e| Err(Error::Invalid(format!("reconcile panicked: {e}"))));
                if result.is_ok() {
                    failures.lock().expect("failures lock").remove(&key);
                }
                result
            })
        }
    };
    let policy = move |obj: Arc<K>, error: &Error, _ctx: Arc<C>| {
        let key = ObjectRef::from_obj(obj.as_ref());
        let mut failures = failures.lock().expect("failures lock");
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let delay = Duration::from_millis(5)
            .saturating_mul(1u32 << (*n - 1).min(20))
            .min(Duration::from_secs(300));
        match error {
            Error::Api(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(controller = name, object = %obj.name_any(), "conflict; retrying")
            }
            _ => {
                tracing::warn!(controller = name, object = %obj.name_any(), error = %error, "reconcile failed")
            }
        }
        Action::requeue(delay)
    };
    applier(
        wrapped,
        policy,
        ctx,
        store,
        queue.map(Ok::<_, std::convert::Infallible>),
        Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::trace!(controller = name, error = %e, "applier");
        }
    })
    .await;
}

/// The owner `K` (by controller reference, matching kind and API group) of `meta`, in
/// `meta`'s namespace.
pub(crate) fn controller_key<K: Resource<DynamicType = ()>>(
    meta: &ObjectMeta,
) -> Option<ObjectRef<K>> {
    let owner = crate::pods::controller_of(meta)?;
    is_kind::<K>(owner).then(|| {
        let key = ObjectRef::new(&owner.name);
        match &meta.namespace {
            Some(ns) => key.within(ns),
            None => key,
        }
    })
}

/// Whether `owner` refers to kind `K` (any version of its group).
pub(crate) fn is_kind<K: Resource<DynamicType = ()>>(owner: &OwnerReference) -> bool {
    let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    owner.kind == K::kind(&()) && group == K::group(&())
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions). An empty
/// selector matches everything, as upstream's `LabelSelectorAsSelector`.
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// The owners to sync for an event on `obj`: its controller of kind `K`, or, when it has
/// none, every `K` in its namespace whose selector matches it (candidates for adoption).
pub(crate) fn owners_to_sync<K, C>(
    obj: &C,
    store: &Store<K>,
    selector_of: impl Fn(&K) -> Option<&LabelSelector>,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
    C: Resource,
{
    let meta = obj.meta();
    if let Some(owner) = crate::pods::controller_of(meta) {
        return controller_key::<K>(meta)
            .filter(|_| is_kind::<K>(owner))
            .into_iter()
            .collect();
    }
    if meta.deletion_timestamp.is_some() {
        return Vec::new();
    }
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace == meta.namespace)
        .filter(|o| {
            selector_of(o)
                .is_some_and(|s| !selector_is_empty(s) && selector_matches(s, meta.labels.as_ref()))
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Whether `selector` selects nothing meaningful (no requirements at all).
pub(crate) fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Adopts orphans and releases strays, as upstream's `ControllerRefManager`: of
/// `candidates` (objects in the owner's namespace), those controlled by `owner` that still
/// match `selector` and the orphans that match (adopted unless the owner is being deleted)
/// are returned; owned objects that no longer match are released.
pub(crate) async fn claim<K, O>(
    api: &Api<K>,
    owner: &O,
    selector: &LabelSelector,
    candidates: impl IntoIterator<Item = Arc<K>>,
) -> Result<Vec<Arc<K>>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    O: Resource<DynamicType = ()>,
{
    let owner_uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut claimed = Vec::new();
    for obj in candidates {
        let meta = obj.meta();
        let matches = selector_matches(selector, meta.labels.as_ref());
        match crate::pods::controller_of(meta) {
            Some(r) if r.uid == owner_uid => {
                if matches || deleting {
                    claimed.push(obj);
                } else {
                    release(api, &obj, &owner_uid).await?;
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && meta.deletion_timestamp.is_none() {
                    let adopted = adopt(api, &obj, crate::pods::controller_ref(owner)).await?;
                    claimed.push(Arc::new(adopted));
                }
            }
        }
    }
    Ok(claimed)
}

async fn adopt<K>(api: &Api<K>, obj: &K, owner: OwnerReference) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut refs = obj.meta().owner_references.clone().unwrap_or_default();
    refs.push(owner);
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": obj.meta().resource_version,
    }});
    Ok(api
        .patch(&obj.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?)
}

async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let refs: Vec<_> = obj
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect();
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": obj.meta().resource_version,
    }});
    match api
        .patch(&obj.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Patch parameters carrying the controllers' field manager.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Outstanding writes a loop has made but its caches have not shown yet, per owner key,
/// as upstream's `ControllerExpectations` (by name/uid, as its `UIDTrackingExpectations`).
/// While some are outstanding the owner is not synced again, so it does not create or
/// delete twice; entries expire after five minutes in case an event was missed.
#[derive(Default)]
pub(crate) struct Expectations {
    pending: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

impl Expectations {
    /// Expects the cache to show `token` (for example `create/<name>`) for `key`.
    pub(crate) fn expect(&self, key: &str, token: String) {
        let mut pending = self.pending.lock().expect("expectations lock");
        pending
            .entry(key.to_owned())
            .or_default()
            .insert(token, Instant::now());
    }

    /// Drops an expectation whose write failed.
    pub(crate) fn forget(&self, key: &str, token: &str) {
        let mut pending = self.pending.lock().expect("expectations lock");
        if let Some(tokens) = pending.get_mut(key) {
            tokens.remove(token);
        }
    }

    /// Whether `token` of `key` is outstanding (expected, not yet observed, not expired).
    pub(crate) fn is_pending(&self, key: &str, token: &str) -> bool {
        let pending = self.pending.lock().expect("expectations lock");
        pending
            .get(key)
            .and_then(|tokens| tokens.get(token))
            .is_some_and(|since| since.elapsed() < EXPECTATIONS_TTL)
    }

    /// Drops every expectation of `key` (the owner is gone).
    pub(crate) fn clear(&self, key: &str) {
        self.pending.lock().expect("expectations lock").remove(key);
    }

    /// Whether every expectation of `key` has been observed; `observed` says whether the
    /// cache shows a token. Observed and expired tokens are dropped.
    pub(crate) fn satisfied(&self, key: &str, observed: impl Fn(&str) -> bool) -> bool {
        let mut pending = self.pending.lock().expect("expectations lock");
        let Some(tokens) = pending.get_mut(key) else {
            return true;
        };
        tokens.retain(|token, since| since.elapsed() < EXPECTATIONS_TTL && !observed(token));
        let done = tokens.is_empty();
        if done {
            pending.remove(key);
        }
        done
    }
}

/// The resourceVersions of an owner's own status writes, so that a reconcile does not act on
/// a cached copy older than what it wrote itself (kumo's resourceVersions are store
/// revisions, ordered integers).
#[derive(Default)]
pub(crate) struct Written {
    versions: Mutex<HashMap<String, (String, u64)>>,
}

impl Written {
    /// Records that `obj` (as the API server returned it) was written.
    pub(crate) fn record<K: Resource>(&self, key: &str, obj: &K) {
        let meta = obj.meta();
        if let (Some(uid), Some(rv)) = (
            meta.uid.clone(),
            meta.resource_version
                .as_deref()
                .and_then(|v| v.parse().ok()),
        ) {
            self.versions
                .lock()
                .expect("written lock")
                .insert(key.to_owned(), (uid, rv));
        }
    }

    /// Whether the cached `obj` is older than the last write recorded for `key`.
    pub(crate) fn is_stale<K: Resource>(&self, key: &str, obj: &K) -> bool {
        let meta = obj.meta();
        let versions = self.versions.lock().expect("written lock");
        let Some((uid, written)) = versions.get(key) else {
            return false;
        };
        let cached: Option<u64> = meta
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok());
        meta.uid.as_deref() == Some(uid.as_str()) && cached.is_some_and(|c| c < *written)
    }
}

/// `namespace/name` of an object, the key of expectations.
pub(crate) fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Records an Event about `obj` in the background (events are best effort).
pub(crate) fn event<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    let recorder = recorder.clone();
    let reference = obj.object_ref(&());
    let event = KubeEvent {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    });
}

/// The current time.
pub(crate) fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Whether an API error is a 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is a 409 AlreadyExists.
pub(crate) fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Fowler–Noll–Vo 1a, 32 bits: the hash upstream names pod-template hashes by.
pub(crate) fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Upstream's `rand.SafeEncodeString`: every character mapped onto an alphabet without
/// vowels or look-alikes, so hashes never spell words.
pub(crate) fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "a")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "c")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")]))
        ));
        assert!(!selector_matches(&sel, None));
        assert!(selector_matches(&LabelSelector::default(), None));
    }

    #[test]
    fn hashes_and_encoding() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(safe_encode("0123"), "4567");
    }

    #[test]
    fn expectations_wait_for_observation() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a", |_| false));
        e.expect("ns/a", "create/p1".into());
        assert!(!e.satisfied("ns/a", |_| false));
        assert!(e.satisfied("ns/a", |t| t == "create/p1"));
        e.expect("ns/a", "create/p2".into());
        e.forget("ns/a", "create/p2");
        assert!(e.satisfied("ns/a", |_| false));
    }
}
