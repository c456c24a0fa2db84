//! Request-level validation: `fieldValidation` (unknown and duplicate fields), and the
//! checks every create and update runs (metadata, CRD definitions, custom objects against
//! their schema, immutable fields).

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use apimachinery::schema::{Decoded, TypeError};
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

/// Where a body to decode came from: upstream words a decoding error differently for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyOrigin {
    /// A create or update body, decoded as sent (400 BadRequest).
    Object,
    /// The result of a JSON, merge or strategic merge patch (422 on the `patch` field).
    Patch,
    /// A server-side apply configuration, typed before merging (a plain 500 upstream).
    Apply,
}

/// Decodes `obj` against its kind's schema: the fields it does not know (pruning a copy
/// tells, for custom kinds), and for built-in kinds the first value of the wrong JSON type.
fn decode(kind: &KindInfo, custom: Option<&CustomKind>, obj: &Value) -> Decoded {
    match (custom, kind.schema_name.as_deref()) {
        (Some(c), _) => Decoded {
            unknown: apimachinery::crd::prune(&c.schema, &mut obj.clone()),
            type_error: None,
        },
        (None, Some(root)) => apimachinery::schema::builtin().decode(root, obj),
        (None, None) => Decoded::default(),
    }
}

/// The error upstream returns when `obj` does not decode into the kind's Go type.
fn decoding_error(kind: &KindInfo, origin: BodyOrigin, obj: &Value, err: TypeError) -> ApiError {
    match origin {
        BodyOrigin::Object => ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {}",
            kind.kind, kind.version, kind.kind, err.message
        )),
        BodyOrigin::Patch => {
            let patched = serde_json::to_string(obj).unwrap_or_default();
            ApiError::invalid(
                "",
                "",
                "",
                vec![StatusCause::new(
                    "FieldValueInvalid",
                    "patch",
                    format!("Invalid value: {patched:?}: {}", err.message),
                )],
            )
        }
        BodyOrigin::Apply => {
            // Typing the configuration catches JSON kinds; a number that does not fit the
            // Go field fails on the merged object with the decoder's words.
            let detail = if err.given == "float64" || err.given == "int64" {
                err.message
            } else {
                format!(
                    ".{}: expected {}, got {}",
                    err.path, err.expected, err.given
                )
            };
            let group_version = match kind.group.as_str() {
                "" => format!("/{}", kind.version),
                group => format!("{group}/{}", kind.version),
            };
            ApiError::new(
                500,
                "",
                format!(
                    "failed to create typed patch object ({}/{}; {group_version}, Kind={}): {detail}",
                    obj.namespace(),
                    obj.name(),
                    kind.kind
                ),
            )
        }
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

/// Decodes a body as upstream does into the kind's Go type and applies `fieldValidation`:
/// a value of the wrong JSON type is an error whatever the mode; unknown fields are dropped,
/// reported as warnings (`Warn`, the default) or rejected with 400 (`Strict`); duplicate
/// fields likewise. Returns the warnings.
pub fn field_validation(
    kind: &KindInfo,
    custom: Option<&CustomKind>,
    query: &Query,
    obj: &mut Value,
    duplicates: &[String],
    origin: BodyOrigin,
) -> Result<Vec<String>, ApiError> {
    let mode = query.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Ignore" | "Warn" | "Strict") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {mode:?}; must be one of Ignore, Warn, Strict"
        )));
    }
    let Decoded {
        unknown,
        type_error,
    } = decode(kind, custom, obj);
    if let Some(err) = type_error {
        return Err(decoding_error(kind, origin, obj, err));
    }
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
