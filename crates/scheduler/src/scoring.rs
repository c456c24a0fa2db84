//! Scoring: ranks the nodes that passed the filters with upstream's default score plugins
//! and weights (TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2,
//! NodeResourcesFit LeastAllocated 1, NodeResourcesBalancedAllocation 1, ImageLocality 1),
//! each normalized to 0..=100, and picks the best with random tie-breaking.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::Rng;

use crate::cache::Snapshot;
use crate::filters::{CycleState, HOSTNAME_LABEL, SpreadConstraint, taints};
use crate::info::{NodeInfo, PodInfo, normalize_image};
use crate::selectors::{node_matches_term, tolerated};

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

const WEIGHT_TAINTS: i64 = 3;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_SPREAD: i64 = 2;
const WEIGHT_INTERPOD: i64 = 2;
const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_IMAGES: i64 = 1;

/// Weight of an existing pod's required affinity term towards a pod it matches
/// (upstream's `hardPodAffinityWeight`).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;
/// ImageLocality: images smaller than this score nothing.
const MIN_IMAGE_THRESHOLD: i64 = 23 * 1024 * 1024;
/// ImageLocality: per container, images beyond this score no more.
const MAX_CONTAINER_IMAGE_THRESHOLD: i64 = 1000 * 1024 * 1024;

/// Total weighted score of each of `nodes`, in order.
pub fn score(state: &CycleState, snapshot: &Snapshot, nodes: &[Arc<NodeInfo>]) -> Vec<i64> {
    let mut total = vec![0i64; nodes.len()];
    let mut add = |weight: i64, scores: Vec<i64>| {
        for (t, s) in total.iter_mut().zip(scores) {
            *t += weight * s;
        }
    };
    add(WEIGHT_TAINTS, normalize(taint_counts(state, nodes), true));
    if let Some(scores) = node_affinity(state, nodes) {
        add(WEIGHT_NODE_AFFINITY, normalize(scores, false));
    }
    if let Some(scores) = topology_spread(state, snapshot, nodes) {
        add(WEIGHT_SPREAD, scores);
    }
    if let Some(scores) = interpod_affinity(&state.pod, snapshot, nodes) {
        add(WEIGHT_INTERPOD, scores);
    }
    add(
        WEIGHT_LEAST_ALLOCATED,
        nodes
            .iter()
            .map(|n| least_allocated(&state.pod, n))
            .collect(),
    );
    add(
        WEIGHT_BALANCED,
        nodes
            .iter()
            .map(|n| balanced_allocation(&state.pod, n))
            .collect(),
    );
    if !snapshot.image_nodes.is_empty() {
        add(WEIGHT_IMAGES, image_locality(&state.pod, snapshot, nodes));
    }
    total
}

/// Index of the best score; ties are broken at random (reservoir sampling).
pub fn select(scores: &[i64], rng: &mut impl Rng) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    let mut ties = 0u32;
    for (i, &s) in scores.iter().enumerate() {
        match best {
            Some((_, b)) if s < b => {}
            Some((_, b)) if s == b => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some((i, s));
                }
            }
            _ => {
                best = Some((i, s));
                ties = 1;
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Upstream's `DefaultNormalizeScore`: scales to 0..=100 by the maximum, reversed for
/// plugins where less is better.
fn normalize(mut scores: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return scores;
    }
    for s in &mut scores {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
    scores
}

/// TaintToleration: how many PreferNoSchedule taints the pod does not tolerate.
fn taint_counts(state: &CycleState, nodes: &[Arc<NodeInfo>]) -> Vec<i64> {
    let tolerations: Vec<_> = state
        .tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .cloned()
        .collect();
    nodes
        .iter()
        .map(|n| {
            taints(n)
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&tolerations, t))
                .count() as i64
        })
        .collect()
}

/// NodeAffinity: the sum of the weights of the preferred terms a node matches.
fn node_affinity(state: &CycleState, nodes: &[Arc<NodeInfo>]) -> Option<Vec<i64>> {
    let preferred = state
        .pod
        .pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()?;
    Some(
        nodes
            .iter()
            .map(|n| {
                let Some(node) = n.node.as_deref() else {
                    return 0;
                };
                preferred
                    .iter()
                    .filter(|p| p.weight != 0 && node_matches_term(node, &p.preference))
                    .map(|p| i64::from(p.weight))
                    .sum()
            })
            .collect(),
    )
}

/// NodeResourcesFit with the LeastAllocated strategy: the share of CPU and memory left
/// after placing the pod (containers without requests count at the defaults).
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let least = |requested: i64, capacity: i64| {
        if capacity <= 0 || requested > capacity {
            0
        } else {
            (capacity - requested) * MAX_NODE_SCORE / capacity
        }
    };
    let cpu = least(
        node.non_zero_milli_cpu + pod.requests.non_zero_milli_cpu,
        node.allocatable.milli_cpu,
    );
    let memory = least(
        node.non_zero_memory + pod.requests.non_zero_memory,
        node.allocatable.memory,
    );
    (cpu + memory) / 2
}

/// NodeResourcesBalancedAllocation: favours nodes whose CPU and memory use stay close.
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let fraction = |requested: i64, capacity: i64| {
        (capacity > 0).then(|| (requested as f64 / capacity as f64).min(1.0))
    };
    let want = &pod.requests.requests;
    let cpu = fraction(
        node.requested.milli_cpu + want.milli_cpu,
        node.allocatable.milli_cpu,
    );
    let memory = fraction(node.requested.memory + want.memory, node.allocatable.memory);
    let std = match (cpu, memory) {
        (Some(c), Some(m)) => (c - m).abs() / 2.0,
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// PodTopologySpread scoring: fewer matching pods in a node's domains scores higher.
/// The pod's ScheduleAnyway constraints count, or, when it has no constraints at all, the
/// system defaults over the pods its Services and controllers group. Nodes lacking one of
/// the pod's own topology keys score 0; under the defaults a missing key only drops that
/// constraint, so that nodes without a zone still spread by hostname.
fn topology_spread(
    state: &CycleState,
    snapshot: &Snapshot,
    nodes: &[Arc<NodeInfo>],
) -> Option<Vec<i64>> {
    let (constraints, require_all_keys) =
        SpreadConstraint::for_scoring(&state.pod, &snapshot.pod_selectors);
    if constraints.is_empty() {
        return None;
    }
    let has_keys = |n: &NodeInfo| {
        let labels = n.labels();
        constraints
            .iter()
            .all(|c| labels.contains_key(&c.topology_key))
    };
    let ignored: Vec<bool> = nodes
        .iter()
        .map(|n| require_all_keys && !has_keys(n))
        .collect();
    let n_scored = ignored.iter().filter(|i| !**i).count();
    // Per constraint, the domains of the scored nodes: how many there are (a node without
    // the key counts as the empty value, as upstream's) and the matching pods of those a
    // scored node can read. Hostname counts are taken per node below.
    let mut n_domains = vec![0usize; constraints.len()];
    let mut counts: Vec<HashMap<&str, i64>> = vec![HashMap::new(); constraints.len()];
    {
        let mut seen: Vec<HashSet<&str>> = vec![HashSet::new(); constraints.len()];
        for (n, _) in nodes.iter().zip(&ignored).filter(|(_, ig)| !**ig) {
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key == HOSTNAME_LABEL {
                    continue;
                }
                let value = n.labels().get(&c.topology_key);
                if seen[i].insert(value.map_or("", String::as_str)) {
                    n_domains[i] += 1;
                }
                if let Some(value) = value {
                    counts[i].insert(value.as_str(), 0);
                }
            }
        }
    }
    if counts.iter().any(|c| !c.is_empty()) {
        for n in &snapshot.nodes {
            if require_all_keys && !has_keys(n) {
                continue;
            }
            let matches_affinity = state.matches_node_affinity(n);
            let mut tolerates = None;
            for (i, c) in constraints.iter().enumerate() {
                if counts[i].is_empty() {
                    continue;
                }
                let tolerates = !c.honor_taints
                    || *tolerates.get_or_insert_with(|| state.untolerated_taint(n).is_none());
                if !c.includes(matches_affinity, tolerates) {
                    continue;
                }
                let value = n.labels().get(&c.topology_key).map_or("", String::as_str);
                if let Some(count) = counts[i].get_mut(value) {
                    *count += c.count_on(&state.pod, n);
                }
            }
        }
    }
    let weights: Vec<f64> = constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.topology_key == HOSTNAME_LABEL {
                n_scored
            } else {
                n_domains[i]
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    let raw: Vec<i64> = nodes
        .iter()
        .zip(&ignored)
        .map(|(n, ignored)| {
            if *ignored {
                return 0;
            }
            let labels = n.labels();
            let s: f64 = constraints
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let value = labels.get(&c.topology_key)?;
                    let count = if c.topology_key == HOSTNAME_LABEL {
                        c.count_on(&state.pod, n)
                    } else {
                        counts[i].get(value.as_str()).copied().unwrap_or(0)
                    };
                    Some(count as f64 * weights[i] + (c.max_skew - 1) as f64)
                })
                .sum();
            s.round() as i64
        })
        .collect();
    let considered = || {
        raw.iter()
            .zip(&ignored)
            .filter(|(_, i)| !**i)
            .map(|(s, _)| *s)
    };
    let (min, max) = (
        considered().min().unwrap_or(0),
        considered().max().unwrap_or(0),
    );
    Some(
        raw.iter()
            .zip(&ignored)
            .map(|(&s, &ignored)| {
                if ignored {
                    0
                } else if max == 0 {
                    MAX_NODE_SCORE
                } else {
                    MAX_NODE_SCORE * (max + min - s) / max
                }
            })
            .collect(),
    )
}

/// InterPodAffinity: preferred affinity and anti-affinity of the pod towards placed pods,
/// and of placed pods towards the pod (required affinity counting with weight 1), summed
/// per topology domain and scaled between the lowest and highest node.
fn interpod_affinity(
    pod: &PodInfo,
    snapshot: &Snapshot,
    nodes: &[Arc<NodeInfo>],
) -> Option<Vec<i64>> {
    let own_preferences =
        !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    if !own_preferences && snapshot.pods_with_affinity == 0 {
        return None;
    }
    let namespaces = &snapshot.namespaces;
    let mut topology: HashMap<(String, String), i64> = HashMap::new();
    let mut bump = |node: &NodeInfo, key: &str, delta: i64| {
        if let Some(v) = node.labels().get(key) {
            *topology.entry((key.to_owned(), v.clone())).or_insert(0) += delta;
        }
    };
    for node in &snapshot.nodes {
        if !own_preferences && node.pods_with_affinity == 0 {
            continue;
        }
        for existing in &node.pods {
            for t in &pod.preferred_affinity {
                if t.term.matches(existing, namespaces) {
                    bump(node, &t.term.topology_key, t.weight);
                }
            }
            for t in &pod.preferred_anti_affinity {
                if t.term.matches(existing, namespaces) {
                    bump(node, &t.term.topology_key, -t.weight);
                }
            }
            for t in &existing.required_affinity {
                if t.matches(pod, namespaces) {
                    bump(node, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for t in &existing.preferred_affinity {
                if t.term.matches(pod, namespaces) {
                    bump(node, &t.term.topology_key, t.weight);
                }
            }
            for t in &existing.preferred_anti_affinity {
                if t.term.matches(pod, namespaces) {
                    bump(node, &t.term.topology_key, -t.weight);
                }
            }
        }
    }
    if topology.is_empty() {
        return None;
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|n| {
            n.labels()
                .iter()
                .filter_map(|(k, v)| topology.get(&(k.clone(), v.clone())))
                .sum()
        })
        .collect();
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    Some(
        raw.iter()
            .map(|&s| {
                if max > min {
                    MAX_NODE_SCORE * (s - min) / (max - min)
                } else {
                    0
                }
            })
            .collect(),
    )
}

/// ImageLocality: favours nodes that already hold the pod's images, weighted by how widely
/// each image is spread over the cluster.
fn image_locality(pod: &PodInfo, snapshot: &Snapshot, nodes: &[Arc<NodeInfo>]) -> Vec<i64> {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return vec![0; nodes.len()];
    };
    let images: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| c.image.as_deref())
        .map(normalize_image)
        .collect();
    let total_nodes = snapshot.nodes.len().max(1) as f64;
    let max_threshold = MAX_CONTAINER_IMAGE_THRESHOLD * images.len().max(1) as i64;
    nodes
        .iter()
        .map(|n| {
            let sum: f64 = images
                .iter()
                .filter_map(|image| {
                    let size = *n.images.get(image)?;
                    let spread =
                        *snapshot.image_nodes.get(image).unwrap_or(&0) as f64 / total_nodes;
                    Some(size as f64 * spread)
                })
                .sum();
            let sum = (sum as i64).clamp(MIN_IMAGE_THRESHOLD, max_threshold);
            MAX_NODE_SCORE * (sum - MIN_IMAGE_THRESHOLD) / (max_threshold - MIN_IMAGE_THRESHOLD)
        })
        .collect()
}
