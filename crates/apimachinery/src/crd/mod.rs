//! CustomResourceDefinition engine as pure functions: CRD validation, the kinds a CRD
//! serves, and validation, defaulting, pruning and CEL rules for custom objects.
//!
//! Schemas and objects are `serde_json::Value`s; problems come back as [`StatusCause`]s
//! worded as upstream's apiextensions-apiserver words them.

mod cel;
mod defaulting;
mod kinds;
mod pruning;
mod structural;
mod validate;
mod validate_crd;

pub use cel::{
    CelError, MAX_RULE_BYTES, PER_CALL_COST_LIMIT, PER_OBJECT_COST_BUDGET, compile_rule,
};
pub use defaulting::apply_defaults;
pub use kinds::{compare_versions, kinds_of};
pub use pruning::prune;
pub use validate::{validate, validate_update};
pub use validate_crd::validate_crd;

use serde_json::Value;

use crate::status::StatusCause;

/// How deep schemas and objects are walked before giving up (bounds recursion on
/// untrusted input).
pub const MAX_DEPTH: usize = 100;

/// Appends a field name to a path: `spec` + `replicas` = `spec.replicas`.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Appends an index to a path: `spec.items` + 0 = `spec.items[0]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Appends a map key to a path: `properties` + `spec` = `properties[spec]`.
pub(crate) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

/// Renders a value the way upstream's field errors print it: strings quoted, numbers and
/// booleans bare, `null` for null, JSON for the rest.
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The JSON type name of a value as go-openapi reports it.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `Invalid value: <value>: <detail>`.
pub(crate) fn invalid(field: &str, value: &str, detail: &str) -> StatusCause {
    StatusCause::new(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {value}: {detail}"),
    )
}

/// `Required value[: <detail>]`.
pub(crate) fn required(field: &str, detail: &str) -> StatusCause {
    StatusCause::new(
        "FieldValueRequired",
        field,
        with_detail("Required value", detail),
    )
}

/// `Forbidden: <detail>`.
pub(crate) fn forbidden(field: &str, detail: &str) -> StatusCause {
    StatusCause::new(
        "FieldValueForbidden",
        field,
        with_detail("Forbidden", detail),
    )
}

/// `Unsupported value: <value>: supported values: "a", "b"`.
pub(crate) fn not_supported(field: &str, value: &str, supported: &[&str]) -> StatusCause {
    let list = supported
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    StatusCause::new(
        "FieldValueNotSupported",
        field,
        format!("Unsupported value: {value}: supported values: {list}"),
    )
}

/// `Duplicate value: <value>`.
pub(crate) fn duplicate(field: &str, value: &str) -> StatusCause {
    StatusCause::new(
        "FieldValueDuplicate",
        field,
        format!("Duplicate value: {value}"),
    )
}

fn with_detail(head: &str, detail: &str) -> String {
    if detail.is_empty() {
        head.to_owned()
    } else {
        format!("{head}: {detail}")
    }
}

/// The schema of version `version` of a CRD (`spec.versions[].schema.openAPIV3Schema`).
pub fn version_schema<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
        .pointer("/schema/openAPIV3Schema")
}

#[cfg(test)]
mod tests;
