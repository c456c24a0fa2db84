//! Backend-agnostic conformance suite: checks that a [`Backend`] follows etcd's model.
//! Enabled by the `testing` feature so other backends (etcd) can run it too.
//!
//! Each check writes under its own `/conformance/...` prefix. Checks may run one after
//! another on one backend, but not concurrently: the compaction check compacts the whole
//! store, and the group-commit check expects no other writer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{Backend, Error, Event, EventKind, RangeRequest, Revision, WatchItem, WatchStream};

/// A failed conformance check.
#[derive(Debug, thiserror::Error)]
#[error("{check}: {detail}")]
pub struct Failure {
    /// The check that failed.
    pub check: &'static str,
    /// What went wrong.
    pub detail: String,
}

/// Result of one check.
pub type CheckResult = Result<(), Failure>;

macro_rules! ensure {
    ($check:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Failure { check: $check, detail: format!($($fmt)+) });
        }
    };
}

/// Turns a store error into a check failure.
trait Context<T> {
    fn ctx(self, check: &'static str, what: &str) -> Result<T, Failure>;
}

impl<T> Context<T> for crate::Result<T> {
    fn ctx(self, check: &'static str, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            check,
            detail: format!("{what}: {e}"),
        })
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A prefix unique to this check and this moment.
async fn prefix(backend: &dyn Backend, check: &'static str) -> Result<String, Failure> {
    let rev = backend
        .current_revision()
        .await
        .ctx(check, "current_revision")?;
    Ok(format!("/conformance/{check}/{rev}/"))
}

/// How long a check waits for one watch event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The next `n` events of `stream`, failing on an error, the end, or a timeout.
async fn take_events(
    check: &'static str,
    stream: &mut WatchStream,
    n: usize,
) -> Result<Vec<Event>, Failure> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
            Err(_) => ensure!(
                check,
                false,
                "timed out after {} of {n} events",
                events.len()
            ),
            Ok(None) => ensure!(
                check,
                false,
                "stream ended after {} of {n} events",
                events.len()
            ),
            Ok(Some(Err(e))) => ensure!(
                check,
                false,
                "stream failed after {} events: {e}",
                events.len()
            ),
            Ok(Some(Ok(event))) => events.push(event),
        }
    }
    Ok(events)
}

/// Runs every check in order.
pub async fn suite(backend: Arc<dyn Backend>) -> CheckResult {
    create_and_get(&*backend).await?;
    update_compare_and_swap(&*backend).await?;
    delete_with_precondition(&*backend).await?;
    range_at_revisions(&*backend).await?;
    pagination_at_fixed_revision(&*backend).await?;
    prefix_is_exact(&*backend).await?;
    count_live_keys(&*backend).await?;
    future_revision(&*backend).await?;
    watch_events(&*backend).await?;
    watch_progress(&*backend).await?;
    watch_replay_then_live(Arc::clone(&backend)).await?;
    group_commit(Arc::clone(&backend)).await?;
    compaction(&*backend).await?;
    Ok(())
}

/// Create-if-absent, AlreadyExists, and get.
pub async fn create_and_get(backend: &dyn Backend) -> CheckResult {
    const C: &str = "create_and_get";
    let p = prefix(backend, C).await?;
    let key = format!("{p}a");
    let before = backend
        .current_revision()
        .await
        .ctx(C, "current_revision")?;
    let rev = backend.create(&key, b("one")).await.ctx(C, "create")?;
    ensure!(C, rev > before, "create revision {rev} not after {before}");
    let now = backend
        .current_revision()
        .await
        .ctx(C, "current_revision")?;
    ensure!(
        C,
        now >= rev,
        "current revision {now} behind the write at {rev}"
    );
    let kv = backend.get(&key).await.ctx(C, "get")?;
    let kv = kv.ok_or_else(|| Failure {
        check: C,
        detail: "created key not found".into(),
    })?;
    ensure!(C, kv.value == b("one") && kv.key == key, "read back {kv:?}");
    ensure!(
        C,
        kv.create_revision == rev && kv.mod_revision == rev,
        "revisions of {kv:?}, want {rev}"
    );
    match backend.create(&key, b("two")).await {
        Err(Error::AlreadyExists(k)) => ensure!(C, k == key, "AlreadyExists names {k}"),
        other => ensure!(C, false, "second create gave {other:?}, want AlreadyExists"),
    }
    let kv = backend.get(&key).await.ctx(C, "get")?;
    ensure!(
        C,
        kv.is_some_and(|kv| kv.value == b("one")),
        "failed create changed the value"
    );
    let missing = backend
        .get(&format!("{p}missing"))
        .await
        .ctx(C, "get missing")?;
    ensure!(C, missing.is_none(), "missing key read as {missing:?}");
    Ok(())
}

/// Compare-and-swap on the mod revision: success, Conflict with the current value,
/// NotFound.
pub async fn update_compare_and_swap(backend: &dyn Backend) -> CheckResult {
    const C: &str = "update_compare_and_swap";
    let p = prefix(backend, C).await?;
    let key = format!("{p}a");
    let created = backend.create(&key, b("v1")).await.ctx(C, "create")?;
    let updated = backend
        .update(&key, b("v2"), created)
        .await
        .ctx(C, "update")?;
    ensure!(
        C,
        updated > created,
        "update revision {updated} not after {created}"
    );
    let kv = backend.get(&key).await.ctx(C, "get")?;
    ensure!(
        C,
        kv.as_ref().is_some_and(|kv| kv.value == b("v2")
            && kv.create_revision == created
            && kv.mod_revision == updated),
        "after update read {kv:?}"
    );
    match backend.update(&key, b("v3"), created).await {
        Err(Error::Conflict {
            key: k,
            expected,
            current,
        }) => {
            ensure!(
                C,
                k == key && expected == created,
                "conflict names {k} at {expected}"
            );
            ensure!(
                C,
                current.mod_revision == updated && current.value == b("v2"),
                "conflict carries {current:?}"
            );
            ensure!(
                C,
                current.create_revision == created,
                "conflict carries {current:?}"
            );
        }
        other => ensure!(C, false, "stale update gave {other:?}, want Conflict"),
    }
    match backend
        .update(&format!("{p}missing"), b("x"), updated)
        .await
    {
        Err(Error::NotFound(_)) => {}
        other => ensure!(
            C,
            false,
            "update of a missing key gave {other:?}, want NotFound"
        ),
    }
    Ok(())
}

/// Delete with and without a precondition; deleted keys can be created again.
pub async fn delete_with_precondition(backend: &dyn Backend) -> CheckResult {
    const C: &str = "delete_with_precondition";
    let p = prefix(backend, C).await?;
    let key = format!("{p}a");
    let created = backend.create(&key, b("v1")).await.ctx(C, "create")?;
    match backend.delete(&key, Some(created - 1)).await {
        Err(Error::Conflict { current, .. }) => {
            ensure!(
                C,
                current.mod_revision == created,
                "conflict carries {current:?}"
            )
        }
        other => ensure!(
            C,
            false,
            "delete with a stale precondition gave {other:?}, want Conflict"
        ),
    }
    let (rev, old) = backend.delete(&key, Some(created)).await.ctx(C, "delete")?;
    ensure!(
        C,
        rev > created,
        "delete revision {rev} not after {created}"
    );
    ensure!(
        C,
        old.value == b("v1") && old.create_revision == created,
        "deleted value {old:?}"
    );
    let gone = backend.get(&key).await.ctx(C, "get")?;
    ensure!(C, gone.is_none(), "deleted key reads as {gone:?}");
    match backend.delete(&key, None).await {
        Err(Error::NotFound(_)) => {}
        other => ensure!(C, false, "second delete gave {other:?}, want NotFound"),
    }
    let again = backend.create(&key, b("v2")).await.ctx(C, "re-create")?;
    ensure!(
        C,
        again > rev,
        "re-create revision {again} not after the delete at {rev}"
    );
    let kv = backend.get(&key).await.ctx(C, "get")?;
    ensure!(
        C,
        kv.as_ref().is_some_and(|kv| kv.create_revision == again),
        "re-created key reads {kv:?}"
    );
    let (rev2, old) = backend
        .delete(&key, None)
        .await
        .ctx(C, "unconditional delete")?;
    ensure!(
        C,
        rev2 > again && old.value == b("v2"),
        "unconditional delete gave {rev2} {old:?}"
    );
    Ok(())
}

/// Keys (sorted) and values of a range read.
async fn read_at(
    backend: &dyn Backend,
    c: &'static str,
    prefix: &str,
    rev: Option<Revision>,
) -> Result<Vec<(String, String)>, Failure> {
    let res = backend
        .range(RangeRequest {
            prefix: prefix.to_owned(),
            revision: rev,
            ..Default::default()
        })
        .await
        .ctx(c, "range")?;
    if let Some(rev) = rev {
        ensure!(
            c,
            res.revision == rev,
            "range at {rev} served at {}",
            res.revision
        );
    }
    ensure!(c, !res.more, "unlimited range says more");
    Ok(res
        .kvs
        .into_iter()
        .map(|kv| {
            (
                kv.key[prefix.len()..].to_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect())
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Range reads at historical revisions see the keys as they were.
pub async fn range_at_revisions(backend: &dyn Backend) -> CheckResult {
    const C: &str = "range_at_revisions";
    let p = prefix(backend, C).await?;
    let start = backend
        .current_revision()
        .await
        .ctx(C, "current_revision")?;
    let r1 = backend
        .create(&format!("{p}a"), b("a1"))
        .await
        .ctx(C, "create a")?;
    let r2 = backend
        .create(&format!("{p}b"), b("b1"))
        .await
        .ctx(C, "create b")?;
    let r3 = backend
        .update(&format!("{p}a"), b("a2"), r1)
        .await
        .ctx(C, "update a")?;
    let (r4, _) = backend
        .delete(&format!("{p}b"), None)
        .await
        .ctx(C, "delete b")?;
    let r5 = backend
        .create(&format!("{p}b"), b("b2"))
        .await
        .ctx(C, "re-create b")?;
    let cases: [(Revision, Vec<(String, String)>); 6] = [
        (start, vec![]),
        (r1, pairs(&[("a", "a1")])),
        (r2, pairs(&[("a", "a1"), ("b", "b1")])),
        (r3, pairs(&[("a", "a2"), ("b", "b1")])),
        (r4, pairs(&[("a", "a2")])),
        (r5, pairs(&[("a", "a2"), ("b", "b2")])),
    ];
    for (rev, want) in cases {
        if rev == 0 {
            continue; // Revision 0 means "current".
        }
        let got = read_at(backend, C, &p, Some(rev)).await?;
        ensure!(
            C,
            got == want,
            "at revision {rev}: got {got:?}, want {want:?}"
        );
    }
    let res = backend
        .range(RangeRequest {
            prefix: p.clone(),
            ..Default::default()
        })
        .await
        .ctx(C, "range")?;
    let current = backend
        .current_revision()
        .await
        .ctx(C, "current_revision")?;
    ensure!(
        C,
        res.revision >= r5 && res.revision <= current,
        "current range served at {}",
        res.revision
    );
    ensure!(C, res.kvs.len() == 2, "current range {:?}", res.kvs);
    Ok(())
}

/// Pages of `limit` keys at one revision stay consistent while writes go on.
pub async fn pagination_at_fixed_revision(backend: &dyn Backend) -> CheckResult {
    const C: &str = "pagination_at_fixed_revision";
    let p = prefix(backend, C).await?;
    let mut want = Vec::new();
    for i in 0..10 {
        let key = format!("{p}k{i:02}");
        backend.create(&key, b("v")).await.ctx(C, "create")?;
        want.push(key);
    }
    let mut seen = Vec::new();
    let mut revision = None;
    let mut start_after = None;
    let mut pages = 0;
    loop {
        let page = backend
            .range(RangeRequest {
                prefix: p.clone(),
                start_after: start_after.clone(),
                limit: 3,
                revision,
            })
            .await
            .ctx(C, "range page")?;
        pages += 1;
        ensure!(
            C,
            page.kvs.len() <= 3,
            "page of {} keys with limit 3",
            page.kvs.len()
        );
        if let Some(rev) = revision {
            ensure!(
                C,
                page.revision == rev,
                "page served at {} instead of {rev}",
                page.revision
            );
        }
        revision = Some(page.revision);
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        start_after = page.kvs.last().map(|kv| kv.key.clone());
        if pages == 1 {
            // Writes between pages must not show up in later pages.
            backend
                .create(&format!("{p}k05a"), b("new"))
                .await
                .ctx(C, "create between pages")?;
            backend
                .delete(&want[8], None)
                .await
                .ctx(C, "delete between pages")?;
            backend
                .create(&format!("{p}z"), b("new"))
                .await
                .ctx(C, "create between pages")?;
        }
        if !page.more {
            break;
        }
        ensure!(C, pages < 10, "pagination does not end");
    }
    ensure!(C, seen == want, "pages gave {seen:?}, want {want:?}");
    ensure!(C, pages == 4, "10 keys in pages of 3 took {pages} pages");
    let exact = backend
        .range(RangeRequest {
            prefix: p.clone(),
            limit: 10,
            revision,
            ..Default::default()
        })
        .await
        .ctx(C, "range with exact limit")?;
    ensure!(
        C,
        exact.kvs.len() == 10 && !exact.more,
        "limit equal to the size says more={}",
        exact.more
    );
    Ok(())
}

/// A prefix matches exactly the keys that start with it.
pub async fn prefix_is_exact(backend: &dyn Backend) -> CheckResult {
    const C: &str = "prefix_is_exact";
    let p = prefix(backend, C).await?;
    let base = format!("{p}ns");
    for suffix in [
        "", "/", "/a", "/a/b", "0", "%", "_", "\u{7f}", "\u{e9}", "x/a",
    ] {
        backend
            .create(&format!("{base}{suffix}"), b("v"))
            .await
            .ctx(C, "create")?;
    }
    let got: Vec<String> = read_at(backend, C, &format!("{base}/"), None)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    ensure!(C, got == ["", "a", "a/b"], "prefix {base}/ matched {got:?}");
    let got: Vec<String> = read_at(backend, C, &format!("{base}\u{7f}"), None)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    ensure!(C, got == [""], "prefix ending in DEL matched {got:?}");
    let n = backend.count(&format!("{base}/")).await.ctx(C, "count")?;
    ensure!(C, n == 3, "count under {base}/ is {n}");
    Ok(())
}

/// `count` counts live keys under a prefix.
pub async fn count_live_keys(backend: &dyn Backend) -> CheckResult {
    const C: &str = "count_live_keys";
    let p = prefix(backend, C).await?;
    ensure!(
        C,
        backend.count(&p).await.ctx(C, "count")? == 0,
        "fresh prefix not empty"
    );
    for i in 0..5 {
        backend
            .create(&format!("{p}{i}"), b("v"))
            .await
            .ctx(C, "create")?;
    }
    let r = backend.update(&format!("{p}0"), b("w"), 0).await;
    ensure!(
        C,
        matches!(r, Err(Error::Conflict { .. })),
        "update at revision 0 gave {r:?}"
    );
    backend
        .delete(&format!("{p}1"), None)
        .await
        .ctx(C, "delete")?;
    let n = backend.count(&p).await.ctx(C, "count")?;
    ensure!(C, n == 4, "count is {n}, want 4");
    Ok(())
}

/// Reads above the current revision fail with FutureRevision.
pub async fn future_revision(backend: &dyn Backend) -> CheckResult {
    const C: &str = "future_revision";
    let current = backend
        .current_revision()
        .await
        .ctx(C, "current_revision")?;
    let res = backend
        .range(RangeRequest {
            prefix: "/".into(),
            revision: Some(current + 100),
            ..Default::default()
        })
        .await;
    match res {
        Err(Error::FutureRevision {
            requested,
            current: c,
        }) => {
            ensure!(
                C,
                requested == current + 100 && c >= current,
                "FutureRevision {{ {requested}, {c} }}"
            )
        }
        other => ensure!(C, false, "range in the future gave {other:?}"),
    }
    let res = backend.compact(current + 100).await;
    ensure!(
        C,
        matches!(res, Err(Error::FutureRevision { .. })),
        "compact in the future gave {res:?}"
    );
    Ok(())
}

/// A watch with progress reports revisions that pass without touching its prefix, in
/// order with its events, both when replaying history and live.
pub async fn watch_progress(backend: &dyn Backend) -> CheckResult {
    const C: &str = "watch_progress";
    let p = prefix(backend, C).await?;
    let outside = format!("{}outside", &p[..p.len() - 1]);
    let start = backend.current_revision().await.ctx(C, "rev")?;
    let r1 = backend
        .create(&outside, b("x"))
        .await
        .ctx(C, "create outside")?;
    let mut stream = backend
        .watch_with_progress(&p, start)
        .await
        .ctx(C, "watch_with_progress")?;
    let mut next = async || match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(item))) => Ok(item),
        other => Err(Failure {
            check: C,
            detail: format!("no item: {other:?}"),
        }),
    };
    // Replayed: nothing under the prefix up to r1.
    let item = next().await?;
    ensure!(
        C,
        item == WatchItem::Progress(r1),
        "replay: {item:?}, want progress to {r1}"
    );
    let r2 = backend
        .create(&format!("{p}a"), b("v"))
        .await
        .ctx(C, "create")?;
    let r3 = backend
        .update(&outside, b("y"), r1)
        .await
        .ctx(C, "update outside")?;
    let item = next().await?;
    ensure!(
        C,
        matches!(&item, WatchItem::Event(e) if e.revision() == r2),
        "live: {item:?}, want the event at {r2}"
    );
    let item = next().await?;
    ensure!(
        C,
        item == WatchItem::Progress(r3),
        "live: {item:?}, want progress to {r3}"
    );
    Ok(())
}

/// Watch events carry the right kinds, values and previous values, and only for keys
/// under the prefix.
pub async fn watch_events(backend: &dyn Backend) -> CheckResult {
    const C: &str = "watch_events";
    let p = prefix(backend, C).await?;
    let start = backend
        .current_revision()
        .await
        .ctx(C, "current_revision")?;
    let mut live = backend
        .watch(&p, backend.current_revision().await.ctx(C, "rev")?)
        .await
        .ctx(C, "watch")?;
    let key = format!("{p}a");
    let r1 = backend.create(&key, b("v1")).await.ctx(C, "create")?;
    backend
        .create(&format!("{}other", &p[..p.len() - 1]), b("x"))
        .await
        .ctx(C, "create outside")?;
    let r2 = backend.update(&key, b("v2"), r1).await.ctx(C, "update")?;
    let (r3, _) = backend.delete(&key, None).await.ctx(C, "delete")?;
    let r4 = backend.create(&key, b("v3")).await.ctx(C, "re-create")?;
    let mut replay = backend.watch(&p, start).await.ctx(C, "watch from start")?;
    for (name, stream) in [("live", &mut live), ("replay", &mut replay)] {
        let ev = take_events(C, stream, 4).await?;
        let revs: Vec<Revision> = ev.iter().map(Event::revision).collect();
        ensure!(
            C,
            revs == [r1, r2, r3, r4],
            "{name}: revisions {revs:?}, want {:?}",
            [r1, r2, r3, r4]
        );
        ensure!(
            C,
            ev[0].kind == EventKind::Put && ev[0].prev.is_none(),
            "{name}: create event {:?}",
            ev[0]
        );
        ensure!(
            C,
            ev[0].kv.create_revision == r1 && ev[0].kv.value == b("v1"),
            "{name}: create event {:?}",
            ev[0]
        );
        ensure!(
            C,
            ev[1].kind == EventKind::Put && ev[1].kv.value == b("v2"),
            "{name}: update event {:?}",
            ev[1]
        );
        ensure!(
            C,
            ev[1].kv.create_revision == r1,
            "{name}: update event {:?}",
            ev[1]
        );
        ensure!(
            C,
            ev[1]
                .prev
                .as_ref()
                .is_some_and(|p| p.value == b("v1") && p.mod_revision == r1),
            "{name}: update event prev {:?}",
            ev[1].prev
        );
        ensure!(
            C,
            ev[2].kind == EventKind::Delete,
            "{name}: delete event {:?}",
            ev[2]
        );
        ensure!(
            C,
            ev[2].kv.value == b("v2") && ev[2].kv.mod_revision == r3,
            "{name}: delete event {:?}",
            ev[2]
        );
        ensure!(
            C,
            ev[2].prev.as_ref().is_some_and(|p| p.mod_revision == r2),
            "{name}: delete prev {:?}",
            ev[2].prev
        );
        ensure!(
            C,
            ev[3].kind == EventKind::Put && ev[3].prev.is_none(),
            "{name}: re-create {:?}",
            ev[3]
        );
        ensure!(
            C,
            ev[3].kv.create_revision == r4,
            "{name}: re-create {:?}",
            ev[3]
        );
    }
    Ok(())
}

/// A watch started in the past replays history and then follows live writes made
/// concurrently, with no gap and no duplicate.
pub async fn watch_replay_then_live(backend: Arc<dyn Backend>) -> CheckResult {
    const C: &str = "watch_replay_then_live";
    const BEFORE: usize = 200;
    const WRITERS: usize = 4;
    const DURING: usize = 100;
    const WATCHERS: usize = 8;
    let p = prefix(&*backend, C).await?;
    let start = backend
        .current_revision()
        .await
        .ctx(C, "current_revision")?;
    let mut expected = BTreeSet::new();
    for i in 0..BEFORE {
        expected.insert(
            backend
                .create(&format!("{p}before/{i}"), b("v"))
                .await
                .ctx(C, "create")?,
        );
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let backend = Arc::clone(&backend);
            let p = p.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..DURING {
                    revs.push(
                        backend
                            .create(&format!("{p}during/{w}/{i}"), Bytes::new())
                            .await?,
                    );
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                Ok::<_, Error>(revs)
            })
        })
        .collect();
    // Start watchers at several moments while the writers run: each must see every
    // event once, wherever its replay/live hand-off fell.
    let mut streams = Vec::new();
    for _ in 0..WATCHERS {
        tokio::time::sleep(Duration::from_millis(2)).await;
        streams.push(backend.watch(&p, start).await.ctx(C, "watch")?);
    }
    for w in writers {
        let revs = w.await.map_err(|e| Failure {
            check: C,
            detail: format!("writer task: {e}"),
        })?;
        expected.extend(revs.ctx(C, "concurrent create")?);
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        let events = take_events(C, stream, BEFORE + WRITERS * DURING).await?;
        let revs: Vec<Revision> = events.iter().map(Event::revision).collect();
        ensure!(
            C,
            revs.windows(2).all(|w| w[0] < w[1]),
            "watcher {n}: revisions not strictly increasing"
        );
        let got: BTreeSet<Revision> = revs.into_iter().collect();
        ensure!(
            C,
            got == expected,
            "watcher {n}: missing {:?}, unexpected {:?}",
            expected.difference(&got).take(5).collect::<Vec<_>>(),
            got.difference(&expected).take(5).collect::<Vec<_>>()
        );
        // Nothing more is pending.
        let extra = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        ensure!(
            C,
            extra.is_err(),
            "watcher {n}: unexpected extra item {:?}",
            extra.ok().flatten()
        );
    }
    Ok(())
}

/// Many concurrent writers all succeed with unique, dense revisions.
pub async fn group_commit(backend: Arc<dyn Backend>) -> CheckResult {
    const C: &str = "group_commit";
    const WRITERS: usize = 64;
    const EACH: usize = 20;
    let p = prefix(&*backend, C).await?;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let backend = Arc::clone(&backend);
            let p = p.clone();
            tokio::spawn(async move {
                let mut revs = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    revs.push(backend.create(&format!("{p}{w}/{i}"), b("v")).await?);
                }
                Ok::<_, Error>(revs)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let revs = t.await.map_err(|e| Failure {
            check: C,
            detail: format!("writer task: {e}"),
        })?;
        all.extend(revs.ctx(C, "create")?);
    }
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    ensure!(C, all.len() == n, "{} duplicate revisions", n - all.len());
    let (first, last) = (all[0], all[n - 1]);
    ensure!(
        C,
        last - first + 1 == n as Revision,
        "revisions {first}..={last} not dense for {n} writes"
    );
    let count = backend.count(&p).await.ctx(C, "count")?;
    ensure!(C, count == n as i64, "count {count}, want {n}");
    Ok(())
}

/// Compaction keeps current values readable, makes older revisions fail with Compacted
/// for ranges and watches, and keeps the compacted revision itself readable.
pub async fn compaction(backend: &dyn Backend) -> CheckResult {
    const C: &str = "compaction";
    let p = prefix(backend, C).await?;
    let a = format!("{p}a");
    let r1 = backend.create(&a, b("a1")).await.ctx(C, "create")?;
    let r2 = backend.update(&a, b("a2"), r1).await.ctx(C, "update")?;
    let gone = format!("{p}gone");
    backend.create(&gone, b("g")).await.ctx(C, "create")?;
    let (r3, _) = backend.delete(&gone, None).await.ctx(C, "delete")?;
    let keep = format!("{p}keep");
    let rk = backend.create(&keep, b("k")).await.ctx(C, "create")?;
    let target = backend
        .current_revision()
        .await
        .ctx(C, "current_revision")?;
    let r4 = backend
        .update(&a, b("a3"), r2)
        .await
        .ctx(C, "update after target")?;

    backend.compact(target).await.ctx(C, "compact")?;
    let compacted = backend
        .compacted_revision()
        .await
        .ctx(C, "compacted_revision")?;
    ensure!(
        C,
        compacted == target,
        "compacted revision {compacted}, want {target}"
    );
    backend
        .compact(r1)
        .await
        .ctx(C, "compacting to an older revision is a no-op")?;
    ensure!(
        C,
        backend.compacted_revision().await.ctx(C, "compacted")? == target,
        "compacted revision went back"
    );

    match backend
        .range(RangeRequest {
            prefix: p.clone(),
            revision: Some(r3),
            ..Default::default()
        })
        .await
    {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => {
            ensure!(
                C,
                requested == r3 && compacted == target,
                "Compacted {{ {requested}, {compacted} }}"
            )
        }
        other => ensure!(C, false, "range at compacted revision {r3} gave {other:?}"),
    }
    match backend.watch(&p, r1).await {
        Err(Error::Compacted { .. }) => {}
        Ok(_) => ensure!(C, false, "watch from compacted revision {r1} succeeded"),
        Err(e) => ensure!(C, false, "watch from compacted revision gave {e}"),
    }
    let at_target = read_at(backend, C, &p, Some(target)).await?;
    ensure!(
        C,
        at_target == pairs(&[("a", "a2"), ("keep", "k")]),
        "at the compacted revision: {at_target:?}"
    );
    let now = read_at(backend, C, &p, None).await?;
    ensure!(
        C,
        now == pairs(&[("a", "a3"), ("keep", "k")]),
        "current state after compaction: {now:?}"
    );
    let kv = backend.get(&keep).await.ctx(C, "get")?;
    ensure!(
        C,
        kv.is_some_and(|kv| kv.mod_revision == rk && kv.create_revision == rk),
        "kept key lost its revisions"
    );
    ensure!(
        C,
        backend.get(&gone).await.ctx(C, "get")?.is_none(),
        "deleted key came back"
    );

    let mut stream = backend
        .watch(&p, target)
        .await
        .ctx(C, "watch from the compacted revision")?;
    let ev = take_events(C, &mut stream, 1).await?;
    ensure!(
        C,
        ev[0].revision() == r4,
        "first event after compaction at {}",
        ev[0].revision()
    );
    ensure!(
        C,
        ev[0].prev.as_ref().is_some_and(|p| p.mod_revision == r2),
        "prev after compaction {:?}",
        ev[0].prev
    );
    let r5 = backend
        .update(&a, b("a4"), r4)
        .await
        .ctx(C, "update after compaction")?;
    let ev = take_events(C, &mut stream, 1).await?;
    ensure!(
        C,
        ev[0].revision() == r5,
        "live event after compaction at {}",
        ev[0].revision()
    );
    Ok(())
}
