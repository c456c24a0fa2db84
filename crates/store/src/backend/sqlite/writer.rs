//! The writer thread: the only code that modifies the database. It drains the command
//! queue into batches and applies each batch in one transaction (one fsync: group
//! commit), then publishes the new revision and the batch's events, then answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::Shared;
use super::schema::{self, META_COMPACT_DONE, META_COMPACTED, META_REVISION};
use crate::{Error, Event, EventKind, KeyValue, Result, Revision};

/// The events of one committed batch, in revision order.
pub(super) type EventBatch = Arc<Vec<Event>>;

/// A change to one key.
#[derive(Debug)]
pub(super) enum WriteOp {
    /// Create-if-absent.
    Create { key: String, value: Bytes },
    /// Compare-and-swap on the mod revision.
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    /// Delete, optionally only at a mod revision.
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

/// What the writer did for one command.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A create or update was committed at this revision.
    Written(Revision),
    /// A delete was committed at this revision; the value it removed.
    Deleted(Revision, KeyValue),
    /// A compaction command was committed.
    Done,
}

/// One unit of work for the writer.
#[derive(Debug)]
pub(super) enum Command {
    /// Apply a write.
    Write(WriteOp),
    /// Raise the compacted revision (reads below it start failing).
    MarkCompacted(Revision),
    /// Delete garbage rows for revisions in `(from, to]`; `to` must not exceed the
    /// compacted revision.
    CompactStep { from: Revision, to: Revision },
}

/// A command with its reply channel.
#[derive(Debug)]
pub(super) struct Request {
    /// The work.
    pub command: Command,
    /// Where the outcome goes, after commit.
    pub reply: oneshot::Sender<Result<Outcome>>,
}

/// The writer's state, owned by its thread.
pub(super) struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    events: broadcast::Sender<EventBatch>,
    max_batch: usize,
}

impl Writer {
    /// A writer over `conn`, publishing to `shared` and `events`.
    pub fn new(
        conn: Connection,
        shared: Arc<Shared>,
        events: broadcast::Sender<EventBatch>,
        max_batch: usize,
    ) -> Self {
        Writer {
            conn,
            shared,
            events,
            max_batch: max_batch.max(1),
        }
    }

    /// Serves the queue until every sender is gone.
    pub fn run(mut self, mut queue: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
        }
        tracing::debug!("store writer stopped");
    }

    /// Applies `batch` in one transaction and answers every request in it.
    fn process(&mut self, batch: &mut Vec<Request>) {
        let start = self.shared.current.load(Ordering::SeqCst);
        let mut state = BatchState {
            revision: start,
            compacted: self.shared.compacted.load(Ordering::SeqCst),
            compact_done: self.shared.compact_done.load(Ordering::SeqCst),
            events: Vec::new(),
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        let committed = (|| -> Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for req in batch.iter() {
                outcomes.push(apply(&tx, &req.command, &mut state)?);
            }
            if state.revision != start {
                schema::set_meta(&tx, META_REVISION, state.revision)?;
            }
            tx.commit()?;
            Ok(())
        })();

        match committed {
            Ok(()) => {
                let writes = outcomes
                    .iter()
                    .filter(|o| matches!(o, Ok(Outcome::Written(_) | Outcome::Deleted(..))))
                    .count();
                self.shared.transactions.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .writes
                    .fetch_add(writes as u64, Ordering::Relaxed);
                // Order matters for watchers: the revision is published before the events,
                // so a watcher that subscribes too late for this batch replays it instead.
                self.shared
                    .compacted
                    .store(state.compacted, Ordering::SeqCst);
                self.shared
                    .compact_done
                    .store(state.compact_done, Ordering::SeqCst);
                self.shared.current.store(state.revision, Ordering::SeqCst);
                if !state.events.is_empty() {
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(Arc::new(state.events));
                }
                for (req, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = req.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "store write batch failed");
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(Error::Backend(e.to_string())));
                }
            }
        }
    }
}

/// What a batch has done so far (uncommitted).
struct BatchState {
    revision: Revision,
    compacted: Revision,
    compact_done: Revision,
    events: Vec<Event>,
}

/// The newest row of a key.
struct Latest {
    id: Revision,
    create_revision: Revision,
    deleted: bool,
    value: Bytes,
}

impl Latest {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.id,
        }
    }
}

fn latest(conn: &Connection, key: &str) -> rusqlite::Result<Option<Latest>> {
    conn.prepare_cached(
        "SELECT id, create_revision, deleted, value FROM kv WHERE name = ?1 ORDER BY id DESC LIMIT 1",
    )?
    .query_row([key], |r| {
        Ok(Latest {
            id: r.get(0)?,
            create_revision: r.get(1)?,
            deleted: r.get(2)?,
            value: Bytes::from(r.get::<_, Vec<u8>>(3)?),
        })
    })
    .optional()
}

fn insert(
    conn: &Connection,
    id: Revision,
    key: &str,
    create_revision: Revision,
    prev_revision: Revision,
    deleted: bool,
    value: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (id, name, create_revision, prev_revision, deleted, value) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(rusqlite::params![
        id,
        key,
        create_revision,
        prev_revision,
        deleted,
        value
    ])?;
    Ok(())
}

/// Applies one command inside the batch's transaction. The outer error aborts the whole
/// batch (SQLite failed); the inner one is this command's answer (a failed precondition).
fn apply(conn: &Connection, command: &Command, state: &mut BatchState) -> Result<Result<Outcome>> {
    match command {
        Command::Write(op) => apply_write(conn, op, state),
        Command::MarkCompacted(revision) => {
            if *revision > state.compacted {
                schema::set_meta(conn, META_COMPACTED, *revision)?;
                state.compacted = *revision;
            }
            Ok(Ok(Outcome::Done))
        }
        Command::CompactStep { from, to } => {
            let to = (*to).min(state.compacted);
            if to <= *from {
                return Ok(Ok(Outcome::Done));
            }
            // Rows superseded by a write in (from, to] go first; tombstones in (from, to]
            // second, because a tombstone is what marks the row before it as superseded.
            conn.prepare_cached(
                "DELETE FROM kv WHERE id IN \
                 (SELECT prev_revision FROM kv WHERE id > ?1 AND id <= ?2 AND prev_revision > 0)",
            )?
            .execute([from, &to])?;
            conn.prepare_cached("DELETE FROM kv WHERE id > ?1 AND id <= ?2 AND deleted = 1")?
                .execute([from, &to])?;
            if to > state.compact_done {
                schema::set_meta(conn, META_COMPACT_DONE, to)?;
                state.compact_done = to;
            }
            Ok(Ok(Outcome::Done))
        }
    }
}

fn apply_write(conn: &Connection, op: &WriteOp, state: &mut BatchState) -> Result<Result<Outcome>> {
    let key = match op {
        WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => {
            key
        }
    };
    let live = latest(conn, key)?;
    let prev_revision = live.as_ref().map_or(0, |l| l.id);
    let live = live.filter(|l| !l.deleted);
    let revision = state.revision + 1;
    match (op, live) {
        (WriteOp::Create { value, .. }, None) => {
            insert(conn, revision, key, revision, prev_revision, false, value)?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: revision,
                mod_revision: revision,
            };
            state.events.push(Event {
                kind: EventKind::Put,
                kv,
                prev: None,
            });
            state.revision = revision;
            Ok(Ok(Outcome::Written(revision)))
        }
        (WriteOp::Create { .. }, Some(_)) => Ok(Err(Error::AlreadyExists(key.clone()))),
        (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => {
            Ok(Err(Error::NotFound(key.clone())))
        }
        (
            WriteOp::Update {
                value, expected, ..
            },
            Some(cur),
        ) => {
            if cur.id != *expected {
                return Ok(Err(conflict(key, *expected, &cur)));
            }
            insert(
                conn,
                revision,
                key,
                cur.create_revision,
                cur.id,
                false,
                value,
            )?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: cur.create_revision,
                mod_revision: revision,
            };
            state.events.push(Event {
                kind: EventKind::Put,
                kv,
                prev: Some(cur.to_kv(key)),
            });
            state.revision = revision;
            Ok(Ok(Outcome::Written(revision)))
        }
        (WriteOp::Delete { expected, .. }, Some(cur)) => {
            if let Some(expected) = expected
                && cur.id != *expected
            {
                return Ok(Err(conflict(key, *expected, &cur)));
            }
            insert(
                conn,
                revision,
                key,
                cur.create_revision,
                cur.id,
                true,
                &cur.value,
            )?;
            let before = cur.to_kv(key);
            let kv = KeyValue {
                mod_revision: revision,
                ..before.clone()
            };
            state.events.push(Event {
                kind: EventKind::Delete,
                kv,
                prev: Some(before.clone()),
            });
            state.revision = revision;
            Ok(Ok(Outcome::Deleted(revision, before)))
        }
    }
}

fn conflict(key: &str, expected: Revision, current: &Latest) -> Error {
    Error::Conflict {
        key: key.to_owned(),
        expected,
        current: Box::new(current.to_kv(key)),
    }
}
