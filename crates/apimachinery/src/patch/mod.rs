//! Patches applied server-side: RFC 6902 JSON patch, RFC 7386 merge patch and Kubernetes
//! strategic merge patch.

pub mod json;
pub mod merge;
pub mod strategic;

/// Why a patch could not be applied. Every variant comes from the (untrusted) patch body or
/// from a patch that does not fit the object; none is an internal failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document does not have the shape its patch type requires.
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch operation could not be applied (a missing path, a bad index, ...).
    #[error("the patch could not be applied: {0}")]
    Failed(String),
    /// A JSON patch `test` operation found a different value.
    #[error("the patch could not be applied: test operation at {path:?} failed")]
    TestFailed {
        /// The JSON pointer the failed `test` operation checked.
        path: String,
    },
    /// A `$`-key that strategic merge patch does not know.
    #[error("invalid patch: unknown patch directive {0:?}")]
    UnknownDirective(String),
    /// A `$patch` value other than `replace`, `merge` or `delete`, or one not allowed where
    /// it appears.
    #[error("invalid patch: unknown patch type {value} in {context}")]
    BadPatchType {
        /// The offending `$patch` value, as JSON.
        value: String,
        /// Where it appeared (a map or a list element).
        context: &'static str,
    },
    /// A directive whose value has the wrong shape.
    #[error("invalid patch: {directive} must be {expected}")]
    BadDirectiveValue {
        /// The directive key, such as `$retainKeys`.
        directive: String,
        /// What its value must be.
        expected: &'static str,
    },
    /// An element of a list merged by key lacks the merge key.
    #[error("invalid patch: map: {element} does not contain declared merge key: {merge_key}")]
    MissingMergeKey {
        /// The merge key the list declares.
        merge_key: String,
        /// The element, as JSON.
        element: String,
    },
    /// A field present in the patch is absent from its `$retainKeys` list.
    #[error("invalid patch: field {field:?} is not listed in $retainKeys")]
    NotInRetainKeys {
        /// The field that is set but not retained.
        field: String,
    },
    /// A `$setElementOrder` list disagrees with the list it orders.
    #[error("invalid patch: the order of {field:?} does not match its $setElementOrder list")]
    OrderMismatch {
        /// The list field.
        field: String,
    },
    /// The elements of a merged list have different JSON types, or are lists themselves.
    #[error("invalid patch: list {field:?} cannot be merged: {reason}")]
    UnmergeableList {
        /// The list field.
        field: String,
        /// Why it cannot be merged.
        reason: &'static str,
    },
    /// The patch nests deeper than the server accepts.
    #[error("invalid patch: nested more than {0} levels deep")]
    TooDeep(usize),
    /// Strategic merge patch was requested for a kind without patch metadata (custom
    /// resources, aggregated kinds).
    #[error("strategic merge patch is not supported for {0}")]
    StrategicMergePatchUnsupported(String),
}

impl PatchError {
    /// The HTTP status upstream's API server answers with: 415 when strategic merge patch is
    /// unsupported, 400 for a malformed patch body, 422 when a well-formed patch does not
    /// apply to the object.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::StrategicMergePatchUnsupported(_) => 415,
            Self::Failed(_) | Self::TestFailed { .. } | Self::UnmergeableList { .. } => 422,
            Self::Invalid(_)
            | Self::UnknownDirective(_)
            | Self::BadPatchType { .. }
            | Self::BadDirectiveValue { .. }
            | Self::MissingMergeKey { .. }
            | Self::NotInRetainKeys { .. }
            | Self::OrderMismatch { .. }
            | Self::TooDeep(_) => 400,
        }
    }
}
