//! Request-level validation: `fieldValidation` (unknown fields), and the checks every
//! create and update runs (metadata, immutable fields).

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use apimachinery::status::{ApiError, StatusCause};
use apimachinery::validation::{NameRule, metadata_causes};
use serde_json::Value;

use crate::query::Query;

/// The name rule of a kind, as upstream's validation chooses it.
fn name_rule(kind: &KindInfo) -> NameRule {
    match (kind.group.as_str(), kind.kind.as_str()) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Label1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        ("", "Node") | ("certificates.k8s.io", _) => NameRule::Subdomain,
        _ => NameRule::Subdomain,
    }
}

/// Applies `fieldValidation`: unknown fields are dropped, reported as warnings (`Warn`,
/// the default) or rejected with 400 (`Strict`). Returns the warnings.
pub fn field_validation(
    kind: &KindInfo,
    query: &Query,
    obj: &mut Value,
    duplicates: &[String],
) -> Result<Vec<String>, ApiError> {
    let mode = query.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Ignore" | "Warn" | "Strict") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {mode:?}; must be one of Ignore, Warn, Strict"
        )));
    }
    let schemas = apimachinery::schema::builtin();
    let unknown = match kind.schema_name.as_deref() {
        Some(root) => schemas.unknown_fields(root, obj),
        None => Vec::new(),
    };
    if unknown.is_empty() && duplicates.is_empty() {
        return Ok(Vec::new());
    }
    let problems: Vec<String> = duplicates
        .iter()
        .map(|f| format!("duplicate field {f:?}"))
        .chain(unknown.iter().map(|f| format!("unknown field {f:?}")))
        .collect();
    let prune = |obj: &mut Value| {
        if let Some(root) = kind.schema_name.as_deref() {
            schemas.prune(root, obj);
        }
    };
    match mode {
        "Strict" => {
            let list = problems.join(", ");
            Err(ApiError::bad_request(format!(
                "strict decoding error: {list}"
            )))
        }
        "Warn" => {
            prune(obj);
            Ok(problems)
        }
        _ => {
            prune(obj);
            Ok(Vec::new())
        }
    }
}

/// Checks run on every create.
pub fn validate_create(kind: &KindInfo, obj: &Value) -> Result<(), ApiError> {
    let causes = metadata_causes(obj, name_rule(kind));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(kind, obj, causes))
    }
}

/// Checks run on every update.
pub fn validate_update(kind: &KindInfo, new: &Value, old: &Value) -> Result<(), ApiError> {
    let mut causes = metadata_causes(new, name_rule(kind));
    if new.namespace() != old.namespace() {
        causes.push(StatusCause::new(
            "FieldValueInvalid",
            "metadata.namespace",
            "field is immutable",
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(kind, new, causes))
    }
}

fn invalid(kind: &KindInfo, obj: &Value, causes: Vec<StatusCause>) -> ApiError {
    ApiError::invalid(&kind.group, &kind.kind, obj.name(), causes)
}
