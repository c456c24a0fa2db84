//! Reads: a small pool of read connections driven from tokio's blocking threads, and the
//! queries that serve `get`, `range`, `count` and watch replay.
//!
//! In WAL mode readers see the last committed state and never wait for the writer. Every
//! multi-statement read runs in one read transaction, so the compacted revision it checks
//! and the rows it reads come from the same snapshot: compaction records the new
//! compacted revision before it deletes anything, so a snapshot that shows an old
//! compacted revision still holds every row that revision needs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row};
use tokio::sync::Semaphore;

use super::schema::{self, META_COMPACTED};
use crate::keys::KeyRange;
use crate::{Error, Event, EventKind, KeyValue, RangeResult, Result, Revision};

/// A bounded pool of read connections.
pub(super) struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    /// A pool of at most `size` connections to the database at `path`; one connection is
    /// opened now so that a bad path fails early.
    pub fn new(path: PathBuf, busy_timeout: Duration, size: usize) -> Result<Self> {
        let first = schema::open_reader(&path, busy_timeout)?;
        Ok(ReadPool {
            path,
            busy_timeout,
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(size.max(1)),
        })
    }

    /// Runs `f` on a pooled connection on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || pool.run_blocking(f))
            .await
            .map_err(|e| Error::Backend(format!("read task failed: {e}")))?
    }

    /// Runs `f` on a pooled (or fresh) connection on the calling thread.
    pub fn run_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match taken {
            Some(conn) => conn,
            None => schema::open_reader(&self.path, self.busy_timeout)?,
        };
        let result = f(&mut conn);
        // A connection left inside a transaction by a failed read is not reused.
        if conn.is_autocommit() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        result
    }
}

/// Fails with [`Error::Compacted`] if `revision` is below the compacted revision seen in
/// this connection's current snapshot.
fn check_not_compacted(conn: &Connection, revision: Revision) -> Result<()> {
    let compacted = schema::meta(conn, META_COMPACTED)?;
    if revision < compacted {
        return Err(Error::Compacted {
            requested: revision,
            compacted,
        });
    }
    Ok(())
}

/// The current value of `key`.
pub(super) fn get(conn: &mut Connection, key: &str) -> Result<Option<KeyValue>> {
    let row = conn
        .prepare_cached(
            "SELECT value, create_revision, id, deleted FROM kv WHERE name = ?1 \
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row([key], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .optional()?;
    Ok(match row {
        Some((value, create_revision, mod_revision, false)) => Some(KeyValue {
            key: key.to_owned(),
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        }),
        _ => None,
    })
}

/// The live keys of `range` as of `revision`, at most `limit` of them (0: no limit).
pub(super) fn range(
    conn: &mut Connection,
    range: &KeyRange,
    limit: usize,
    revision: Revision,
) -> Result<RangeResult> {
    let tx = conn.transaction()?;
    check_not_compacted(&tx, revision)?;
    // One more row than asked tells whether more follow.
    let sql_limit: i64 = if limit == 0 {
        -1
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
    };
    let mut kvs = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT kv.name, kv.value, kv.create_revision, kv.id FROM kv \
             WHERE kv.name >= ?1 AND kv.name < ?2 AND kv.id <= ?3 AND kv.deleted = 0 \
             AND NOT EXISTS (SELECT 1 FROM kv AS newer WHERE newer.name = kv.name \
                             AND newer.id > kv.id AND newer.id <= ?3) \
             ORDER BY kv.name LIMIT ?4",
        )?;
        let mut rows = stmt.query(rusqlite::params![
            text(&range.low),
            text(&range.high),
            revision,
            sql_limit
        ])?;
        while let Some(row) = rows.next()? {
            kvs.push(KeyValue {
                key: row.get(0)?,
                value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
                create_revision: row.get(2)?,
                mod_revision: row.get(3)?,
            });
        }
    }
    tx.commit()?;
    let more = limit != 0 && kvs.len() > limit;
    kvs.truncate(if limit == 0 { kvs.len() } else { limit });
    Ok(RangeResult {
        kvs,
        more,
        revision,
    })
}

/// The number of live keys in `range` now.
pub(super) fn count(conn: &mut Connection, range: &KeyRange) -> Result<i64> {
    let n = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM kv \
             WHERE kv.name >= ?1 AND kv.name < ?2 AND kv.deleted = 0 \
             AND NOT EXISTS (SELECT 1 FROM kv AS newer WHERE newer.name = kv.name \
                             AND newer.id > kv.id)",
        )?
        .query_row(
            rusqlite::params![text(&range.low), text(&range.high)],
            |r| r.get(0),
        )?;
    Ok(n)
}

/// One page of history for a watcher.
pub(super) struct HistoryPage {
    /// Events for keys in the range, in revision order.
    pub events: Vec<Event>,
    /// The revision up to which history has been read (the last event's revision when
    /// the page is full, else `until`).
    pub covered: Revision,
}

/// Changes to keys in `range` with `after < revision <= until`, at most `limit` of them.
pub(super) fn history(
    conn: &mut Connection,
    range: &KeyRange,
    after: Revision,
    until: Revision,
    limit: usize,
) -> Result<HistoryPage> {
    let tx = conn.transaction()?;
    check_not_compacted(&tx, after)?;
    let mut events = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT kv.id, kv.name, kv.value, kv.create_revision, kv.deleted, \
                    prev.id, prev.value, prev.create_revision, prev.deleted \
             FROM kv LEFT JOIN kv AS prev ON prev.id = kv.prev_revision \
             WHERE kv.id > ?1 AND kv.id <= ?2 AND kv.name >= ?3 AND kv.name < ?4 \
             ORDER BY kv.id LIMIT ?5",
        )?;
        let sql_limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let mut rows = stmt.query(rusqlite::params![
            after,
            until,
            text(&range.low),
            text(&range.high),
            sql_limit
        ])?;
        while let Some(row) = rows.next()? {
            events.push(event_from_row(row)?);
        }
    }
    tx.commit()?;
    let covered = if events.len() >= limit.max(1) {
        events.last().map_or(until, Event::revision)
    } else {
        until
    };
    Ok(HistoryPage { events, covered })
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let key: String = row.get(1)?;
    let deleted: bool = row.get(4)?;
    let kv = KeyValue {
        key: key.clone(),
        value: Bytes::from(row.get::<_, Vec<u8>>(2)?),
        create_revision: row.get(3)?,
        mod_revision: row.get(0)?,
    };
    let prev = match row.get::<_, Option<i64>>(5)? {
        Some(prev_id) if !row.get::<_, bool>(8)? => Some(KeyValue {
            key,
            value: Bytes::from(row.get::<_, Vec<u8>>(6)?),
            create_revision: row.get(7)?,
            mod_revision: prev_id,
        }),
        _ => None,
    };
    let kind = if deleted {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    Ok(Event { kind, kv, prev })
}

/// Binds raw bytes as SQLite TEXT so that they compare with stored keys bytewise.
fn text(bytes: &[u8]) -> rusqlite::types::ToSqlOutput<'_> {
    rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(bytes))
}

/// Runs `PRAGMA integrity_check` and fails unless SQLite reports `ok`.
pub(super) fn integrity_check(conn: &mut Connection) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(Error::Backend(format!(
            "sqlite integrity check failed: {}",
            problems.join("; ")
        )))
    }
}
