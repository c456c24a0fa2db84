//! Request-level validation: `fieldValidation` (unknown and duplicate fields), and the
//! checks every create and update runs (metadata, CRD definitions, custom objects against
//! their schema, immutable fields).

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use apimachinery::status::{ApiError, StatusCause};
use apimachinery::validation::{NameRule, metadata_causes};
use serde_json::Value;

use crate::control_plane::CustomKind;
use crate::crds;
use crate::query::Query;

/// The name rule of a kind, as upstream's validation chooses it.
fn name_rule(kind: &KindInfo) -> NameRule {
    match (kind.group.as_str(), kind.kind.as_str()) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Label1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// The fields of `obj` its schema does not know (pruning a copy tells, for custom kinds).
fn unknown_fields(kind: &KindInfo, custom: Option<&CustomKind>, obj: &Value) -> Vec<String> {
    match (custom, kind.schema_name.as_deref()) {
        (Some(c), _) => apimachinery::crd::prune(&c.schema, &mut obj.clone()),
        (None, Some(root)) => apimachinery::schema::builtin().unknown_fields(root, obj),
        (None, None) => Vec::new(),
    }
}

fn prune(kind: &KindInfo, custom: Option<&CustomKind>, obj: &mut Value) {
    match (custom, kind.schema_name.as_deref()) {
        (Some(c), _) => {
            apimachinery::crd::prune(&c.schema, obj);
        }
        (None, Some(root)) => apimachinery::schema::builtin().prune(root, obj),
        (None, None) => {}
    }
}

/// Applies `fieldValidation`: unknown fields are dropped, reported as warnings (`Warn`,
/// the default) or rejected with 400 (`Strict`); duplicate fields likewise. Returns the
/// warnings.
pub fn field_validation(
    kind: &KindInfo,
    custom: Option<&CustomKind>,
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
    let unknown = unknown_fields(kind, custom, obj);
    if unknown.is_empty() && duplicates.is_empty() {
        return Ok(Vec::new());
    }
    let problems: Vec<String> = duplicates
        .iter()
        .map(|f| format!("duplicate field {f:?}"))
        .chain(unknown.iter().map(|f| format!("unknown field {f:?}")))
        .collect();
    match mode {
        "Strict" => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            problems.join(", ")
        ))),
        "Warn" => {
            prune(kind, custom, obj);
            Ok(problems)
        }
        _ => {
            prune(kind, custom, obj);
            Ok(Vec::new())
        }
    }
}

/// Defaults: upstream's for built-in kinds, the schema's for custom kinds.
pub fn apply_defaults(kind: &KindInfo, custom: Option<&CustomKind>, obj: &mut Value) {
    match custom {
        Some(c) => apimachinery::crd::apply_defaults(&c.schema, obj),
        None => apimachinery::defaults::apply(&kind.group, &kind.kind, obj),
    }
}

/// Checks run on every create.
pub fn validate_create(
    kind: &KindInfo,
    custom: Option<&CustomKind>,
    obj: &Value,
) -> Result<(), ApiError> {
    let mut causes = metadata_causes(obj, name_rule(kind));
    if crds::is_crd(kind) {
        causes.extend(apimachinery::crd::validate_crd(obj, None));
    }
    match custom {
        Some(c) => causes.extend(apimachinery::crd::validate(&c.schema, obj)),
        None => causes.extend(apimachinery::kinds_validation::validate_create(
            &kind.group,
            &kind.kind,
            obj,
        )),
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(kind, obj, causes))
    }
}

/// Checks run on every update.
pub fn validate_update(
    kind: &KindInfo,
    custom: Option<&CustomKind>,
    new: &Value,
    old: &Value,
) -> Result<(), ApiError> {
    let mut causes = metadata_causes(new, name_rule(kind));
    if new.namespace() != old.namespace() {
        causes.push(StatusCause::new(
            "FieldValueInvalid",
            "metadata.namespace",
            "field is immutable",
        ));
    }
    if crds::is_crd(kind) {
        causes.extend(apimachinery::crd::validate_crd(new, Some(old)));
    }
    match custom {
        Some(c) => causes.extend(apimachinery::crd::validate_update(&c.schema, new, old)),
        None => causes.extend(apimachinery::kinds_validation::validate_update(
            &kind.group,
            &kind.kind,
            new,
            old,
        )),
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
