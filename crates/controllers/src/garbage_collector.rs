//! The garbage collector (upstream's pkg/controller/garbagecollector): deletes objects whose
//! owners are gone, and carries out the `Foreground` and `Orphan` deletion policies.
//!
//! It works for every kind the cluster serves, custom resources included: discovery finds
//! every resource that can be listed, watched and deleted (again whenever a CRD changes,
//! and every 30 s), and one watch per resource feeds an ownership graph keyed by uid. The graph's
//! transitions put uids on two work queues, as upstream's graph builder does:
//!
//! - *attempt to delete*: a dependent whose owner may be gone, or whose owner is being
//!   deleted in the foreground. Owners the graph does not know are looked up live by name
//!   and uid before anything is deleted, so a stale cache never deletes a live object. A
//!   dependent is deleted only when none of its owners remains; dangling references beside a
//!   live owner are patched away instead. An owner being deleted in the foreground (finalizer
//!   `foregroundDeletion`) loses the finalizer once no dependent with `blockOwnerDeletion`
//!   remains.
//! - *attempt to orphan*: an owner being deleted with the `orphan` finalizer; its uid is
//!   removed from every dependent's ownerReferences, then the finalizer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Context;

/// The finalizer that makes the collector orphan an owner's dependents.
pub const FINALIZER_ORPHAN: &str = "orphan";
/// The finalizer that makes the collector delete an owner's dependents first.
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// How often discovery runs again to pick up new (and drop removed) resources.
const REDISCOVERY: Duration = Duration::from_secs(30);
/// How soon discovery runs again after a CRD changed, and while an established CRD is
/// not served yet.
const CRD_RETRY: Duration = Duration::from_millis(200);
/// How long the workers wait for the first listing of every resource before starting.
const INITIAL_SYNC: Duration = Duration::from_secs(30);
const DELETE_WORKERS: usize = 4;
const ORPHAN_WORKERS: usize = 2;
/// How many absent owner uids are remembered (uids are never reused, so this is a cache).
const ABSENT_CACHE: usize = 4096;

/// Resources the collector ignores, as upstream's default `--gc-ignored-resources`.
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// Why one work item failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("no resource serves kind {kind} of {api_version}")]
    UnknownKind { api_version: String, kind: String },
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the collector until the future is dropped.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let gc = Arc::new(Collector {
        client: ctx.client.clone(),
        graph: Mutex::new(Graph::default()),
        kinds: RwLock::new(HashMap::new()),
        attempt_to_delete: Arc::new(Queue::default()),
        attempt_to_orphan: Arc::new(Queue::default()),
        absent: Mutex::new(Absent::default()),
        crds_changed: Notify::new(),
        established: Mutex::new(HashSet::new()),
    });
    let mut monitors: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let result = async {
        loop {
            let synced = gc.sync_monitors(&mut monitors).await;
            if workers.is_empty() {
                // Start working once every resource was listed, so owners the graph has not
                // seen yet are not looked up one by one.
                let all = futures::future::join_all(synced);
                if tokio::time::timeout(INITIAL_SYNC, all).await.is_err() {
                    tracing::warn!(cluster = %ctx.cluster, "garbage collector: not every resource listed in time; starting anyway");
                }
                for _ in 0..DELETE_WORKERS {
                    let gc = gc.clone();
                    workers.push(tokio::spawn(async move {
                        gc.work(&gc.attempt_to_delete, Collector::attempt_to_delete)
                            .await
                    }));
                }
                for _ in 0..ORPHAN_WORKERS {
                    let gc = gc.clone();
                    workers.push(tokio::spawn(async move {
                        gc.work(&gc.attempt_to_orphan, Collector::attempt_to_orphan)
                            .await
                    }));
                }
            }
            // A changed CRD is picked up at once (after it had a moment to be served). A
            // CRD that is established but not yet in discovery (the server that took the
            // write may still be reloading) is looked for again shortly, not in 30 s.
            let retry = if gc.missing_established() {
                CRD_RETRY
            } else {
                REDISCOVERY
            };
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                () = gc.crds_changed.notified() => {
                    tokio::time::sleep(CRD_RETRY).await;
                }
            }
        }
    }
    .await;
    for task in monitors.values().chain(workers.iter()) {
        task.abort();
    }
    result
}

/// A served resource: how to address its objects.
#[derive(Debug)]
struct Resource {
    ar: ApiResource,
    namespaced: bool,
}

impl Resource {
    fn key(&self) -> String {
        format!("{}/{}/{}", self.ar.group, self.ar.version, self.ar.plural)
    }
}

/// One object in the graph: who it is, who owns it, and where its deletion stands.
#[derive(Clone, Debug)]
struct Node {
    resource: Arc<Resource>,
    namespace: Option<String>,
    name: String,
    uid: String,
    owners: Vec<Owner>,
    /// `deletionTimestamp` is set.
    deleting: bool,
    finalizers: Vec<String>,
}

impl Node {
    fn from_object(resource: &Arc<Resource>, obj: &DynamicObject) -> Option<Self> {
        let uid = obj.metadata.uid.clone()?;
        Some(Self {
            resource: resource.clone(),
            namespace: obj.metadata.namespace.clone().filter(|n| !n.is_empty()),
            name: obj.name_any(),
            uid,
            owners: obj.owner_references().iter().map(Owner::from).collect(),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            finalizers: obj.finalizers().to_vec(),
        })
    }

    /// Being deleted in the foreground: waits for its dependents.
    fn deleting_dependents(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == FINALIZER_FOREGROUND)
    }

    /// Being deleted with the orphan policy.
    fn orphaning(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == FINALIZER_ORPHAN)
    }

    fn api(&self, client: &Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource.ar),
            None => Api::all_with(client.clone(), &self.resource.ar),
        }
    }
}

/// An owner reference, as far as the collector cares.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    uid: String,
    api_version: String,
    kind: String,
    name: String,
    block: bool,
}

impl From<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> for Owner {
    fn from(r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> Self {
        Self {
            uid: r.uid.clone(),
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            block: r.block_owner_deletion == Some(true),
        }
    }
}

/// The ownership graph: every object by uid, and the dependents of every owner uid
/// (including owners not, or no longer, in the graph).
#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

/// What the graph asks the workers to look at after a change.
#[derive(Default, Debug, PartialEq, Eq)]
struct Work {
    delete: Vec<String>,
    orphan: Vec<String>,
}

impl Graph {
    /// An object was added or changed.
    fn upsert(&mut self, node: Node) -> Work {
        let mut work = Work::default();
        let uid = node.uid.clone();
        let old = self.nodes.insert(uid.clone(), node.clone());
        let old_owners = old.as_ref().map(|o| o.owners.as_slice()).unwrap_or(&[]);
        for gone in old_owners
            .iter()
            .filter(|o| !node.owners.iter().any(|n| n.uid == o.uid))
        {
            self.unlink(&gone.uid, &uid);
            // An owner waiting for its dependents may now be free to go.
            if self
                .nodes
                .get(&gone.uid)
                .is_some_and(Node::deleting_dependents)
            {
                work.delete.push(gone.uid.clone());
            }
        }
        for owner in &node.owners {
            let before = old_owners.iter().find(|o| o.uid == owner.uid);
            let owner_node = self.nodes.get(&owner.uid);
            match before {
                None => {
                    self.dependents
                        .entry(owner.uid.clone())
                        .or_default()
                        .insert(uid.clone());
                    // An owner the graph does not know may be gone; one being deleted in the
                    // foreground takes its new dependent with it.
                    if owner_node.is_none_or(Node::deleting_dependents) {
                        work.delete.push(uid.clone());
                    }
                }
                Some(b) if b.block && !owner.block => {
                    if owner_node.is_some_and(Node::deleting_dependents) {
                        work.delete.push(owner.uid.clone());
                    }
                }
                Some(_) => {}
            }
        }
        if node.deleting_dependents() && !old.as_ref().is_some_and(Node::deleting_dependents) {
            work.delete.push(uid.clone());
            if let Some(deps) = self.dependents.get(&uid) {
                work.delete.extend(deps.iter().cloned());
            }
        }
        if node.orphaning() && !old.as_ref().is_some_and(Node::orphaning) {
            work.orphan.push(uid);
        }
        work
    }

    /// An object was deleted.
    fn remove(&mut self, uid: &str) -> Work {
        let mut work = Work::default();
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        for owner in &node.owners {
            self.unlink(&owner.uid, uid);
            if self
                .nodes
                .get(&owner.uid)
                .is_some_and(Node::deleting_dependents)
            {
                work.delete.push(owner.uid.clone());
            }
        }
        if let Some(deps) = self.dependents.get(uid) {
            work.delete.extend(deps.iter().cloned());
        }
        work
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(deps) = self.dependents.get_mut(owner) {
            deps.remove(dependent);
            if deps.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    /// The uids of `resource`'s objects that are not in `seen` (after a relist).
    fn stale(&self, resource: &str, seen: &HashSet<String>) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.resource.key() == resource && !seen.contains(&n.uid))
            .map(|n| n.uid.clone())
            .collect()
    }

    /// Dependents of `owner` that hold it with `blockOwnerDeletion`.
    fn blocking_dependents(&self, owner: &str) -> Vec<Node> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .filter(|d| d.owners.iter().any(|o| o.uid == owner && o.block))
            .cloned()
            .collect()
    }
}

/// Owner uids confirmed absent by a live lookup, oldest forgotten first.
#[derive(Default)]
struct Absent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Absent {
    fn add(&mut self, uid: &str) {
        if self.set.insert(uid.to_owned()) {
            self.order.push_back(uid.to_owned());
            if self.order.len() > ABSENT_CACHE
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// A work queue of uids: an item is queued at most once, is never worked on by two workers
/// at a time (added while in progress, it runs again afterwards), and failed items come back
/// with exponential backoff.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
}

impl Queue {
    fn add(&self, key: String) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.processing.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    fn add_all(&self, keys: impl IntoIterator<Item = String>) {
        for k in keys {
            self.add(k);
        }
    }

    async fn next(&self) -> String {
        loop {
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.ready.is_empty() {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Marks `key` done; `failed` brings it back after a backoff.
    fn done(self: &Arc<Self>, key: String, failed: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.processing.remove(&key);
        let dirty = s.dirty.remove(&key);
        if failed {
            let n = s.failures.entry(key.clone()).or_default();
            *n = n.saturating_add(1);
            let delay = Duration::from_millis(50)
                .saturating_mul(1 << (*n).min(11))
                .min(Duration::from_secs(60));
            drop(s);
            let queue = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                queue.add(key);
            });
            return;
        }
        s.failures.remove(&key);
        drop(s);
        if dirty {
            self.add(key);
        }
    }
}

/// The collector's shared state.
struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    /// Every served resource by (group, kind), for owner lookups.
    kinds: RwLock<HashMap<(String, String), Arc<Resource>>>,
    attempt_to_delete: Arc<Queue>,
    attempt_to_orphan: Arc<Queue>,
    absent: Mutex<Absent>,
    /// Signalled when a CustomResourceDefinition changes, to run discovery again.
    crds_changed: Notify,
    /// (group, plural) of every established CRD, to tell when discovery lags behind them.
    established: Mutex<HashSet<(String, String)>>,
}

/// How an owner reference stands, as upstream classifies it.
enum Standing {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner is gone (or another object now has its name).
    Dangling,
    /// The owner is being deleted in the foreground.
    Waiting,
}

impl Collector {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an established CRD is missing from the last discovery.
    fn missing_established(&self) -> bool {
        let kinds = self.kinds.read().unwrap_or_else(|e| e.into_inner());
        let served: HashSet<(&str, &str)> = kinds
            .values()
            .map(|r| (r.ar.group.as_str(), r.ar.plural.as_str()))
            .collect();
        self.established
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(g, p)| !served.contains(&(g.as_str(), p.as_str())))
    }

    /// Keeps `established` in step with one CRD event.
    fn track_crd(&self, crd: &DynamicObject, deleted: bool) {
        let group = crd.data.pointer("/spec/group").and_then(Value::as_str);
        let plural = crd
            .data
            .pointer("/spec/names/plural")
            .and_then(Value::as_str);
        let (Some(group), Some(plural)) = (group, plural) else {
            return;
        };
        let established = !deleted
            && crd
                .data
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                });
        let key = (group.to_owned(), plural.to_owned());
        let mut set = self.established.lock().unwrap_or_else(|e| e.into_inner());
        if established {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    fn schedule(&self, work: Work) {
        self.attempt_to_delete.add_all(work.delete);
        self.attempt_to_orphan.add_all(work.orphan);
    }

    /// Runs discovery and starts a watch for every new resource, stops the watches of
    /// resources no longer served. Returns a receiver per new watch that fires on its first
    /// complete listing.
    async fn sync_monitors(
        self: &Arc<Self>,
        monitors: &mut HashMap<String, JoinHandle<()>>,
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        let discovery = match Discovery::new(self.client.clone()).run_aggregated().await {
            Ok(d) => d,
            Err(_) => match Discovery::new(self.client.clone()).run().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collector: discovery failed");
                    return Vec::new();
                }
            },
        };
        let mut kinds = HashMap::new();
        let mut watchable = HashMap::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let resource = Arc::new(Resource {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar,
                });
                kinds.insert(
                    (resource.ar.group.clone(), resource.ar.kind.clone()),
                    resource.clone(),
                );
                let ignored = IGNORED
                    .iter()
                    .any(|(g, r)| resource.ar.group == *g && resource.ar.plural == *r);
                if !ignored
                    && [verbs::LIST, verbs::WATCH, verbs::DELETE]
                        .iter()
                        .all(|v| caps.supports_operation(v))
                {
                    watchable.insert(resource.key(), resource);
                }
            }
        }
        *self.kinds.write().unwrap_or_else(|e| e.into_inner()) = kinds;
        let gone: Vec<String> = monitors
            .keys()
            .filter(|k| !watchable.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(task) = monitors.remove(&key) {
                task.abort();
            }
            // The resource is no longer served: its objects are gone with it.
            let work = {
                let mut graph = self.graph();
                let stale = graph.stale(&key, &HashSet::new());
                let mut work = Work::default();
                for uid in stale {
                    let w = graph.remove(&uid);
                    work.delete.extend(w.delete);
                }
                work
            };
            self.schedule(work);
        }
        let mut synced = Vec::new();
        for (key, resource) in watchable {
            if monitors.contains_key(&key) {
                continue;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            synced.push(rx);
            let gc = self.clone();
            monitors.insert(
                key,
                tokio::spawn(async move { gc.monitor(resource, tx).await }),
            );
        }
        synced
    }

    /// Watches one resource and feeds the graph.
    async fn monitor(
        self: Arc<Self>,
        resource: Arc<Resource>,
        synced: tokio::sync::oneshot::Sender<()>,
    ) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource.ar);
        let key = resource.key();
        let is_crd = resource.ar.group == "apiextensions.k8s.io"
            && resource.ar.plural == "customresourcedefinitions";
        let mut synced = Some(synced);
        let mut seen: Option<HashSet<String>> = None;
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(resource = %key, error = %e, "garbage collector: watch failed");
                    continue;
                }
            };
            if is_crd {
                match &event {
                    watcher::Event::InitApply(crd) => self.track_crd(crd, false),
                    watcher::Event::Apply(crd) => {
                        self.track_crd(crd, false);
                        self.crds_changed.notify_one();
                    }
                    watcher::Event::Delete(crd) => {
                        self.track_crd(crd, true);
                        self.crds_changed.notify_one();
                    }
                    // A relisting rebuilds the set from scratch.
                    watcher::Event::Init => self
                        .established
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear(),
                    watcher::Event::InitDone => {}
                }
            }
            let work = match event {
                watcher::Event::Init => {
                    seen = Some(HashSet::new());
                    continue;
                }
                watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                    let Some(node) = Node::from_object(&resource, &obj) else {
                        continue;
                    };
                    if let Some(seen) = seen.as_mut() {
                        seen.insert(node.uid.clone());
                    }
                    self.graph().upsert(node)
                }
                watcher::Event::Delete(obj) => match obj.metadata.uid.as_deref() {
                    Some(uid) => self.graph().remove(uid),
                    None => continue,
                },
                watcher::Event::InitDone => {
                    let seen = seen.take().unwrap_or_default();
                    let mut graph = self.graph();
                    let mut work = Work::default();
                    for uid in graph.stale(&key, &seen) {
                        work.delete.extend(graph.remove(&uid).delete);
                    }
                    drop(graph);
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                    work
                }
            };
            self.schedule(work);
        }
    }

    /// A worker: takes uids from `queue` and handles them with `handle`.
    async fn work<'a, F, Fut>(self: &'a Arc<Self>, queue: &'a Arc<Queue>, handle: F)
    where
        F: Fn(&'a Collector, String) -> Fut,
        Fut: std::future::Future<Output = Result<()>> + 'a,
    {
        loop {
            let uid = queue.next().await;
            let result = handle(self.as_ref(), uid.clone()).await;
            if let Err(e) = &result {
                tracing::debug!(uid, error = %e, "garbage collector: will retry");
            }
            queue.done(uid, result.is_err());
        }
    }

    /// Upstream's attemptToDeleteItem.
    async fn attempt_to_delete(&self, uid: String) -> Result<()> {
        let Some(node) = self.graph().nodes.get(&uid).cloned() else {
            return Ok(());
        };
        if node.deleting && !node.deleting_dependents() {
            // Already on its way out, and not waiting for anything of ours.
            return Ok(());
        }
        let api = node.api(&self.client);
        let Some(latest) = api.get_opt(&node.name).await? else {
            return Ok(());
        };
        if latest.metadata.uid.as_deref() != Some(uid.as_str()) {
            return Ok(());
        }
        let latest_node = Node::from_object(&node.resource, &latest).unwrap_or(node);
        if latest_node.deleting_dependents() {
            return self
                .process_deleting_dependents(&latest_node, &latest)
                .await;
        }
        if latest_node.owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for owner in &latest_node.owners {
            match self.standing(&latest_node, owner).await? {
                Some(Standing::Solid) => solid.push(owner),
                Some(Standing::Dangling) => dangling.push(owner),
                Some(Standing::Waiting) => waiting.push(owner),
                None => {
                    tracing::warn!(
                        uid,
                        name = latest_node.name,
                        owner = owner.name,
                        "garbage collector: cluster-scoped object refers to a namespaced owner; ignored"
                    );
                    return Ok(());
                }
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Drop the references to owners that are gone or waiting for their dependents
            // (the latter would otherwise wait forever); the live owners keep the object.
            let drop_uids: HashSet<&str> = dangling
                .iter()
                .chain(waiting.iter())
                .map(|o| o.uid.as_str())
                .collect();
            return self
                .remove_owner_refs(&latest_node, |o| drop_uids.contains(o.uid.as_str()))
                .await;
        }
        let has_dependents = self
            .graph()
            .dependents
            .get(&uid)
            .is_some_and(|d| !d.is_empty());
        let policy = if !waiting.is_empty() && has_dependents {
            // An owner waits for this object, which has dependents of its own: delete it
            // in the foreground too. A dependent that also waits for its dependents could
            // close a cycle; make this object's references non-blocking first.
            let cycle = {
                let graph = self.graph();
                graph.dependents.get(&uid).is_some_and(|deps| {
                    deps.iter()
                        .filter_map(|d| graph.nodes.get(d))
                        .any(Node::deleting_dependents)
                })
            };
            if cycle {
                self.unblock_owner_refs(&latest_node, &latest).await?;
            }
            kube::api::PropagationPolicy::Foreground
        } else if latest_node.finalizers.iter().any(|f| f == FINALIZER_ORPHAN) {
            kube::api::PropagationPolicy::Orphan
        } else if latest_node
            .finalizers
            .iter()
            .any(|f| f == FINALIZER_FOREGROUND)
        {
            kube::api::PropagationPolicy::Foreground
        } else {
            kube::api::PropagationPolicy::Background
        };
        tracing::debug!(
            uid,
            name = latest_node.name,
            kind = latest_node.resource.ar.kind,
            ?policy,
            "garbage collector: deleting"
        );
        self.delete(&latest_node, &latest, policy).await
    }

    /// Deletes `node`, unless it changed owners since `latest` was read.
    async fn delete(
        &self,
        node: &Node,
        latest: &DynamicObject,
        policy: kube::api::PropagationPolicy,
    ) -> Result<()> {
        let api = node.api(&self.client);
        let mut params = DeleteParams {
            propagation_policy: Some(policy.clone()),
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: latest.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        match api.delete(&node.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Changed since read: delete anyway if its owners did not change (status
                // updates are frequent), else look again.
                let Some(now) = api.get_opt(&node.name).await? else {
                    return Ok(());
                };
                if now.metadata.uid != latest.metadata.uid
                    || now.metadata.owner_references != latest.metadata.owner_references
                {
                    self.attempt_to_delete.add(node.uid.clone());
                    return Ok(());
                }
                params.preconditions = Some(Preconditions {
                    uid: Some(node.uid.clone()),
                    resource_version: None,
                });
                match api.delete(&node.name, &params).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// How `owner` of `dependent` stands. `None`: a cluster-scoped object refers to a
    /// namespaced owner, which is invalid and ignored.
    async fn standing(&self, dependent: &Node, owner: &Owner) -> Result<Option<Standing>> {
        {
            let graph = self.graph();
            if let Some(node) = graph.nodes.get(&owner.uid)
                && (node.namespace.is_none() || node.namespace == dependent.namespace)
            {
                return Ok(Some(if node.deleting_dependents() {
                    Standing::Waiting
                } else {
                    Standing::Solid
                }));
            }
        }
        if self
            .absent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .contains(&owner.uid)
        {
            return Ok(Some(Standing::Dangling));
        }
        // The graph does not know the owner: ask the API server, by name, and compare uids.
        let group = owner
            .api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_owned();
        let resource = self
            .kinds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(group, owner.kind.clone()))
            .cloned()
            .ok_or_else(|| Error::UnknownKind {
                api_version: owner.api_version.clone(),
                kind: owner.kind.clone(),
            })?;
        let api: Api<DynamicObject> = match (&dependent.namespace, resource.namespaced) {
            (_, false) => Api::all_with(self.client.clone(), &resource.ar),
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &resource.ar),
            (None, true) => return Ok(None),
        };
        match api.get_opt(&owner.name).await? {
            Some(live) if live.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                let waiting = live.metadata.deletion_timestamp.is_some()
                    && live.finalizers().iter().any(|f| f == FINALIZER_FOREGROUND);
                Ok(Some(if waiting {
                    Standing::Waiting
                } else {
                    Standing::Solid
                }))
            }
            _ => {
                self.absent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add(&owner.uid);
                Ok(Some(Standing::Dangling))
            }
        }
    }

    /// An owner being deleted in the foreground: once no dependent blocks it, its
    /// `foregroundDeletion` finalizer goes; until then its blocking dependents are deleted.
    async fn process_deleting_dependents(
        &self,
        owner: &Node,
        latest: &DynamicObject,
    ) -> Result<()> {
        let blocking = self.graph().blocking_dependents(&owner.uid);
        if blocking.is_empty() {
            return self
                .remove_finalizer(owner, latest, FINALIZER_FOREGROUND)
                .await;
        }
        self.attempt_to_delete.add_all(
            blocking
                .into_iter()
                .filter(|d| !d.deleting_dependents())
                .map(|d| d.uid),
        );
        Ok(())
    }

    /// Upstream's attemptToOrphan: removes the owner from its dependents' references, then
    /// its `orphan` finalizer.
    async fn attempt_to_orphan(&self, uid: String) -> Result<()> {
        let (owner, dependents) = {
            let graph = self.graph();
            let Some(owner) = graph.nodes.get(&uid).cloned() else {
                return Ok(());
            };
            let dependents: Vec<Node> = graph
                .dependents
                .get(&uid)
                .into_iter()
                .flatten()
                .filter_map(|d| graph.nodes.get(d).cloned())
                .collect();
            (owner, dependents)
        };
        for dependent in &dependents {
            self.remove_owner_refs(dependent, |o| o.uid == uid).await?;
        }
        let api = owner.api(&self.client);
        let Some(latest) = api.get_opt(&owner.name).await? else {
            return Ok(());
        };
        if latest.metadata.uid.as_deref() != Some(uid.as_str()) {
            return Ok(());
        }
        self.remove_finalizer(&owner, &latest, FINALIZER_ORPHAN)
            .await
    }

    /// Removes the owner references `drop` selects from `node`, with a compare-and-swap on
    /// its resourceVersion (retried on conflict).
    async fn remove_owner_refs(&self, node: &Node, drop: impl Fn(&Owner) -> bool) -> Result<()> {
        let api = node.api(&self.client);
        for _ in 0..5 {
            let Some(latest) = api.get_opt(&node.name).await? else {
                return Ok(());
            };
            if latest.metadata.uid.as_deref() != Some(node.uid.as_str()) {
                return Ok(());
            }
            let refs = latest.owner_references();
            let kept: Vec<_> = refs.iter().filter(|r| !drop(&Owner::from(*r))).collect();
            if kept.len() == refs.len() {
                return Ok(());
            }
            let patch = json!({"metadata": {
                "ownerReferences": if kept.is_empty() { Value::Null } else { json!(kept) },
                "resourceVersion": latest.metadata.resource_version,
                "uid": node.uid,
            }});
            match api
                .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.attempt_to_delete.add(node.uid.clone());
        Ok(())
    }

    /// Sets `blockOwnerDeletion: false` on every owner reference of `node`.
    async fn unblock_owner_refs(&self, node: &Node, latest: &DynamicObject) -> Result<()> {
        let refs: Vec<Value> = latest
            .owner_references()
            .iter()
            .map(|r| {
                let mut r = json!(r);
                if r.get("blockOwnerDeletion").is_some() {
                    r["blockOwnerDeletion"] = json!(false);
                }
                r
            })
            .collect();
        let patch = json!({"metadata": {
            "ownerReferences": refs,
            "resourceVersion": latest.metadata.resource_version,
            "uid": node.uid,
        }});
        node.api(&self.client)
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Removes `finalizer` from the object `latest` (compare-and-swap; a conflict retries the
    /// whole item).
    async fn remove_finalizer(
        &self,
        node: &Node,
        latest: &DynamicObject,
        finalizer: &str,
    ) -> Result<()> {
        let finalizers = latest.finalizers();
        if !finalizers.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {
            "finalizers": if kept.is_empty() { Value::Null } else { json!(kept) },
            "resourceVersion": latest.metadata.resource_version,
            "uid": node.uid,
        }});
        match node
            .api(&self.client)
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> Arc<Resource> {
        Arc::new(Resource {
            ar: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
            },
            namespaced: true,
        })
    }

    fn node(uid: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            resource: resource(),
            namespace: Some("default".into()),
            name: uid.into(),
            uid: uid.into(),
            owners: owners
                .iter()
                .map(|(o, block)| Owner {
                    uid: (*o).into(),
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: (*o).into(),
                    block: *block,
                })
                .collect(),
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    #[test]
    fn unknown_owners_and_deleted_owners_queue_their_dependents() {
        let mut g = Graph::default();
        assert_eq!(g.upsert(node("owner", &[])), Work::default());
        // The owner is known: nothing to check.
        assert_eq!(g.upsert(node("a", &[("owner", true)])), Work::default());
        // An unknown owner may be gone.
        let w = g.upsert(node("b", &[("ghost", false)]));
        assert_eq!(w.delete, vec!["b".to_owned()]);
        let w = g.remove("owner");
        assert_eq!(w.delete, vec!["a".to_owned()]);
        assert!(
            g.dependents.contains_key("owner"),
            "dependents outlive the owner node"
        );
        g.remove("a");
        assert!(!g.dependents.contains_key("owner"));
    }

    #[test]
    fn foreground_and_orphan_transitions() {
        let mut g = Graph::default();
        g.upsert(node("owner", &[]));
        g.upsert(node("blocker", &[("owner", true)]));
        g.upsert(node("free", &[("owner", false)]));
        let mut deleting = node("owner", &[]);
        deleting.deleting = true;
        deleting.finalizers = vec![FINALIZER_FOREGROUND.into()];
        let mut w = g.upsert(deleting.clone());
        w.delete.sort();
        assert_eq!(w.delete, vec!["blocker", "free", "owner"]);
        // The same state again is no transition.
        assert_eq!(g.upsert(deleting), Work::default());
        assert_eq!(
            g.blocking_dependents("owner")
                .iter()
                .map(|n| n.uid.as_str())
                .collect::<Vec<_>>(),
            vec!["blocker"]
        );
        // A blocking dependent going away wakes the owner.
        assert_eq!(g.remove("blocker").delete, vec!["owner".to_owned()]);
        // Unblocking a reference does too.
        g.upsert(node("late", &[("owner", true)]));
        assert_eq!(
            g.upsert(node("late", &[("owner", false)])).delete,
            vec!["owner".to_owned()]
        );

        let mut orphaning = node("other", &[]);
        orphaning.deleting = true;
        orphaning.finalizers = vec![FINALIZER_ORPHAN.into()];
        assert_eq!(g.upsert(orphaning).orphan, vec!["other".to_owned()]);
    }

    #[test]
    fn relist_removes_what_vanished() {
        let mut g = Graph::default();
        g.upsert(node("kept", &[]));
        g.upsert(node("vanished", &[]));
        let seen: HashSet<String> = ["kept".to_owned()].into();
        assert_eq!(
            g.stale("/v1/configmaps", &seen),
            vec!["vanished".to_owned()]
        );
    }

    #[tokio::test]
    async fn queue_dedupes_and_reruns_items_added_while_processing() {
        let q = Arc::new(Queue::default());
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.next().await, "a");
        q.add("a".into());
        assert_eq!(q.next().await, "b");
        q.done("a".into(), false);
        assert_eq!(q.next().await, "a");
        q.done("a".into(), false);
        q.done("b".into(), false);
        assert!(q.state.lock().map(|s| s.ready.is_empty()).unwrap_or(false));
    }
}
