//! The store's contract, checked against the SQLite backend (an etcd backend will run the
//! same `suite`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use store::{Backend, Error, EventKind, RangeRequest, SqliteBackend, SqliteConfig};

fn open(dir: &tempfile::TempDir) -> Arc<dyn Backend> {
    Arc::new(SqliteBackend::open(SqliteConfig::new(&dir.path().join("s.db"))).expect("open"))
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

async fn keys_at(backend: &dyn Backend, prefix: &str, revision: Option<i64>) -> Vec<String> {
    let req = RangeRequest {
        prefix: prefix.into(),
        revision,
        ..Default::default()
    };
    backend
        .range(req)
        .await
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

#[tokio::test]
async fn create_update_delete_and_preconditions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(&dir);
    let r1 = s.create("/a/1", b("one")).await.expect("create");
    assert!(matches!(
        s.create("/a/1", b("again")).await,
        Err(Error::AlreadyExists(_))
    ));
    let r2 = s.update("/a/1", b("two"), r1).await.expect("update");
    assert!(r2 > r1);
    match s.update("/a/1", b("stale"), r1).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(current.value, b("two")),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/a/none", b("x"), 1).await,
        Err(Error::NotFound(_))
    ));
    let kv = s.get("/a/1").await.expect("get").expect("present");
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b("two"), r1, r2)
    );
    assert!(matches!(
        s.delete("/a/1", Some(r1)).await,
        Err(Error::Conflict { .. })
    ));
    let (r3, last) = s.delete("/a/1", Some(r2)).await.expect("delete");
    assert_eq!(last.value, b("two"));
    assert!(r3 > r2);
    assert!(s.get("/a/1").await.expect("get").is_none());
    assert!(matches!(
        s.delete("/a/1", None).await,
        Err(Error::NotFound(_))
    ));
    // Re-creating a deleted key starts a new incarnation.
    let r4 = s.create("/a/1", b("new")).await.expect("recreate");
    assert_eq!(
        s.get("/a/1")
            .await
            .expect("get")
            .map(|kv| kv.create_revision),
        Some(r4)
    );
    assert_eq!(s.current_revision().await.expect("rev"), r4);
}

#[tokio::test]
async fn ranges_at_revisions_with_pagination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(&dir);
    for i in 0..5 {
        s.create(&format!("/p/k{i}"), b("v")).await.expect("create");
    }
    s.create("/pother/x", b("v")).await.expect("create");
    let at5 = s.current_revision().await.expect("rev") - 1;
    let (_, _) = s.delete("/p/k0", None).await.expect("delete");
    s.create("/p/k5", b("v")).await.expect("create");
    assert_eq!(
        keys_at(&*s, "/p/", None).await,
        ["/p/k1", "/p/k2", "/p/k3", "/p/k4", "/p/k5"]
    );
    assert_eq!(
        keys_at(&*s, "/p/", Some(at5)).await,
        ["/p/k0", "/p/k1", "/p/k2", "/p/k3", "/p/k4"]
    );
    assert_eq!(s.count("/p/").await.expect("count"), 5);

    // Pages of two at a fixed revision, while writes go on.
    let mut seen = Vec::new();
    let mut after = None;
    let mut revision = None;
    loop {
        let page = s
            .range(RangeRequest {
                prefix: "/p/".into(),
                start_after: after.clone(),
                limit: 2,
                revision,
            })
            .await
            .expect("page");
        revision = Some(page.revision);
        s.create(&format!("/p/z{}", seen.len()), b("later"))
            .await
            .expect("create");
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, ["/p/k1", "/p/k2", "/p/k3", "/p/k4", "/p/k5"]);
    let future = s.current_revision().await.expect("rev") + 10;
    let req = RangeRequest {
        prefix: "/p/".into(),
        revision: Some(future),
        ..Default::default()
    };
    assert!(matches!(
        s.range(req).await,
        Err(Error::FutureRevision { .. })
    ));
}

#[tokio::test]
async fn watch_replays_then_follows_without_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(&dir);
    let start = s.create("/w/a", b("1")).await.expect("create");
    s.update("/w/a", b("2"), start).await.expect("update");
    s.create("/x/ignored", b("1")).await.expect("create");
    let mut stream = s.watch("/w/", start).await.expect("watch");
    // Concurrent writers while the watcher hands off from replay to live events.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                s.create(&format!("/w/k{i}"), b("v")).await.expect("create");
            }
        })
    };
    let first = stream.next().await.expect("event").expect("ok");
    assert_eq!(
        (first.kind, first.kv.value.clone()),
        (EventKind::Put, b("2"))
    );
    assert_eq!(first.prev.map(|p| p.value), Some(b("1")));
    let mut last = first.kv.mod_revision;
    let mut names = Vec::new();
    while names.len() < 200 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("in time")
            .expect("event")
            .expect("ok");
        assert!(e.kv.mod_revision > last, "revisions increase");
        last = e.kv.mod_revision;
        assert!(e.kv.key.starts_with("/w/"));
        names.push(e.kv.key);
    }
    writer.await.expect("writer");
    let expected: Vec<String> = (0..200).map(|i| format!("/w/k{i}")).collect();
    assert_eq!(names, expected, "no gaps, no duplicates, in order");
    let (_, _) = s.delete("/w/a", None).await.expect("delete");
    let e = stream.next().await.expect("event").expect("ok");
    assert_eq!(
        (e.kind, e.kv.key.as_str(), e.kv.value.clone()),
        (EventKind::Delete, "/w/a", b("2"))
    );
}

#[tokio::test]
async fn compaction_expires_old_revisions_but_keeps_current_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(&dir);
    let r1 = s.create("/c/a", b("1")).await.expect("create");
    let mut rev = r1;
    for i in 0..20 {
        rev = s
            .update("/c/a", Bytes::from(format!("{i}")), rev)
            .await
            .expect("update");
    }
    s.create("/c/gone", b("x")).await.expect("create");
    s.delete("/c/gone", None).await.expect("delete");
    let target = s.current_revision().await.expect("rev");
    s.compact(target).await.expect("compact");
    assert_eq!(s.compacted_revision().await.expect("compacted"), target);
    assert_eq!(
        s.get("/c/a").await.expect("get").map(|kv| kv.value),
        Some(b("19"))
    );
    assert_eq!(keys_at(&*s, "/c/", Some(target)).await, ["/c/a"]);
    let req = RangeRequest {
        prefix: "/c/".into(),
        revision: Some(r1),
        ..Default::default()
    };
    assert!(matches!(s.range(req).await, Err(Error::Compacted { .. })));
    assert!(matches!(
        s.watch("/c/", r1).await,
        Err(Error::Compacted { .. })
    ));
    assert!(s.watch("/c/", target).await.is_ok());
}

#[tokio::test]
async fn revisions_survive_reopen_and_group_commit_is_dense() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let last;
    {
        let s: Arc<dyn Backend> =
            Arc::new(SqliteBackend::open(SqliteConfig::new(&path)).expect("open"));
        let mut tasks = Vec::new();
        for w in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..25 {
                    revs.push(
                        s.create(&format!("/g/{w}/{i}"), b("v"))
                            .await
                            .expect("create"),
                    );
                }
                revs
            }));
        }
        let mut revs = Vec::new();
        for t in tasks {
            revs.extend(t.await.expect("task"));
        }
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), 400, "every write has its own revision");
        assert_eq!(
            revs.last().copied().unwrap_or_default() - revs[0] + 1,
            400,
            "revisions are dense"
        );
        last = revs.last().copied().unwrap_or_default();
        s.delete("/g/0/0", None).await.expect("delete");
        let target = s.current_revision().await.expect("rev");
        s.compact(target).await.expect("compact");
    }
    let s = SqliteBackend::open(SqliteConfig::new(&path)).expect("reopen");
    assert_eq!(
        s.current_revision().await.expect("rev"),
        last + 1,
        "revision never goes back"
    );
    assert_eq!(s.count("/g/").await.expect("count"), 399);
    s.integrity_check().expect("integrity");
}

#[tokio::test]
async fn compactor_policy_keeps_recent_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(&dir);
    let r1 = s.create("/k/a", b("1")).await.expect("create");
    let policy = store::CompactionPolicy {
        retain: Duration::from_millis(300),
        interval: Duration::from_millis(100),
    };
    let _compactor = store::Compactor::spawn(s.clone(), policy);
    let r2 = s.update("/k/a", b("2"), r1).await.expect("update");
    // Right away, history is still there.
    assert!(s.watch("/k/", r1).await.is_ok());
    let mut compacted = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        compacted = s.compacted_revision().await.expect("compacted");
        if compacted >= r2 {
            break;
        }
    }
    assert!(
        compacted >= r2,
        "the policy compacted history older than its retention"
    );
}
