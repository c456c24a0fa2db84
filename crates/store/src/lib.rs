//! Revisioned key-value storage with etcd's model.
//!
//! Every write gets a new, strictly increasing cluster-wide revision. A key remembers the
//! revision it was created at and the revision it was last modified at. Readers can range
//! over the keys as they were at any revision that has not been compacted away, and
//! watchers receive every change after a given revision, in order, with no gaps.
//!
//! The store knows nothing about Kubernetes kinds: keys are strings, values are bytes.
//! The API server puts the cluster id first in every key so one datastore serves many
//! clusters.

mod backend;
pub mod bench;
mod compact;
mod error;
mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use backend::sqlite::{SqliteBackend, SqliteConfig, WriterStats};
pub use compact::{CompactionPolicy, Compactor, RetentionWindow};
pub use error::{Error, Result};

use bytes::Bytes;
use futures::stream::BoxStream;

/// A store revision. Revision 0 means "none": no key is ever written at revision 0.
pub type Revision = i64;

/// One key as stored at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The stored bytes.
    pub value: Bytes,
    /// Revision at which this incarnation of the key was created.
    pub create_revision: Revision,
    /// Revision of the last write to the key (the value of `resourceVersion`).
    pub mod_revision: Revision,
}

/// What a write did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as delivered to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or Delete.
    pub kind: EventKind,
    /// For a Put, the new value. For a Delete, the key's last value, with `mod_revision`
    /// set to the revision of the deletion.
    pub kv: KeyValue,
    /// The key's value before this change, if it existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision this event happened at.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// The answer to a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// Matching keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// True when the limit cut the answer short and more keys follow the last one.
    pub more: bool,
    /// The revision the read was served at (the store's current revision when the
    /// request did not name one).
    pub revision: Revision,
}

/// A range read request: the keys starting with `prefix`, strictly after `start_after`.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Only keys strictly greater than this one (for pagination).
    pub start_after: Option<String>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read the keys as they were at this revision; `None` means the current revision.
    pub revision: Option<Revision>,
}

/// A stream of watch events. It ends with `Err(Error::Compacted)` when the watcher fell
/// too far behind, and ends quietly when the store shuts down.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// An item of a watch with progress notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    /// A change under the watched prefix.
    Event(Event),
    /// Every change up to this revision has been delivered: none of the revisions since
    /// the last item touched the prefix. etcd calls this a progress notification.
    Progress(Revision),
}

/// A watch stream with progress notifications; ends like [`WatchStream`].
pub type ProgressWatchStream = BoxStream<'static, Result<WatchItem>>;

/// The storage interface the API server is written against. SQLite implements it here;
/// an etcd backend implements the same trait.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Creates `key` if it does not exist; returns the new revision.
    /// Fails with [`Error::AlreadyExists`] if it does.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Replaces `key` if its mod revision is still `expected`; returns the new revision.
    /// Fails with [`Error::NotFound`] or [`Error::Conflict`] (carrying the current value).
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;

    /// Deletes `key`, if `expected` is given only when its mod revision still equals it.
    /// Returns the deletion's revision and the value deleted.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;

    /// Reads a range of keys, at a revision if asked. As in etcd, a revision below the
    /// compacted revision fails with [`Error::Compacted`] (the compacted revision itself is
    /// still readable); one above the current revision fails with
    /// [`Error::FutureRevision`]; a revision of 0 or less means the current revision.
    async fn range(&self, req: RangeRequest) -> Result<RangeResult>;

    /// Counts the current keys with this prefix.
    async fn count(&self, prefix: &str) -> Result<i64>;

    /// Every change to keys starting with `prefix` after revision `after`, in revision
    /// order. Fails with [`Error::Compacted`] if history after `after` was compacted.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Like [`Backend::watch`], and also reports progress when revisions pass that do not
    /// touch the prefix, so a cache of the prefix knows it is current at the store's
    /// revision (see the API server's watch cache). Without progress support a backend
    /// yields only events, and such caches stay current only as far as their own events.
    async fn watch_with_progress(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<ProgressWatchStream> {
        use futures::StreamExt;
        let events = self.watch(prefix, after).await?;
        Ok(events.map(|e| e.map(WatchItem::Event)).boxed())
    }

    /// The newest revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The newest compacted revision: history at or before it is gone.
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Drops history older than `revision` (values still current stay readable). Ranges
    /// at `revision` and watches after it keep working. Compacting to a revision at or
    /// below the compacted revision does nothing; one above the current revision fails
    /// with [`Error::FutureRevision`].
    async fn compact(&self, revision: Revision) -> Result<()>;
}
