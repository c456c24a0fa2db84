//! Precomputed scheduling views of pods and nodes: a pod's priority, requests, host ports
//! and affinity terms parsed once, and a node with the sum of what its pods request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::api::scheduling::v1::PriorityClass;

use crate::resources::{PodRequests, Resources, pod_requests};
use crate::selectors::{Labels, Selector};

/// Priority of the built-in `system-cluster-critical` class.
const SYSTEM_CLUSTER_CRITICAL: i32 = 2_000_000_000;
/// Priority of the built-in `system-node-critical` class.
const SYSTEM_NODE_CRITICAL: i32 = 2_000_001_000;

/// The PriorityClasses the scheduler knows, to resolve a pod's `priorityClassName` when
/// admission has not filled in `spec.priority` (kumo's API server does not).
#[derive(Clone, Debug, Default)]
pub struct PriorityClasses {
    classes: HashMap<String, (i32, Option<String>)>,
    global_default: Option<String>,
}

impl PriorityClasses {
    /// Records a class.
    pub fn apply(&mut self, class: &PriorityClass) {
        let name = class.metadata.name.clone().unwrap_or_default();
        if class.global_default == Some(true) {
            self.global_default = Some(name.clone());
        } else if self.global_default.as_deref() == Some(name.as_str()) {
            self.global_default = None;
        }
        self.classes
            .insert(name, (class.value, class.preemption_policy.clone()));
    }

    /// Forgets a class.
    pub fn delete(&mut self, name: &str) {
        self.classes.remove(name);
        if self.global_default.as_deref() == Some(name) {
            self.global_default = None;
        }
    }

    /// A pod's priority and whether it may preempt: `spec.priority` when admission set it,
    /// otherwise its class (or the global default class), otherwise 0.
    pub fn resolve(&self, pod: &Pod) -> (i32, bool) {
        let spec = pod.spec.as_ref();
        let class_name = spec
            .and_then(|s| s.priority_class_name.as_deref())
            .filter(|n| !n.is_empty());
        let class = match class_name {
            Some(name) => self.classes.get(name).cloned().or(match name {
                "system-cluster-critical" => Some((SYSTEM_CLUSTER_CRITICAL, None)),
                "system-node-critical" => Some((SYSTEM_NODE_CRITICAL, None)),
                _ => None,
            }),
            None => self
                .global_default
                .as_ref()
                .and_then(|n| self.classes.get(n).cloned()),
        };
        let priority = spec
            .and_then(|s| s.priority)
            .or(class.as_ref().map(|c| c.0))
            .unwrap_or(0);
        let policy = spec
            .and_then(|s| s.preemption_policy.clone())
            .or(class.and_then(|c| c.1));
        (priority, policy.as_deref() != Some("Never"))
    }
}

/// A host port a pod asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host IP; empty or `0.0.0.0` means every address.
    pub ip: String,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports cannot both be bound on one node.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == other.port
            && self.protocol == other.protocol
            && (wildcard(&self.ip) || wildcard(&other.ip) || self.ip == other.ip)
    }
}

/// A pod affinity term, parsed.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    /// Namespaces named by the term (the pod's own when neither these nor a selector is set).
    pub namespaces: BTreeSet<String>,
    /// Namespaces selected by labels, if the term has a namespace selector.
    pub namespace_selector: Option<Selector>,
    /// Which pods the term is about.
    pub selector: Selector,
    /// The node label whose values are the topology domains.
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(owner_namespace: &str, term: &PodAffinityTerm) -> Self {
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(owner_namespace.to_owned());
        }
        Self {
            namespaces,
            namespace_selector: term
                .namespace_selector
                .as_ref()
                .map(|s| Selector::parse(Some(s))),
            selector: Selector::parse(term.label_selector.as_ref()),
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether `pod` is one of the pods this term is about.
    pub fn matches(&self, pod: &PodInfo, namespaces: &HashMap<String, Labels>) -> bool {
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                namespaces
                    .get(&pod.namespace)
                    .is_some_and(|labels| s.matches(labels))
            });
        in_namespace && self.selector.matches(pod.labels())
    }
}

/// A preferred pod affinity term and its weight.
#[derive(Clone, Debug)]
pub struct WeightedTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Its weight (1-100).
    pub weight: i64,
}

/// What the scheduler needs to know about a pod, computed once per pod version.
#[derive(Debug)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    /// The pod's uid.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// Resolved priority.
    pub priority: i32,
    /// Whether the pod may preempt others (its preemption policy is not `Never`).
    pub may_preempt: bool,
    /// What it requests.
    pub requests: PodRequests,
    /// Host ports of its containers.
    pub host_ports: Vec<HostPort>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedTerm>,
    /// Whether it is being deleted.
    pub terminating: bool,
}

impl PodInfo {
    /// Parses `pod`, resolving its priority through `classes`.
    pub fn new(pod: Arc<Pod>, classes: &PriorityClasses) -> Self {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = format!(
            "{namespace}/{}",
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let (priority, may_preempt) = classes.resolve(&pod);
        let spec = pod.spec.as_ref();
        let mut host_ports = Vec::new();
        if let Some(spec) = spec {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in spec.containers.iter().chain(sidecars) {
                for p in c.ports.iter().flatten() {
                    if let Some(port) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            ip: p.host_ip.clone().unwrap_or_default(),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            port,
                        });
                    }
                }
            }
        }
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pod_affinity = affinity.and_then(|a| a.pod_affinity.as_ref());
        let anti_affinity = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let terms = |t: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            t.into_iter()
                .flatten()
                .map(|t| AffinityTerm::parse(&namespace, t))
                .collect()
        };
        let weighted = |t: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<WeightedTerm> {
            t.into_iter()
                .flatten()
                .map(|t| WeightedTerm {
                    term: AffinityTerm::parse(&namespace, &t.pod_affinity_term),
                    weight: i64::from(t.weight),
                })
                .collect()
        };
        Self {
            key,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            priority,
            may_preempt,
            requests: pod_requests(&pod),
            host_ports,
            required_affinity: terms(pod_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: terms(anti_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: weighted(pod_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: weighted(anti_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            namespace,
            pod,
        }
    }

    /// The pod's labels.
    pub fn labels(&self) -> &Labels {
        static EMPTY: Labels = BTreeMap::new();
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// The node the pod is bound (or assumed) to.
    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    /// Whether the pod has any affinity or anti-affinity term (upstream's
    /// `PodsWithAffinity`).
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// The pod's start time, for ordering victims.
    pub fn start_time(&self) -> Option<jiff::Timestamp> {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
    }
}

/// A node and the pods on it (bound, or assumed by this scheduler).
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The node; `None` after it was deleted while pods still referred to it.
    pub node: Option<Arc<Node>>,
    /// The node's name.
    pub name: String,
    /// Pods on the node.
    pub pods: Vec<Arc<PodInfo>>,
    /// Sum of the pods' requests.
    pub requested: Resources,
    /// Sum of the pods' CPU with the scheduler's default for containers without a request.
    pub non_zero_milli_cpu: i64,
    /// Sum of the pods' memory with the default for containers without a request.
    pub non_zero_memory: i64,
    /// What the node can allocate.
    pub allocatable: Resources,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// How many of the pods have any (anti-)affinity term.
    pub pods_with_affinity: usize,
    /// How many of the pods have a required anti-affinity term.
    pub pods_with_required_anti_affinity: usize,
    /// Image sizes by normalized name, from `status.images`.
    pub images: HashMap<String, i64>,
}

impl NodeInfo {
    /// An empty info for node `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Sets the node object.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let status = node.status.as_ref();
        self.allocatable = Resources::from_list(status.and_then(|s| s.allocatable.as_ref()));
        self.images.clear();
        for image in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for name in image.names.iter().flatten() {
                self.images
                    .insert(normalize_image(name), image.size_bytes.unwrap_or(0));
            }
        }
        self.node = Some(node);
    }

    /// The node's labels.
    pub fn labels(&self) -> &Labels {
        static EMPTY: Labels = BTreeMap::new();
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&EMPTY)
    }

    /// Accounts `pod` on this node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests.requests);
        self.non_zero_milli_cpu += pod.requests.non_zero_milli_cpu;
        self.non_zero_memory += pod.requests.non_zero_memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    /// Removes the pod with `uid`; returns whether it was here.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(idx) = self.pods.iter().position(|p| p.uid == uid) else {
            return false;
        };
        let pod = self.pods.swap_remove(idx);
        self.requested.sub(&pod.requests.requests);
        self.non_zero_milli_cpu -= pod.requests.non_zero_milli_cpu;
        self.non_zero_memory -= pod.requests.non_zero_memory;
        for port in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        true
    }
}

/// An image name as the node reports it: `name:latest` when untagged and undigested.
pub fn normalize_image(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}
