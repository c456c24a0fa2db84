//! Automatic compaction: a background task that samples (time, revision) pairs and
//! compacts every backend to the newest revision older than the retention period, so at
//! least that much history always stays watchable while the database stays bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Backend, Revision};

/// How much history the [`Compactor`] keeps, and how often it looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// History younger than this is never compacted.
    pub retain: Duration,
    /// How often to sample the revision and compact. History older than
    /// `retain + interval` is gone after the next run.
    pub interval: Duration,
}

impl CompactionPolicy {
    /// Keeps `retain` of history, checking every tenth of it (between 1 s and 60 s).
    pub fn retaining(retain: Duration) -> Self {
        let interval = (retain / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        CompactionPolicy { retain, interval }
    }
}

impl Default for CompactionPolicy {
    /// Five minutes of history, as the Kubernetes API server's own compactor keeps.
    fn default() -> Self {
        CompactionPolicy::retaining(Duration::from_secs(300))
    }
}

/// Samples of the current revision over time; tells which revision is old enough to
/// compact to. The pure policy part of the [`Compactor`].
#[derive(Clone, Debug)]
pub struct RetentionWindow {
    retain: Duration,
    samples: VecDeque<(Instant, Revision)>,
}

impl RetentionWindow {
    /// An empty window keeping `retain` of history.
    pub fn new(retain: Duration) -> Self {
        RetentionWindow {
            retain,
            samples: VecDeque::new(),
        }
    }

    /// Records that the store's current revision was `revision` at `at`. Samples must
    /// come in time order; an out-of-order one is ignored.
    pub fn record(&mut self, at: Instant, revision: Revision) {
        if self.samples.back().is_some_and(|&(t, _)| at < t) {
            return;
        }
        self.samples.push_back((at, revision));
    }

    /// The newest sampled revision taken at least `retain` before `now`, if any. Every
    /// change after that revision happened after the sample was taken, so compacting to
    /// it keeps at least `retain` of history. Samples older than it are dropped.
    pub fn target(&mut self, now: Instant) -> Option<Revision> {
        let old_enough = |at: Instant| {
            now.checked_duration_since(at)
                .is_some_and(|age| age >= self.retain)
        };
        while self.samples.len() >= 2 && old_enough(self.samples[1].0) {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some(&(at, revision)) if old_enough(at) => Some(revision),
            _ => None,
        }
    }

    /// How many samples are held (bounded by `retain / interval + 2`).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// A background task compacting a backend by a [`CompactionPolicy`]. Dropping it (or
/// calling [`Compactor::stop`]) stops the task.
#[derive(Debug)]
pub struct Compactor {
    task: tokio::task::JoinHandle<()>,
}

impl Compactor {
    /// Starts compacting `backend` in the background. Must be called inside a tokio
    /// runtime. Failures are logged and retried at the next interval.
    pub fn spawn(backend: Arc<dyn Backend>, policy: CompactionPolicy) -> Self {
        let task = tokio::spawn(async move {
            let mut window = RetentionWindow::new(policy.retain);
            let mut ticker = tokio::time::interval(policy.interval.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let now = Instant::now();
                match backend.current_revision().await {
                    Ok(rev) => window.record(now, rev),
                    Err(e) => {
                        tracing::warn!(error = %e, "compactor: reading the current revision failed")
                    }
                }
                let Some(target) = window.target(now) else {
                    continue;
                };
                match backend.compacted_revision().await {
                    Ok(done) if done >= target => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "compactor: reading the compacted revision failed");
                        continue;
                    }
                }
                match backend.compact(target).await {
                    Ok(()) => tracing::debug!(revision = target, "compactor: compacted"),
                    Err(e) => {
                        tracing::warn!(error = %e, revision = target, "compactor: compaction failed")
                    }
                }
            }
        });
        Compactor { task }
    }

    /// Stops the background task.
    pub fn stop(self) {
        // Drop does the work.
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `samples` (seconds after a base instant, revision), then asks for the
    /// target at `now` seconds with a retention of `retain` seconds.
    fn check(retain: u64, samples: &[(u64, Revision)], now: u64, expected: Option<Revision>) {
        let base = Instant::now();
        let at = |s: u64| base + Duration::from_secs(s);
        let mut w = RetentionWindow::new(Duration::from_secs(retain));
        for &(s, rev) in samples {
            w.record(at(s), rev);
        }
        assert_eq!(
            w.target(at(now)),
            expected,
            "retain {retain} samples {samples:?} now {now}"
        );
    }

    #[test]
    fn targets() {
        check(300, &[], 1000, None);
        check(300, &[(0, 5)], 299, None);
        check(300, &[(0, 5)], 300, Some(5));
        check(300, &[(0, 5), (60, 9)], 359, Some(5));
        check(300, &[(0, 5), (60, 9)], 360, Some(9));
        check(300, &[(0, 5), (60, 9), (120, 20)], 1000, Some(20));
        check(0, &[(0, 5), (10, 7)], 10, Some(7));
        // Out-of-order samples are ignored.
        check(300, &[(60, 9), (0, 5)], 300, None);
    }

    #[test]
    fn window_stays_bounded() {
        let base = Instant::now();
        let mut w = RetentionWindow::new(Duration::from_secs(300));
        for i in 0..10_000u64 {
            let now = base + Duration::from_secs(i * 30);
            w.record(now, i as Revision);
            let _ = w.target(now);
        }
        assert!(w.len() <= 300 / 30 + 2, "window holds {} samples", w.len());
    }

    #[test]
    fn policy_intervals() {
        assert_eq!(
            CompactionPolicy::retaining(Duration::from_secs(300)).interval,
            Duration::from_secs(30)
        );
        assert_eq!(
            CompactionPolicy::retaining(Duration::from_secs(5)).interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            CompactionPolicy::retaining(Duration::from_secs(3600)).interval,
            Duration::from_secs(60)
        );
        assert_eq!(CompactionPolicy::default().retain, Duration::from_secs(300));
    }

    #[tokio::test]
    async fn compactor_compacts_old_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = crate::SqliteBackend::open(crate::SqliteConfig::new(&dir.path().join("db")))
            .expect("open");
        let backend: Arc<dyn Backend> = Arc::new(sqlite);
        let first = backend
            .create("/k", bytes::Bytes::from_static(b"v"))
            .await
            .expect("create");
        let policy = CompactionPolicy {
            retain: Duration::from_millis(50),
            interval: Duration::from_millis(10),
        };
        let compactor = Compactor::spawn(Arc::clone(&backend), policy);
        let deadline = Instant::now() + Duration::from_secs(10);
        while backend.compacted_revision().await.expect("compacted") < first {
            assert!(Instant::now() < deadline, "compactor never compacted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        compactor.stop();
        let kv = backend
            .get("/k")
            .await
            .expect("get")
            .expect("key survives compaction");
        assert_eq!(kv.mod_revision, first);
    }
}
