//! Informers: list-and-watch streams of pods, nodes, namespaces, PriorityClasses, the
//! volume kinds (claims, volumes, storage classes), the objects that group pods
//! (Services, ReplicationControllers, ReplicaSets, StatefulSets) and
//! PodDisruptionBudgets that keep the cache and the queue current, and turn changes into
//! the cluster events that move unschedulable pods back to the queue.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::watch;

use crate::cache::{Cache, lock};
use crate::disruption::Budget;
use crate::filters::Plugin;
use crate::info::PodInfo;
use crate::queue::{Plugins, SchedulingQueue};
use crate::report::SCHEDULER_NAME;
use crate::selectors::Selector;
use crate::workloads::ControllerKind;

/// Pods that ended hold no resources; the pod informer does not watch them.
const ACTIVE_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Signals that an informer has listed everything once.
#[derive(Clone)]
pub struct Synced(Arc<watch::Sender<bool>>);

impl Default for Synced {
    fn default() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }
}

impl Synced {
    fn raise(&self) {
        self.0.send_replace(true);
    }

    /// Waits until raised.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// A watch stream of `K` as a sequence of applies and deletes, with relists turned into
/// deletes of what disappeared.
async fn for_each_change<K, F>(api: Api<K>, config: watcher::Config, synced: Synced, mut handle: F)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    F: FnMut(Change<K>),
{
    // One unpaginated list at resourceVersion 0, served from the API server's watch cache,
    // as client-go's reflectors list; continuation pages would be read from the store one
    // by one, and a consistent read of a quiet collection waits for its cache to catch up.
    let mut config = config.any_semantic();
    config.page_size = None;
    let stream = watcher(api, config).default_backoff();
    let mut stream: std::pin::Pin<Box<dyn Stream<Item = _> + Send>> = Box::pin(stream);
    let mut seen: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                tracing::debug!(kind = %K::kind(&()), "listing");
                seen = Some(HashSet::new());
            }
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some(seen) = &mut seen {
                    seen.insert(key_of(&obj));
                }
                handle(Change::Apply(obj));
            }
            Ok(watcher::Event::InitDone) => {
                tracing::debug!(kind = %K::kind(&()), "listed");
                if let Some(seen) = seen.take() {
                    handle(Change::Relisted(seen));
                }
                synced.raise();
            }
            Ok(watcher::Event::Apply(obj)) => handle(Change::Apply(obj)),
            Ok(watcher::Event::Delete(obj)) => handle(Change::Delete(obj)),
            Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
        }
    }
}

fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

enum Change<K> {
    Apply(K),
    Delete(K),
    /// A relist finished; objects with keys outside this set are gone.
    Relisted(HashSet<String>),
}

/// Keeps PriorityClasses in the cache.
pub async fn priority_classes(client: Client, cache: Arc<Mutex<Cache>>, synced: Synced) {
    let mut known: HashSet<String> = HashSet::new();
    for_each_change(
        Api::<PriorityClass>::all(client),
        watcher::Config::default(),
        synced,
        |change| {
            let mut cache = lock(&cache);
            match change {
                Change::Apply(pc) => {
                    known.insert(key_of(&pc));
                    cache.priority_classes.apply(&pc);
                }
                Change::Delete(pc) => {
                    known.remove(&key_of(&pc));
                    cache
                        .priority_classes
                        .delete(pc.metadata.name.as_deref().unwrap_or_default());
                }
                Change::Relisted(seen) => {
                    for gone in known.difference(&seen) {
                        cache.priority_classes.delete(gone.trim_start_matches('/'));
                    }
                    known = seen;
                }
            }
        },
    )
    .await;
}

/// Keeps namespace labels in the cache (for affinity terms' namespace selectors).
pub async fn namespaces(
    client: Client,
    cache: Arc<Mutex<Cache>>,
    queue: Arc<SchedulingQueue>,
    synced: Synced,
) {
    let mut known: HashMap<String, crate::selectors::Labels> = HashMap::new();
    for_each_change(
        Api::<Namespace>::all(client),
        watcher::Config::default(),
        synced,
        |change| {
            let mut changed = false;
            {
                let mut cache = lock(&cache);
                match change {
                    Change::Apply(ns) => {
                        let name = ns.metadata.name.clone().unwrap_or_default();
                        let labels = ns.metadata.labels.clone().unwrap_or_default();
                        if known.get(&name) != Some(&labels) {
                            cache.set_namespace(&name, Some(labels.clone()));
                            known.insert(name, labels);
                            changed = true;
                        }
                    }
                    Change::Delete(ns) => {
                        let name = ns.metadata.name.clone().unwrap_or_default();
                        known.remove(&name);
                        cache.set_namespace(&name, None);
                    }
                    Change::Relisted(seen) => {
                        let gone: Vec<String> = known
                            .keys()
                            .filter(|n| !seen.contains(&format!("/{n}")))
                            .cloned()
                            .collect();
                        for name in gone {
                            known.remove(&name);
                            cache.set_namespace(&name, None);
                        }
                    }
                }
            }
            if changed {
                queue.move_for_event(Plugins::of(&[Plugin::InterPodAffinity]));
            }
        },
    )
    .await;
}

/// Keeps nodes in the cache; node changes move unschedulable pods they may help.
pub async fn nodes(
    client: Client,
    cache: Arc<Mutex<Cache>>,
    queue: Arc<SchedulingQueue>,
    synced: Synced,
) {
    let mut known: HashMap<String, Arc<Node>> = HashMap::new();
    for_each_change(
        Api::<Node>::all(client),
        watcher::Config::default(),
        synced,
        |change| {
            let helps = match change {
                Change::Apply(node) => {
                    let node = Arc::new(node);
                    let name = node.metadata.name.clone().unwrap_or_default();
                    let old = known.insert(name, node.clone());
                    lock(&cache).set_node(node.clone());
                    match old {
                        None => Plugins::ALL,
                        Some(old) => node_update_helps(&old, &node),
                    }
                }
                Change::Delete(node) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    known.remove(&name);
                    lock(&cache).remove_node(&name);
                    Plugins::default()
                }
                Change::Relisted(seen) => {
                    let gone: Vec<String> = known
                        .keys()
                        .filter(|n| !seen.contains(&format!("/{n}")))
                        .cloned()
                        .collect();
                    let mut cache = lock(&cache);
                    for name in gone {
                        known.remove(&name);
                        cache.remove_node(&name);
                    }
                    Plugins::default()
                }
            };
            if !helps.is_empty() {
                queue.move_for_event(helps);
            }
        },
    )
    .await;
}

/// Which plugins' rejections a node update may undo.
fn node_update_helps(old: &Node, new: &Node) -> Plugins {
    let mut helps = Plugins::default();
    let (old_spec, new_spec) = (
        old.spec.clone().unwrap_or_default(),
        new.spec.clone().unwrap_or_default(),
    );
    if old.status.as_ref().and_then(|s| s.allocatable.as_ref())
        != new.status.as_ref().and_then(|s| s.allocatable.as_ref())
    {
        helps.insert(Plugin::NodeResourcesFit);
    }
    if old.metadata.labels != new.metadata.labels {
        for p in [
            Plugin::NodeAffinity,
            Plugin::PodTopologySpread,
            Plugin::InterPodAffinity,
        ] {
            helps.insert(p);
        }
    }
    if old_spec.taints != new_spec.taints {
        helps.insert(Plugin::TaintToleration);
        helps.insert(Plugin::PodTopologySpread);
    }
    if old_spec.unschedulable != new_spec.unschedulable {
        helps.insert(Plugin::NodeUnschedulable);
    }
    helps
}

/// Whether this scheduler is responsible for `pod`.
fn responsible(pod: &Pod) -> bool {
    let name = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref());
    name.is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME)
}

fn assigned(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// Whether an update of a pending pod may change where it fits (upstream's
/// `isPodUpdated`, which ignores status and bookkeeping metadata).
fn meaningful_update(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

/// What the pod informer does with the queue and the cache.
pub struct PodHandler {
    cache: Arc<Mutex<Cache>>,
    queue: Arc<SchedulingQueue>,
    known: HashMap<String, Arc<Pod>>,
    /// Pods seen gated, whose `SchedulingGated` condition was written.
    gated_reported: HashSet<String>,
    gated_tx: tokio::sync::mpsc::UnboundedSender<Arc<Pod>>,
}

/// Plugins an assigned pod's deletion may help.
fn pod_delete_helps() -> Plugins {
    Plugins::of(&[
        Plugin::NodeResourcesFit,
        Plugin::NodePorts,
        Plugin::InterPodAffinity,
        Plugin::PodTopologySpread,
    ])
}

/// Plugins an assigned pod's arrival or label change may help.
fn pod_add_helps() -> Plugins {
    Plugins::of(&[Plugin::InterPodAffinity, Plugin::PodTopologySpread])
}

impl PodHandler {
    fn apply(&mut self, pod: Pod) {
        let key = key_of(&pod);
        let pod = Arc::new(pod);
        let old = self.known.insert(key.clone(), pod.clone());
        if assigned(&pod) {
            if terminal(&pod) {
                self.forget(&key, &pod);
                return;
            }
            {
                let mut cache = lock(&self.cache);
                let info = Arc::new(PodInfo::new(pod.clone(), &cache.priority_classes));
                cache.add_or_update_pod(info);
            }
            self.queue.delete(&key);
            let helps = match &old {
                Some(old) if assigned(old) => {
                    if old.metadata.labels != pod.metadata.labels {
                        pod_add_helps()
                    } else {
                        Plugins::default()
                    }
                }
                _ => pod_add_helps(),
            };
            if !helps.is_empty() {
                self.queue.move_for_event(helps);
            }
            return;
        }
        if !responsible(&pod) || pod.metadata.deletion_timestamp.is_some() || terminal(&pod) {
            self.queue.delete(&key);
            return;
        }
        if gated(&pod) {
            self.queue.delete(&key);
            if self.gated_reported.insert(key) {
                let _ = self.gated_tx.send(pod);
            }
            return;
        }
        self.gated_reported.remove(&key);
        let info = {
            let cache = lock(&self.cache);
            if cache.is_placed(pod.metadata.uid.as_deref().unwrap_or_default()) {
                return; // Assumed; the binding is in flight.
            }
            Arc::new(PodInfo::new(pod.clone(), &cache.priority_classes))
        };
        let changed = old.is_none_or(|old| meaningful_update(&old, &pod));
        self.queue.add_or_update(info, changed);
    }

    fn forget(&mut self, key: &str, pod: &Pod) {
        self.known.remove(key);
        self.gated_reported.remove(key);
        self.queue.delete(key);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let was_placed = {
            let mut cache = lock(&self.cache);
            let placed = cache.is_placed(uid);
            cache.remove_pod(uid);
            placed
        };
        if was_placed {
            self.queue.move_for_event(pod_delete_helps());
        }
    }
}

/// Keeps pods in the cache (bound ones) and the queue (pending ones this scheduler owns).
pub async fn pods(
    client: Client,
    cache: Arc<Mutex<Cache>>,
    queue: Arc<SchedulingQueue>,
    synced: Synced,
) {
    let (gated_tx, mut gated_rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Pod>>();
    let gate_client = client.clone();
    let gates = tokio::spawn(async move {
        while let Some(pod) = gated_rx.recv().await {
            let message = "Scheduling is blocked due to non-empty scheduling gates";
            if let Err(e) = crate::report::update_condition(
                &gate_client,
                &pod,
                "SchedulingGated",
                message,
                &crate::report::Nomination::Keep,
            )
            .await
            {
                tracing::debug!(error = %e, "could not mark the pod SchedulingGated");
            }
        }
    });
    let mut handler = PodHandler {
        cache,
        queue,
        known: HashMap::new(),
        gated_reported: HashSet::new(),
        gated_tx,
    };
    let config = watcher::Config::default().fields(ACTIVE_PODS);
    for_each_change(
        Api::<Pod>::all(client),
        config,
        synced,
        |change| match change {
            Change::Apply(pod) => handler.apply(pod),
            Change::Delete(pod) => handler.forget(&key_of(&pod), &pod),
            Change::Relisted(seen) => {
                let gone: Vec<(String, Arc<Pod>)> = handler
                    .known
                    .iter()
                    .filter(|(k, _)| !seen.contains(*k))
                    .map(|(k, p)| (k.clone(), p.clone()))
                    .collect();
                for (key, pod) in gone {
                    handler.forget(&key, &pod);
                }
            }
        },
    )
    .await;
    gates.abort();
}

/// Keeps PersistentVolumeClaims, PersistentVolumes and StorageClasses in the cache; each
/// change may let pods rejected by VolumeBinding fit.
pub async fn volumes(
    client: Client,
    cache: Arc<Mutex<Cache>>,
    queue: Arc<SchedulingQueue>,
    synced: Synced,
) {
    let parts = [Synced::default(), Synced::default(), Synced::default()];
    let helps = Plugins::of(&[Plugin::VolumeBinding]);
    let claims = for_each_change(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        parts[0].clone(),
        |change| {
            lock(&cache).update_volumes(|v| match change {
                Change::Apply(claim) => v.set_claim(claim),
                Change::Delete(claim) => v.remove_claim(&key_of(&claim)),
                Change::Relisted(seen) => {
                    for key in v.claim_keys() {
                        if !seen.contains(&key) {
                            v.remove_claim(&key);
                        }
                    }
                }
            });
            queue.move_for_event(helps);
        },
    );
    let volumes = for_each_change(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
        parts[1].clone(),
        |change| {
            lock(&cache).update_volumes(|v| match change {
                Change::Apply(pv) => v.set_volume(pv),
                Change::Delete(pv) => v.remove_volume(pv.metadata.name.as_deref().unwrap_or("")),
                Change::Relisted(seen) => {
                    for name in v.volume_names() {
                        if !seen.contains(&format!("/{name}")) {
                            v.remove_volume(&name);
                        }
                    }
                }
            });
            queue.move_for_event(helps);
        },
    );
    let classes = for_each_change(
        Api::<StorageClass>::all(client),
        watcher::Config::default(),
        parts[2].clone(),
        |change| {
            lock(&cache).update_volumes(|v| match change {
                Change::Apply(class) => v.set_class(class),
                Change::Delete(class) => {
                    v.remove_class(class.metadata.name.as_deref().unwrap_or(""))
                }
                Change::Relisted(seen) => {
                    for name in v.class_names() {
                        if !seen.contains(&format!("/{name}")) {
                            v.remove_class(&name);
                        }
                    }
                }
            });
            queue.move_for_event(helps);
        },
    );
    let all_synced = async {
        for part in &parts {
            part.wait().await;
        }
        synced.raise();
        std::future::pending::<()>().await;
    };
    futures::join!(claims, volumes, classes, all_synced);
}

/// Keeps the selectors of Services, ReplicationControllers, ReplicaSets and StatefulSets
/// in the cache, for default topology spreading. They only change scores, so no change
/// moves pods in the queue.
pub async fn pod_selectors(client: Client, cache: Arc<Mutex<Cache>>, synced: Synced) {
    let parts = [
        Synced::default(),
        Synced::default(),
        Synced::default(),
        Synced::default(),
    ];
    let services = for_each_change(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        parts[0].clone(),
        |change| {
            let mut cache = lock(&cache);
            match change {
                Change::Apply(svc) => {
                    let (ns, name) = namespace_and_name(&svc);
                    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
                    cache.set_service(ns, name, selector);
                }
                Change::Delete(svc) => {
                    let (ns, name) = namespace_and_name(&svc);
                    cache.set_service(ns, name, None);
                }
                Change::Relisted(seen) => {
                    for key in cache.pod_selectors().service_keys() {
                        if !seen.contains(&key)
                            && let Some((ns, name)) = key.split_once('/')
                        {
                            cache.set_service(ns, name, None);
                        }
                    }
                }
            }
        },
    );
    let rcs = controller_selectors::<ReplicationController>(
        client.clone(),
        cache.clone(),
        parts[1].clone(),
        ControllerKind::ReplicationController,
        |rc| {
            rc.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .map(Selector::from_labels)
        },
    );
    let replica_sets = controller_selectors::<ReplicaSet>(
        client.clone(),
        cache.clone(),
        parts[2].clone(),
        ControllerKind::ReplicaSet,
        |rs| rs.spec.as_ref().map(|s| Selector::parse(Some(&s.selector))),
    );
    let stateful_sets = controller_selectors::<StatefulSet>(
        client,
        cache.clone(),
        parts[3].clone(),
        ControllerKind::StatefulSet,
        |ss| ss.spec.as_ref().map(|s| Selector::parse(Some(&s.selector))),
    );
    let all_synced = async {
        for part in &parts {
            part.wait().await;
        }
        synced.raise();
        std::future::pending::<()>().await;
    };
    futures::join!(services, rcs, replica_sets, stateful_sets, all_synced);
}

/// Keeps the pod selectors of one controller kind in the cache.
async fn controller_selectors<K>(
    client: Client,
    cache: Arc<Mutex<Cache>>,
    synced: Synced,
    kind: ControllerKind,
    selector_of: impl Fn(&K) -> Option<Selector>,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    for_each_change(
        Api::<K>::all(client),
        watcher::Config::default(),
        synced,
        |change| {
            let mut cache = lock(&cache);
            match change {
                Change::Apply(obj) => {
                    let (ns, name) = namespace_and_name(&obj);
                    cache.set_controller(kind, ns, name, selector_of(&obj));
                }
                Change::Delete(obj) => {
                    let (ns, name) = namespace_and_name(&obj);
                    cache.set_controller(kind, ns, name, None);
                }
                Change::Relisted(seen) => {
                    for key in cache.pod_selectors().controller_keys(kind) {
                        if !seen.contains(&key)
                            && let Some((ns, name)) = key.split_once('/')
                        {
                            cache.set_controller(kind, ns, name, None);
                        }
                    }
                }
            }
        },
    )
    .await;
}

/// Keeps PodDisruptionBudgets in the cache, for preemption. Upstream's preemption does
/// not retry pods on budget changes either, so none moves pods in the queue.
pub async fn disruption_budgets(client: Client, cache: Arc<Mutex<Cache>>, synced: Synced) {
    for_each_change(
        Api::<PodDisruptionBudget>::all(client),
        watcher::Config::default(),
        synced,
        |change| {
            let mut cache = lock(&cache);
            match change {
                Change::Apply(pdb) => cache.set_budget(&key_of(&pdb), Some(Budget::new(&pdb))),
                Change::Delete(pdb) => cache.set_budget(&key_of(&pdb), None),
                Change::Relisted(seen) => {
                    for key in cache.budgets().keys() {
                        if !seen.contains(&key) {
                            cache.set_budget(&key, None);
                        }
                    }
                }
            }
        },
    )
    .await;
}

fn namespace_and_name<K: Resource>(obj: &K) -> (&str, &str) {
    let meta = obj.meta();
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}
