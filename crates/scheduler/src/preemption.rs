//! Preemption (upstream's DefaultPreemption PostFilter): when a pod fits nowhere, find a
//! node where evicting lower-priority pods makes it fit, violating the fewest
//! PodDisruptionBudgets and then with the fewest and least important victims; delete them
//! gracefully and nominate the node for the pod.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube::{Api, Client};
use rand::Rng;

use crate::cache::Snapshot;
use crate::filters::{self, Code, CycleState, Diagnosis, fit_message};
use crate::info::{NodeInfo, PodInfo};
use crate::queue::SchedulingQueue;
use crate::report::{Events, clear_nomination, mark_disruption_target};

/// Nodes that preemption never helps on.
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Nodes without lower-priority pods.
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Candidates dry-run at least (upstream's `minCandidateNodesAbsolute`).
const MIN_CANDIDATES: usize = 100;
/// Share of the potential nodes dry-run (upstream's `minCandidateNodesPercentage`).
const MIN_CANDIDATES_PERCENT: usize = 10;

/// The outcome of preemption for one pod.
#[derive(Debug, Default)]
pub struct Preemption {
    /// The node nominated for the pod, if preemption succeeded.
    pub node: Option<String>,
    /// The PostFilter message (`preemption: …`); empty on success.
    pub message: String,
    /// Pods to evict.
    pub victims: Vec<Arc<PodInfo>>,
    /// Lower-priority pods nominated to the node, whose nominations are now void.
    pub void_nominations: Vec<Arc<PodInfo>>,
}

/// Looks for a node where preemption lets `state.pod` fit.
pub fn find(
    state: &CycleState,
    snapshot: &Snapshot,
    diagnosis: &Diagnosis,
    queue: &SchedulingQueue,
    rng: &mut impl Rng,
) -> Preemption {
    let pod = &state.pod;
    if !pod.may_preempt {
        return failed("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    let statuses: HashMap<&str, &filters::Rejection> = diagnosis
        .rejections
        .iter()
        .map(|(n, r)| (n.as_str(), r))
        .collect();
    // A pod already nominated waits for the victims terminating there.
    if let Some(nominated) = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        && let Some(node) = snapshot.get(nominated)
        && statuses
            .get(nominated)
            .is_none_or(|r| r.code != Code::UnschedulableAndUnresolvable)
        && node
            .pods
            .iter()
            .any(|p| p.terminating && p.priority < pod.priority)
    {
        return failed(
            "preemption: not eligible due to a terminating pod on the nominated node.".into(),
        );
    }
    let potential: Vec<&Arc<NodeInfo>> = snapshot
        .nodes
        .iter()
        .filter(|n| {
            statuses
                .get(n.name.as_str())
                .is_some_and(|r| r.code == Code::Unschedulable)
        })
        .collect();
    let num_nodes = snapshot.nodes.len();
    let mut reasons: Vec<String> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    if !potential.is_empty() {
        let wanted = (potential.len() * MIN_CANDIDATES_PERCENT / 100)
            .max(MIN_CANDIDATES)
            .min(potential.len());
        let offset = rng.random_range(0..potential.len());
        for i in 0..potential.len() {
            let node = potential[(offset + i) % potential.len()];
            let nominated = if queue.has_nominations() {
                queue.nominated_pods(&node.name, &pod.uid, pod.priority)
            } else {
                Vec::new()
            };
            match select_victims(state, node, &nominated, snapshot) {
                Ok((victims, pdb_violations)) => {
                    candidates.push(Candidate {
                        node: node.name.clone(),
                        victims,
                        pdb_violations,
                    });
                    if candidates.len() >= wanted {
                        break;
                    }
                }
                Err(why) => reasons.extend(why),
            }
        }
    }
    if candidates.is_empty() {
        let not_helpful = num_nodes.saturating_sub(potential.len());
        let all = reasons
            .iter()
            .map(String::as_str)
            .chain(std::iter::repeat_n(NOT_HELPFUL, not_helpful));
        return failed(format!("preemption: {}", fit_message(num_nodes, all, "")));
    }
    let Candidate { node, victims, .. } = pick(candidates);
    Preemption {
        void_nominations: queue.lower_priority_nominated(&node, pod.priority),
        node: Some(node),
        message: String::new(),
        victims,
    }
}

fn failed(message: String) -> Preemption {
    Preemption {
        message,
        ..Preemption::default()
    }
}

/// A node where preemption lets the pod fit, and what it costs.
struct Candidate {
    node: String,
    /// Most important first.
    victims: Vec<Arc<PodInfo>>,
    /// How many victims' evictions exceed a PodDisruptionBudget.
    pdb_violations: usize,
}

/// Upstream's `MoreImportantPod` as a sort key: higher priority first, then the longer
/// running (a pod not started yet counts as starting now, the least senior).
fn importance(pod: &PodInfo) -> (Reverse<i32>, jiff::Timestamp) {
    (
        Reverse(pod.priority),
        pod.start_time().unwrap_or(jiff::Timestamp::MAX),
    )
}

/// The fewest, least important pods to remove from `node` so that the pod fits, sparing
/// the pods whose eviction would exceed a PodDisruptionBudget first, and how many of those
/// still have to go; or the reasons it cannot fit there even so.
fn select_victims(
    state: &CycleState,
    node: &NodeInfo,
    nominated: &[Arc<PodInfo>],
    snapshot: &Snapshot,
) -> Result<(Vec<Arc<PodInfo>>, usize), Vec<String>> {
    let pod = &state.pod;
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if lower.is_empty() {
        return Err(vec![NO_VICTIMS.into()]);
    }
    lower.sort_by_key(|p| importance(p));
    let mut trial = node.clone();
    let mut trial_state = state.clone();
    for p in &lower {
        trial.remove_pod(&p.uid);
        trial_state.update_with_pod(p, &trial, snapshot, -1);
    }
    if let Err(r) = filters::run_with_nominated(&trial_state, &trial, nominated, snapshot) {
        return Err(r.reasons);
    }
    // Reprieve as many as possible: first those a budget protects, then the others, each
    // group most important first.
    let (violating, non_violating) = snapshot.budgets.split_violating(lower);
    let regroup = !violating.is_empty() && !non_violating.is_empty();
    let n_violating = violating.len();
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (i, p) in violating.into_iter().chain(non_violating).enumerate() {
        trial.add_pod(p.clone());
        trial_state.update_with_pod(&p, &trial, snapshot, 1);
        if filters::run_with_nominated(&trial_state, &trial, nominated, snapshot).is_err() {
            trial.remove_pod(&p.uid);
            trial_state.update_with_pod(&p, &trial, snapshot, -1);
            if i < n_violating {
                pdb_violations += 1;
            }
            victims.push(p);
        }
    }
    if regroup {
        victims.sort_by_key(|p| importance(p));
    }
    Ok((victims, pdb_violations))
}

/// Upstream's `pickOneNodeForPreemption`: the fewest PodDisruptionBudget violations, then
/// the lowest highest-priority victim, then the lowest sum of priorities, then the fewest
/// victims, then the node whose most important victims started last.
fn pick(candidates: Vec<Candidate>) -> Candidate {
    candidates
        .into_iter()
        .min_by_key(|c| {
            let highest = c
                .victims
                .iter()
                .map(|v| v.priority)
                .max()
                .unwrap_or(i32::MIN);
            let sum: i64 = c
                .victims
                .iter()
                .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
                .sum();
            let earliest_of_highest = c
                .victims
                .iter()
                .filter(|v| v.priority == highest)
                .map(|v| v.start_time().unwrap_or(jiff::Timestamp::MAX))
                .min();
            (
                c.pdb_violations,
                highest,
                sum,
                c.victims.len(),
                Reverse(earliest_of_highest),
            )
        })
        .expect("at least one candidate")
}

/// Evicts the victims (gracefully) and voids lower-priority nominations.
pub async fn execute(
    client: Client,
    events: Events,
    preemptor: Arc<PodInfo>,
    preemption: Preemption,
) {
    let Some(node) = preemption.node else {
        return;
    };
    for victim in &preemption.victims {
        let pod: &Pod = &victim.pod;
        if let Err(e) = mark_disruption_target(&client, pod).await {
            tracing::debug!(pod = %victim.key, error = %e, "could not mark the preemption victim");
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &victim.namespace);
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => {
                tracing::warn!(pod = %victim.key, error = %e, "could not delete the preemption victim");
                continue;
            }
        }
        tracing::info!(preemptor = %preemptor.key, victim = %victim.key, node = %node, "preempted");
        events.preempted(pod, &preemptor.uid, &node);
    }
    for p in &preemption.void_nominations {
        if let Err(e) = clear_nomination(&client, &p.pod).await {
            tracing::debug!(pod = %p.key, error = %e, "could not clear the nomination");
        }
    }
}
