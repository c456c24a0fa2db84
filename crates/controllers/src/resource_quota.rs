//! The resource quota controller (upstream's pkg/controller/resourcequota): publishes each
//! ResourceQuota's `status.hard` (its `spec.hard`) and `status.used`, computed from what
//! exists in the namespace.
//!
//! Creates are charged by quota admission in the API server as they happen; this loop
//! computes usage from its informer caches when a quota is new or its limits change,
//! *replenishes* when charged objects go away (deleted, or pods reaching a terminal phase),
//! and resyncs every quota every five minutes from the caches (upstream's
//! `--resource-quota-sync-period`). Pods, services, claims, config maps, secrets,
//! replication controllers and quotas are always cached; for `count/<resource>.<group>` of
//! any other kind an informer is started when a quota first names it and stopped when no
//! quota names it any more, as upstream's dynamic informers for quotable resources.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apimachinery::quantity::Quantity;
use apimachinery::quota::{self, ResourceList};
use futures::channel::mpsc;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota,
    ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::workloads::{Error, Result, run_loop};
use crate::{Context, FIELD_MANAGER};

/// Full resync period of every quota (read from the caches).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a quota naming `count/<resource>` of a kind the server does not serve looks
/// the kind up again (upstream re-runs discovery every 30 s for the same reason).
const DISCOVERY_RETRY: Duration = Duration::from_secs(30);
/// How long a reconcile waits for a newly started informer's first list.
const INFORMER_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// A cached kind that quotas charge.
struct Tracked {
    group: &'static str,
    plural: &'static str,
    store: Store<DynamicObject>,
}

struct State {
    client: Client,
    tracked: Vec<Tracked>,
    counted: Arc<Counted>,
}

/// Informers over the kinds named only by `count/<resource>.<group>`, keyed by
/// `<resource>.<group>` as the quota spells it.
struct Counted {
    client: Client,
    quotas: Store<ResourceQuota>,
    /// Enqueues quotas when a counted object comes or goes.
    wake: mpsc::UnboundedSender<ObjectRef<ResourceQuota>>,
    informers: Mutex<HashMap<String, CountInformer>>,
}

/// One on-demand informer; its watch stops when this is dropped.
struct CountInformer {
    store: Store<DynamicObject>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountInformer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the loop until the future is dropped.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (quotas, quota_writer) = reflector::store::<ResourceQuota>();
    let (wake, woken) = mpsc::unbounded();
    let counted = Arc::new(Counted {
        client: client.clone(),
        quotas: quotas.clone(),
        wake,
        informers: Mutex::new(HashMap::new()),
    });
    let pruner = counted.clone();
    let quota_events = reflector::reflector(
        quota_writer,
        watcher(
            Api::<ResourceQuota>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .filter_map(move |event| {
        let pruner = pruner.clone();
        async move {
            match event {
                // New quotas, changed limits, and status that does not cover the limits.
                Ok(watcher::Event::Apply(q) | watcher::Event::InitApply(q)) if needs_sync(&q) => {
                    Some(vec![ObjectRef::from_obj(&q)])
                }
                // The kinds only this quota counted need no informer any more.
                Ok(watcher::Event::Delete(_)) => {
                    pruner.prune();
                    None
                }
                _ => None,
            }
        }
    })
    .boxed();

    let mut tracked = Vec::new();
    let mut triggers = vec![quota_events, woken.map(|q| vec![q]).boxed()];
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
        counted,
    });
    let queue = stream::select_all(triggers).flat_map(stream::iter);
    run_loop("resourcequota", quotas, queue, state, reconcile).await;
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

async fn reconcile(q: Arc<ResourceQuota>, state: Arc<State>) -> Result<Action> {
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
    // Object counts of kinds only quotas name, from their on-demand informers.
    let mut unserved = false;
    for name in hard.keys().filter(|n| !covered.contains(n)) {
        let Some(target) = name.strip_prefix("count/") else {
            continue;
        };
        if quota::has_scopes(&quota_json) {
            // Scopes select pods only; a scoped quota counts no other kind.
            used.insert(name.clone(), Quantity::ZERO);
            continue;
        }
        match state.counted.count(&ns, target).await? {
            Some(n) => {
                used.insert(name.clone(), Quantity::from_count(n));
            }
            None => unserved = true,
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
    // Kinds named but not served (yet, say a CRD to come) are looked up again sooner.
    state.counted.prune();
    Ok(Action::requeue(if unserved {
        DISCOVERY_RETRY
    } else {
        RESYNC
    }))
}

impl Counted {
    /// How many objects of `target` (`<plural>` or `<plural>.<group>`) the informer for it
    /// holds in `ns`, starting the informer if none runs yet; `None` when no such resource
    /// is served.
    async fn count(self: &Arc<Self>, ns: &str, target: &str) -> Result<Option<i64>> {
        let Some(store) = self.informer(target).await? else {
            return Ok(None);
        };
        // A new informer must have listed once, or the namespace would look empty.
        if tokio::time::timeout(INFORMER_SYNC_TIMEOUT, store.wait_until_ready())
            .await
            .is_err()
        {
            return Err(Error::Invalid(format!(
                "informer for {target} has not synced yet"
            )));
        }
        let n = store
            .state()
            .iter()
            .filter(|o| o.metadata.namespace.as_deref() == Some(ns))
            .count();
        Ok(Some(i64::try_from(n).unwrap_or(i64::MAX)))
    }

    /// The cache of the informer for `target`, started on first use.
    async fn informer(self: &Arc<Self>, target: &str) -> Result<Option<Store<DynamicObject>>> {
        if let Some(running) = self.lock().get(target) {
            return Ok(Some(running.store.clone()));
        }
        let (plural, group) = target.split_once('.').unwrap_or((target, ""));
        let found = match kube::discovery::group(&self.client, group).await {
            Ok(g) => g.resources_by_stability().into_iter().find(|(ar, caps)| {
                ar.plural == plural && caps.scope == kube::discovery::Scope::Namespaced
            }),
            // An unknown group is a kind not served; anything else is worth a retry.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(kube::Error::Discovery(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some((ar, _)) = found else {
            return Ok(None);
        };
        let mut informers = self.lock();
        let running = informers
            .entry(target.to_owned())
            .or_insert_with(|| self.start(target, ar));
        Ok(Some(running.store.clone()))
    }

    /// Starts an informer over every namespace's objects of `ar`. Objects that appear or
    /// go away enqueue the quotas of their namespace that count them; after a relist (a
    /// broken watch) every such quota is enqueued, since deletions in between are not seen
    /// as events.
    fn start(&self, target: &str, ar: ApiResource) -> CountInformer {
        tracing::debug!(resource = target, "resourcequota: starting informer");
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let store = writer.as_reader();
        let events = reflector::reflector(
            writer,
            watcher(
                Api::<DynamicObject>::all_with(self.client.clone(), &ar),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        let name = format!("count/{target}");
        let quotas = self.quotas.clone();
        let wake = self.wake.clone();
        let task = tokio::spawn(async move {
            let wake_quotas = |ns: Option<&str>| {
                for q in quotas.state() {
                    let names_it = q
                        .spec
                        .as_ref()
                        .and_then(|s| s.hard.as_ref())
                        .is_some_and(|h| h.contains_key(&name));
                    if names_it && (ns.is_none() || q.namespace().as_deref() == ns) {
                        let _ = wake.unbounded_send(ObjectRef::from_obj(&*q));
                    }
                }
            };
            // Objects seen, so that only arrivals and departures wake quotas, not updates.
            let mut known: HashSet<(String, String)> = HashSet::new();
            let mut relisted: HashSet<(String, String)> = HashSet::new();
            let mut listed_once = false;
            let key = |o: &DynamicObject| (o.namespace().unwrap_or_default(), o.name_any());
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(o)) => {
                        if known.insert(key(&o)) {
                            wake_quotas(o.namespace().as_deref());
                        }
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        known.remove(&key(&o));
                        wake_quotas(o.namespace().as_deref());
                    }
                    Ok(watcher::Event::Init) => relisted.clear(),
                    Ok(watcher::Event::InitApply(o)) => {
                        relisted.insert(key(&o));
                    }
                    Ok(watcher::Event::InitDone) => {
                        known = std::mem::take(&mut relisted);
                        // The first list is awaited by the reconcile that started us.
                        if std::mem::replace(&mut listed_once, true) {
                            wake_quotas(None);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "resourcequota: watch failed; retrying"),
                }
            }
        });
        CountInformer { store, task }
    }

    /// Stops the informers of kinds no quota counts any more.
    fn prune(&self) {
        let named: HashSet<String> = self
            .quotas
            .state()
            .iter()
            .filter(|q| !quota::has_scopes(&to_value(&***q)))
            .flat_map(|q| {
                q.spec
                    .as_ref()
                    .and_then(|s| s.hard.as_ref())
                    .into_iter()
                    .flat_map(|h| h.keys())
                    .filter_map(|k| k.strip_prefix("count/").map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.lock().retain(|target, _| {
            let keep = named.contains(target);
            if !keep {
                tracing::debug!(resource = %target, "resourcequota: stopping informer");
            }
            keep
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CountInformer>> {
        self.informers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
