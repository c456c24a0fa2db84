//! The scheduling queue (upstream's `PriorityQueue`): an active queue ordered by priority
//! then time, a backoff queue (1 s doubling to 10 s per failed attempt), and a pool of
//! unschedulable pods that cluster events move back when they may help (a light form of
//! upstream's queueing hints) and that is flushed at least every 60 s. It also keeps the
//! nominations made by preemption.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::filters::Plugin;
use crate::info::PodInfo;

/// Backoff after the first failed attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest a pod stays in the unschedulable pool without a helpful event.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(60);

/// A set of plugins, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plugins(u16);

impl Plugins {
    /// Every plugin.
    pub const ALL: Plugins = Plugins(u16::MAX);

    /// The set of `plugins`.
    pub fn of(plugins: &[Plugin]) -> Self {
        let mut s = Self::default();
        for p in plugins {
            s.insert(*p);
        }
        s
    }

    /// Adds a plugin.
    pub fn insert(&mut self, p: Plugin) {
        self.0 |= 1 << (p as u16);
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether the sets share a plugin.
    pub fn intersects(self, other: Plugins) -> bool {
        self.0 & other.0 != 0
    }
}

/// A pod in the queue with its scheduling history.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    /// The pod.
    pub info: Arc<PodInfo>,
    /// How many times it was popped for scheduling.
    pub attempts: u32,
    /// The scheduling cycle in which it was last popped.
    pub cycle: u64,
    /// When it was (re)added, for ordering equal priorities.
    pub timestamp: Instant,
    /// When its last attempt failed.
    pub failed_at: Option<Instant>,
    /// Plugins that rejected it in its last attempt (empty: retry on any event).
    pub rejected_by: Plugins,
}

impl QueuedPod {
    /// When its backoff ends.
    pub fn backoff_until(&self) -> Instant {
        let Some(failed) = self.failed_at else {
            return self.timestamp;
        };
        let exp = self.attempts.saturating_sub(1).min(16);
        let backoff = INITIAL_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF);
        failed + backoff
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

struct Entry {
    pod: QueuedPod,
    place: Place,
    seq: u64,
    /// Time it entered the unschedulable pool.
    since: Instant,
    /// It was updated while a scheduling attempt was in flight.
    updated_in_flight: bool,
}

type ActiveKey = (Reverse<i32>, Instant, u64, String);

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    active: BTreeSet<ActiveKey>,
    backoff: BTreeSet<(Instant, u64, String)>,
    unschedulable: std::collections::HashSet<String>,
    seq: u64,
    cycle: u64,
    move_request_cycle: u64,
    /// Pods nominated to each node by preemption.
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_node_of: HashMap<String, String>,
}

/// The queue, shared by the informers (producers) and the scheduling loop (consumer).
#[derive(Default)]
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl SchedulingQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a pending pod, or updates the queued copy. `changed` says whether the update
    /// may make an unschedulable pod schedulable (spec, labels or annotations changed).
    pub fn add_or_update(&self, info: Arc<PodInfo>, changed: bool) {
        let mut q = self.lock();
        q.set_nomination(&info, nominated_node(&info));
        let now = Instant::now();
        let key = info.key.clone();
        let Some(entry) = q.entries.get_mut(&key) else {
            let pod = QueuedPod {
                info,
                attempts: 0,
                cycle: 0,
                timestamp: now,
                failed_at: None,
                rejected_by: Plugins::default(),
            };
            q.insert(pod, Place::Active, now);
            drop(q);
            self.notify.notify_one();
            return;
        };
        let place = entry.place;
        match place {
            Place::InFlight => {
                entry.pod.info = info;
                entry.updated_in_flight |= changed;
            }
            Place::Unschedulable if changed => {
                let mut pod = q.remove(&key).expect("present").pod;
                pod.info = info;
                let to = if pod.backoff_until() > now {
                    Place::Backoff
                } else {
                    Place::Active
                };
                q.insert(pod, to, now);
                drop(q);
                self.notify.notify_one();
            }
            Place::Active => {
                let mut pod = q.remove(&key).expect("present").pod;
                pod.info = info;
                q.insert(pod, Place::Active, now);
            }
            Place::Backoff | Place::Unschedulable => entry.pod.info = info,
        }
    }

    /// Removes a pod (deleted, or bound by someone else).
    pub fn delete(&self, key: &str) {
        let mut q = self.lock();
        q.remove(key);
        q.clear_nomination(key);
    }

    /// Waits for the next pod to schedule and marks it in flight.
    pub async fn pop(&self) -> QueuedPod {
        loop {
            if let Some(pod) = self.try_pop() {
                return pod;
            }
            self.notify.notified().await;
        }
    }

    /// The next pod to schedule, if one is active.
    pub fn try_pop(&self) -> Option<QueuedPod> {
        let mut q = self.lock();
        let first = q.active.pop_first()?;
        q.cycle += 1;
        let cycle = q.cycle;
        let entry = q.entries.get_mut(&first.3).expect("active entry");
        entry.place = Place::InFlight;
        entry.updated_in_flight = false;
        entry.pod.attempts += 1;
        entry.pod.cycle = cycle;
        Some(entry.pod.clone())
    }

    /// The pod was placed: it leaves the queue.
    pub fn done(&self, key: &str) {
        let mut q = self.lock();
        if q.entries
            .get(key)
            .is_some_and(|e| e.place == Place::InFlight)
        {
            q.remove(key);
        }
        q.clear_nomination(key);
    }

    /// The attempt failed because no node fits: the pod waits in the unschedulable pool
    /// for an event that involves one of `rejected_by`, unless such an event arrived
    /// while it was being scheduled (then it backs off and retries).
    pub fn requeue_unschedulable(&self, pod: &QueuedPod, rejected_by: Plugins) {
        self.requeue(pod, rejected_by, false);
    }

    /// The attempt failed for another reason (an API error): the pod backs off.
    pub fn requeue_backoff(&self, pod: &QueuedPod) {
        self.requeue(pod, Plugins::default(), true);
    }

    fn requeue(&self, pod: &QueuedPod, rejected_by: Plugins, error: bool) {
        let mut q = self.lock();
        let Some(entry) = q.entries.get(&pod.info.key) else {
            return; // Deleted meanwhile.
        };
        if entry.place != Place::InFlight {
            return;
        }
        let updated = entry.updated_in_flight;
        let mut queued = q.remove(&pod.info.key).expect("present").pod;
        let now = Instant::now();
        queued.failed_at = Some(now);
        queued.rejected_by = rejected_by;
        queued.timestamp = now;
        let to = if error || updated || q.move_request_cycle >= pod.cycle || rejected_by.is_empty()
        {
            Place::Backoff
        } else {
            Place::Unschedulable
        };
        q.insert(queued, to, now);
    }

    /// A cluster event that may help pods rejected by `helps`: moves them to the active
    /// queue, or the backoff queue while their backoff runs.
    pub fn move_for_event(&self, helps: Plugins) {
        let mut q = self.lock();
        q.move_request_cycle = q.cycle;
        let now = Instant::now();
        let keys: Vec<String> = q
            .unschedulable
            .iter()
            .filter(|k| {
                let rejected_by = q.entries[*k].pod.rejected_by;
                rejected_by.is_empty() || rejected_by.intersects(helps)
            })
            .cloned()
            .collect();
        let moved = !keys.is_empty();
        for key in keys {
            let pod = q.remove(&key).expect("present").pod;
            let to = if pod.backoff_until() > now {
                Place::Backoff
            } else {
                Place::Active
            };
            q.insert(pod, to, now);
        }
        drop(q);
        if moved {
            self.notify.notify_one();
        }
    }

    /// Moves pods whose backoff ended to the active queue, and pods unschedulable for
    /// longer than [`MAX_UNSCHEDULABLE`] back to the queues. Returns when the next backoff
    /// ends.
    pub fn flush(&self) -> Option<Instant> {
        let mut q = self.lock();
        let now = Instant::now();
        let mut moved = false;
        while let Some(first) = q.backoff.first().cloned() {
            if first.0 > now {
                break;
            }
            let pod = q.remove(&first.2).expect("present").pod;
            q.insert(pod, Place::Active, now);
            moved = true;
        }
        let stale: Vec<String> = q
            .unschedulable
            .iter()
            .filter(|k| now.duration_since(q.entries[*k].since) >= MAX_UNSCHEDULABLE)
            .cloned()
            .collect();
        for key in stale {
            let pod = q.remove(&key).expect("present").pod;
            let to = if pod.backoff_until() > now {
                Place::Backoff
            } else {
                Place::Active
            };
            q.insert(pod, to, now);
            moved = true;
        }
        let next = q.backoff.first().map(|b| b.0);
        drop(q);
        if moved {
            self.notify.notify_one();
        }
        next
    }

    /// Records that preemption nominated `info` to `node` (`None` clears it).
    pub fn nominate(&self, info: &Arc<PodInfo>, node: Option<&str>) {
        self.lock().set_nomination(info, node);
    }

    /// Pods nominated to `node`, other than `except`, with at least `min_priority`.
    pub fn nominated_pods(&self, node: &str, except: &str, min_priority: i32) -> Vec<Arc<PodInfo>> {
        let q = self.lock();
        q.nominated
            .get(node)
            .into_iter()
            .flatten()
            .filter(|p| p.uid != except && p.priority >= min_priority)
            .cloned()
            .collect()
    }

    /// Whether any pod is nominated anywhere.
    pub fn has_nominations(&self) -> bool {
        !self.lock().nominated.is_empty()
    }

    /// Lower-priority pods nominated to `node` (their nomination is void after a preemption
    /// there by a higher-priority pod).
    pub fn lower_priority_nominated(&self, node: &str, priority: i32) -> Vec<Arc<PodInfo>> {
        let q = self.lock();
        q.nominated
            .get(node)
            .into_iter()
            .flatten()
            .filter(|p| p.priority < priority)
            .cloned()
            .collect()
    }

    /// How many pods wait, by place: (active, backoff, unschedulable).
    pub fn lengths(&self) -> (usize, usize, usize) {
        let q = self.lock();
        (q.active.len(), q.backoff.len(), q.unschedulable.len())
    }
}

fn nominated_node(info: &PodInfo) -> Option<&str> {
    info.pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Inner {
    fn insert(&mut self, pod: QueuedPod, place: Place, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        let key = pod.info.key.clone();
        match place {
            Place::Active => {
                self.active
                    .insert((Reverse(pod.info.priority), pod.timestamp, seq, key.clone()));
            }
            Place::Backoff => {
                self.backoff.insert((pod.backoff_until(), seq, key.clone()));
            }
            Place::Unschedulable => {
                self.unschedulable.insert(key.clone());
            }
            Place::InFlight => {}
        }
        self.entries.insert(
            key,
            Entry {
                pod,
                place,
                seq,
                since: now,
                updated_in_flight: false,
            },
        );
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        match entry.place {
            Place::Active => {
                self.active.remove(&(
                    Reverse(entry.pod.info.priority),
                    entry.pod.timestamp,
                    entry.seq,
                    key.to_owned(),
                ));
            }
            Place::Backoff => {
                self.backoff
                    .remove(&(entry.pod.backoff_until(), entry.seq, key.to_owned()));
            }
            Place::Unschedulable => {
                self.unschedulable.remove(key);
            }
            Place::InFlight => {}
        }
        Some(entry)
    }

    fn set_nomination(&mut self, info: &Arc<PodInfo>, node: Option<&str>) {
        self.clear_nomination(&info.key);
        if let Some(node) = node {
            self.nominated
                .entry(node.to_owned())
                .or_default()
                .push(info.clone());
            self.nominated_node_of
                .insert(info.key.clone(), node.to_owned());
        }
    }

    fn clear_nomination(&mut self, key: &str) {
        if let Some(node) = self.nominated_node_of.remove(key)
            && let Some(list) = self.nominated.get_mut(&node)
        {
            list.retain(|p| p.key != key);
            if list.is_empty() {
                self.nominated.remove(&node);
            }
        }
    }
}
