//! The scheduler's cache of the cluster (upstream's `internal/cache`): nodes with the pods
//! bound to them, plus pods the scheduler has *assumed* onto a node while their binding is
//! in flight, so that the next pod is placed without waiting for the watch round trip.
//! Each scheduling cycle works on a [`Snapshot`] that copies only the nodes changed since
//! the previous cycle.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Node;

use crate::disruption::{Budget, DisruptionBudgets};
use crate::filters::ZONE_LABEL;
use crate::info::{NodeInfo, PodInfo, PriorityClasses};
use crate::selectors::{Labels, Selector};
use crate::volumes::Volumes;
use crate::workloads::{ControllerKind, PodSelectors};

/// Where the cache holds a pod.
#[derive(Debug)]
struct PodState {
    node: String,
    /// Placed by this scheduler; the informer has not reported it bound yet.
    assumed: bool,
}

/// Nodes and the pods on them.
#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, Arc<NodeInfo>>,
    pods: HashMap<String, PodState>,
    /// Nodes changed since the last snapshot.
    dirty: HashSet<String>,
    /// Whether nodes were added or removed since the last snapshot.
    node_set_changed: bool,
    namespaces: Arc<HashMap<String, Labels>>,
    namespaces_changed: bool,
    image_nodes: HashMap<String, usize>,
    images_changed: bool,
    /// PriorityClasses, to resolve pods' priorities.
    pub priority_classes: PriorityClasses,
    volumes: Arc<Volumes>,
    volumes_changed: bool,
    pod_selectors: Arc<PodSelectors>,
    pod_selectors_changed: bool,
    budgets: Arc<DisruptionBudgets>,
    budgets_changed: bool,
}

impl Cache {
    /// Adds or updates a node.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let entry = self
            .nodes
            .entry(name.clone())
            .or_insert_with(|| Arc::new(NodeInfo::new(&name)));
        let info = Arc::make_mut(entry);
        if info.node.is_none() {
            self.node_set_changed = true;
        }
        let old_images: Vec<String> = info.images.keys().cloned().collect();
        info.set_node(node);
        if old_images.len() != info.images.len()
            || old_images.iter().any(|i| !info.images.contains_key(i))
        {
            for image in old_images {
                decrement(&mut self.image_nodes, &image);
            }
            for image in info.images.keys() {
                *self.image_nodes.entry(image.clone()).or_insert(0) += 1;
            }
            self.images_changed = true;
        }
        self.dirty.insert(name);
    }

    /// Removes a node. Its info stays while pods still refer to it.
    pub fn remove_node(&mut self, name: &str) {
        let Some(entry) = self.nodes.get_mut(name) else {
            return;
        };
        let info = Arc::make_mut(entry);
        for image in info.images.keys() {
            decrement(&mut self.image_nodes, image);
        }
        self.images_changed |= !info.images.is_empty();
        info.node = None;
        info.images.clear();
        if info.pods.is_empty() {
            self.nodes.remove(name);
        }
        self.node_set_changed = true;
        self.dirty.remove(name);
    }

    /// Whether a node of that name is known.
    pub fn has_node(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(|n| n.node.is_some())
    }

    /// Records a pod the informer reports bound to a node (confirming an assumed pod).
    pub fn add_or_update_pod(&mut self, info: Arc<PodInfo>) {
        let Some(node) = info.node_name().map(str::to_owned) else {
            return;
        };
        if let Some(old) = self.pods.remove(&info.uid) {
            self.detach(&old.node, &info.uid);
        }
        let uid = info.uid.clone();
        self.attach(&node, info);
        self.pods.insert(
            uid,
            PodState {
                node,
                assumed: false,
            },
        );
    }

    /// Removes a pod the informer reports deleted (or finished).
    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            self.detach(&old.node, uid);
        }
    }

    /// Places `info` (whose `spec.nodeName` is set) on its node before the binding is
    /// confirmed.
    pub fn assume(&mut self, info: Arc<PodInfo>) {
        let Some(node) = info.node_name().map(str::to_owned) else {
            return;
        };
        if let Some(old) = self.pods.remove(&info.uid) {
            self.detach(&old.node, &info.uid);
        }
        let uid = info.uid.clone();
        self.attach(&node, info);
        self.pods.insert(
            uid,
            PodState {
                node,
                assumed: true,
            },
        );
    }

    /// Undoes [`Cache::assume`] after a failed binding; a pod the informer has meanwhile
    /// reported bound stays.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove_pod(uid);
        }
    }

    /// Whether the pod with `uid` is assumed or bound in the cache.
    pub fn is_placed(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Replaces the labels of namespace `name` (`None`: deleted).
    pub fn set_namespace(&mut self, name: &str, labels: Option<Labels>) {
        let namespaces = Arc::make_mut(&mut self.namespaces);
        match labels {
            Some(l) => namespaces.insert(name.to_owned(), l),
            None => namespaces.remove(name),
        };
        self.namespaces_changed = true;
    }

    /// Changes the claims, volumes and classes.
    pub fn update_volumes(&mut self, change: impl FnOnce(&mut Volumes)) {
        change(Arc::make_mut(&mut self.volumes));
        self.volumes_changed = true;
    }

    /// Sets (`None`: removes) the selector of Service `namespace/name`. Updates that
    /// change nothing (most are status writes) copy nothing.
    pub fn set_service(&mut self, namespace: &str, name: &str, selector: Option<Labels>) {
        if self.pod_selectors.service(namespace, name) != selector.as_ref() {
            let selectors = Arc::make_mut(&mut self.pod_selectors);
            self.pod_selectors_changed |= selectors.set_service(namespace, name, selector);
        }
    }

    /// Sets (`None`: removes) the pod selector of a controller.
    pub fn set_controller(
        &mut self,
        kind: ControllerKind,
        namespace: &str,
        name: &str,
        selector: Option<Selector>,
    ) {
        if self.pod_selectors.controller(kind, namespace, name) != selector.as_ref() {
            let selectors = Arc::make_mut(&mut self.pod_selectors);
            self.pod_selectors_changed |= selectors.set_controller(kind, namespace, name, selector);
        }
    }

    /// The selectors of Services and controllers.
    pub fn pod_selectors(&self) -> &PodSelectors {
        &self.pod_selectors
    }

    /// Sets (`None`: removes) the PodDisruptionBudget `namespace/name`.
    pub fn set_budget(&mut self, key: &str, budget: Option<Budget>) {
        if self.budgets.get(key) != budget.as_ref() {
            self.budgets_changed |= Arc::make_mut(&mut self.budgets).set(key, budget);
        }
    }

    /// The PodDisruptionBudgets.
    pub fn budgets(&self) -> &DisruptionBudgets {
        &self.budgets
    }

    /// How many pods the cache holds (bound and assumed).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    fn attach(&mut self, node: &str, info: Arc<PodInfo>) {
        let entry = self
            .nodes
            .entry(node.to_owned())
            .or_insert_with(|| Arc::new(NodeInfo::new(node)));
        Arc::make_mut(entry).add_pod(info);
        self.dirty.insert(node.to_owned());
    }

    fn detach(&mut self, node: &str, uid: &str) {
        let Some(entry) = self.nodes.get_mut(node) else {
            return;
        };
        let info = Arc::make_mut(entry);
        info.remove_pod(uid);
        if info.node.is_none() && info.pods.is_empty() {
            self.nodes.remove(node);
        } else {
            self.dirty.insert(node.to_owned());
        }
    }

    /// Brings `snapshot` up to date: copies the changed nodes (cheap `Arc` clones), or
    /// rebuilds the node order when nodes came or went.
    pub fn update_snapshot(&mut self, snapshot: &mut Snapshot) {
        if self.namespaces_changed {
            snapshot.namespaces = self.namespaces.clone();
            self.namespaces_changed = false;
        }
        if self.volumes_changed {
            snapshot.volumes = self.volumes.clone();
            self.volumes_changed = false;
        }
        if self.pod_selectors_changed {
            snapshot.pod_selectors = self.pod_selectors.clone();
            self.pod_selectors_changed = false;
        }
        if self.budgets_changed {
            snapshot.budgets = self.budgets.clone();
            self.budgets_changed = false;
        }
        if self.images_changed {
            snapshot.image_nodes = Arc::new(self.image_nodes.clone());
            self.images_changed = false;
        }
        if self.node_set_changed {
            self.node_set_changed = false;
            self.dirty.clear();
            snapshot.rebuild(self.nodes.values().filter(|n| n.node.is_some()).cloned());
            return;
        }
        for name in self.dirty.drain() {
            if let (Some(&idx), Some(info)) = (snapshot.index.get(&name), self.nodes.get(&name)) {
                snapshot.replace(idx, info.clone());
            }
        }
    }
}

/// Locks the shared cache, recovering from a poisoned lock (a panic elsewhere must not
/// stop scheduling).
pub fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

fn decrement(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// A consistent view of the cluster for one scheduling cycle.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Nodes in evaluation order: zones interleaved, names sorted within a zone.
    pub nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    /// Labels of every namespace, for affinity terms' namespace selectors.
    pub namespaces: Arc<HashMap<String, Labels>>,
    /// On how many nodes each image is present.
    pub image_nodes: Arc<HashMap<String, usize>>,
    /// Pods with any (anti-)affinity term, over all nodes.
    pub pods_with_affinity: usize,
    /// Pods with a required anti-affinity term, over all nodes.
    pub pods_with_required_anti_affinity: usize,
    /// PersistentVolumeClaims, PersistentVolumes and StorageClasses.
    pub volumes: Arc<Volumes>,
    /// Selectors of Services and controllers, for default topology spreading.
    pub pod_selectors: Arc<PodSelectors>,
    /// PodDisruptionBudgets, for preemption.
    pub budgets: Arc<DisruptionBudgets>,
}

impl Snapshot {
    /// The node called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    fn replace(&mut self, idx: usize, info: Arc<NodeInfo>) {
        let old = &self.nodes[idx];
        self.pods_with_affinity =
            self.pods_with_affinity + info.pods_with_affinity - old.pods_with_affinity;
        self.pods_with_required_anti_affinity = self.pods_with_required_anti_affinity
            + info.pods_with_required_anti_affinity
            - old.pods_with_required_anti_affinity;
        self.nodes[idx] = info;
    }

    fn rebuild(&mut self, nodes: impl Iterator<Item = Arc<NodeInfo>>) {
        let mut zones: std::collections::BTreeMap<String, Vec<Arc<NodeInfo>>> = Default::default();
        for n in nodes {
            let zone = n.labels().get(ZONE_LABEL).cloned().unwrap_or_default();
            zones.entry(zone).or_default().push(n);
        }
        let mut zones: Vec<std::vec::IntoIter<Arc<NodeInfo>>> = zones
            .into_values()
            .map(|mut v| {
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v.into_iter()
            })
            .collect();
        self.nodes.clear();
        loop {
            let before = self.nodes.len();
            for zone in &mut zones {
                if let Some(n) = zone.next() {
                    self.nodes.push(n);
                }
            }
            if self.nodes.len() == before {
                break;
            }
        }
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        self.pods_with_affinity = self.nodes.iter().map(|n| n.pods_with_affinity).sum();
        self.pods_with_required_anti_affinity = self
            .nodes
            .iter()
            .map(|n| n.pods_with_required_anti_affinity)
            .sum();
    }
}
