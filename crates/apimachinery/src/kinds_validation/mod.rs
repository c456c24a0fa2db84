//! Validation of the specs of built-in kinds on create and update, as upstream's
//! `pkg/apis/*/validation` does it for the fields users hit most: pod specs, workload
//! selectors and strategies, Services, ConfigMap and Secret keys, and immutable fields.
//!
//! Objects are the v1 JSON form, already defaulted (see [`crate::defaults`]). Metadata is
//! checked separately by [`crate::validation::metadata_causes`]. Causes carry upstream's
//! reasons, field paths (`spec.template.spec.containers[0].image`) and messages.

mod apps;
mod batch;
mod core;
mod pod;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use serde_json::Value;

use crate::status::StatusCause;

pub use self::core::{DATA_MAX_BYTES, NODE_PORT_RANGE};
use pod::RestartPolicies;

/// Validates a new object of `group`/`kind` (group `""` is the core group). Kinds without
/// checks here yield no causes.
pub fn validate_create(group: &str, kind: &str, obj: &Value) -> Vec<StatusCause> {
    let mut e = Errs::default();
    match (group, kind) {
        ("", "Pod") => pod::pod_spec(field(obj, "spec"), "spec", RestartPolicies::Any, &mut e),
        ("", "PodTemplate") => pod::template(
            field(obj, "template"),
            "template",
            RestartPolicies::Any,
            &mut e,
        ),
        ("", "ReplicationController") => apps::replication_controller(obj, &mut e),
        ("", "Service") => core::service(obj, &mut e),
        ("", "ConfigMap") => core::config_map(obj, &mut e),
        ("", "Secret") => core::secret(obj, &mut e),
        ("", "PersistentVolumeClaim") => core::pvc(obj, &mut e),
        ("apps", "Deployment") => apps::deployment(obj, &mut e),
        ("apps", "ReplicaSet") => apps::replica_set(obj, &mut e),
        ("apps", "StatefulSet") => apps::stateful_set(obj, &mut e),
        ("apps", "DaemonSet") => apps::daemon_set(obj, &mut e),
        ("batch", "Job") => batch::job(obj, &mut e),
        ("batch", "CronJob") => batch::cron_job(obj, &mut e),
        _ => {}
    }
    e.0
}

/// Validates an update of `old` to `new`: everything [`validate_create`] checks, plus the
/// fields that may not change.
pub fn validate_update(group: &str, kind: &str, new: &Value, old: &Value) -> Vec<StatusCause> {
    let mut causes = validate_create(group, kind, new);
    let mut e = Errs::default();
    match (group, kind) {
        ("", "Pod") => pod::pod_update(new, old, &mut e),
        ("", "Service") => core::service_update(new, old, &mut e),
        ("", "ConfigMap") => core::immutable_data(new, old, &["data", "binaryData"], &mut e),
        ("", "Secret") => {
            core::immutable_data(new, old, &["data"], &mut e);
            immutable(new, old, "type", &mut e);
        }
        ("", "PersistentVolumeClaim") => core::pvc_update(new, old, &mut e),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            immutable(new, old, "spec.selector", &mut e);
        }
        ("apps", "StatefulSet") => apps::stateful_set_update(new, old, &mut e),
        ("batch", "Job") => batch::job_update(new, old, &mut e),
        _ => {}
    }
    causes.extend(e.0);
    causes
}

/// Collects causes with upstream's reasons and message forms.
#[derive(Debug, Default)]
pub(crate) struct Errs(pub(crate) Vec<StatusCause>);

impl Errs {
    fn push(&mut self, reason: &str, path: &str, message: String) {
        self.0.push(StatusCause::new(reason, path, message));
    }

    /// `Required value[: detail]`.
    pub(crate) fn required(&mut self, path: &str, detail: &str) {
        let mut m = "Required value".to_owned();
        if !detail.is_empty() {
            let _ = write!(m, ": {detail}");
        }
        self.push("FieldValueRequired", path, m);
    }

    /// `Invalid value: <value>: detail`.
    pub(crate) fn invalid(&mut self, path: &str, value: &Value, detail: &str) {
        self.push(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {}: {detail}", show(value)),
        );
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub(crate) fn not_supported(&mut self, path: &str, value: &Value, supported: &[&str]) {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.push(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {list}",
                show(value)
            ),
        );
    }

    /// `Duplicate value: <value>`.
    pub(crate) fn duplicate(&mut self, path: &str, value: &Value) {
        self.push(
            "FieldValueDuplicate",
            path,
            format!("Duplicate value: {}", show(value)),
        );
    }

    /// `Forbidden: detail`.
    pub(crate) fn forbidden(&mut self, path: &str, detail: &str) {
        self.push("FieldValueForbidden", path, format!("Forbidden: {detail}"));
    }

    /// `Not found: <value>`.
    pub(crate) fn not_found(&mut self, path: &str, value: &Value) {
        self.push(
            "FieldValueNotFound",
            path,
            format!("Not found: {}", show(value)),
        );
    }

    /// `Too long: may not be more than <max> bytes`.
    pub(crate) fn too_long(&mut self, path: &str, max: usize) {
        self.push(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        );
    }

    /// One `Invalid` cause per message of a name check.
    pub(crate) fn invalid_all(&mut self, path: &str, value: &Value, messages: Vec<String>) {
        for m in messages {
            self.invalid(path, value, &m);
        }
    }
}

/// A value as upstream prints it in messages: strings quoted, numbers bare, others JSON.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// `obj[key]`, or `Null` when absent.
pub(crate) fn field<'a>(obj: &'a Value, key: &str) -> &'a Value {
    obj.get(key).unwrap_or(&Value::Null)
}

/// The value at a dotted path (`spec.selector`), or `Null`.
pub(crate) fn at<'a>(obj: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(obj, |v, k| field(v, k))
}

/// The elements of the array at `obj[key]` (none when absent or not an array).
pub(crate) fn list<'a>(obj: &'a Value, key: &str) -> &'a [Value] {
    obj.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The string at `obj[key]`, or `""`.
pub(crate) fn str_of<'a>(obj: &'a Value, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

/// True when a value is absent: null, or an empty string, array or object.
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// Reports `field is immutable` when the value at dotted `path` differs between `new` and
/// `old` (absent, null and empty count as equal).
pub(crate) fn immutable(new: &Value, old: &Value, path: &str, e: &mut Errs) {
    let (n, o) = (at(new, path), at(old, path));
    if n != o && !(is_empty(n) && is_empty(o)) {
        e.invalid(path, n, "field is immutable");
    }
}

/// A value that must be a non-negative integer: reports
/// `must be greater than or equal to 0` otherwise. Absent values pass.
pub(crate) fn non_negative(obj: &Value, key: &str, path: &str, e: &mut Errs) {
    if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
        match v.as_i64() {
            Some(n) if n >= 0 => {}
            Some(_) => e.invalid(path, v, "must be greater than or equal to 0"),
            None => e.invalid(path, v, "must be an integer"),
        }
    }
}

/// A port number check: the messages upstream's `IsValidPortNum` gives.
pub(crate) fn port_num_errors(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_owned()]
    }
}

/// An IANA service name (a named port): at most 15 lower-case alphanumerics or '-', at
/// least one letter, no '--', not starting or ending with '-'.
pub(crate) fn port_name_errors(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".to_owned());
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_owned());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_owned());
    }
    errs
}

/// Checks an int-or-string port reference (probe, target port): a number in range or a
/// valid port name.
pub(crate) fn port_ref(v: &Value, path: &str, e: &mut Errs) {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(p) => e.invalid_all(path, v, port_num_errors(p)),
            None => e.invalid(path, v, "must be an integer"),
        },
        Value::String(s) if s.is_empty() => e.required(path, ""),
        Value::String(s) => e.invalid_all(path, v, port_name_errors(s)),
        Value::Null => e.required(path, ""),
        _ => e.invalid(path, v, "must be an integer or a string"),
    }
}

/// Parses a resource quantity (`100m`, `1Gi`, `2e3`) to its value; `None` when malformed.
pub(crate) fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "+" || number == "-" {
        return None;
    }
    let base: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp.get(1..)?.parse().ok()?;
            10f64.powi(e)
        }
        _ => return None,
    };
    Some(base * factor)
}
