//! The store's typed errors; each maps one-to-one onto an API status.

use crate::{KeyValue, Revision};

/// Store result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key exists (create-if-absent lost).
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The key does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// The key's mod revision differs from the expected one.
    #[error("key {key} was modified: expected revision {expected}, found {}", current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The key's current value.
        current: Box<KeyValue>,
    },
    /// The requested revision was compacted away.
    #[error("revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compacted revision.
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// The backend failed.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Backend(format!("sqlite: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_become_backend_errors() {
        let e: Error = rusqlite::Error::InvalidQuery.into();
        assert!(
            matches!(e, Error::Backend(ref m) if m.starts_with("sqlite: ")),
            "{e:?}"
        );
    }
}
