//! Pruning of fields a structural schema does not specify.

use serde_json::Value;

use super::{MAX_DEPTH, child, index};

/// Removes fields the schema does not specify, honouring
/// `x-kubernetes-preserve-unknown-fields` and keeping `apiVersion`, `kind` and
/// `metadata` of the root and of embedded resources. Returns the paths of the removed
/// fields (such as `spec.foo` or `spec.items[0].bar`), for fieldValidation Warn/Strict.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    prune_at(schema, obj, true)
}

/// Prunes `obj`, a resource (keeping apiVersion/kind/metadata) when `resource` is set.
pub(crate) fn prune_at(schema: &Value, obj: &mut Value, resource: bool) -> Vec<String> {
    let mut pruned = Vec::new();
    walk(schema, obj, "", resource, 0, &mut pruned);
    pruned
}

fn walk(s: &Value, v: &mut Value, path: &str, resource: bool, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    let preserve = s
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let embedded = s
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    match v {
        Value::Object(map) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            let keep_all = preserve || matches!(additional, Some(Value::Bool(true)));
            let resource = resource || embedded;
            let mut remove = Vec::new();
            for (k, x) in map.iter_mut() {
                let p = child(path, k);
                if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    if let Some(ps) = props.and_then(|m| m.get(k)).filter(|_| k != "metadata") {
                        walk(ps, x, &p, false, depth + 1, out);
                    }
                    continue;
                }
                if let Some(ps) = props.and_then(|m| m.get(k)) {
                    walk(ps, x, &p, false, depth + 1, out);
                } else if let Some(a @ Value::Object(_)) = additional {
                    walk(a, x, &p, false, depth + 1, out);
                } else if keep_all {
                    // Unknown but preserved: nothing below is specified either.
                } else {
                    remove.push(k.clone());
                    out.push(p);
                }
            }
            for k in remove {
                map.remove(&k);
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, x) in items.iter_mut().enumerate() {
                    walk(is, x, &index(path, i), false, depth + 1, out);
                }
            }
        }
        _ => {}
    }
}
