//! Defaulting of custom objects from their structural schema's `default`s.

use serde_json::Value;

use super::MAX_DEPTH;

/// Fills in `default`s of the schema wherever a field is absent (or null where the
/// field is not nullable), then descends into the object, including into filled-in values.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    walk(schema, obj, 0);
}

fn walk(s: &Value, v: &mut Value, depth: usize) {
    if depth > MAX_DEPTH || !s.is_object() {
        return;
    }
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = s.get("properties") {
                for (k, ps) in props {
                    let Some(d) = ps.get("default") else {
                        continue;
                    };
                    let nullable = ps.get("nullable").and_then(Value::as_bool) == Some(true);
                    match map.get(k) {
                        None => {
                            map.insert(k.clone(), d.clone());
                        }
                        Some(Value::Null) if !nullable && !d.is_null() => {
                            map.insert(k.clone(), d.clone());
                        }
                        Some(_) => {}
                    }
                }
                for (k, x) in map.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        walk(ps, x, depth + 1);
                    }
                }
            }
            if let Some(a @ Value::Object(_)) = s.get("additionalProperties") {
                let props = s.get("properties").and_then(Value::as_object);
                for (k, x) in map.iter_mut() {
                    if props.is_some_and(|p| p.contains_key(k)) {
                        continue;
                    }
                    if x.is_null()
                        && let Some(d) = a.get("default")
                        && a.get("nullable").and_then(Value::as_bool) != Some(true)
                    {
                        *x = d.clone();
                    }
                    walk(a, x, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for x in items.iter_mut() {
                    if x.is_null()
                        && let Some(d) = is.get("default")
                        && is.get("nullable").and_then(Value::as_bool) != Some(true)
                    {
                        *x = d.clone();
                    }
                    walk(is, x, depth + 1);
                }
            }
        }
        _ => {}
    }
}
