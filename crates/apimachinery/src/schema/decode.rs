//! One pass over a body against its definition, doing what decoding it into upstream's Go
//! types does: report fields the types lack (for `fieldValidation`) and the first value whose
//! JSON type the Go field cannot hold (a decoding error, whatever `fieldValidation` says).

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Number, Value};

use super::walk::Node;

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// What decoding a body found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    /// Paths of undeclared fields, such as `spec.containers[0].bogus`.
    pub unknown: Vec<String>,
    /// The first value of the wrong type, in document order (Go's decoder keeps the first).
    pub type_error: Option<TypeError>,
}

/// A value the typed object cannot hold.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeError {
    /// Where, as unknown fields are reported: `spec.volumes[0].secret.secretName`.
    pub path: String,
    /// The error as upstream's JSON decoder words it, such as `json: cannot unmarshal string
    /// into Go struct field PodSpec.spec.terminationGracePeriodSeconds of type int64`.
    pub message: String,
    /// What the schema wants, in server-side apply's words (`numeric (int or float)`, `string`,
    /// `boolean`, `map`, `list`).
    pub expected: &'static str,
    /// The given value's Go type once decoded untyped (`string`, `bool`, `int64`, `float64`,
    /// `map[string]interface {}`, `[]interface {}`).
    pub given: &'static str,
}

/// Walks `value` against `node`.
pub(super) fn check(node: Node<'_>, value: &Value) -> Decoded {
    let mut walker = Walker::default();
    walker.visit(node, value);
    walker.out
}

#[derive(Default)]
struct Walker<'v> {
    /// The path with list indices, for unknown fields.
    path: String,
    /// The JSON field names from the root, without indices (Go's error context).
    fields: Vec<&'v str>,
    /// The Go struct that declares the innermost field.
    go_struct: String,
    out: Decoded,
}

impl<'v> Walker<'v> {
    fn visit(&mut self, node: Node<'_>, value: &'v Value) {
        // Go leaves the zero value for null, whatever the field's type.
        if value.is_null() || node.preserves_unknown_fields() || node.is_free_form() {
            return;
        }
        if node.is_int_or_string() {
            match value {
                Value::String(_) => {}
                Value::Number(n) if fits_int(n, i32::MIN.into(), i32::MAX.into()) => {}
                _ => self.mismatch(value, "int32", "string or int"),
            }
            return;
        }
        if node.definition_name() == Some(QUANTITY) {
            let text = match value {
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                // Go hands the raw JSON text to the quantity parser, which refuses it.
                other => other.to_string(),
            };
            if let Err(e) = crate::quantity::parse(&text) {
                self.fail(value, e.to_string(), "string or numeric");
            }
            return;
        }
        match node.type_name() {
            Some("object") => self.visit_object(node, value),
            Some("array") => match value {
                Value::Array(items) => {
                    let Some(item_node) = node.items() else {
                        return;
                    };
                    for (index, item) in items.iter().enumerate() {
                        let len = self.path.len();
                        let _ = write!(self.path, "[{index}]");
                        self.visit(item_node, item);
                        self.path.truncate(len);
                    }
                }
                _ => self.mismatch(value, &go_type(node), "list"),
            },
            Some("string") => match value {
                Value::String(s) => self.check_string_format(node, value, s),
                _ => {
                    let go = if node.format() == Some("byte") {
                        "[]uint8"
                    } else {
                        "string"
                    };
                    self.mismatch(value, go, "string");
                }
            },
            Some("integer") => {
                let (go, min, max) = match node.format() {
                    Some("int32") => ("int32", i32::MIN.into(), i32::MAX.into()),
                    _ => ("int64", i64::MIN, i64::MAX),
                };
                match value {
                    Value::Number(n) if fits_int(n, min, max) => {}
                    _ => self.mismatch(value, go, "numeric (int or float)"),
                }
            }
            Some("number") if !value.is_number() => {
                self.mismatch(value, "float64", "numeric (int or float)")
            }
            Some("boolean") if !value.is_boolean() => self.mismatch(value, "bool", "boolean"),
            _ => {}
        }
    }

    /// Structs (declared properties) and maps (`additionalProperties`).
    fn visit_object(&mut self, node: Node<'_>, value: &'v Value) {
        let Value::Object(fields) = value else {
            return self.mismatch(value, &go_type(node), "map");
        };
        let declared = node.declared();
        let values = node.additional_properties();
        if declared.is_none() && values.is_none() {
            return;
        }
        let struct_name = node
            .definition_name()
            .map(|n| n.rsplit('.').next().unwrap_or(n).to_owned());
        for (key, field_value) in fields {
            let child = match declared.and_then(|d| d.get(key)) {
                Some(schema) => Some((node.child(schema), true)),
                None => values.map(|v| (v, false)),
            };
            let len = self.path.len();
            if !self.path.is_empty() {
                self.path.push('.');
            }
            self.path.push_str(key);
            match child {
                Some((child, is_field)) => {
                    let outer = is_field.then(|| {
                        self.fields.push(key);
                        let inner = struct_name.clone().unwrap_or_default();
                        std::mem::replace(&mut self.go_struct, inner)
                    });
                    self.visit(child, field_value);
                    if let Some(outer) = outer {
                        self.fields.pop();
                        self.go_struct = outer;
                    }
                }
                None => self.out.unknown.push(self.path.clone()),
            }
            self.path.truncate(len);
        }
    }

    fn check_string_format(&mut self, node: Node<'_>, value: &Value, s: &str) {
        match node.format() {
            Some("date-time") if s.parse::<jiff::Timestamp>().is_err() => {
                self.fail(
                    value,
                    format!(
                        "parsing time {s:?} as \"2006-01-02T15:04:05Z07:00\": not an RFC 3339 time"
                    ),
                    "string",
                );
            }
            Some("byte") => {
                let compact: String = s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
                if let Err(e) = LENIENT_BASE64.decode(compact.as_bytes()) {
                    let at = match e {
                        base64::DecodeError::InvalidByte(at, _)
                        | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                        _ => compact.len(),
                    };
                    self.fail(
                        value,
                        format!("illegal base64 data at input byte {at}"),
                        "string",
                    );
                }
            }
            _ => {}
        }
    }

    /// A JSON type the Go field cannot take: Go's `UnmarshalTypeError` with its context.
    fn mismatch(&mut self, value: &Value, go_type: &str, expected: &'static str) {
        let given = match value {
            Value::String(_) => "string".to_owned(),
            Value::Bool(_) => "bool".to_owned(),
            Value::Array(_) => "array".to_owned(),
            Value::Object(_) => "object".to_owned(),
            // Go names the literal only when a number does not fit a numeric field.
            Value::Number(n) if go_type.starts_with("int") => format!("number {n}"),
            Value::Number(_) => "number".to_owned(),
            Value::Null => "null".to_owned(),
        };
        let message = if self.fields.is_empty() {
            format!("json: cannot unmarshal {given} into Go value of type {go_type}")
        } else {
            format!(
                "json: cannot unmarshal {given} into Go struct field {}.{} of type {go_type}",
                self.go_struct,
                self.fields.join(".")
            )
        };
        self.fail(value, message, expected);
    }

    fn fail(&mut self, value: &Value, message: String, expected: &'static str) {
        if self.out.type_error.is_some() {
            return;
        }
        let given = match value {
            Value::String(_) => "string",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_f64() => "float64",
            Value::Number(_) => "int64",
            Value::Array(_) => "[]interface {}",
            Value::Object(_) => "map[string]interface {}",
            Value::Null => "<nil>",
        };
        self.out.type_error = Some(TypeError {
            path: self.path.clone(),
            message,
            expected,
            given,
        });
    }
}

/// Go's standard base64, tolerant of non-zero trailing bits as its non-strict decoder is.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// True when `n` is an integer literal within `min..=max` (Go refuses `1.5` or `1e3` for an int).
fn fits_int(n: &Number, min: i64, max: i64) -> bool {
    n.as_i64().is_some_and(|v| (min..=max).contains(&v))
}

/// The Go type of a field, as the decoder's errors name it: `int64`, `[]v1.Container`,
/// `map[string]string`, `v1.PodSpec`.
fn go_type(node: Node<'_>) -> String {
    if node.is_int_or_string() {
        return "int32".into();
    }
    if let Some(name) = node.definition_name()
        && node.declared().is_some()
    {
        let mut parts = name.rsplit('.');
        let short = parts.next().unwrap_or(name);
        return match parts.next() {
            Some(package) => format!("{package}.{short}"),
            None => short.to_owned(),
        };
    }
    match (node.type_name(), node.format()) {
        (Some("array"), _) => format!("[]{}", node.items().map(go_type).unwrap_or_default()),
        (Some("object"), _) => match node.additional_properties() {
            Some(values) => format!("map[string]{}", go_type(values)),
            None => "struct".into(),
        },
        (Some("string"), Some("byte")) => "[]uint8".into(),
        (Some("integer"), Some("int32")) => "int32".into(),
        (Some("integer"), _) => "int64".into(),
        (Some("number"), _) => "float64".into(),
        (Some("boolean"), _) => "bool".into(),
        (Some("string"), _) => "string".into(),
        _ => "interface {}".into(),
    }
}
