//! The kinds a CRD serves, one per served version, in discovery's version order.

use std::cmp::Ordering;

use serde_json::Value;

use crate::kinds::{GroupVersionKind, KindInfo, Subresource};

/// Verbs of a custom resource (the same as a fully writable built-in).
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Verbs of the status and scale subresources.
const SUB_VERBS: &[&str] = &["get", "patch", "update"];

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// One [`KindInfo`] per served version of the CRD, ordered as discovery lists them
/// (GA before beta before alpha, higher versions first; see [`compare_versions`]).
/// `singular` and `listKind` default to the lower-cased kind and `<kind>List`.
pub fn kinds_of(crd: &Value) -> Vec<KindInfo> {
    let Some(spec) = crd.get("spec") else {
        return Vec::new();
    };
    let text = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let group = text("/group");
    let kind = text("/names/kind");
    let plural = text("/names/plural");
    let singular = match text("/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_owned(),
    };
    let list_kind = match text("/names/listKind") {
        "" => format!("{kind}List"),
        s => s.to_owned(),
    };
    let namespaced = text("/scope") != "Cluster";
    let short_names = strings(spec.pointer("/names/shortNames"));
    let categories = strings(spec.pointer("/names/categories"));
    let mut versions: Vec<&Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by(|a, b| {
        let name = |v: &Value| {
            v.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        compare_versions(&name(a), &name(b))
    });
    versions
        .into_iter()
        .map(|v| {
            let version = v.get("name").and_then(Value::as_str).unwrap_or_default();
            let mut subresources = Vec::new();
            if v.pointer("/subresources/status")
                .is_some_and(Value::is_object)
            {
                subresources.push(Subresource {
                    name: "status".into(),
                    response_kind: GroupVersionKind::new(group, version, kind),
                    verbs: SUB_VERBS.iter().map(|s| (*s).to_owned()).collect(),
                });
            }
            if v.pointer("/subresources/scale")
                .is_some_and(Value::is_object)
            {
                subresources.push(Subresource {
                    name: "scale".into(),
                    response_kind: GroupVersionKind::new("autoscaling", "v1", "Scale"),
                    verbs: SUB_VERBS.iter().map(|s| (*s).to_owned()).collect(),
                });
            }
            KindInfo {
                group: group.to_owned(),
                version: version.to_owned(),
                kind: kind.to_owned(),
                list_kind: list_kind.clone(),
                plural: plural.to_owned(),
                singular: singular.clone(),
                namespaced,
                short_names: short_names.clone(),
                categories: categories.clone(),
                verbs: VERBS.iter().map(|s| (*s).to_owned()).collect(),
                subresources,
                schema_name: None,
            }
        })
        .collect()
}

/// A Kubernetes-style version: `v<major>[(alpha|beta)<minor>]`.
fn parse(v: &str) -> Option<(u8, u64, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (major, tail) = rest.split_at(digits);
    if major.is_empty() || major.starts_with('0') {
        return None;
    }
    let major: u64 = major.parse().ok()?;
    let (stability, minor) = if tail.is_empty() {
        return Some((2, major, 0));
    } else if let Some(m) = tail.strip_prefix("beta") {
        (1, m)
    } else if let Some(m) = tail.strip_prefix("alpha") {
        (0, m)
    } else {
        return None;
    };
    if minor.is_empty() || minor.starts_with('0') || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stability, major, minor.parse().ok()?))
}

/// Kube-aware version order, highest priority first: GA, then beta, then alpha (higher
/// major, then higher minor first), then versions that do not look like Kubernetes
/// versions, alphabetically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}
