//! The resource quota controller (upstream's pkg/controller/resourcequota): publishes each
//! ResourceQuota's `status.hard` (its `spec.hard`) and `status.used`, computed from what
//! exists in the namespace.
//!
//! Creates are charged by quota admission in the API server as they happen; this loop
//! computes usage from its caches when a quota is new or its limits change, *replenishes*
//! when charged objects go away (deleted, or pods reaching a terminal phase), and resyncs
//! every quota every five minutes (upstream's `--resource-quota-sync-period`). Pods,
//! services, claims, config maps, secrets, replication controllers and quotas are cached;
//! `count/<resource>.<group>` of other kinds is counted with a LIST when the quota syncs,
//! and such quotas resync every 30 s.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apimachinery::quantity::Quantity;
use apimachinery::quota::{self, ResourceList};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota,
    ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{self, Action, applier};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::{Context, FIELD_MANAGER};

/// Full resync period of every quota.
const RESYNC: Duration = Duration::from_secs(300);
/// Resync period of quotas counting kinds this loop does not cache.
const UNCACHED_RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A cached kind that quotas charge.
struct Tracked {
    group: &'static str,
    plural: &'static str,
    store: Store<DynamicObject>,
}

struct State {
    client: Client,
    tracked: Vec<Tracked>,
    /// ApiResources of uncached kinds by `<plural>.<group>`, from discovery.
    uncached: Mutex<HashMap<String, ApiResource>>,
}

/// Runs the loop until the future is dropped.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (quotas, quota_writer) = reflector::store::<ResourceQuota>();
    let quota_events = reflector::reflector(
        quota_writer,
        watcher(
            Api::<ResourceQuota>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .filter_map(|event| async move {
        match event {
            // New quotas, changed limits, and status that does not cover the limits.
            Ok(watcher::Event::Apply(q) | watcher::Event::InitApply(q)) if needs_sync(&q) => {
                Some(vec![ObjectRef::from_obj(&q)])
            }
            _ => None,
        }
    })
    .boxed();

    let mut tracked = Vec::new();
    let mut triggers = vec![quota_events];
    macro_rules! track {
        ($ty:ty, $group:expr, $plural:expr, $on_apply:expr) => {{
            let ar = ApiResource::erase::<$ty>(&());
            let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
            let store = writer.as_reader();
            let on_apply: fn(&DynamicObject) -> bool = $on_apply;
            let quotas = quotas.clone();
            let events = reflector::reflector(
                writer,
                watcher(
                    Api::<DynamicObject>::all_with(client.clone(), &ar),
                    watcher::Config::default(),
                ),
            )
            .default_backoff()
            .filter_map(move |event| {
                let quotas = quotas.clone();
                async move {
                    let obj = match event {
                        Ok(watcher::Event::Delete(obj)) => obj,
                        Ok(watcher::Event::Apply(obj)) if on_apply(&obj) => obj,
                        _ => return None,
                    };
                    let ns = obj.namespace()?;
                    let refs: Vec<ObjectRef<ResourceQuota>> = quotas
                        .state()
                        .iter()
                        .filter(|q| q.namespace().as_deref() == Some(ns.as_str()))
                        .map(|q| ObjectRef::from_obj(&**q))
                        .collect();
                    (!refs.is_empty()).then_some(refs)
                }
            })
            .boxed();
            triggers.push(events);
            tracked.push(Tracked {
                group: $group,
                plural: $plural,
                store,
            });
        }};
    }
    // Pods stop charging compute when they end; services and claims can change what they
    // charge; for the others only deletions matter (creates are charged by admission).
    track!(Pod, "", "pods", |pod| !quota::pod_is_charged(
        &to_value(pod),
        jiff::Timestamp::now()
    ));
    track!(Service, "", "services", |_| true);
    track!(PersistentVolumeClaim, "", "persistentvolumeclaims", |_| {
        true
    });
    track!(ConfigMap, "", "configmaps", |_| false);
    track!(Secret, "", "secrets", |_| false);
    track!(ReplicationController, "", "replicationcontrollers", |_| {
        false
    });
    track!(ResourceQuota, "", "resourcequotas", |_| false);

    let state = Arc::new(State {
        client,
        tracked,
        uncached: Mutex::new(HashMap::new()),
    });
    let queue = stream::select_all(triggers)
        .flat_map(|refs| stream::iter(refs.into_iter().map(Ok::<_, Infallible>)));
    applier(
        |q, state: Arc<State>| Box::pin(async move { reconcile(q, &state).await }),
        |_, _, _| Action::requeue(Duration::from_secs(2)),
        state,
        quotas,
        queue,
        controller::Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "resourcequota: reconcile failed");
        }
    })
    .await;
    Ok(())
}

fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

fn to_list(map: Option<&BTreeMap<String, K8sQuantity>>) -> ResourceList {
    map.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), apimachinery::quantity::parse(&v.0).ok()?)))
        .collect()
}

fn to_k8s(list: &ResourceList) -> BTreeMap<String, K8sQuantity> {
    list.iter()
        .map(|(k, v)| (k.clone(), K8sQuantity(v.to_string())))
        .collect()
}

/// Whether the quota's status does not reflect its spec yet.
fn needs_sync(q: &ResourceQuota) -> bool {
    let hard = to_list(q.spec.as_ref().and_then(|s| s.hard.as_ref()));
    let status = q.status.as_ref();
    let status_hard = to_list(status.and_then(|s| s.hard.as_ref()));
    let used = to_list(status.and_then(|s| s.used.as_ref()));
    status.is_none() || !same(&hard, &status_hard) || hard.keys().any(|k| !used.contains_key(k))
}

/// Equal names and values (formats aside).
fn same(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

async fn reconcile(q: Arc<ResourceQuota>, state: &State) -> Result<Action, Error> {
    let Some(ns) = q.namespace() else {
        return Ok(Action::await_change());
    };
    for t in &state.tracked {
        let _ = t.store.wait_until_ready().await;
    }
    let hard = to_list(q.spec.as_ref().and_then(|s| s.hard.as_ref()));
    let quota_json = to_value(&*q);
    let now = jiff::Timestamp::now();
    let mut used = ResourceList::new();
    let mut covered: Vec<String> = Vec::new();
    for t in &state.tracked {
        let matched = quota::matching_resources(t.group, t.plural, hard.keys());
        if matched.is_empty() {
            continue;
        }
        for name in &matched {
            used.entry(name.clone()).or_insert(Quantity::ZERO);
        }
        covered.extend(matched.iter().cloned());
        for obj in t.store.state() {
            if obj.metadata.namespace.as_deref() != Some(ns.as_str()) {
                continue;
            }
            let obj = to_value(&*obj);
            if !quota::matches_scopes(&quota_json, t.group, t.plural, &obj) {
                continue;
            }
            for (name, amount) in quota::usage(t.group, t.plural, &obj, now) {
                if matched.contains(&name) {
                    let e = used.entry(name).or_insert(Quantity::ZERO);
                    *e = *e + amount;
                }
            }
        }
    }
    // Object counts of kinds not cached here.
    let mut uncached = false;
    for name in hard.keys().filter(|n| !covered.contains(n)) {
        let Some(target) = name.strip_prefix("count/") else {
            continue;
        };
        if quota::has_scopes(&quota_json) {
            // Scopes select pods only; a scoped quota counts no other kind.
            used.insert(name.clone(), Quantity::ZERO);
            continue;
        }
        uncached = true;
        if let Some(n) = count_uncached(state, &ns, target).await? {
            used.insert(name.clone(), Quantity::from_count(n));
        }
    }
    let status = q.status.as_ref();
    let current_hard = to_list(status.and_then(|s| s.hard.as_ref()));
    let current_used = to_list(status.and_then(|s| s.used.as_ref()));
    if status.is_none() || !same(&hard, &current_hard) || !same(&used, &current_used) {
        let mut updated = (*q).clone();
        updated.status = Some(ResourceQuotaStatus {
            hard: Some(to_k8s(&hard)),
            used: Some(to_k8s(&used)),
        });
        let api = Api::<ResourceQuota>::namespaced(state.client.clone(), &ns);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        // The cached resourceVersion makes this a compare-and-swap against admission's
        // charges; a conflict retries with the newer quota.
        match api.replace_status(&q.name_any(), &params, &updated).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(if uncached {
        UNCACHED_RESYNC
    } else {
        RESYNC
    }))
}

/// How many objects of `target` (`<plural>` or `<plural>.<group>`) exist in `ns`; `None`
/// when no such resource is served.
async fn count_uncached(state: &State, ns: &str, target: &str) -> Result<Option<i64>, Error> {
    let (plural, group) = target.split_once('.').unwrap_or((target, ""));
    let cached = state
        .uncached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(target)
        .cloned();
    let ar = match cached {
        Some(ar) => ar,
        None => {
            let found = kube::discovery::group(&state.client, group)
                .await
                .ok()
                .and_then(|g| {
                    g.resources_by_stability()
                        .into_iter()
                        .find(|(ar, _)| ar.plural == plural)
                });
            let Some((ar, _)) = found else {
                return Ok(None);
            };
            state
                .uncached
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(target.to_owned(), ar.clone());
            ar
        }
    };
    let api: Api<DynamicObject> = Api::namespaced_with(state.client.clone(), ns, &ar);
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(Some(list.items.len() as i64)),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            state
                .uncached
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(target);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
