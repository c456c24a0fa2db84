//! Checks that a CRD version's `openAPIV3Schema` is a structural schema, that its
//! defaults are valid and pruned, and that its CEL rules compile.

use serde_json::Value;

use super::{MAX_DEPTH, child, forbidden, index, invalid, key, not_supported, required, show};
use crate::status::StatusCause;

/// Where a schema node sits: its parent decides the wording of a missing type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Root,
    Property,
    Items,
    Additional,
}

/// Keys OpenAPI v3 allows that CRD schemas do not support.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("$ref", "$ref is not supported"),
    ("id", "id is not supported"),
    ("additionalItems", "additionalItems is not supported"),
    ("patternProperties", "patternProperties is not supported"),
    ("definitions", "definitions is not supported"),
    ("dependencies", "dependencies is not supported"),
];

/// Keys that give structure and so may not be set inside allOf/anyOf/oneOf/not, with
/// upstream's wording.
const STRUCTURAL_ONLY: &[(&str, &str)] = &[
    ("type", "must be empty to be structural"),
    ("additionalProperties", "must be undefined to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    (
        "x-kubernetes-preserve-unknown-fields",
        "must be false to be structural",
    ),
    (
        "x-kubernetes-embedded-resource",
        "must be false to be structural",
    ),
    (
        "x-kubernetes-int-or-string",
        "must be false to be structural",
    ),
    (
        "x-kubernetes-list-map-keys",
        "must be empty to be structural",
    ),
    (
        "x-kubernetes-list-type",
        "must be undefined to be structural",
    ),
    (
        "x-kubernetes-map-type",
        "must be undefined to be structural",
    ),
    ("x-kubernetes-validations", "must be empty to be structural"),
];

/// True when a key's value counts as set (not false, empty or null).
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// The `anyOf: [{type: integer}, {type: string}]` that int-or-string schemas may carry.
fn is_int_or_string_any_of(v: Option<&Value>) -> bool {
    v == Some(&serde_json::json!([{"type": "integer"}, {"type": "string"}]))
}

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];
const REASONS: &[&str] = &[
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// Checks the schema rooted at `path` (such as
/// `spec.versions[0].schema.openAPIV3Schema`).
pub(crate) fn check_schema(schema: &Value, path: &str) -> Vec<StatusCause> {
    let mut out = Vec::new();
    walk(schema, path, Slot::Root, false, false, 0, &mut out);
    out
}

fn is_true(s: &Value, k: &str) -> bool {
    s.get(k).and_then(Value::as_bool) == Some(true)
}

#[allow(clippy::too_many_arguments)]
fn walk(
    s: &Value,
    path: &str,
    slot: Slot,
    value_validation: bool,
    skip_any_of: bool,
    depth: usize,
    out: &mut Vec<StatusCause>,
) {
    if depth > MAX_DEPTH {
        out.push(forbidden(
            path,
            &format!("must not nest deeper than {MAX_DEPTH} levels"),
        ));
        return;
    }
    let Some(obj) = s.as_object() else {
        out.push(invalid(path, &show(s), "must be a JSON schema object"));
        return;
    };
    for (k, msg) in UNSUPPORTED {
        if obj.contains_key(*k) {
            out.push(forbidden(&child(path, k), msg));
        }
    }
    if is_true(s, "uniqueItems") {
        out.push(forbidden(
            &child(path, "uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    let t = s.get("type");
    let ty = t.and_then(Value::as_str);
    match t {
        None => {}
        Some(Value::String(x)) if x == "null" => {
            out.push(forbidden(
                &child(path, "type"),
                "type cannot be set to null",
            ));
        }
        Some(Value::String(x)) if TYPES.contains(&x.as_str()) => {}
        Some(other) => out.push(not_supported(&child(path, "type"), &show(other), TYPES)),
    }
    if s.get("items").is_some_and(Value::is_array) {
        out.push(forbidden(
            &child(path, "items"),
            "items must be a schema object and not an array",
        ));
    }
    let has_props = s
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    if has_props
        && matches!(
            s.get("additionalProperties"),
            Some(Value::Bool(false) | Value::Object(_))
        )
    {
        out.push(forbidden(
            &child(path, "additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str)
        && let Err(e) = regex::Regex::new(p)
    {
        out.push(invalid(
            &child(path, "pattern"),
            &format!("{p:?}"),
            &format!(
                "must be a valid regular expression, but isn't: {}",
                e.to_string().lines().last().unwrap_or_default()
            ),
        ));
    }
    if value_validation {
        for (k, msg) in STRUCTURAL_ONLY {
            if obj.get(*k).is_some_and(is_set) {
                out.push(forbidden(&child(path, k), msg));
            }
        }
        if s.pointer("/properties/metadata").is_some() {
            out.push(forbidden(
                &key(&child(path, "properties"), "metadata"),
                "must not be specified in a nested context",
            ));
        }
    } else {
        structural_node(s, path, slot, ty, out);
        for j in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(subs)) = s.get(j) {
                for (i, sub) in subs.iter().enumerate() {
                    mirrored(s, path, sub, &index(&child(path, j), i), depth, out);
                }
            }
        }
        if let Some(not) = s.get("not") {
            mirrored(s, path, not, &child(path, "not"), depth, out);
        }
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        let base = child(path, "properties");
        for (name, ps) in props {
            let p = key(&base, name);
            if slot == Slot::Root && name == "metadata" && !value_validation {
                check_metadata(ps, &p, out);
            }
            walk(
                ps,
                &p,
                Slot::Property,
                value_validation,
                false,
                depth + 1,
                out,
            );
        }
    }
    if let Some(a @ Value::Object(_)) = s.get("additionalProperties") {
        let p = child(path, "additionalProperties");
        walk(
            a,
            &p,
            Slot::Additional,
            value_validation,
            false,
            depth + 1,
            out,
        );
    }
    if let Some(i @ Value::Object(_)) = s.get("items") {
        walk(
            i,
            &child(path, "items"),
            Slot::Items,
            value_validation,
            false,
            depth + 1,
            out,
        );
    }
    // The int-or-string anyOf pattern (directly or as allOf[0].anyOf) is allowed.
    let skip_any_of = skip_any_of || is_int_or_string_any_of(s.get("anyOf"));
    let skip_first_all_of_any_of = s
        .pointer("/allOf/0/anyOf")
        .is_some_and(|a| is_int_or_string_any_of(Some(a)));
    for j in ["allOf", "anyOf", "oneOf"] {
        if j == "anyOf" && skip_any_of {
            continue;
        }
        if let Some(Value::Array(subs)) = s.get(j) {
            let base = child(path, j);
            for (i, sub) in subs.iter().enumerate() {
                let skip = j == "allOf" && i == 0 && skip_first_all_of_any_of;
                walk(sub, &index(&base, i), slot, true, skip, depth + 1, out);
            }
        }
    }
    if let Some(not) = s.get("not") {
        walk(not, &child(path, "not"), slot, true, false, depth + 1, out);
    }
}

/// Value validations may only constrain properties and items the structural part
/// specifies: reports those it does not, as upstream does.
fn mirrored(
    structural: &Value,
    s_path: &str,
    vv: &Value,
    vv_path: &str,
    depth: usize,
    out: &mut Vec<StatusCause>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(Value::Object(props)) = vv.get("properties") {
        let open = structural
            .get("additionalProperties")
            .is_some_and(Value::is_object)
            || is_true(structural, "x-kubernetes-preserve-unknown-fields");
        for (name, sub) in props {
            let sp = key(&child(s_path, "properties"), name);
            let vp = key(&child(vv_path, "properties"), name);
            match structural.get("properties").and_then(|p| p.get(name)) {
                Some(ss) => mirrored(ss, &sp, sub, &vp, depth + 1, out),
                None if open => {}
                None => out.push(required(&sp, &format!("because it is defined in {vp}"))),
            }
        }
    }
    if let Some(items) = vv.get("items") {
        let sp = child(s_path, "items");
        let vp = child(vv_path, "items");
        match structural.get("items") {
            Some(ss) => mirrored(ss, &sp, items, &vp, depth + 1, out),
            None => out.push(required(&sp, &format!("because it is defined in {vp}"))),
        }
    }
    for j in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = vv.get(j) {
            for (i, sub) in subs.iter().enumerate() {
                let vp = index(&child(vv_path, j), i);
                mirrored(structural, s_path, sub, &vp, depth + 1, out);
            }
        }
    }
    if let Some(not) = vv.get("not") {
        mirrored(
            structural,
            s_path,
            not,
            &child(vv_path, "not"),
            depth + 1,
            out,
        );
    }
}

/// The rules for the structural part of a schema (outside value validations).
fn structural_node(
    s: &Value,
    path: &str,
    slot: Slot,
    ty: Option<&str>,
    out: &mut Vec<StatusCause>,
) {
    let int_or_string = is_true(s, "x-kubernetes-int-or-string");
    let preserve = s.get("x-kubernetes-preserve-unknown-fields");
    let embedded = is_true(s, "x-kubernetes-embedded-resource");
    if let Some(p) = preserve
        && p != &Value::Bool(true)
    {
        out.push(invalid(
            &child(path, "x-kubernetes-preserve-unknown-fields"),
            &show(p),
            "must be true or undefined",
        ));
    }
    if int_or_string {
        for k in [
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-embedded-resource",
        ] {
            if is_true(s, k) {
                out.push(invalid(
                    &child(path, k),
                    "true",
                    "must be false if x-kubernetes-int-or-string is true",
                ));
            }
        }
    }
    if s.get("additionalProperties").is_some_and(is_set) {
        if slot == Slot::Root {
            out.push(forbidden(
                &child(path, "additionalProperties"),
                "must not be used at the root",
            ));
        }
        if embedded {
            out.push(forbidden(
                &child(path, "additionalProperties"),
                "must not be used if x-kubernetes-embedded-resource is set",
            ));
        }
    }
    if slot == Slot::Root || embedded {
        let props = child(path, "properties");
        for (name, want) in [
            ("kind", "string"),
            ("apiVersion", "string"),
            ("metadata", "object"),
        ] {
            if let Some(p) = s.get("properties").and_then(|p| p.get(name)) {
                let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
                if t != want {
                    out.push(invalid(
                        &child(&key(&props, name), "type"),
                        &format!("{t:?}"),
                        &format!("must be {want}"),
                    ));
                }
            }
        }
    }
    let type_path = child(path, "type");
    match ty {
        None if embedded => {}
        None if !int_or_string && preserve != Some(&Value::Bool(true)) => {
            let detail = match slot {
                Slot::Root => "must not be empty at the root",
                Slot::Items => "must not be empty for specified array items",
                Slot::Property | Slot::Additional => {
                    "must not be empty for specified object fields"
                }
            };
            out.push(required(&type_path, detail));
        }
        Some(t) if int_or_string => out.push(invalid(
            &type_path,
            &format!("{t:?}"),
            "must be empty if x-kubernetes-int-or-string is true",
        )),
        _ => {}
    }
    if slot == Slot::Root {
        if let Some(t) = ty
            && t != "object"
        {
            out.push(invalid(
                &type_path,
                &format!("{t:?}"),
                "must be object at the root",
            ));
        }
        if is_true(s, "nullable") {
            out.push(forbidden(
                &child(path, "nullable"),
                "must be false at the root",
            ));
        }
    }
    if embedded {
        if ty != Some("object") {
            let d = "must be object if x-kubernetes-embedded-resource is true";
            match ty {
                None => out.push(required(&type_path, d)),
                Some(t) => out.push(invalid(&type_path, &format!("{t:?}"), d)),
            }
        }
        if s.get("properties").is_none() && preserve != Some(&Value::Bool(true)) {
            out.push(required(
                &child(path, "properties"),
                "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
            ));
        }
    }
    if ty == Some("array") && s.get("items").is_none() {
        out.push(required(&child(path, "items"), "must be specified"));
    }
    check_list_type(s, path, ty, out);
    check_rules(s, path, out);
    check_default(s, path, embedded, out);
}

fn check_list_type(s: &Value, path: &str, ty: Option<&str>, out: &mut Vec<StatusCause>) {
    let lt_path = child(path, "x-kubernetes-list-type");
    let keys_path = child(path, "x-kubernetes-list-map-keys");
    let lt = s.get("x-kubernetes-list-type");
    let keys: Vec<&str> = s
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(lt) = lt else {
        if !keys.is_empty() {
            out.push(forbidden(
                &keys_path,
                "must not be set if x-kubernetes-list-type is not map",
            ));
        }
        return;
    };
    let lts = lt.as_str().unwrap_or_default();
    if !["atomic", "map", "set"].contains(&lts) {
        out.push(not_supported(
            &lt_path,
            &show(lt),
            &["atomic", "map", "set"],
        ));
        return;
    }
    if ty != Some("array") {
        out.push(invalid(
            &lt_path,
            &show(lt),
            "must only be used if type == 'array'",
        ));
        return;
    }
    let items = s.get("items");
    let item_ty = items.and_then(|i| i.get("type")).and_then(Value::as_str);
    match lts {
        "map" => {
            if keys.is_empty() {
                out.push(required(
                    &keys_path,
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
            if item_ty != Some("object") {
                out.push(invalid(
                    &child(&child(path, "items"), "type"),
                    &format!("{:?}", item_ty.unwrap_or_default()),
                    "must be object if parent array's x-kubernetes-list-type is map",
                ));
            } else {
                let props = items.and_then(|i| i.get("properties"));
                for (i, k) in keys.iter().enumerate() {
                    if props.and_then(|p| p.get(*k)).is_none() {
                        out.push(invalid(
                            &index(&keys_path, i),
                            &format!("{k:?}"),
                            "entries must all be names of item properties",
                        ));
                    }
                }
            }
        }
        _ => {
            if !keys.is_empty() {
                out.push(forbidden(
                    &keys_path,
                    "must not be set if x-kubernetes-list-type is not map",
                ));
            }
            if lts == "set" && matches!(item_ty, Some("object" | "array")) {
                out.push(invalid(
                    &child(&child(path, "items"), "type"),
                    &format!("{:?}", item_ty.unwrap_or_default()),
                    "must be a scalar type if parent array's x-kubernetes-list-type is set",
                ));
            }
        }
    }
}

/// Checks `x-kubernetes-validations`: rules compile, messages are one line, reasons known.
fn check_rules(s: &Value, path: &str, out: &mut Vec<StatusCause>) {
    let Some(rules) = s.get("x-kubernetes-validations") else {
        return;
    };
    let base = child(path, "x-kubernetes-validations");
    let Some(rules) = rules.as_array() else {
        out.push(invalid(&base, &show(rules), "must be a list of rules"));
        return;
    };
    for (i, r) in rules.iter().enumerate() {
        let rp = index(&base, i);
        match r.get("rule").and_then(Value::as_str) {
            None | Some("") => out.push(required(&child(&rp, "rule"), "")),
            Some(text) => {
                if let Err(e) = super::cel::compile_rule(text) {
                    out.push(invalid(
                        &child(&rp, "rule"),
                        &format!("{text:?}"),
                        &e.to_string(),
                    ));
                }
            }
        }
        if let Some(m) = r.get("message").and_then(Value::as_str) {
            if m.contains('\n') {
                out.push(invalid(
                    &child(&rp, "message"),
                    &format!("{m:?}"),
                    "message must not contain line breaks",
                ));
            } else if m.trim().is_empty() {
                out.push(required(
                    &child(&rp, "message"),
                    "message must be non-empty if specified",
                ));
            }
        }
        if let Some(m) = r.get("messageExpression").and_then(Value::as_str)
            && let Err(e) = super::cel::compile_rule(m)
        {
            out.push(invalid(
                &child(&rp, "messageExpression"),
                &format!("{m:?}"),
                &format!("messageExpression {e}"),
            ));
        }
        if let Some(reason) = r.get("reason")
            && !reason.as_str().is_some_and(|x| REASONS.contains(&x))
        {
            out.push(not_supported(&child(&rp, "reason"), &show(reason), REASONS));
        }
        if let Some(fp) = r.get("fieldPath")
            && !fp.as_str().is_some_and(valid_field_path)
        {
            out.push(invalid(
                &child(&rp, "fieldPath"),
                &show(fp),
                "fieldPath must be a valid path",
            ));
        }
    }
}

/// A simple field path such as `.spec.replicas` or `.spec.items[0]`.
fn valid_field_path(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('.') else {
        return false;
    };
    !rest.is_empty()
        && rest.split('.').all(|seg| {
            let name = seg.split('[').next().unwrap_or_default();
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Checks that a `default` validates against its node and has no unknown fields.
fn check_default(s: &Value, path: &str, embedded: bool, out: &mut Vec<StatusCause>) {
    let Some(d) = s.get("default") else {
        return;
    };
    let dp = child(path, "default");
    let errs = super::validate::validate_value(s, d, &dp);
    if !errs.is_empty() {
        out.extend(errs);
        return;
    }
    let mut copy = d.clone();
    let pruned = super::pruning::prune_at(s, &mut copy, embedded);
    if !pruned.is_empty() {
        out.push(invalid(
            &dp,
            &show(d),
            &format!("must not have unknown fields, got {}", pruned.join(", ")),
        ));
    }
}

/// The root's `metadata` may only say it is an object and name `name` and/or
/// `generateName` (and carry a default, checked elsewhere): anything else would
/// restrict metadata, which the API server owns.
fn check_metadata(m: &Value, path: &str, out: &mut Vec<StatusCause>) {
    let ok = m.as_object().is_some_and(|o| {
        o.iter().all(|(k, v)| match k.as_str() {
            "type" | "default" => true,
            "properties" => v.as_object().is_some_and(|p| {
                let named =
                    p.contains_key("name") as usize + p.contains_key("generateName") as usize;
                named > 0 && named == p.len()
            }),
            _ => !is_set(v),
        })
    });
    if !ok {
        out.push(forbidden(
            path,
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
}
