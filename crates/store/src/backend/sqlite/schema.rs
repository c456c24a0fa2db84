//! SQLite schema, connection settings and the state loaded when a database is opened.
//!
//! The data lives in one log table, `kv`, with one row per revision (the row id *is* the
//! revision):
//!
//! | column            | meaning                                                          |
//! |-------------------|------------------------------------------------------------------|
//! | `id`              | the revision of this write                                       |
//! | `name`            | the key                                                          |
//! | `create_revision` | revision at which this incarnation of the key was created         |
//! | `prev_revision`   | the row this one supersedes for the same key (0 if none)         |
//! | `deleted`         | 1 for a deletion; the row then repeats the key's last value      |
//! | `value`           | the bytes                                                        |
//!
//! A small `meta` table holds the newest revision (so it survives compaction of every
//! row), the compacted revision, and how far compaction has removed garbage.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{Error, Result, Revision};

/// Version stored in `PRAGMA user_version`; bumped on incompatible schema changes.
const SCHEMA_VERSION: i64 = 1;

/// `meta` row holding the newest revision written.
pub(super) const META_REVISION: &str = "revision";
/// `meta` row holding the compacted revision.
pub(super) const META_COMPACTED: &str = "compacted";
/// `meta` row holding the revision up to which compaction has removed garbage.
pub(super) const META_COMPACT_DONE: &str = "compact_done";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Revisions recorded in a database, read when it is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Revisions {
    /// The newest revision written.
    pub current: Revision,
    /// The compacted revision.
    pub compacted: Revision,
    /// How far compaction has removed garbage (at most `compacted`).
    pub compact_done: Revision,
}

/// Opens the writer's connection: creates the file and schema if needed, switches to WAL
/// with `synchronous=FULL`, and reads the recorded revisions.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<(Connection, Revisions)> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Backend(format!(
            "sqlite: {} cannot use WAL journaling (got {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", false)?;

    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(Error::Backend(format!(
                "sqlite: {} has schema version {other}; this build supports {SCHEMA_VERSION}",
                path.display()
            )));
        }
    }
    let revisions = load_revisions(&tx)?;
    tx.commit()?;
    Ok((conn, revisions))
}

/// Opens a reading connection to an existing database. It is opened read-write (a WAL
/// reader may need to recover the shared-memory index) but refuses writes.
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Reads one `meta` value (0 when absent).
pub(super) fn meta(conn: &Connection, name: &str) -> Result<i64> {
    let v = conn
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get::<_, i64>(0))
        .optional()?;
    Ok(v.unwrap_or(0))
}

/// Writes one `meta` value.
pub(super) fn set_meta(conn: &Connection, name: &str, value: i64) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)")?
        .execute(rusqlite::params![name, value])?;
    Ok(())
}

fn load_revisions(conn: &Connection) -> Result<Revisions> {
    let max_id: Option<i64> = conn.query_row("SELECT MAX(id) FROM kv", [], |r| r.get(0))?;
    let recorded = meta(conn, META_REVISION)?;
    let compacted = meta(conn, META_COMPACTED)?;
    let compact_done = meta(conn, META_COMPACT_DONE)?.min(compacted);
    Ok(Revisions {
        current: recorded.max(max_id.unwrap_or(0)).max(compacted),
        compacted,
        compact_done,
    })
}
