//! kumo's pod scheduler, the counterpart of kube-scheduler.
//!
//! Informers ([`informers`]) keep a cache of nodes and the pods on them ([`cache`]) and a
//! queue of pending pods ([`queue`]). The scheduling loop ([`schedule_one`]) pops the most
//! important pod, runs the filters ([`filters`], with the pod's claims from [`volumes`])
//! over a snapshot, scores the feasible nodes ([`scoring`]), assumes the pod on the best
//! one and binds it in the background ([`binding`]); pods that Services and controllers
//! group are spread by default ([`workloads`]). A pod that fits nowhere may preempt
//! lower-priority pods ([`preemption`]), sparing those PodDisruptionBudgets protect where
//! it can ([`disruption`]); its failure is reported as a condition and an Event
//! ([`report`]).
//!
//! Like the controllers, the scheduler is written against kube-rs only; inside `kumo
//! server` its client is in-process and it runs while it holds the `kube-scheduler` Lease.

pub mod binding;
pub mod cache;
pub mod disruption;
pub mod filters;
pub mod info;
pub mod informers;
pub mod preemption;
pub mod queue;
pub mod report;
pub mod resources;
pub mod schedule_one;
pub mod scoring;
pub mod selectors;
pub mod volumes;
pub mod workloads;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::sync::Semaphore;

use crate::binding::Binder;
use crate::cache::Cache;
use crate::informers::Synced;
use crate::queue::SchedulingQueue;
use crate::report::Events;
use crate::schedule_one::Scheduler;

/// How often the queue's backoff and unschedulable pools are checked at most.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How long scheduling waits for the PriorityClasses to be listed.
const PRIORITY_CLASS_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the scheduler for one cluster until the future is dropped.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let cache = Arc::new(Mutex::new(Cache::default()));
    let queue = Arc::new(SchedulingQueue::default());
    let mut tasks = tokio::task::JoinSet::new();

    // PriorityClasses first: pods' priorities are resolved from them. Scheduling without
    // them beats not scheduling at all, so a failing list is waited for only so long.
    let classes_synced = Synced::default();
    tasks.spawn(informers::priority_classes(
        client.clone(),
        cache.clone(),
        classes_synced.clone(),
    ));
    if tokio::time::timeout(PRIORITY_CLASS_SYNC_TIMEOUT, classes_synced.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "PriorityClasses not listed yet; pods without spec.priority count as priority 0 until they are"
        );
    }

    // Claims, volumes and classes likewise: until listed, pods with claims wait.
    let volumes_synced = Synced::default();
    tasks.spawn(informers::volumes(
        client.clone(),
        cache.clone(),
        queue.clone(),
        volumes_synced.clone(),
    ));
    if tokio::time::timeout(PRIORITY_CLASS_SYNC_TIMEOUT, volumes_synced.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "PersistentVolumeClaims, PersistentVolumes or StorageClasses not listed yet"
        );
    }

    let (namespaces_synced, nodes_synced, pods_synced) =
        (Synced::default(), Synced::default(), Synced::default());
    // Grouping objects and budgets only refine scores and preemption: waited for only
    // so long, like the PriorityClasses.
    let (selectors_synced, budgets_synced) = (Synced::default(), Synced::default());
    tasks.spawn(informers::pod_selectors(
        client.clone(),
        cache.clone(),
        selectors_synced.clone(),
    ));
    tasks.spawn(informers::disruption_budgets(
        client.clone(),
        cache.clone(),
        budgets_synced.clone(),
    ));
    tasks.spawn(informers::namespaces(
        client.clone(),
        cache.clone(),
        queue.clone(),
        namespaces_synced.clone(),
    ));
    tasks.spawn(informers::nodes(
        client.clone(),
        cache.clone(),
        queue.clone(),
        nodes_synced.clone(),
    ));
    tasks.spawn(informers::pods(
        client.clone(),
        cache.clone(),
        queue.clone(),
        pods_synced.clone(),
    ));
    namespaces_synced.wait().await;
    nodes_synced.wait().await;
    pods_synced.wait().await;
    let optional_synced = async {
        selectors_synced.wait().await;
        budgets_synced.wait().await;
    };
    if tokio::time::timeout(PRIORITY_CLASS_SYNC_TIMEOUT, optional_synced)
        .await
        .is_err()
    {
        tracing::warn!(
            "Services, controllers or PodDisruptionBudgets not listed yet; spreading and preemption go without them until they are"
        );
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "scheduler caches synced"
    );

    let flush_queue = queue.clone();
    tasks.spawn(async move {
        loop {
            let next = flush_queue.flush();
            let wake = tokio::time::Instant::now() + FLUSH_INTERVAL;
            tokio::time::sleep_until(next.map_or(wake, |n| n.min(wake))).await;
        }
    });

    let events = Events::start(client.clone());
    let binder = Binder {
        client: client.clone(),
        cache: cache.clone(),
        queue: queue.clone(),
        events: events.clone(),
        slots: Arc::new(Semaphore::new(binding::MAX_IN_FLIGHT)),
    };
    tasks.spawn(Scheduler::new(client, cache, queue, events, binder).run());
    // Every task runs forever; one ending means the scheduler is broken.
    tasks.join_next().await;
    anyhow::bail!("a scheduler task stopped")
}
