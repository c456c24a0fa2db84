//! Tests of the SQLite backend: the conformance suite, plus what only SQLite has
//! (reopening, batching, lagging watchers, compaction garbage).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::testing;
use crate::{Event, RangeRequest};

fn config(dir: &tempfile::TempDir) -> SqliteConfig {
    SqliteConfig::new(&dir.path().join("state.db"))
}

fn open(dir: &tempfile::TempDir) -> SqliteBackend {
    SqliteBackend::open(config(dir)).expect("open")
}

fn fresh() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(open(&dir));
    (dir, backend)
}

/// Runs one conformance check on a fresh database.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, backend) = fresh();
            testing::$name(&*backend).await.expect("conformance");
        }
    )*};
}

conformance!(
    create_and_get,
    update_compare_and_swap,
    delete_with_precondition,
    range_at_revisions,
    pagination_at_fixed_revision,
    prefix_is_exact,
    count_live_keys,
    future_revision,
    watch_events,
    compaction,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replay_then_live() {
    let (_dir, backend) = fresh();
    testing::watch_replay_then_live(backend)
        .await
        .expect("conformance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit() {
    let (_dir, backend) = fresh();
    testing::group_commit(backend).await.expect("conformance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_on_one_store() {
    let (_dir, backend) = fresh();
    testing::suite(backend).await.expect("conformance suite");
}

#[tokio::test]
async fn concurrent_writes_share_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = open(&dir);
    let backend: Arc<dyn Backend> = Arc::new(sqlite.clone());
    let rate = crate::bench::bench_raw_creates(backend, 32, 2000)
        .await
        .expect("bench");
    assert!(rate > 0.0);
    let stats = sqlite.stats();
    assert_eq!(stats.writes, 2000);
    assert!(
        stats.transactions * 4 < stats.writes,
        "32 concurrent writers needed {} transactions for {} writes",
        stats.transactions,
        stats.writes
    );
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (r1, r2);
    {
        let b = open(&dir);
        r1 = b
            .create("/k/a", Bytes::from_static(b"1"))
            .await
            .expect("create");
        r2 = b
            .create("/k/b", Bytes::from_static(b"2"))
            .await
            .expect("create");
        b.update("/k/a", Bytes::from_static(b"3"), r1)
            .await
            .expect("update");
        b.delete("/k/b", Some(r2)).await.expect("delete");
    }
    let b = open(&dir);
    b.integrity_check().expect("integrity");
    let current = b.current_revision().await.expect("rev");
    assert_eq!(current, 4);
    let kv = b.get("/k/a").await.expect("get").expect("present");
    assert_eq!(
        (kv.value.as_ref(), kv.create_revision, kv.mod_revision),
        (&b"3"[..], r1, 3)
    );
    assert!(b.get("/k/b").await.expect("get").is_none());
    let at_r2 = b
        .range(RangeRequest {
            prefix: "/k/".into(),
            revision: Some(r2),
            ..Default::default()
        })
        .await;
    assert_eq!(at_r2.expect("range").kvs.len(), 2);
    // History replays after a restart.
    let mut w = b.watch("/k/", 0).await.expect("watch");
    for want in 1..=4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("event in time");
        assert_eq!(ev.expect("item").expect("event").revision(), want);
    }
}

#[tokio::test]
async fn revision_never_goes_back_after_everything_is_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last;
    {
        let b = open(&dir);
        let r = b
            .create("/x", Bytes::from_static(b"v"))
            .await
            .expect("create");
        let (d, _) = b.delete("/x", Some(r)).await.expect("delete");
        b.compact(d).await.expect("compact");
        assert_eq!(row_count(&b), 0, "compaction left rows of a deleted key");
        last = d;
    }
    let b = open(&dir);
    assert_eq!(b.current_revision().await.expect("rev"), last);
    assert_eq!(b.compacted_revision().await.expect("compacted"), last);
    let next = b
        .create("/x", Bytes::from_static(b"v"))
        .await
        .expect("create");
    assert_eq!(next, last + 1);
    let err = b
        .range(RangeRequest {
            prefix: "/".into(),
            revision: Some(last - 1),
            ..Default::default()
        })
        .await;
    assert!(matches!(err, Err(Error::Compacted { .. })), "{err:?}");
}

/// Rows in the log table.
fn row_count(b: &SqliteBackend) -> i64 {
    b.inner
        .pool
        .run_blocking(|c| Ok(c.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))?))
        .expect("count rows")
}

#[tokio::test]
async fn compaction_bounds_the_log_under_churn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = SqliteBackend::open(SqliteConfig {
        compaction_step: 7,
        ..config(&dir)
    })
    .expect("open");
    let mut revs = std::collections::HashMap::new();
    for round in 0..50 {
        for k in 0..10 {
            let key = format!("/churn/{k}");
            let rev = match revs.get(&key) {
                None => b
                    .create(&key, Bytes::from(format!("{round}")))
                    .await
                    .expect("create"),
                Some(&rev) => b
                    .update(&key, Bytes::from(format!("{round}")), rev)
                    .await
                    .expect("update"),
            };
            revs.insert(key, rev);
        }
        // A short-lived key per round.
        let (_, _) = {
            let r = b
                .create("/churn/tmp", Bytes::new())
                .await
                .expect("create tmp");
            b.delete("/churn/tmp", Some(r)).await.expect("delete tmp")
        };
    }
    assert_eq!(row_count(&b), 600);
    let current = b.current_revision().await.expect("rev");
    b.compact(current).await.expect("compact");
    assert_eq!(row_count(&b), 10, "only the live rows remain");
    let res = b
        .range(RangeRequest {
            prefix: "/churn/".into(),
            ..Default::default()
        })
        .await
        .expect("range");
    assert_eq!(res.kvs.len(), 10);
    assert!(res.kvs.iter().all(|kv| kv.value.as_ref() == b"49"));
    b.integrity_check().expect("integrity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_rereads_the_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = SqliteBackend::open(SqliteConfig {
        watch_buffer: 2,
        max_batch: 1,
        replay_page: 7,
        ..config(&dir)
    })
    .expect("open");
    let mut w = b.watch("/lag/", 0).await.expect("watch");
    let mut want = Vec::new();
    for i in 0..100 {
        want.push(
            b.create(&format!("/lag/{i}"), Bytes::new())
                .await
                .expect("create"),
        );
        b.create(&format!("/other/{i}"), Bytes::new())
            .await
            .expect("create");
    }
    let mut got = Vec::new();
    while got.len() < want.len() {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("event in time");
        got.push(ev.expect("item").expect("event").revision());
    }
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_past_compaction_ends_with_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = SqliteBackend::open(SqliteConfig {
        watch_buffer: 2,
        max_batch: 1,
        ..config(&dir)
    })
    .expect("open");
    let mut w = b.watch("/lag/", 0).await.expect("watch");
    for i in 0..20 {
        b.create(&format!("/lag/{i}"), Bytes::new())
            .await
            .expect("create");
    }
    let current = b.current_revision().await.expect("rev");
    b.compact(current).await.expect("compact");
    let items: Vec<crate::Result<Event>> =
        tokio::time::timeout(Duration::from_secs(5), w.by_ref().collect())
            .await
            .expect("stream ends");
    let last = items.last().expect("at least the error");
    assert!(matches!(last, Err(Error::Compacted { .. })), "{last:?}");
    assert!(items[..items.len() - 1].iter().all(Result::is_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_when_the_store_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = open(&dir);
    let mut w = b.watch("/", 0).await.expect("watch");
    b.create("/a", Bytes::new()).await.expect("create");
    drop(b);
    let first = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("in time");
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("ends in time");
    assert!(end.is_none(), "{end:?}");
}

#[tokio::test]
async fn opening_a_non_database_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"this is not a sqlite database, not at all, no").expect("write");
    let err = SqliteBackend::open(SqliteConfig::new(&path)).expect_err("must fail");
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    let err = SqliteBackend::open(SqliteConfig::new(&dir.path().join("missing/dir/state.db")))
        .expect_err("must fail");
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
}

#[tokio::test]
async fn revision_zero_or_less_reads_the_current_state() {
    let (_dir, b) = fresh();
    let r = b.create("/z", Bytes::new()).await.expect("create");
    for rev in [Some(0), Some(-5), None] {
        let res = b
            .range(RangeRequest {
                prefix: "/".into(),
                revision: rev,
                ..Default::default()
            })
            .await
            .expect("range");
        assert_eq!((res.revision, res.kvs.len()), (r, 1), "revision {rev:?}");
    }
}

#[tokio::test]
async fn huge_limits_do_not_overflow() {
    let (_dir, b) = fresh();
    b.create("/h/a", Bytes::new()).await.expect("create");
    for limit in [usize::MAX, i64::MAX as usize, 1 << 40] {
        let res = b
            .range(RangeRequest {
                prefix: "/h/".into(),
                limit,
                ..Default::default()
            })
            .await
            .expect("range");
        assert_eq!((res.kvs.len(), res.more), (1, false), "limit {limit}");
    }
}

#[tokio::test]
async fn a_second_open_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(&dir);
    let second = SqliteBackend::open(config(&dir));
    assert!(
        matches!(second, Err(Error::Backend(ref m)) if m.contains("in use")),
        "{second:?}"
    );
    first.create("/a", Bytes::new()).await.expect("create");
    drop(first);
    let again = open(&dir);
    assert_eq!(again.current_revision().await.expect("rev"), 1);
}
