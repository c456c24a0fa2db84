//! Tolerant readers over arbitrary object JSON and the shared cell formatters (ages, label
//! selectors, container lists) that the per-kind printers build on.
//!
//! Every reader accepts any JSON: a missing or wrongly-typed field reads as empty, zero or absent,
//! so no object can make a printer panic.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::human_signed_duration;

/// The JSON `null`, returned by [`get`] when a path is missing.
static NULL: Value = Value::Null;

/// The value at `path`, or `None` when any step is missing or not an object.
pub(crate) fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut current = value;
    for key in path {
        current = current.as_object()?.get(*key)?;
    }
    Some(current)
}

/// The value at `path`, or `null`.
pub(crate) fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    get(value, path).unwrap_or(&NULL)
}

/// The string at `path`, or `""` when missing or not a string.
pub(crate) fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    get(value, path).and_then(Value::as_str).unwrap_or("")
}

/// The string at `path`, or `None` when missing or not a string.
pub(crate) fn opt_str<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(value, path).and_then(Value::as_str)
}

/// The integer at `path`, or `None` when missing or not a number (floats are truncated).
pub(crate) fn opt_i64(value: &Value, path: &[&str]) -> Option<i64> {
    let number = get(value, path)?;
    number
        .as_i64()
        .or_else(|| number.as_f64().map(|float| float as i64))
}

/// The integer at `path`, or `0`.
pub(crate) fn i64_at(value: &Value, path: &[&str]) -> i64 {
    opt_i64(value, path).unwrap_or(0)
}

/// The boolean at `path`, or `None` when missing or not a boolean.
pub(crate) fn opt_bool(value: &Value, path: &[&str]) -> Option<bool> {
    get(value, path).and_then(Value::as_bool)
}

/// The array at `path`, or an empty slice.
pub(crate) fn arr<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    get(value, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object at `path`, or `None`.
pub(crate) fn obj<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    get(value, path).and_then(Value::as_object)
}

/// The number of keys of the object at `path` (0 when missing).
pub(crate) fn len_at(value: &Value, path: &[&str]) -> usize {
    obj(value, path).map_or(0, Map::len)
}

/// The object's `metadata.name`.
pub(crate) fn name(object: &Value) -> &str {
    str_at(object, &["metadata", "name"])
}

/// Whether `metadata.deletionTimestamp` is set.
pub(crate) fn is_deleting(object: &Value) -> bool {
    get(object, &["metadata", "deletionTimestamp"]).is_some_and(|value| !value.is_null())
}

/// A string cell.
pub(crate) fn text(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

/// Joins non-empty pieces, or returns `fallback` when the result is empty.
pub(crate) fn or_none(value: String, fallback: &str) -> String {
    if value.is_empty() {
        fallback.to_owned()
    } else {
        value
    }
}

/// Go's zero `time.Time`, which upstream treats as "unset".
fn is_go_zero_time(timestamp: Timestamp) -> bool {
    timestamp.as_second() == -62_135_596_800 && timestamp.subsec_nanosecond() == 0
}

/// Parses an API timestamp (RFC 3339); `None` for missing, empty, unparsable or Go's zero time.
pub(crate) fn parse_time(value: Option<&Value>) -> Option<Timestamp> {
    let raw = value?.as_str()?;
    let timestamp: Timestamp = raw.parse().ok()?;
    if is_go_zero_time(timestamp) {
        None
    } else {
        Some(timestamp)
    }
}

/// Upstream's `translateTimestampSince`: the age of a timestamp, or `<unknown>` when unset.
pub(crate) fn since(value: Option<&Value>, now: Timestamp) -> String {
    match parse_time(value) {
        Some(timestamp) => human_signed_duration(now.duration_since(timestamp)),
        None => "<unknown>".to_owned(),
    }
}

/// The age cell built from `metadata.creationTimestamp`.
pub(crate) fn age(object: &Value, now: Timestamp) -> Value {
    text(since(get(object, &["metadata", "creationTimestamp"]), now))
}

/// The creation timestamp as upstream's default table prints it (RFC 3339, UTC, whole seconds).
pub(crate) fn created_at(object: &Value) -> String {
    let raw = opt_str(object, &["metadata", "creationTimestamp"]).unwrap_or("");
    match raw.parse::<Timestamp>() {
        Ok(timestamp) => timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => "0001-01-01T00:00:00Z".to_owned(),
    }
}

/// Upstream's `labels.FormatLabels`: sorted `k=v` pairs joined by commas, or `<none>`.
pub(crate) fn format_labels(map: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<(String, String)> = map
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.clone(), scalar_text(value)))
        .collect();
    pairs.sort();
    let joined = pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    or_none(joined, "<none>")
}

/// A scalar as text (strings unquoted); used where upstream has a string but JSON may hold any.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(string) => string.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One requirement of a label selector, kept in upstream's printable form.
struct Requirement {
    key: String,
    rendered: String,
}

/// Renders a `metav1.LabelSelector` as upstream's `LabelSelectorAsSelector(...).String()`.
///
/// A missing selector selects nothing and an empty one everything; both render as `""`.
/// Returns `Err(())` for selectors upstream rejects (unknown operators, bad value lists).
pub(crate) fn label_selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector.filter(|value| !value.is_null()) else {
        return Ok(String::new());
    };
    let Some(selector) = selector.as_object() else {
        return Err(());
    };
    let mut requirements = Vec::new();
    if let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in match_labels {
            requirements.push(Requirement {
                key: key.clone(),
                rendered: format!("{key}={}", scalar_text(value)),
            });
        }
    }
    if let Some(expressions) = selector.get("matchExpressions").and_then(Value::as_array) {
        for expression in expressions {
            let key = str_at(expression, &["key"]).to_owned();
            let mut values: Vec<String> = arr(expression, &["values"])
                .iter()
                .map(scalar_text)
                .collect();
            values.sort();
            values.dedup();
            let rendered = match str_at(expression, &["operator"]) {
                "In" | "NotIn" if values.is_empty() => return Err(()),
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
                "Exists" => key.clone(),
                "DoesNotExist" => format!("!{key}"),
                _ => return Err(()),
            };
            requirements.push(Requirement { key, rendered });
        }
    }
    requirements.sort_by(|left, right| left.key.cmp(&right.key));
    Ok(requirements
        .into_iter()
        .map(|requirement| requirement.rendered)
        .collect::<Vec<_>>()
        .join(","))
}

/// Upstream's `metav1.FormatLabelSelector`: the selector string, `<none>` when empty, `<error>`
/// when invalid.
pub(crate) fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_string(selector) {
        Ok(rendered) => or_none(rendered, "<none>"),
        Err(()) => "<error>".to_owned(),
    }
}

/// Upstream's `layoutContainerCells`: container names and images, each comma-joined.
pub(crate) fn container_cells(pod_spec: &Value) -> (Value, Value) {
    let containers = arr(pod_spec, &["containers"]);
    let names: Vec<&str> = containers
        .iter()
        .map(|container| str_at(container, &["name"]))
        .collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|container| str_at(container, &["image"]))
        .collect();
    (text(names.join(",")), text(images.join(",")))
}

/// Upstream's `printBoolPtr`: `True`, `False` or `<unset>`.
pub(crate) fn bool_word(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

/// Upstream's `listWithMoreString`: up to `max` items, then `+ N more...`, or `<unset>` when empty.
pub(crate) fn list_with_more(items: &[String], max: usize) -> String {
    if items.len() > max {
        return format!("{} + {} more...", items[..max].join(","), items.len() - max);
    }
    or_none(items.join(","), "<unset>")
}

/// Sorted, de-duplicated load-balancer ingress points (IP, else hostname), comma-joined.
pub(crate) fn load_balancer_ingress(status: &Value) -> String {
    let points: BTreeSet<&str> = arr(status, &["ingress"])
        .iter()
        .filter_map(|ingress| {
            let ip = str_at(ingress, &["ip"]);
            let hostname = str_at(ingress, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !hostname.is_empty() {
                Some(hostname)
            } else {
                None
            }
        })
        .collect();
    points.into_iter().collect::<Vec<_>>().join(",")
}

/// An int-or-string value as upstream's `IntOrString.String()`.
pub(crate) fn int_or_string(value: &Value) -> String {
    match value {
        Value::Number(number) => number
            .as_i64()
            .map_or_else(|| number.to_string(), |int| int.to_string()),
        Value::String(string) => string.clone(),
        _ => String::new(),
    }
}

/// A resource quantity as text; missing quantities print as `0`, as upstream's zero `Quantity`.
pub(crate) fn quantity(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(string)) => string.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => "0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors_render_like_upstream() {
        let check = |selector: Value, expected: &str| {
            assert_eq!(
                format_label_selector(Some(&selector)),
                expected,
                "{selector}"
            );
        };
        check(json!({"matchLabels": {"b": "2", "a": "1"}}), "a=1,b=2");
        check(json!({}), "<none>");
        check(Value::Null, "<none>");
        check(
            json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["z", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "gpu", "operator": "Exists"},
                {"key": "old", "operator": "DoesNotExist"}
            ]}),
            "app=web,env notin (prod),gpu,!old,tier in (a,z)",
        );
        check(
            json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
            "<error>",
        );
        check(
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            "<error>",
        );
        check(json!("not an object"), "<error>");
    }

    #[test]
    fn labels_render_sorted_or_none() {
        assert_eq!(
            format_labels(json!({"b": "x", "a": "y"}).as_object()),
            "a=y,b=x"
        );
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(format_labels(json!({}).as_object()), "<none>");
    }

    #[test]
    fn created_at_is_utc_whole_seconds() {
        let object = json!({"metadata": {"creationTimestamp": "2024-03-01T10:20:30.123+02:00"}});
        assert_eq!(created_at(&object), "2024-03-01T08:20:30Z");
        assert_eq!(created_at(&json!({})), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn ages_of_unset_or_bad_timestamps_are_unknown() {
        let now: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(since(None, now), "<unknown>");
        assert_eq!(since(Some(&json!(42)), now), "<unknown>");
        assert_eq!(since(Some(&json!("yesterday")), now), "<unknown>");
        assert_eq!(
            since(Some(&json!("0001-01-01T00:00:00Z")), now),
            "<unknown>"
        );
        assert_eq!(since(Some(&json!("2023-12-31T23:55:00Z")), now), "5m");
    }
}
