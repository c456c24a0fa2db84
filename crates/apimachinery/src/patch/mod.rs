//! Patches applied server-side: RFC 6902 JSON patch, RFC 7386 merge patch and Kubernetes
//! strategic merge patch.

pub mod json;
pub mod merge;
pub mod strategic;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed.
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch operation failed (a failed `test`, a missing path, ...).
    #[error("the patch could not be applied: {0}")]
    Failed(String),
}
