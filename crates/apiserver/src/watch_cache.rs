//! The watch cache: per collection, the current objects in memory and a window of recent
//! events, fed by one store watch. LISTs are served from it once it has caught up with the
//! store's revision at the time of the request (so they are never older than an
//! acknowledged write), and every WATCH of the collection shares its one store watch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use store::{Backend, Event, EventKind, RangeRequest, Revision, WatchItem, WatchStream};
use tokio::sync::{Notify, broadcast};

use crate::storage::decode;

/// Events kept for watchers that start slightly in the past.
const WINDOW: usize = 4096;
/// Live events buffered per watcher before it is cut off (it then re-lists).
const WATCHER_BUFFER: usize = 1024;
/// How long a LIST waits for the cache to catch up before reading the store instead.
const CATCH_UP: Duration = Duration::from_secs(3);

struct State {
    /// Current objects by key.
    objects: BTreeMap<String, Value>,
    /// The revision the objects are at: the last event's, or later when the store
    /// reported progress (revisions that did not touch this collection).
    revision: Revision,
    /// Recent events, oldest first.
    window: VecDeque<Event>,
    /// The window holds every event after this revision.
    window_start: Revision,
    /// False until the initial list is loaded, and again after the feed failed.
    ready: bool,
}

/// One collection's cache.
pub struct Cache {
    state: Mutex<State>,
    progressed: Notify,
    live: broadcast::Sender<Event>,
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
                    objects.insert(kv.key.clone(), obj);
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
        while let Some(item) = feed.next().await {
            let event = match item? {
                WatchItem::Event(event) => event,
                WatchItem::Progress(revision) => {
                    self.lock().revision = revision;
                    self.progressed.notify_waiters();
                    continue;
                }
            };
            let mut state = self.lock();
            match event.kind {
                EventKind::Put => {
                    if let Ok(obj) = decode(&event.kv) {
                        state.objects.insert(event.kv.key.clone(), obj);
                    }
                }
                EventKind::Delete => {
                    state.objects.remove(&event.kv.key);
                }
            }
            state.revision = event.revision();
            if state.window.len() == WINDOW
                && let Some(oldest) = state.window.pop_front()
            {
                state.window_start = oldest.revision();
            }
            state.window.push_back(event.clone());
            // Sent under the lock, so a watcher that copies the window and subscribes under
            // the same lock sees every event exactly once.
            let _ = self.live.send(event);
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
    ) -> Option<(Vec<Value>, Revision, Option<String>)> {
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
            items.push(obj.clone());
            last_key = Some(key.clone());
        }
        Some((items, state.revision, None))
    }

    /// The cached object at `key` without waiting for the store: `None` when the cache is
    /// not loaded yet. Admission checks use this, as upstream's use informers.
    pub fn peek(&self, key: &str) -> Option<Option<Value>> {
        let state = self.lock();
        state.ready.then(|| state.objects.get(key).cloned())
    }

    /// The events after `after`, as a stream: from the window, then live. `None` when the
    /// window no longer reaches back to `after` (the caller falls back to the store).
    pub async fn watch(&self, after: Revision) -> Option<WatchStream> {
        if !self.wait_for(after).await {
            return None;
        }
        let state = self.lock();
        if after < state.window_start {
            return None;
        }
        let backlog: Vec<Event> = state
            .window
            .iter()
            .filter(|e| e.revision() > after)
            .cloned()
            .collect();
        let mut live = self.live.subscribe();
        drop(state);
        let (tx, rx) = tokio::sync::mpsc::channel::<store::Result<Event>>(WATCHER_BUFFER);
        tokio::spawn(async move {
            let mut last = after;
            for event in backlog {
                last = event.revision();
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = live.recv() => next,
                };
                match next {
                    Ok(event) if event.revision() <= last => {}
                    Ok(event) => {
                        last = event.revision();
                        if tx.send(Ok(event)).await.is_err() {
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
