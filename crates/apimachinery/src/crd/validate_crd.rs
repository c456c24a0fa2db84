//! Validation of a CustomResourceDefinition on create and update, as upstream's
//! apiextensions validation does it.

use std::collections::HashSet;

use serde_json::Value;

use super::{child, forbidden, index, invalid, not_supported, required, show};
use crate::status::StatusCause;
use crate::validation::{dns1035_label, dns1123_subdomain};

/// Column types a printer column may declare.
const COLUMN_TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];
/// Formats a printer column may declare.
const COLUMN_FORMATS: &[&str] = &[
    "byte",
    "date",
    "date-time",
    "double",
    "float",
    "int32",
    "int64",
    "password",
];

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// Validates a CRD; `old` is the stored CRD on update. `spec.names.singular` and
/// `spec.names.listKind` may be absent (they default to the lower-cased kind and
/// `<kind>List`).
pub fn validate_crd(crd: &Value, old: Option<&Value>) -> Vec<StatusCause> {
    let mut out = Vec::new();
    let Some(spec) = crd.get("spec").filter(|s| s.is_object()) else {
        out.push(required("spec", ""));
        return out;
    };
    let group = s(spec, "/group");
    let plural = s(spec, "/names/plural");
    let name = s(crd, "/metadata/name");
    if name != format!("{plural}.{group}") {
        out.push(invalid(
            "metadata.name",
            &format!("{name:?}"),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        out.push(required("spec.group", ""));
    } else {
        let errs = dns1123_subdomain(group);
        if !errs.is_empty() {
            out.push(invalid(
                "spec.group",
                &format!("{group:?}"),
                &errs.join(","),
            ));
        } else if !group.contains('.') {
            out.push(invalid(
                "spec.group",
                &format!("{group:?}"),
                "should be a domain with at least one dot",
            ));
        }
    }
    match spec.get("scope") {
        None => out.push(required("spec.scope", "")),
        Some(Value::String(x)) if x == "Cluster" || x == "Namespaced" => {}
        Some(x) => out.push(not_supported(
            "spec.scope",
            &show(x),
            &["Cluster", "Namespaced"],
        )),
    }
    if spec.get("preserveUnknownFields") == Some(&Value::Bool(true)) {
        out.push(invalid(
            "spec.preserveUnknownFields",
            "true",
            "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
        ));
    }
    names(spec, &mut out);
    versions(spec, &mut out);
    conversion(spec, &mut out);
    if let Some(old) = old {
        update(crd, old, &mut out);
    }
    out
}

fn names(spec: &Value, out: &mut Vec<StatusCause>) {
    let kind = s(spec, "/names/kind");
    for (field, value) in [("plural", s(spec, "/names/plural")), ("kind", kind)] {
        if value.is_empty() {
            out.push(required(&format!("spec.names.{field}"), ""));
        }
    }
    let check_label = |field: &str, v: &str, mixed: bool, out: &mut Vec<StatusCause>| {
        if v.is_empty() {
            return;
        }
        let errs = if mixed {
            dns1035_label(&v.to_lowercase())
        } else {
            dns1035_label(v)
        };
        if !errs.is_empty() {
            let detail = if mixed {
                format!(
                    "may have mixed case, but should otherwise match: {}",
                    errs.join(",")
                )
            } else {
                errs.join(",")
            };
            out.push(invalid(field, &format!("{v:?}"), &detail));
        }
    };
    check_label("spec.names.plural", s(spec, "/names/plural"), false, out);
    check_label(
        "spec.names.singular",
        s(spec, "/names/singular"),
        false,
        out,
    );
    check_label("spec.names.kind", kind, true, out);
    let list_kind = s(spec, "/names/listKind");
    check_label("spec.names.listKind", list_kind, true, out);
    if !kind.is_empty() && kind == list_kind {
        out.push(invalid(
            "spec.names.listKind",
            &format!("{list_kind:?}"),
            "kind and listKind may not be the same",
        ));
    }
    for field in ["shortNames", "categories"] {
        if let Some(Value::Array(items)) = spec.pointer(&format!("/names/{field}")) {
            for (i, it) in items.iter().enumerate() {
                let v = it.as_str().unwrap_or_default();
                let p = index(&format!("spec.names.{field}"), i);
                let errs = dns1035_label(v);
                if !errs.is_empty() {
                    out.push(invalid(&p, &show(it), &errs.join(",")));
                }
            }
        }
    }
}

fn versions(spec: &Value, out: &mut Vec<StatusCause>) {
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let shown = spec
        .get("versions")
        .map(show)
        .unwrap_or_else(|| "null".into());
    if versions.is_empty() {
        out.push(required("spec.versions", "must have at least one version"));
        return;
    }
    let mut seen = HashSet::new();
    let mut unique = true;
    let mut storage = 0;
    let mut served = false;
    for (i, v) in versions.iter().enumerate() {
        let vp = index("spec.versions", i);
        let name = s(v, "/name");
        if !seen.insert(name) {
            unique = false;
        }
        let errs = dns1035_label(name);
        if !errs.is_empty() {
            out.push(invalid(
                &child(&vp, "name"),
                &format!("{name:?}"),
                &errs.join(","),
            ));
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage += 1;
        }
        if v.get("served").and_then(Value::as_bool) == Some(true) {
            served = true;
        }
        let schema_path = child(&child(&vp, "schema"), "openAPIV3Schema");
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => out.push(required(&schema_path, "schemas are required")),
            Some(schema) => out.extend(super::structural::check_schema(schema, &schema_path)),
        }
        subresources(v, &vp, out);
        columns(v, &vp, out);
    }
    if !unique {
        out.push(invalid(
            "spec.versions",
            &shown,
            "must contain unique version names",
        ));
    }
    if storage != 1 {
        out.push(invalid(
            "spec.versions",
            &shown,
            "must have exactly one version marked as storage version",
        ));
    }
    if !served {
        out.push(invalid(
            "spec.versions",
            &shown,
            "must serve at least one version",
        ));
    }
}

fn subresources(v: &Value, vp: &str, out: &mut Vec<StatusCause>) {
    let Some(scale) = v.pointer("/subresources/scale").filter(|x| x.is_object()) else {
        return;
    };
    let base = child(&child(vp, "subresources"), "scale");
    let checks: [(&str, &[&str], &str, bool); 3] = [
        (
            "specReplicasPath",
            &[".spec."],
            "should be a json path under .spec",
            true,
        ),
        (
            "statusReplicasPath",
            &[".status."],
            "should be a json path under .status",
            true,
        ),
        (
            "labelSelectorPath",
            &[".spec.", ".status."],
            "should be a json path under either .spec or .status",
            false,
        ),
    ];
    for (field, prefixes, msg, needed) in checks {
        let p = child(&base, field);
        match scale.get(field).and_then(Value::as_str) {
            None | Some("") => {
                if needed {
                    out.push(required(&p, ""));
                }
            }
            Some(path) => {
                if let Some(e) = simple_json_path(path) {
                    out.push(invalid(&p, &format!("{path:?}"), e));
                } else if !prefixes.iter().any(|pre| path.starts_with(pre)) {
                    out.push(invalid(&p, &format!("{path:?}"), msg));
                }
            }
        }
    }
}

/// Why a path is not a simple JSON path in dot notation, if it is not.
fn simple_json_path(p: &str) -> Option<&'static str> {
    if !p.starts_with('.') {
        return Some("must be a simple json path starting with .");
    }
    if p != "." && p[1..].split('.').any(str::is_empty) {
        return Some("must be a json path in the dot notation");
    }
    None
}

fn columns(v: &Value, vp: &str, out: &mut Vec<StatusCause>) {
    let Some(Value::Array(cols)) = v.get("additionalPrinterColumns") else {
        return;
    };
    let base = child(vp, "additionalPrinterColumns");
    for (i, c) in cols.iter().enumerate() {
        let cp = index(&base, i);
        if s(c, "/name").is_empty() {
            out.push(required(&child(&cp, "name"), ""));
        }
        let types = format!("must be one of {}", COLUMN_TYPES.join(","));
        match s(c, "/type") {
            "" => out.push(required(&child(&cp, "type"), &types)),
            t if !COLUMN_TYPES.contains(&t) => {
                out.push(invalid(&child(&cp, "type"), &format!("{t:?}"), &types));
            }
            _ => {}
        }
        let f = s(c, "/format");
        if !f.is_empty() && !COLUMN_FORMATS.contains(&f) {
            out.push(invalid(
                &child(&cp, "format"),
                &format!("{f:?}"),
                &format!("must be one of {}", COLUMN_FORMATS.join(",")),
            ));
        }
        let jp = s(c, "/jsonPath");
        if jp.is_empty() {
            out.push(required(&child(&cp, "jsonPath"), ""));
        } else if let Some(e) = simple_json_path(jp) {
            out.push(invalid(&child(&cp, "jsonPath"), &format!("{jp:?}"), e));
        }
    }
}

fn conversion(spec: &Value, out: &mut Vec<StatusCause>) {
    let Some(conv) = spec.get("conversion").filter(|c| !c.is_null()) else {
        return;
    };
    let webhook = conv.get("webhook").is_some_and(|w| !w.is_null());
    match conv.get("strategy") {
        None => {}
        Some(Value::String(x)) if x == "None" && webhook => {
            out.push(forbidden(
                "spec.conversion.webhook",
                "should be empty if conversion strategy is None",
            ));
        }
        Some(Value::String(x)) if x == "None" => {}
        Some(x) => out.push(not_supported(
            "spec.conversion.strategy",
            &show(x),
            &["None"],
        )),
    }
}

fn established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "/type") == "Established" && s(c, "/status") == "True")
        })
}

fn update(crd: &Value, old: &Value, out: &mut Vec<StatusCause>) {
    let mut immutable = vec![
        ("spec.group", "/spec/group"),
        ("spec.names.plural", "/spec/names/plural"),
    ];
    if established(old) {
        immutable.push(("spec.scope", "/spec/scope"));
        immutable.push(("spec.names.kind", "/spec/names/kind"));
    }
    for (field, ptr) in immutable {
        let new_v = crd.pointer(ptr).unwrap_or(&Value::Null);
        if old.pointer(ptr).unwrap_or(&Value::Null) != new_v {
            out.push(invalid(field, &show(new_v), "field is immutable"));
        }
    }
    let names: HashSet<&str> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().map(|v| s(v, "/name")).collect())
        .unwrap_or_default();
    if let Some(Value::Array(stored)) = old.pointer("/status/storedVersions") {
        for (i, v) in stored.iter().enumerate() {
            let name = v.as_str().unwrap_or_default();
            if !names.contains(name) {
                out.push(invalid(
                    &index("status.storedVersions", i),
                    &show(v),
                    "must appear in spec.versions",
                ));
            }
        }
    }
}
