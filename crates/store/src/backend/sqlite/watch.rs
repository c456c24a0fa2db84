//! Watch streams: replay history from the database, then follow the writer's live
//! broadcast, without gaps or duplicates.
//!
//! The hand-off works because the writer publishes a batch's revision before it sends
//! the batch's events. A watcher subscribes first and reads the current revision second;
//! every batch at or below that revision is replayed from the database, every batch
//! above it arrives live, and live events at or below the last covered revision are
//! skipped. A watcher whose broadcast buffer overflowed re-reads the gap the same way,
//! or ends with [`Error::Compacted`](crate::Error::Compacted) if the gap is gone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};

use super::Shared;
use super::read::{self, ReadPool};
use super::writer::EventBatch;
use crate::keys::KeyRange;
use crate::{ProgressWatchStream, Result, Revision, WatchItem};

/// Where a watch stream is in its life.
enum Phase {
    /// Reading history from the database up to and including this revision.
    Replay(Revision),
    /// Following the live broadcast.
    Live,
    /// Finished: the store closed or an error was delivered.
    Done,
}

/// The state of one watch stream.
struct Watch {
    pool: Arc<ReadPool>,
    shared: Arc<Shared>,
    live: broadcast::Receiver<EventBatch>,
    prefix: String,
    range: KeyRange,
    page: usize,
    /// Every change up to this revision has been queued or skipped.
    covered: Revision,
    phase: Phase,
    queue: VecDeque<WatchItem>,
    /// Report revisions that pass without touching the prefix.
    progress: bool,
}

/// Starts a watch of keys under `prefix` for revisions after `after`. The caller has
/// checked `after` against the compacted revision; `live` must have been subscribed
/// before this reads the current revision.
pub(super) fn start(
    pool: Arc<ReadPool>,
    shared: Arc<Shared>,
    live: broadcast::Receiver<EventBatch>,
    prefix: &str,
    after: Revision,
    page: usize,
    progress: bool,
) -> ProgressWatchStream {
    let until = shared.current.load(Ordering::SeqCst);
    let watch = Watch {
        pool,
        shared,
        live,
        prefix: prefix.to_owned(),
        range: KeyRange::new(prefix, None),
        page: page.max(1),
        covered: after,
        phase: Phase::Replay(until),
        queue: VecDeque::new(),
        progress,
    };
    futures::stream::unfold(watch, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    })
    .boxed()
}

impl Watch {
    /// The next item, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Result<WatchItem>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(Ok(item));
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Replay(until) if self.covered >= until => self.phase = Phase::Live,
                Phase::Replay(until) => {
                    let (range, after, page) = (self.range.clone(), self.covered, self.page);
                    let fetched = self
                        .pool
                        .run(move |conn| read::history(conn, &range, after, until, page))
                        .await;
                    match fetched {
                        Ok(history) => {
                            let quiet = history.events.is_empty();
                            self.queue
                                .extend(history.events.into_iter().map(WatchItem::Event));
                            let before = self.covered;
                            self.covered = history.covered.max(self.covered);
                            if self.progress && quiet && self.covered > before {
                                self.queue.push_back(WatchItem::Progress(self.covered));
                            }
                        }
                        Err(e) => {
                            self.phase = Phase::Done;
                            return Some(Err(e));
                        }
                    }
                }
                Phase::Live => match self.live.recv().await {
                    Ok(batch) => self.accept(&batch),
                    Err(RecvError::Lagged(missed)) => {
                        let until = self.shared.current.load(Ordering::SeqCst);
                        tracing::debug!(
                            missed,
                            from = self.covered,
                            until,
                            "watcher lagged; re-reading history"
                        );
                        self.phase = Phase::Replay(until);
                    }
                    Err(RecvError::Closed) => self.phase = Phase::Done,
                },
            }
        }
    }

    /// Queues the events of a live batch that are new and under the prefix, or, when
    /// there are none and progress is wanted, the revision the batch brought it to.
    fn accept(&mut self, batch: &[crate::Event]) {
        let before = self.covered;
        let mut queued = false;
        for event in batch {
            let rev = event.revision();
            if rev > self.covered {
                if event.kv.key.starts_with(&self.prefix) {
                    self.queue.push_back(WatchItem::Event(event.clone()));
                    queued = true;
                }
                self.covered = rev;
            }
        }
        if self.progress && !queued && self.covered > before {
            self.queue.push_back(WatchItem::Progress(self.covered));
        }
    }
}
