//! WATCH: a chunked stream of `{"type": ..., "object": ...}` lines, from the store's
//! ordered change feed, filtered by namespace and selectors.

use std::time::Duration;

use std::sync::Arc;

use apimachinery::status::ApiError;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use store::{EventKind, Revision};
use tokio::sync::mpsc;

use crate::filter::Filter;
use crate::query::Query;
use crate::resource::{Scope, parse_rv};
use crate::watch_cache::{Change, Shown};

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// A watch without `timeoutSeconds` ends after this long, as upstream's default
/// min-request-timeout does (clients re-watch from their last resourceVersion).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Shows an object to a watcher; the flag is true for the stream's first object.
pub type RenderFn = Box<dyn Fn(&Value, bool) -> Value + Send + Sync>;

/// How each event's object is rendered for one watcher.
pub struct Render {
    /// Names the rendering when it depends only on the object (the served version and
    /// whether only metadata is shown): watchers with the same form share each event's
    /// encoding. `None` renders per watcher (tables, whose first row differs).
    pub form: Option<Arc<str>>,
    /// The object as shown.
    pub render: RenderFn,
}

/// Starts a watch; returns the receiving end of its line stream. The stream ends when the
/// timeout passes, the store ends, or the client goes away (the sender then fails).
pub async fn start(
    scope: &Scope<'_>,
    query: &Query,
    render: Render,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let filter = Filter::from_query(&scope.kind, scope.namespace.as_deref(), query)?;
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    if send_initial && query.get("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "",
            "ListOptions",
            "",
            vec![apimachinery::status::StatusCause::new(
                "FieldValueForbidden",
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let rv = parse_rv(query.get("resourceVersion").unwrap_or(""))?;
    let backend = scope.cp.store.backend().clone();
    let prefix = scope
        .cp
        .store
        .prefix(&scope.kind, scope.namespace.as_deref());
    let kind_name = scope.kind.kind.clone();
    let api_version = scope.kind.api_version();

    // With no resourceVersion (or 0), or when initial events are asked for, the watch
    // starts with the current state as ADDED events.
    let mut initial = Vec::new();
    let start_rev = if rv.is_none_or(|r| r == 0) || send_initial {
        let mut list_query = query.clone();
        for p in [
            "resourceVersion",
            "resourceVersionMatch",
            "limit",
            "continue",
        ] {
            list_query.remove(p);
        }
        let (items, meta) = scope.list(&list_query).await?;
        initial = items;
        meta["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse::<Revision>().ok())
            .unwrap_or(0)
    } else {
        rv.unwrap_or(0)
    };

    let (tx, rx) = mpsc::channel::<Bytes>(64);
    // Watchers share the collection's cache; one starting before its window, or at a
    // revision the store has compacted away (410, even if the cache still holds it, so the
    // answer does not depend on which server or cache a client reaches), reads the store.
    let compacted = backend.compacted_revision().await.unwrap_or(0);
    let cached = if start_rev >= compacted {
        scope.cp.cache(&scope.kind).watch(start_rev).await
    } else {
        None
    };
    let feed = match cached {
        Some(stream) => Ok(stream),
        None => backend.watch(&prefix, start_rev).await.map(|events| {
            events
                .map(|e| e.map(|e| Arc::new(Change::from_event(&e))))
                .boxed()
        }),
    };
    tokio::spawn(async move {
        let send = |tx: &mpsc::Sender<Bytes>, v: Value| {
            let mut line = serde_json::to_vec(&v).unwrap_or_default();
            line.push(b'\n');
            let tx = tx.clone();
            async move { tx.send(Bytes::from(line)).await.is_ok() }
        };
        // One event's line, with the object's encoding shared among watchers of one form.
        let event_line = |change: &Change, kind: &str, which: Shown, first: bool| {
            let encode = || {
                let shown = change.shown(which).unwrap_or(Value::Null);
                Bytes::from(serde_json::to_vec(&(render.render)(&shown, first)).unwrap_or_default())
            };
            let object = match &render.form {
                Some(form) => change.encoded(form, which, encode),
                None => encode(),
            };
            let mut line = Vec::with_capacity(object.len() + 32);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            line.extend_from_slice(&object);
            line.extend_from_slice(b"}\n");
            Bytes::from(line)
        };
        let bookmark = |rev: Revision, end_of_initial: bool| {
            let mut obj = json!({"kind": kind_name, "apiVersion": api_version, "metadata": {"resourceVersion": rev.to_string()}});
            if end_of_initial {
                obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            json!({"type": "BOOKMARK", "object": obj})
        };
        let mut feed = match feed {
            Ok(feed) => feed,
            Err(e) => {
                let status = crate::storage::store_error(e).to_status();
                send(&tx, json!({"type": "ERROR", "object": status})).await;
                return;
            }
        };
        let mut first = true;
        for obj in &initial {
            if !send(
                &tx,
                json!({"type": "ADDED", "object": (render.render)(obj, first)}),
            )
            .await
            {
                return;
            }
            first = false;
        }
        if send_initial && bookmarks && !send(&tx, bookmark(start_rev, true)).await {
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rev = start_rev;
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = ticker.tick(), if bookmarks => {
                    if !send(&tx, bookmark(last_rev, false)).await { return; }
                }
                _ = tx.closed() => return,
                event = feed.next() => {
                    let Some(event) = event else { return };
                    let event = match event {
                        Ok(e) => e,
                        Err(e) => {
                            let status = crate::storage::store_error(e).to_status();
                            send(&tx, json!({"type": "ERROR", "object": status})).await;
                            return;
                        }
                    };
                    last_rev = event.revision;
                    let Some((kind, which)) = classify(&filter, &event) else { continue };
                    if tx.send(event_line(&event, kind, which, first)).await.is_err() { return; }
                    first = false;
                }
            }
        }
    });
    Ok(rx)
}

/// The watch event type for a change under a filter, and which state it shows: objects
/// moving into the filter are ADDED, out of it DELETED, as upstream's watch cache reports
/// them.
fn classify(filter: &Filter, change: &Change) -> Option<(&'static str, Shown)> {
    let was_matching = change.prev.as_deref().is_some_and(|p| filter.matches(p));
    match change.kind {
        EventKind::Delete => was_matching.then_some(("DELETED", Shown::Tombstone)),
        EventKind::Put => {
            let now_matches = change.object.as_deref().is_some_and(|o| filter.matches(o));
            match (was_matching, now_matches) {
                (false, true) => Some(("ADDED", Shown::Object)),
                (true, true) => Some(("MODIFIED", Shown::Object)),
                (true, false) => Some(("DELETED", Shown::Object)),
                (false, false) => None,
            }
        }
    }
}
