//! The watch cache: per collection, the current objects in memory and a window of recent
//! changes, fed by one store watch. LISTs are served from it once it has caught up with the
//! store's revision at the time of the request (so they are never older than an
//! acknowledged write), and every WATCH of the collection shares its one store watch.
//!
//! Each change is decoded once here and shared by every watcher, with its encodings: a
//! thousand watchers of one collection cost one decode and one encode per event and form,
//! not a thousand, as upstream's cacher shares its cached serializations.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use store::{Backend, Event, EventKind, RangeRequest, Revision, WatchItem};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use crate::storage::{decode, with_rv};

/// Changes kept for watchers that start slightly in the past, at most.
const WINDOW: usize = 4096;
/// Changes older than this leave the window even when it is not full (upstream's
/// eventFreshDuration), so an idle collection does not keep superseded objects; a watch
/// from further back reads the store's history instead.
const FRESH: Duration = Duration::from_secs(75);
/// Live events buffered per watcher before it is cut off (it then re-lists).
const WATCHER_BUFFER: usize = 1024;
// A watcher the live channel has not cut off never needs a change the window dropped
// for its size.
const _: () = assert!(WATCHER_BUFFER < WINDOW);
/// How long a LIST waits for the cache to catch up before reading the store instead.
const CATCH_UP: Duration = Duration::from_secs(3);

/// One change to a collection, decoded once and shared by every watcher.
pub struct Change {
    /// The revision of the write.
    pub revision: Revision,
    /// Put or Delete.
    pub kind: EventKind,
    /// The object's key.
    pub key: String,
    /// The object after a Put (resourceVersion set); `None` for a Delete.
    pub object: Option<Arc<Value>>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<Value>>,
    /// Encodings of this change's object, by watch form: filled by the first watcher that
    /// needs one, reused by the rest.
    encoded: Mutex<Vec<(Arc<str>, Shown, Bytes)>>,
}

/// Which state of a change a watcher shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shown {
    /// The object after the change.
    Object,
    /// For a Delete: the last state, at the deletion's revision.
    Tombstone,
}

impl Change {
    fn new(
        revision: Revision,
        kind: EventKind,
        key: String,
        object: Option<Arc<Value>>,
        prev: Option<Arc<Value>>,
    ) -> Self {
        Self {
            revision,
            kind,
            key,
            object,
            prev,
            encoded: Mutex::new(Vec::new()),
        }
    }

    /// A store event, decoded (for watches the cache cannot serve).
    pub fn from_event(event: &Event) -> Self {
        let object = match event.kind {
            EventKind::Put => decode(&event.kv).ok().map(Arc::new),
            EventKind::Delete => None,
        };
        let prev = event
            .prev
            .as_ref()
            .and_then(|p| decode(p).ok())
            .map(Arc::new);
        Self::new(
            event.revision(),
            event.kind,
            event.kv.key.clone(),
            object,
            prev,
        )
    }

    /// The state a watcher shows: the object, or for a deletion the last state with the
    /// deletion's resourceVersion (as upstream's DELETED events carry).
    pub fn shown(&self, which: Shown) -> Option<Value> {
        match which {
            Shown::Object => self.object.as_deref().cloned(),
            Shown::Tombstone => self
                .prev
                .as_deref()
                .map(|p| with_rv(p.clone(), self.revision)),
        }
    }

    /// The encoding of `which` in `form`, made by `encode` the first time it is asked for.
    pub fn encoded(&self, form: &Arc<str>, which: Shown, encode: impl FnOnce() -> Bytes) -> Bytes {
        let mut encoded = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, bytes)) = encoded.iter().find(|(f, w, _)| f == form && *w == which) {
            return bytes.clone();
        }
        let bytes = encode();
        encoded.push((form.clone(), which, bytes.clone()));
        bytes
    }
}

/// A stream of changes, ending like a store watch.
pub type ChangeStream = BoxStream<'static, store::Result<Arc<Change>>>;

struct State {
    /// Current objects by key.
    objects: BTreeMap<String, Arc<Value>>,
    /// The revision the objects are at: the last event's, or later when the store
    /// reported progress (revisions that did not touch this collection).
    revision: Revision,
    /// Recent changes with when they arrived, oldest first.
    window: VecDeque<(Instant, Arc<Change>)>,
    /// The window holds every change after this revision.
    window_start: Revision,
    /// False until the initial list is loaded, and again after the feed failed.
    ready: bool,
}

impl State {
    /// Drops changes beyond the window's size or age.
    fn trim(&mut self, now: Instant) {
        while let Some((at, oldest)) = self.window.front() {
            if self.window.len() < WINDOW && now.duration_since(*at) < FRESH {
                break;
            }
            self.window_start = oldest.revision;
            self.window.pop_front();
        }
    }
}

/// One collection's cache.
pub struct Cache {
    state: Mutex<State>,
    progressed: Notify,
    /// Live changes for watchers. Weak, because the channel's ring keeps its last
    /// `WATCHER_BUFFER` values until they are overwritten: strong references there would
    /// keep an idle collection's superseded objects alive long after the window let them
    /// go. The window holds every change a watcher that is not cut off can still need.
    live: broadcast::Sender<Weak<Change>>,
}

impl Cache {
    /// Starts a cache of the keys under `prefix`; it fills in the background.
    pub fn start(backend: Arc<dyn Backend>, prefix: String) -> Arc<Self> {
        let (live, _) = broadcast::channel(WATCHER_BUFFER);
        let cache = Arc::new(Self {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                revision: 0,
                window: VecDeque::new(),
                window_start: 0,
                ready: false,
            }),
            progressed: Notify::new(),
            live,
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                let Some(cache) = weak.upgrade() else { return };
                if let Err(e) = cache.run(&backend, &prefix).await {
                    tracing::warn!(prefix, error = %e, "watch cache feed ended; reloading");
                }
                cache.lock().ready = false;
                drop(cache);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the collection, then follows the store's change feed until it fails.
    async fn run(&self, backend: &Arc<dyn Backend>, prefix: &str) -> store::Result<()> {
        let mut objects = BTreeMap::new();
        let mut start_after = None;
        let mut revision = None;
        loop {
            let page = backend
                .range(RangeRequest {
                    prefix: prefix.to_owned(),
                    start_after: start_after.clone(),
                    limit: 1000,
                    revision,
                })
                .await?;
            revision = Some(page.revision);
            for kv in &page.kvs {
                if let Ok(obj) = decode(kv) {
                    objects.insert(kv.key.clone(), Arc::new(obj));
                }
            }
            start_after = page.kvs.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        let revision = revision.unwrap_or(0);
        // Progress notifications keep the cache's revision current while other
        // collections are written, so a consistent LIST never waits on a quiet collection.
        let mut feed = backend.watch_with_progress(prefix, revision).await?;
        {
            let mut state = self.lock();
            state.objects = objects;
            state.revision = revision;
            state.window.clear();
            state.window_start = revision;
            state.ready = true;
        }
        self.progressed.notify_waiters();
        let mut trim = tokio::time::interval(FRESH / 4);
        loop {
            let item = tokio::select! {
                item = feed.next() => item,
                now = trim.tick() => {
                    self.lock().trim(now);
                    continue;
                }
            };
            let Some(item) = item else { break };
            let event = match item? {
                WatchItem::Event(event) => event,
                WatchItem::Progress(revision) => {
                    self.lock().revision = revision;
                    self.progressed.notify_waiters();
                    continue;
                }
            };
            let key = event.kv.key.clone();
            // Decoded outside the lock; the previous state comes from the cache itself.
            let object = match event.kind {
                EventKind::Put => match decode(&event.kv) {
                    Ok(obj) => Some(Arc::new(obj)),
                    Err(e) => {
                        tracing::warn!(key, error = %e.message, "skipping an undecodable object");
                        continue;
                    }
                },
                EventKind::Delete => None,
            };
            let mut state = self.lock();
            let prev = match &object {
                Some(obj) => state.objects.insert(key.clone(), obj.clone()),
                None => state.objects.remove(&key),
            };
            let change = Arc::new(Change::new(event.revision(), event.kind, key, object, prev));
            state.revision = change.revision;
            state.trim(Instant::now());
            state.window.push_back((Instant::now(), change.clone()));
            // Sent under the lock, so a watcher that copies the window and subscribes under
            // the same lock sees every change exactly once.
            let _ = self.live.send(Arc::downgrade(&change));
            drop(state);
            self.progressed.notify_waiters();
        }
        Ok(())
    }

    /// Waits until the cache is at `revision` or later; false on timeout.
    async fn wait_for(&self, revision: Revision) -> bool {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let notified = self.progressed.notified();
            {
                let state = self.lock();
                if state.ready && state.revision >= revision {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Up to `limit` (0: all) objects under `prefix` (a namespace's part of the
    /// collection) that pass `keep`, with the revision they are at and, when more match, the
    /// key of the last one returned (to continue from). `None` when the cache is not at
    /// `at_least` in time (the caller reads the store).
    pub async fn list(
        &self,
        prefix: &str,
        at_least: Revision,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Option<(Vec<Arc<Value>>, Revision, Option<String>)> {
        if !self.wait_for(at_least).await {
            return None;
        }
        let state = self.lock();
        let mut items = Vec::new();
        let mut last_key = None;
        for (key, obj) in state
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if !keep(obj) {
                continue;
            }
            if limit != 0 && items.len() == limit {
                return Some((items, state.revision, last_key));
            }
            // Shared, not copied: a large LIST is served without a deep copy of its items.
            items.push(obj.clone());
            last_key = Some(key.clone());
        }
        Some((items, state.revision, None))
    }

    /// The cached object at `key` without waiting for the store: `None` when the cache is
    /// not loaded yet. Admission checks use this, as upstream's use informers.
    pub fn peek(&self, key: &str) -> Option<Option<Value>> {
        let state = self.lock();
        state
            .ready
            .then(|| state.objects.get(key).map(|o| Value::clone(o)))
    }

    /// The changes after `after`, as a stream: from the window, then live. `None` when the
    /// window no longer reaches back to `after` (the caller falls back to the store).
    pub async fn watch(&self, after: Revision) -> Option<ChangeStream> {
        if !self.wait_for(after).await {
            return None;
        }
        let state = self.lock();
        if after < state.window_start {
            return None;
        }
        let backlog: Vec<Arc<Change>> = state
            .window
            .iter()
            .filter(|(_, c)| c.revision > after)
            .map(|(_, c)| c.clone())
            .collect();
        let mut live = self.live.subscribe();
        drop(state);
        let (tx, rx) = tokio::sync::mpsc::channel::<store::Result<Arc<Change>>>(WATCHER_BUFFER);
        tokio::spawn(async move {
            let mut last = after;
            for change in backlog {
                last = change.revision;
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = live.recv() => next,
                };
                // A change that already left the window (older than FRESH) is treated as
                // lag: this watcher is that far behind.
                let next = match next {
                    Ok(weak) => weak.upgrade().ok_or(broadcast::error::RecvError::Lagged(1)),
                    Err(e) => Err(e),
                };
                match next {
                    Ok(change) if change.revision <= last => {}
                    Ok(change) => {
                        last = change.revision;
                        if tx.send(Ok(change)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow to keep up: end with "expired" so the client re-lists.
                        let _ = tx
                            .send(Err(store::Error::Compacted {
                                requested: last,
                                compacted: last + 1,
                            }))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Some(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::StreamExt;
    use serde_json::json;
    use store::{Backend, EventKind};

    use super::{Cache, Shown};

    fn backend(dir: &tempfile::TempDir) -> Arc<dyn Backend> {
        Arc::new(
            store::SqliteBackend::open(store::SqliteConfig::new(&dir.path().join("s.db")))
                .expect("store"),
        )
    }

    fn object(name: &str, n: i64) -> Bytes {
        Bytes::from(json!({"metadata": {"name": name}, "data": {"n": n}}).to_string())
    }

    #[tokio::test]
    async fn lists_see_acknowledged_writes_and_watchers_share_each_change() {
        let dir = tempfile::tempdir().expect("dir");
        let backend = backend(&dir);
        let cache = Cache::start(backend.clone(), "/c/".into());
        let first = backend
            .create("/c/a", object("a", 1))
            .await
            .expect("create");

        // A LIST at least at the store's current revision sees every acknowledged write.
        let current = backend.current_revision().await.expect("rev");
        let (items, rev, more) = cache
            .list("/c/", current, 0, |_| true)
            .await
            .expect("cached");
        assert_eq!((items.len(), more), (1, None));
        assert!(rev >= first);

        let mut one = cache.watch(first).await.expect("watch");
        let mut two = cache.watch(first).await.expect("watch");
        let updated = backend
            .update("/c/a", object("a", 2), first)
            .await
            .expect("update");
        let (deleted, _) = backend.delete("/c/a", Some(updated)).await.expect("delete");

        let a = one.next().await.expect("event").expect("ok");
        let b = two.next().await.expect("event").expect("ok");
        // One decoded change, shared: same allocation, previous state from the cache.
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((a.kind, a.revision), (EventKind::Put, updated));
        assert_eq!(a.object.as_ref().expect("object")["data"]["n"], 2);
        assert_eq!(a.prev.as_ref().expect("prev")["data"]["n"], 1);

        // Its encoding is made once per form and reused by the next watcher.
        let form: Arc<str> = "v1/configmaps".into();
        let mut made = 0;
        let x = a.encoded(&form, Shown::Object, || {
            made += 1;
            Bytes::from_static(b"x")
        });
        let y = b.encoded(&form, Shown::Object, || {
            made += 1;
            Bytes::from_static(b"y")
        });
        assert_eq!(
            (x, y, made),
            (Bytes::from_static(b"x"), Bytes::from_static(b"x"), 1)
        );

        // A deletion shows the last state at the deletion's revision.
        let gone = one.next().await.expect("event").expect("ok");
        assert_eq!((gone.kind, gone.revision), (EventKind::Delete, deleted));
        let tombstone = gone.shown(Shown::Tombstone).expect("last state");
        assert_eq!(tombstone["data"]["n"], 2);
        assert_eq!(
            tombstone["metadata"]["resourceVersion"],
            deleted.to_string()
        );
    }

    #[test]
    fn old_changes_leave_the_window() {
        let change = |revision| {
            Arc::new(super::Change::new(
                revision,
                EventKind::Put,
                "/c/a".into(),
                None,
                None,
            ))
        };
        let start = tokio::time::Instant::now();
        let mut state = super::State {
            objects: Default::default(),
            revision: 3,
            window: [(start, change(2)), (start + super::FRESH, change(3))].into(),
            window_start: 1,
            ready: true,
        };
        // Nothing is old yet.
        state.trim(start + super::FRESH / 2);
        assert_eq!((state.window.len(), state.window_start), (2, 1));
        // The first change is past the fresh window: a watch from before it reads the store.
        state.trim(start + super::FRESH + std::time::Duration::from_secs(1));
        assert_eq!((state.window.len(), state.window_start), (1, 2));
    }

    #[tokio::test]
    async fn a_change_that_left_the_window_is_freed() {
        let dir = tempfile::tempdir().expect("dir");
        let backend = backend(&dir);
        let cache = Cache::start(backend.clone(), "/c/".into());
        let first = backend
            .create("/c/a", object("a", 1))
            .await
            .expect("create");
        let mut watch = cache.watch(first).await.expect("watch");
        backend
            .update("/c/a", object("a", 2), first)
            .await
            .expect("update");
        let change = watch.next().await.expect("event").expect("ok");
        let weak = Arc::downgrade(&change);
        drop((change, watch));

        // Once trimmed from the window, nothing keeps the change (and the objects it holds)
        // alive: not the live channel's ring, which still has its slot.
        cache
            .lock()
            .trim(tokio::time::Instant::now() + super::FRESH + std::time::Duration::from_secs(1));
        assert!(weak.upgrade().is_none(), "the change is still referenced");

        // Watchers that start now still see later changes.
        let current = backend.current_revision().await.expect("rev");
        let mut later = cache.watch(current).await.expect("watch");
        backend.delete("/c/a", None).await.expect("delete");
        let gone = later.next().await.expect("event").expect("ok");
        assert_eq!(gone.kind, EventKind::Delete);
    }
}
