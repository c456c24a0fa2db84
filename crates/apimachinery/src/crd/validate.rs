//! Validation of a custom object against its version's structural schema (OpenAPI v3
//! value checks, list types, embedded resources, metadata) and its CEL rules.

use std::collections::HashMap;
use std::sync::Arc;

use cel::Value as CelValue;
use regex::Regex;
use serde_json::Value;

use super::cel::{CelError, Compiled, PER_CALL_COST_LIMIT, PER_OBJECT_COST_BUDGET, Size, size_of};
use super::{
    MAX_DEPTH, child, duplicate, index, invalid, not_supported, required, show, type_name,
};
use crate::status::StatusCause;
use crate::validation::{NameRule, metadata_causes};

/// Validates a custom object on create: schema checks, metadata (except the name, which
/// is validated elsewhere) and CEL rules that do not refer to `oldSelf`.
pub fn validate(schema: &Value, obj: &Value) -> Vec<StatusCause> {
    run(schema, obj, None)
}

/// Validates a custom object on update: like [`validate`], and transition rules (those
/// referring to `oldSelf`) run wherever the old object has a value to compare with.
pub fn validate_update(schema: &Value, new: &Value, old: &Value) -> Vec<StatusCause> {
    run(schema, new, Some(old))
}

/// Schema checks first; CEL rules only when no type or unsupported-value error would
/// make them meaningless (as upstream, which then says the rules were not checked).
fn run(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<StatusCause> {
    let mut v = Validator::new(false);
    v.root(schema, obj);
    let mut causes = v.causes;
    let blocking = causes
        .iter()
        .any(|c| c.reason == "FieldValueTypeInvalid" || c.reason == "FieldValueNotSupported");
    if blocking {
        causes.push(invalid(
            "",
            "\"null\"",
            "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ));
    } else {
        let mut rules = Validator::new(true);
        rules.schema = false;
        rules.node(schema, obj, old, "", 0);
        causes.append(&mut rules.causes);
    }
    causes
}

/// Validates `value` against `schema` with schema checks only (no CEL, no metadata), with
/// causes under `path`. Used for defaults in CRDs.
pub(crate) fn validate_value(schema: &Value, value: &Value, path: &str) -> Vec<StatusCause> {
    let mut v = Validator::new(false);
    v.node(schema, value, None, path, 0);
    v.causes
}

/// True when `value` satisfies `schema` (schema checks only).
fn passes(schema: &Value, value: &Value, depth: usize) -> bool {
    let mut v = Validator::new(false);
    v.node(schema, value, None, "", depth);
    v.causes.is_empty()
}

/// One validation run: its causes, caches and CEL cost budget.
struct Validator {
    causes: Vec<StatusCause>,
    schema: bool,
    cel: bool,
    budget: u64,
    out_of_budget: bool,
    regexes: HashMap<String, Option<Regex>>,
    rules: HashMap<String, Result<Arc<Compiled>, CelError>>,
}

fn ty(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

/// go-openapi's `<path> in body` prefix (`.` stands for the root).
fn body(path: &str) -> String {
    let p = if path.is_empty() { "." } else { path };
    format!("{p} in body")
}

impl Validator {
    fn new(cel: bool) -> Self {
        Self {
            causes: Vec::new(),
            schema: true,
            cel,
            budget: PER_OBJECT_COST_BUDGET,
            out_of_budget: false,
            regexes: HashMap::new(),
            rules: HashMap::new(),
        }
    }

    /// The root: metadata as ObjectMeta, everything else by the schema.
    fn root(&mut self, schema: &Value, obj: &Value) {
        self.object_meta(obj, "");
        self.node(schema, obj, None, "", 0);
    }

    /// Metadata checks of a resource (root or embedded) at `path`.
    fn object_meta(&mut self, obj: &Value, path: &str) {
        match obj.get("metadata") {
            None | Some(Value::Null) => {}
            Some(Value::Object(_)) => {
                for mut c in metadata_causes(obj, NameRule::Subdomain) {
                    if c.field == "metadata.name" {
                        continue;
                    }
                    if !path.is_empty() {
                        c.field = child(path, &c.field);
                    }
                    self.causes.push(c);
                }
            }
            Some(m) => self.type_invalid(&child(path, "metadata"), m, "object"),
        }
    }

    fn type_invalid(&mut self, path: &str, v: &Value, want: &str) {
        let actual = type_name(v);
        self.causes.push(StatusCause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: {actual:?}: {} must be of type {want}: {actual:?}",
                body(path)
            ),
        ));
    }

    fn invalid_msg(&mut self, path: &str, v: &Value, msg: &str) {
        self.causes
            .push(invalid(path, &show(v), &format!("{} {msg}", body(path))));
    }

    /// Validates `v` at `path` against the schema node `s`; `old` is the correlated old
    /// value for transition rules.
    fn node(&mut self, s: &Value, v: &Value, old: Option<&Value>, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            self.causes.push(invalid(
                path,
                "\"object\"",
                &format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
            return;
        }
        if !s.is_object() {
            return;
        }
        let t = ty(s);
        if v.is_null() {
            if self.schema && !flag(s, "nullable") {
                if let Some(t) = t {
                    self.type_invalid(path, v, t);
                } else if flag(s, "x-kubernetes-int-or-string") {
                    self.type_invalid(path, v, "integer-or-string");
                }
            }
            return;
        }
        if self.schema && !self.value_checks(s, v, t, path) {
            return;
        }
        match v {
            Value::Array(items) => self.array(s, v, items, old, path, depth),
            Value::Object(_) => self.object(s, v, old, path, depth),
            _ => {}
        }
        if self.schema {
            self.junctors(s, v, path, depth);
        }
        if self.cel {
            self.rules(s, v, old, path);
        }
    }

    /// Type, format, enum and scalar checks; false when the type is wrong (nothing
    /// more is checked then).
    fn value_checks(&mut self, s: &Value, v: &Value, t: Option<&str>, path: &str) -> bool {
        if flag(s, "x-kubernetes-int-or-string") && !matches!(type_name(v), "integer" | "string") {
            self.type_invalid(path, v, "integer-or-string");
            return false;
        }
        if let Some(t) = t {
            let ok = match t {
                "integer" => type_name(v) == "integer",
                "number" => v.is_number(),
                "string" => v.is_string(),
                "boolean" => v.is_boolean(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                _ => true,
            };
            if !ok {
                self.type_invalid(path, v, t);
                return false;
            }
        }
        self.format(s, v, path);
        if let Some(Value::Array(allowed)) = s.get("enum")
            && !allowed.iter().any(|a| a == v)
        {
            let names: Vec<String> = allowed
                .iter()
                .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            self.causes.push(not_supported(path, &show(v), &refs));
        }
        match v {
            Value::Number(n) => self.number(s, v, n.as_f64().unwrap_or(0.0), path),
            Value::String(st) => self.string(s, v, st, path),
            _ => {}
        }
        true
    }

    fn format(&mut self, s: &Value, v: &Value, path: &str) {
        let Some(f) = s.get("format").and_then(Value::as_str) else {
            return;
        };
        let ok = match v {
            Value::Number(n) => match f {
                "int32" => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                "int64" => n.as_i64().is_some() || !(n.is_u64()),
                _ => true,
            },
            Value::String(st) => string_format_ok(f, st),
            _ => true,
        };
        if !ok {
            self.causes.push(StatusCause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: {}: {} must be of type {f}: {}",
                    show(v),
                    body(path),
                    show(v)
                ),
            ));
        }
    }

    fn number(&mut self, s: &Value, v: &Value, n: f64, path: &str) {
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let excl = flag(s, "exclusiveMaximum");
            if (excl && n >= max) || (!excl && n > max) {
                let m = show(&s["maximum"]);
                let word = if excl {
                    "less than"
                } else {
                    "less than or equal to"
                };
                self.invalid_msg(path, v, &format!("should be {word} {m}"));
            }
        }
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let excl = flag(s, "exclusiveMinimum");
            if (excl && n <= min) || (!excl && n < min) {
                let m = show(&s["minimum"]);
                let word = if excl {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                self.invalid_msg(path, v, &format!("should be {word} {m}"));
            }
        }
        if let Some(k) = s.get("multipleOf").and_then(Value::as_f64)
            && k > 0.0
        {
            let q = n / k;
            if (q - q.round()).abs() > 1e-9 {
                let m = show(&s["multipleOf"]);
                self.invalid_msg(path, v, &format!("should be a multiple of {m}"));
            }
        }
    }

    fn string(&mut self, s: &Value, v: &Value, st: &str, path: &str) {
        let chars = st.chars().count() as u64;
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            self.causes.push(StatusCause::new(
                "FieldValueTooLong",
                path,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            self.invalid_msg(path, v, &format!("should be at least {min} chars long"));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            let re = self
                .regexes
                .entry(p.to_owned())
                .or_insert_with(|| build_regex(p));
            if let Some(re) = re
                && !re.is_match(st)
            {
                self.invalid_msg(path, v, &format!("should match '{p}'"));
            }
        }
    }

    fn array(
        &mut self,
        s: &Value,
        v: &Value,
        items: &[Value],
        old: Option<&Value>,
        path: &str,
        depth: usize,
    ) {
        if self.schema {
            self.array_checks(s, v, items, path);
        }
        let list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
        let map_keys: Vec<&str> = if list_type == Some("map") {
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let Some(item_schema) = s.get("items") else {
            return;
        };
        let old_items = old.and_then(Value::as_array);
        for (i, it) in items.iter().enumerate() {
            let old_it = match old_items {
                Some(olds) if !map_keys.is_empty() => {
                    let k = map_key(it, &map_keys);
                    olds.iter().find(|o| map_key(o, &map_keys) == k)
                }
                _ => None,
            };
            self.node(item_schema, it, old_it, &index(path, i), depth + 1);
        }
    }

    /// Size and uniqueness checks of a list.
    fn array_checks(&mut self, s: &Value, v: &Value, items: &[Value], path: &str) {
        let n = items.len() as u64;
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && n > max
        {
            self.causes.push(StatusCause::new(
                "FieldValueTooMany",
                path,
                format!("Too many: {n}: must have at most {max} items"),
            ));
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && n < min
        {
            self.invalid_msg(path, v, &format!("should have at least {min} items"));
        }
        let list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
        if flag(s, "uniqueItems") || list_type == Some("set") {
            for (i, it) in items.iter().enumerate() {
                if items[..i].contains(it) {
                    self.causes.push(duplicate(&index(path, i), &show(it)));
                }
            }
        }
        let map_keys: Vec<&str> = if list_type == Some("map") {
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if !map_keys.is_empty() {
            let mut seen: Vec<Value> = Vec::new();
            for (i, it) in items.iter().enumerate() {
                let k = map_key(it, &map_keys);
                if seen.contains(&k) {
                    self.causes.push(duplicate(&index(path, i), &k.to_string()));
                } else {
                    seen.push(k);
                }
            }
        }
    }

    fn object(&mut self, s: &Value, v: &Value, old: Option<&Value>, path: &str, depth: usize) {
        let Value::Object(map) = v else {
            return;
        };
        if self.schema {
            self.object_checks(s, v, map, path);
        }
        let embedded = flag(s, "x-kubernetes-embedded-resource");
        let resource = embedded || path.is_empty();
        let props = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        for (k, x) in map {
            if resource && k == "metadata" {
                continue;
            }
            let sub_old = old.and_then(|o| o.get(k));
            let p = child(path, k);
            if let Some(ps) = props.and_then(|p| p.get(k)) {
                self.node(ps, x, sub_old, &p, depth + 1);
            } else {
                match additional {
                    Some(a @ Value::Object(_)) => self.node(a, x, sub_old, &p, depth + 1),
                    Some(Value::Bool(false)) if self.schema => {
                        self.invalid_msg(&p, x, "is a forbidden property");
                    }
                    _ => {}
                }
            }
        }
    }

    /// Property counts, required fields and embedded-resource checks of an object.
    fn object_checks(
        &mut self,
        s: &Value,
        v: &Value,
        map: &serde_json::Map<String, Value>,
        path: &str,
    ) {
        let n = map.len() as u64;
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
            && n > max
        {
            self.causes.push(StatusCause::new(
                "FieldValueTooMany",
                path,
                format!("Too many: {n}: must have at most {max} items"),
            ));
        }
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
            && n < min
        {
            self.invalid_msg(path, v, &format!("should have at least {min} properties"));
        }
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    self.causes.push(required(&child(path, r), ""));
                }
            }
        }
        let embedded = flag(s, "x-kubernetes-embedded-resource");
        if embedded {
            for k in ["apiVersion", "kind"] {
                match map.get(k) {
                    Some(Value::String(x)) if !x.is_empty() => {}
                    _ => self
                        .causes
                        .push(required(&child(path, k), "must not be empty")),
                }
            }
            self.object_meta(v, path);
        }
    }

    /// allOf, anyOf, oneOf and not: value validations without structure.
    fn junctors(&mut self, s: &Value, v: &Value, path: &str, depth: usize) {
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                let mut inner = Validator::new(false);
                inner.node(sub, v, None, path, depth + 1);
                self.causes.append(&mut inner.causes);
            }
        }
        if let Some(Value::Array(any)) = s.get("anyOf")
            && !any.is_empty()
            && !any.iter().any(|sub| passes(sub, v, depth + 1))
        {
            self.invalid_msg(path, v, "must validate at least one schema (anyOf)");
        }
        if let Some(Value::Array(one)) = s.get("oneOf")
            && !one.is_empty()
            && one.iter().filter(|sub| passes(sub, v, depth + 1)).count() != 1
        {
            self.invalid_msg(path, v, "must validate one and only one schema (oneOf)");
        }
        if let Some(not) = s.get("not")
            && not.is_object()
            && passes(not, v, depth + 1)
        {
            self.invalid_msg(path, v, "must not validate the schema (not)");
        }
    }

    fn compiled(&mut self, rule: &str) -> Result<Arc<Compiled>, CelError> {
        self.rules
            .entry(rule.to_owned())
            .or_insert_with(|| super::cel::compile(rule).map(Arc::new))
            .clone()
    }

    /// Charges the budget for running `c` on data of `size`; false when out of budget.
    fn charge(&mut self, c: &Compiled, size: Size) -> bool {
        let cost = c.estimate(size);
        if cost > PER_CALL_COST_LIMIT || cost > self.budget {
            self.out_of_budget = true;
            return false;
        }
        self.budget -= cost;
        true
    }

    /// Runs the node's `x-kubernetes-validations`.
    fn rules(&mut self, s: &Value, v: &Value, old: Option<&Value>, path: &str) {
        let Some(Value::Array(rules)) = s.get("x-kubernetes-validations") else {
            return;
        };
        let type_shown = format!("{:?}", ty(s).unwrap_or_else(|| type_name(v)));
        // At the root, rules see only metadata.name and metadata.generateName.
        let (view, old_view);
        let (v, old) = if path.is_empty() {
            view = root_view(v);
            old_view = old.map(root_view);
            (&view, old_view.as_ref())
        } else {
            (v, old)
        };
        let size = old.map_or(size_of(v), |o| size_of(v).plus(size_of(o)));
        for r in rules {
            if self.out_of_budget {
                return;
            }
            let Some(text) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let c = match self.compiled(text) {
                Ok(c) => c,
                Err(e) => {
                    self.causes.push(invalid(path, &type_shown, &e.to_string()));
                    continue;
                }
            };
            if c.uses_old_self && old.is_none() {
                continue;
            }
            if !self.charge(&c, size) {
                self.causes.push(invalid(
                    path,
                    &type_shown,
                    &CelError::CostExceeded.to_string(),
                ));
                return;
            }
            let field = match r.get("fieldPath").and_then(Value::as_str) {
                Some(fp) if fp.starts_with('.') => format!("{path}{fp}"),
                _ => path.to_owned(),
            };
            let field = field.strip_prefix('.').unwrap_or(&field).to_owned();
            match c.eval(v, s, if c.uses_old_self { old } else { None }) {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => {
                    let msg = self.message(r, text, v, s, size);
                    let reason = r
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("FieldValueInvalid");
                    self.causes
                        .push(rule_cause(reason, &field, &type_shown, &msg));
                }
                Ok(_) => {
                    self.causes
                        .push(invalid(&field, &type_shown, &CelError::NotBool.to_string()))
                }
                Err(e) => self.causes.push(invalid(
                    &field,
                    &type_shown,
                    &format!("failed to evaluate rule {text}: {e}"),
                )),
            }
        }
    }

    /// The message of a failed rule: its messageExpression's result if that yields a
    /// non-empty string, else its message, else `failed rule: <rule>`.
    fn message(&mut self, r: &Value, text: &str, v: &Value, s: &Value, size: Size) -> String {
        if let Some(expr) = r.get("messageExpression").and_then(Value::as_str)
            && let Ok(c) = self.compiled(expr)
            && !c.uses_old_self
            && self.charge(&c, size)
            && let Ok(CelValue::String(m)) = c.eval(v, s, None)
            && !m.trim().is_empty()
            && !m.contains('\n')
        {
            return m.trim().to_owned();
        }
        match r.get("message").and_then(Value::as_str) {
            Some(m) if !m.trim().is_empty() => m.trim().to_owned(),
            _ => format!("failed rule: {}", text.trim()),
        }
    }
}

/// A root object as root rules see it: metadata reduced to name and generateName.
fn root_view(v: &Value) -> Value {
    let mut view = v.clone();
    if let Some(Value::Object(meta)) = view.get_mut("metadata") {
        meta.retain(|k, _| k == "name" || k == "generateName");
    }
    view
}

/// The cause of a failed rule, shaped by its reason.
fn rule_cause(reason: &str, field: &str, shown: &str, msg: &str) -> StatusCause {
    match reason {
        "FieldValueForbidden" => super::forbidden(field, msg),
        "FieldValueRequired" => required(field, msg),
        "FieldValueDuplicate" => StatusCause::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {shown}: {msg}"),
        ),
        _ => invalid(field, shown, msg),
    }
}

/// The key fields of a map-list entry, as an object.
fn map_key(item: &Value, keys: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for k in keys {
        m.insert(
            (*k).to_owned(),
            item.get(*k).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(m)
}

/// Compiles a schema pattern with a size limit; `None` when it does not compile.
pub(crate) fn build_regex(p: &str) -> Option<Regex> {
    regex::RegexBuilder::new(p)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .ok()
}

/// Checks the string formats Kubernetes knows; unknown formats pass.
fn string_format_ok(f: &str, s: &str) -> bool {
    match f {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uuid" => is_uuid(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let max = if ip.parse::<std::net::Ipv4Addr>().is_ok() {
                32
            } else if ip.parse::<std::net::Ipv6Addr>().is_ok() {
                128
            } else {
                return false;
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        "hostname" => !s.is_empty() && crate::validation::dns1123_subdomain(s).is_empty(),
        _ => true,
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
