//! The scheduling loop (upstream's `scheduleOne`): pop the most important pod, filter a
//! share of the nodes on a fresh snapshot, score the feasible ones, assume the pod on the
//! best and hand it to a binding task; or, when nothing fits, try preemption, report
//! why and park the pod.

use std::sync::{Arc, Mutex};

use kube::Client;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::binding::Binder;
use crate::cache::{Cache, Snapshot, lock};
use crate::filters::{self, CycleState, Diagnosis};
use crate::info::{NodeInfo, PodInfo};
use crate::preemption;
use crate::queue::{QueuedPod, SchedulingQueue};
use crate::report::{Events, Nomination, update_condition};
use crate::scoring;

/// Clusters smaller than this are always searched in full (upstream's
/// `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this.
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// How many feasible nodes to find before scoring, for a cluster of `num_nodes`
/// (upstream's `numFeasibleNodesToFind` with the adaptive `percentageOfNodesToScore`:
/// 50% minus 1% per 125 nodes, at least 5% and at least 100 nodes).
pub fn num_feasible_nodes_to_find(num_nodes: usize, percentage: Option<usize>) -> usize {
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_nodes;
    }
    let percentage = percentage.unwrap_or_else(|| {
        50usize
            .saturating_sub(num_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE)
    });
    if percentage >= 100 {
        return num_nodes;
    }
    (num_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// The scheduling loop's state.
pub struct Scheduler {
    client: Client,
    cache: Arc<Mutex<Cache>>,
    queue: Arc<SchedulingQueue>,
    events: Events,
    binder: Binder,
    snapshot: Snapshot,
    /// Where the next search over the nodes starts, so that all nodes get their turn.
    next_start: usize,
    rng: StdRng,
    /// `percentageOfNodesToScore`; `None` is adaptive.
    percentage: Option<usize>,
}

/// Why a pod could not be placed in one attempt.
enum Failure {
    /// No node fits.
    Unschedulable(Diagnosis),
    /// The cluster has no nodes.
    NoNodes,
}

impl Scheduler {
    /// A scheduler over the shared cache and queue.
    pub fn new(
        client: Client,
        cache: Arc<Mutex<Cache>>,
        queue: Arc<SchedulingQueue>,
        events: Events,
        binder: Binder,
    ) -> Self {
        Self {
            client,
            cache,
            queue,
            events,
            binder,
            snapshot: Snapshot::default(),
            next_start: 0,
            rng: StdRng::from_os_rng(),
            percentage: None,
        }
    }

    /// Schedules pods until the future is dropped.
    pub async fn run(mut self) {
        loop {
            let pod = self.queue.pop().await;
            self.schedule_one(pod).await;
        }
    }

    async fn schedule_one(&mut self, queued: QueuedPod) {
        let info = queued.info.clone();
        if info.terminating || info.node_name().is_some() {
            self.queue.done(&info.key);
            return;
        }
        {
            let mut cache = lock(&self.cache);
            if cache.is_placed(&info.uid) {
                drop(cache);
                self.queue.done(&info.key);
                return;
            }
            cache.update_snapshot(&mut self.snapshot);
        }
        let state = CycleState::new(info.clone(), &self.snapshot);
        match self.find_node(&state) {
            Ok(node) => {
                let mut assumed = (*info.pod).clone();
                assumed.spec.get_or_insert_default().node_name = Some(node.clone());
                let assumed = Arc::new(PodInfo::new(
                    Arc::new(assumed),
                    &lock(&self.cache).priority_classes,
                ));
                lock(&self.cache).assume(assumed);
                tracing::debug!(pod = %info.key, node = %node, "assumed");
                let claims = match &state.volumes {
                    Ok(Some(volumes)) => volumes.claims_to_annotate(),
                    _ => Vec::new(),
                };
                self.binder.spawn(queued, node, claims).await;
            }
            Err(Failure::NoNodes) => {
                let message = "no nodes available to schedule pods";
                self.report(&queued, "SchedulerError", message, Nomination::Keep);
                self.queue.requeue_backoff(&queued);
            }
            Err(Failure::Unschedulable(diagnosis)) => {
                let preemption = preemption::find(
                    &state,
                    &self.snapshot,
                    &diagnosis,
                    &self.queue,
                    &mut self.rng,
                );
                let message = diagnosis.message(self.snapshot.nodes.len(), &preemption.message);
                let nomination = match &preemption.node {
                    Some(node) => Nomination::Set(node.clone()),
                    None if info
                        .pod
                        .status
                        .as_ref()
                        .and_then(|s| s.nominated_node_name.as_ref())
                        .is_some() =>
                    {
                        Nomination::Clear
                    }
                    None => Nomination::Keep,
                };
                match &preemption.node {
                    Some(node) => {
                        self.queue.nominate(&info, Some(node));
                        for p in &preemption.void_nominations {
                            self.queue.nominate(p, None);
                        }
                        tracing::info!(pod = %info.key, node = %node, victims = preemption.victims.len(), "preempting");
                        tokio::spawn(preemption::execute(
                            self.client.clone(),
                            self.events.clone(),
                            info.clone(),
                            preemption,
                        ));
                    }
                    None if nomination == Nomination::Clear => self.queue.nominate(&info, None),
                    None => {}
                }
                tracing::debug!(pod = %info.key, %message, "unschedulable");
                self.report(&queued, "Unschedulable", &message, nomination);
                self.queue
                    .requeue_unschedulable(&queued, diagnosis.rejected_by());
            }
        }
    }

    /// Publishes FailedScheduling and updates the pod's condition in the background.
    fn report(&self, queued: &QueuedPod, reason: &str, message: &str, nomination: Nomination) {
        let pod = queued.info.pod.clone();
        self.events.failed_scheduling(&pod, message);
        let client = self.client.clone();
        let (reason, message) = (reason.to_owned(), message.to_owned());
        tokio::spawn(async move {
            if let Err(e) = update_condition(&client, &pod, &reason, &message, &nomination).await {
                tracing::debug!(error = %e, "could not update the PodScheduled condition");
            }
        });
    }

    /// Filters nodes (starting where the last search stopped) until enough are feasible,
    /// then scores them and picks the best.
    fn find_node(&mut self, state: &CycleState) -> Result<String, Failure> {
        let num_nodes = self.snapshot.nodes.len();
        if num_nodes == 0 {
            return Err(Failure::NoNodes);
        }
        if let Err(reason) = &state.volumes {
            // PreFilter rejected the pod: no node is worth a look.
            let rejection = filters::Rejection {
                plugin: filters::Plugin::VolumeBinding,
                code: filters::Code::UnschedulableAndUnresolvable,
                reasons: vec![reason.clone()],
            };
            return Err(Failure::Unschedulable(Diagnosis {
                rejections: self
                    .snapshot
                    .nodes
                    .iter()
                    .map(|n| (n.name.clone(), rejection.clone()))
                    .collect(),
                pre_filter: Some(reason.clone()),
            }));
        }
        let pod = &state.pod;
        let check_nominations = self.queue.has_nominations();
        let nominated_for = |node: &NodeInfo| -> Vec<Arc<PodInfo>> {
            if check_nominations {
                self.queue
                    .nominated_pods(&node.name, &pod.uid, pod.priority)
            } else {
                Vec::new()
            }
        };
        // A pod nominated by an earlier preemption tries that node first.
        if let Some(nominated) = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            && let Some(node) = self.snapshot.get(nominated)
            && filters::run_with_nominated(state, node, &nominated_for(node), &self.snapshot)
                .is_ok()
        {
            return Ok(node.name.clone());
        }
        let wanted = num_feasible_nodes_to_find(num_nodes, self.percentage);
        let mut feasible: Vec<Arc<NodeInfo>> = Vec::with_capacity(wanted);
        let mut diagnosis = Diagnosis::default();
        let mut processed = 0;
        for i in 0..num_nodes {
            let node = &self.snapshot.nodes[(self.next_start + i) % num_nodes];
            processed += 1;
            match filters::run_with_nominated(state, node, &nominated_for(node), &self.snapshot) {
                Ok(()) => {
                    feasible.push(node.clone());
                    if feasible.len() >= wanted {
                        break;
                    }
                }
                Err(rejection) => diagnosis.rejections.push((node.name.clone(), rejection)),
            }
        }
        self.next_start = (self.next_start + processed) % num_nodes;
        match feasible.len() {
            0 => Err(Failure::Unschedulable(diagnosis)),
            1 => Ok(feasible[0].name.clone()),
            _ => {
                let scores = scoring::score(state, &self.snapshot, &feasible);
                let best = scoring::select(&scores, &mut self.rng).expect("feasible nodes");
                Ok(feasible[best].name.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::num_feasible_nodes_to_find;

    #[test]
    fn adaptive_share_of_nodes() {
        assert_eq!(num_feasible_nodes_to_find(50, None), 50);
        assert_eq!(num_feasible_nodes_to_find(100, None), 100);
        assert_eq!(num_feasible_nodes_to_find(1000, None), 420);
        assert_eq!(num_feasible_nodes_to_find(5000, None), 500);
        assert_eq!(num_feasible_nodes_to_find(20000, None), 1000);
        assert_eq!(num_feasible_nodes_to_find(150, Some(10)), 100);
        assert_eq!(num_feasible_nodes_to_find(5000, Some(100)), 5000);
    }
}
