//! The embedded SQLite backend: a kine-style revision log in one file, written by one
//! group-committing writer thread, read through a small connection pool.
//!
//! Layout: `schema` (tables, pragmas), `writer` (the writer thread and compaction
//! steps), `read` (read pool and queries), `watch` (replay and live hand-off).

mod read;
mod schema;
mod watch;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::read::ReadPool;
use self::writer::{Command, EventBatch, Outcome, Request, WriteOp, Writer};
use crate::keys::KeyRange;
use crate::{
    Backend, Error, KeyValue, ProgressWatchStream, RangeRequest, RangeResult, Result, Revision,
    WatchItem, WatchStream,
};

/// Settings of a [`SqliteBackend`]. [`SqliteConfig::new`] gives sensible defaults.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file; created if missing. It must be a real file: readers and the
    /// writer use separate connections.
    pub path: PathBuf,
    /// Maximum number of read connections (at least 1).
    pub read_connections: usize,
    /// Maximum number of commands applied in one transaction.
    pub max_batch: usize,
    /// Commands that may wait for the writer before callers are slowed down.
    pub queue_depth: usize,
    /// Committed batches buffered per watcher before it must re-read from the database.
    pub watch_buffer: usize,
    /// Rows read per query while a watcher replays history.
    pub replay_page: usize,
    /// Revisions whose garbage one compaction step removes; steps are separate
    /// transactions, so writes interleave with a long compaction.
    pub compaction_step: i64,
    /// How long a connection waits for a lock held by another process.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: &Path) -> Self {
        SqliteConfig {
            path: path.to_path_buf(),
            read_connections: 4,
            max_batch: 1024,
            queue_depth: 8192,
            watch_buffer: 1024,
            replay_page: 512,
            compaction_step: 1000,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of the writer thread since the backend was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (each is one fsync of the WAL).
    pub transactions: u64,
    /// Successful creates, updates and deletes among them.
    pub writes: u64,
}

/// State shared by the writer, the readers and the watchers.
#[derive(Debug, Default)]
struct Shared {
    /// The newest committed revision; published after commit, before the events.
    current: AtomicI64,
    /// The compacted revision.
    compacted: AtomicI64,
    /// How far compaction has removed garbage.
    compact_done: AtomicI64,
    /// Committed transactions.
    transactions: AtomicU64,
    /// Committed writes.
    writes: AtomicU64,
}

/// The SQLite backend. Cloning is cheap and shares the database; the writer thread stops
/// (after finishing queued work) when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    commands: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    events: broadcast::Sender<EventBatch>,
    shared: Arc<Shared>,
    pool: Arc<ReadPool>,
    compaction: tokio::sync::Mutex<()>,
    config: SqliteConfig,
    /// Held (flock) for the backend's lifetime; released last, after the writer stopped.
    _lock: std::fs::File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.inner.config.path)
            .field("current", &self.inner.shared.current.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Starts a watch stream; with `progress`, revisions that pass without touching the
    /// prefix are reported.
    fn start_watch(
        &self,
        prefix: &str,
        after: Revision,
        progress: bool,
    ) -> Result<ProgressWatchStream> {
        // Subscribe before anything else: see `watch::start` for why.
        let live = self.inner.events.subscribe();
        let compacted = self.inner.shared.compacted.load(Ordering::SeqCst);
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        Ok(watch::start(
            Arc::clone(&self.inner.pool),
            Arc::clone(&self.inner.shared),
            live,
            prefix,
            after,
            self.inner.config.replay_page,
            progress,
        ))
    }

    /// Opens (or creates) the database and starts its writer thread.
    ///
    /// Only one backend may have a database open at a time (the writer keeps the revision
    /// counter in memory): a second open, from this process or another, fails with
    /// [`Error::Backend`] until the first backend is dropped or its process exits. The
    /// exclusion is an advisory lock on a `<path>.lock` file next to the database.
    ///
    /// This is synchronous: it does file IO on the calling thread. It needs no tokio
    /// runtime, but the backend's async methods must run inside one.
    pub fn open(config: SqliteConfig) -> Result<Self> {
        let lock = lock_database(&config.path)?;
        let (conn, revisions) = schema::open_writer(&config.path, config.busy_timeout)?;
        let pool = Arc::new(ReadPool::new(
            config.path.clone(),
            config.busy_timeout,
            config.read_connections,
        )?);
        let shared = Arc::new(Shared {
            current: AtomicI64::new(revisions.current),
            compacted: AtomicI64::new(revisions.compacted),
            compact_done: AtomicI64::new(revisions.compact_done),
            ..Shared::default()
        });
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let (commands, queue) = mpsc::channel(config.queue_depth.max(1));
        let writer = Writer::new(conn, Arc::clone(&shared), events.clone(), config.max_batch);
        let handle = std::thread::Builder::new()
            .name("kumo-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| Error::Backend(format!("starting the store writer thread: {e}")))?;
        tracing::info!(
            path = %config.path.display(),
            revision = revisions.current,
            compacted = revisions.compacted,
            "opened sqlite store"
        );
        Ok(SqliteBackend {
            inner: Arc::new(Inner {
                commands: Some(commands),
                writer: Some(handle),
                events,
                shared,
                pool,
                compaction: tokio::sync::Mutex::new(()),
                config,
                _lock: lock,
            }),
        })
    }

    /// Runs `PRAGMA integrity_check`; fails with [`Error::Backend`] listing the problems
    /// unless the database is intact. Synchronous, like [`SqliteBackend::open`].
    pub fn integrity_check(&self) -> Result<()> {
        self.inner.pool.run_blocking(read::integrity_check)
    }

    /// The writer's counters: how many transactions carried how many writes.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.inner.shared.transactions.load(Ordering::Relaxed),
            writes: self.inner.shared.writes.load(Ordering::Relaxed),
        }
    }

    /// The configuration this backend was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// Sends a command to the writer and waits for its committed outcome.
    async fn submit(&self, command: Command) -> Result<Outcome> {
        let commands = self.inner.commands.as_ref().ok_or(Error::Closed)?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(Request { command, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn write(&self, op: WriteOp) -> Result<Outcome> {
        self.submit(Command::Write(op)).await
    }

    /// The revision a read asked for, checked against the current one.
    fn read_revision(&self, requested: Option<Revision>) -> Result<Revision> {
        let current = self.inner.shared.current.load(Ordering::SeqCst);
        match requested {
            Some(rev) if rev > current => Err(Error::FutureRevision {
                requested: rev,
                current,
            }),
            Some(rev) if rev > 0 => Ok(rev),
            _ => Ok(current),
        }
    }
}

/// Takes the exclusive advisory lock that keeps a second writer away from `path`.
fn lock_database(path: &Path) -> Result<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Backend(format!("opening {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Backend(format!(
            "{} is in use by another store (lock {} is held)",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Backend(format!(
            "locking {}: {e}",
            lock_path.display()
        ))),
    }
}

fn unexpected(outcome: Outcome) -> Error {
    Error::Backend(format!(
        "store writer gave an unexpected answer: {outcome:?}"
    ))
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.inner.pool.run(move |conn| read::get(conn, &key)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        match self
            .write(WriteOp::Create {
                key: key.to_owned(),
                value,
            })
            .await?
        {
            Outcome::Written(rev) => Ok(rev),
            other => Err(unexpected(other)),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        match self
            .write(WriteOp::Update {
                key: key.to_owned(),
                value,
                expected,
            })
            .await?
        {
            Outcome::Written(rev) => Ok(rev),
            other => Err(unexpected(other)),
        }
    }

    /// The returned value is the key's last value, with its own mod revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        match self
            .write(WriteOp::Delete {
                key: key.to_owned(),
                expected,
            })
            .await?
        {
            Outcome::Deleted(rev, kv) => Ok((rev, kv)),
            other => Err(unexpected(other)),
        }
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResult> {
        let revision = self.read_revision(req.revision)?;
        let range = KeyRange::new(&req.prefix, req.start_after.as_deref());
        self.inner
            .pool
            .run(move |conn| read::range(conn, &range, req.limit, revision))
            .await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let range = KeyRange::new(prefix, None);
        self.inner
            .pool
            .run(move |conn| read::count(conn, &range))
            .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        use futures::StreamExt;
        let items = self.start_watch(prefix, after, false)?;
        Ok(items
            .filter_map(|item| async move {
                match item {
                    Ok(WatchItem::Event(e)) => Some(Ok(e)),
                    Ok(WatchItem::Progress(_)) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .boxed())
    }

    async fn watch_with_progress(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<ProgressWatchStream> {
        self.start_watch(prefix, after, true)
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.shared.current.load(Ordering::SeqCst))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.inner.shared.compacted.load(Ordering::SeqCst))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let _only_one = self.inner.compaction.lock().await;
        let shared = &self.inner.shared;
        let current = shared.current.load(Ordering::SeqCst);
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision > shared.compacted.load(Ordering::SeqCst) {
            self.submit(Command::MarkCompacted(revision)).await?;
        }
        // Also finishes garbage left behind by an earlier, interrupted compaction.
        let target = shared.compacted.load(Ordering::SeqCst);
        let step = self.inner.config.compaction_step.max(1);
        let mut done = shared.compact_done.load(Ordering::SeqCst);
        while done < target {
            let to = done.saturating_add(step).min(target);
            self.submit(Command::CompactStep { from: done, to }).await?;
            done = to;
        }
        tracing::debug!(revision = target, "store compacted");
        Ok(())
    }
}
