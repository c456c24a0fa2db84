//! Strategic merge patch, the patch type kubectl sends for client-side apply, `patch`,
//! `set image` and `rollout restart`: maps merge recursively, lists of objects merge by
//! their merge key, and `$`-directives delete, replace, reorder or retain elements. The
//! schema (patch strategies and merge keys) decides how each list merges.

use serde_json::{Map, Value};

use super::PatchError;
use crate::schema::Node;

/// What strategic merge patch needs to know about a field's schema.
pub trait PatchSchema: Sized {
    /// The schema of property `name` of this object, if known.
    fn property(&self, name: &str) -> Option<Self>;
    /// The schema of the items of this list, if known.
    fn items(&self) -> Option<Self>;
    /// The schema of the values of this map (additionalProperties), if known.
    fn additional_properties(&self) -> Option<Self>;
    /// `x-kubernetes-patch-strategy`, e.g. "merge", "retainKeys", "merge,retainKeys".
    fn patch_strategy(&self) -> Option<&str>;
    /// `x-kubernetes-patch-merge-key`.
    fn patch_merge_key(&self) -> Option<&str>;
}

impl PatchSchema for Node<'_> {
    fn property(&self, name: &str) -> Option<Self> {
        Node::property(self, name)
    }
    fn items(&self) -> Option<Self> {
        Node::items(self)
    }
    fn additional_properties(&self) -> Option<Self> {
        Node::additional_properties(self)
    }
    fn patch_strategy(&self) -> Option<&str> {
        Node::patch_strategy(self)
    }
    fn patch_merge_key(&self) -> Option<&str> {
        Node::patch_merge_key(self)
    }
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to a copy of `original`. Without a schema, lists are
/// replaced and maps merged (JSON merge patch semantics plus the map directives).
pub fn apply<S: PatchSchema>(
    original: &Value,
    patch: &Value,
    schema: Option<S>,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Invalid(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    Ok(merge_map(original, patch, schema.as_ref(), 0)?
        .map(Value::Object)
        .unwrap_or_else(|| Value::Object(Map::new())))
}

/// Deepest nesting a patch may have (it is untrusted input).
const MAX_DEPTH: usize = 128;

fn strategy_has<S: PatchSchema>(schema: Option<&S>, word: &str) -> bool {
    schema
        .and_then(|s| s.patch_strategy())
        .is_some_and(|st| st.split(',').any(|w| w.trim() == word))
}

fn child<S: PatchSchema>(schema: Option<&S>, key: &str) -> Option<S> {
    let s = schema?;
    s.property(key).or_else(|| s.additional_properties())
}

/// Merges `patch` into `original`; `None` means the map itself is deleted.
fn merge_map<S: PatchSchema>(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<&S>,
    depth: usize,
) -> Result<Option<Map<String, Value>>, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError::Invalid("patch is nested too deeply".into()));
    }
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(Value::String(d)) if d == "replace" => {
            let mut replaced = Map::new();
            for (k, v) in patch {
                if k != PATCH {
                    replaced.insert(
                        k.clone(),
                        strip(
                            v,
                            schema.and_then(|s| child(Some(s), k)).as_ref(),
                            depth + 1,
                        )?,
                    );
                }
            }
            return Ok(Some(replaced));
        }
        Some(other) => {
            return Err(PatchError::Invalid(format!(
                "unknown patch type {other} in $patch"
            )));
        }
    }
    let retain = match patch.get(RETAIN_KEYS) {
        None => None,
        Some(Value::Array(keys)) => Some(
            keys.iter()
                .map(|k| k.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    PatchError::Invalid("$retainKeys must be a list of strings".into())
                })?,
        ),
        Some(_) => {
            return Err(PatchError::Invalid(
                "$retainKeys must be a list of strings".into(),
            ));
        }
    };
    // Primitive-list deletions first, so a plain list patch of the same field still merges.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(remove) = value else {
                return Err(PatchError::Invalid(format!("{key} must be a list")));
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
        }
    }
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS || key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            continue;
        }
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            if !value.is_array() {
                return Err(PatchError::Invalid(format!("{key} must be a list")));
            }
            // Applied below, once the list itself has merged; a lone order directive still
            // reorders the existing list.
            if !patch.contains_key(field) {
                let field_schema = child(schema, field);
                if let Some(Value::Array(list)) = original.get_mut(field) {
                    let merge_key = field_schema
                        .as_ref()
                        .and_then(|s| s.patch_merge_key())
                        .map(str::to_owned);
                    reorder(list, value, merge_key.as_deref())?;
                }
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(PatchError::Invalid(format!("unknown directive {key:?}")));
        }
        let field_schema = child(schema, key);
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(p) => {
                let base = match original.remove(key) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if let Some(merged) = merge_map(base, p, field_schema.as_ref(), depth + 1)? {
                    original.insert(key.clone(), Value::Object(merged));
                }
            }
            Value::Array(p) => {
                let base = match original.remove(key) {
                    Some(Value::Array(l)) => l,
                    _ => Vec::new(),
                };
                let mut merged = merge_list(base, p, field_schema.as_ref(), depth + 1)?;
                if let Some(order) = patch.get(&format!("{SET_ELEMENT_ORDER}{key}")) {
                    let merge_key = field_schema
                        .as_ref()
                        .and_then(|s| s.patch_merge_key())
                        .map(str::to_owned);
                    reorder(&mut merged, order, merge_key.as_deref())?;
                }
                original.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.clone(), scalar.clone());
            }
        }
    }
    if let Some(keep) = retain {
        original.retain(|k, _| keep.iter().any(|r| r == k));
    }
    Ok(Some(original))
}

/// Merges a list by the field's strategy: by merge key for lists of objects with strategy
/// `merge`, as a set union for primitives with strategy `merge`, else replaced.
fn merge_list<S: PatchSchema>(
    original: Vec<Value>,
    patch: &[Value],
    schema: Option<&S>,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    if depth > MAX_DEPTH {
        return Err(PatchError::Invalid("patch is nested too deeply".into()));
    }
    let items = schema.and_then(|s| s.items());
    // `{"$patch": "replace"}` as an element replaces the whole list.
    let replace = patch
        .iter()
        .any(|p| p.get(PATCH).and_then(Value::as_str) == Some("replace"));
    if replace || !strategy_has(schema, "merge") {
        return patch
            .iter()
            .filter(|p| !(p.get(PATCH).is_some() && p.as_object().is_some_and(|m| m.len() == 1)))
            .map(|p| strip(p, items.as_ref(), depth + 1))
            .collect();
    }
    let merge_key = schema.and_then(|s| s.patch_merge_key());
    let Some(merge_key) = merge_key else {
        // A list of primitives: union, keeping the original order and appending new values.
        let mut merged = original;
        for p in patch {
            if p.is_object() {
                return Err(PatchError::Invalid(
                    "a list of primitives cannot contain objects".into(),
                ));
            }
            if !merged.contains(p) {
                merged.push(p.clone());
            }
        }
        return Ok(merged);
    };
    let mut merged = original;
    for p in patch {
        let Value::Object(pm) = p else {
            return Err(PatchError::Invalid(format!(
                "list elements merged by {merge_key:?} must be objects"
            )));
        };
        let key_value = pm.get(merge_key).ok_or_else(|| {
            PatchError::Invalid(format!(
                "map: {p} does not contain declared merge key: {merge_key}"
            ))
        })?;
        let position = merged
            .iter()
            .position(|o| o.get(merge_key) == Some(key_value));
        match pm.get(PATCH).and_then(Value::as_str) {
            Some("delete") => {
                merged.retain(|o| o.get(merge_key) != Some(key_value));
            }
            Some("merge") | None => match position {
                Some(i) => {
                    let base = match merged[i].take() {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    match merge_map(base, pm, items.as_ref(), depth + 1)? {
                        Some(m) => merged[i] = Value::Object(m),
                        None => {
                            merged.remove(i);
                        }
                    }
                }
                None => {
                    if let Some(m) = merge_map(Map::new(), pm, items.as_ref(), depth + 1)? {
                        merged.push(Value::Object(m));
                    }
                }
            },
            Some(other) => {
                return Err(PatchError::Invalid(format!(
                    "unknown patch type {other:?} in a list element"
                )));
            }
        }
    }
    Ok(merged)
}

/// Orders `list` as `$setElementOrder` says: elements named in the order come first, in
/// that order; any others (added by the server, unknown to the client) follow in their
/// current order.
fn reorder(
    list: &mut Vec<Value>,
    order: &Value,
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    let Value::Array(order) = order else {
        return Err(PatchError::Invalid(
            "$setElementOrder must be a list".into(),
        ));
    };
    let identity = |v: &Value| -> Value {
        match merge_key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(identity).collect();
    let mut items: Vec<(usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, v)| {
            let rank = wanted
                .iter()
                .position(|w| *w == identity(&v))
                .unwrap_or(wanted.len() + i);
            (rank, v)
        })
        .collect();
    items.sort_by_key(|(rank, _)| *rank);
    list.extend(items.into_iter().map(|(_, v)| v));
    Ok(())
}

/// A patch value with its directives processed against nothing (for new fields).
fn strip<S: PatchSchema>(
    value: &Value,
    schema: Option<&S>,
    depth: usize,
) -> Result<Value, PatchError> {
    match value {
        Value::Object(m) => Ok(Value::Object(
            merge_map(Map::new(), m, schema, depth)?.unwrap_or_default(),
        )),
        Value::Array(l) => Ok(Value::Array(merge_list(Vec::new(), l, schema, depth)?)),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_schema() -> Option<Node<'static>> {
        crate::schema::builtin().node("io.k8s.api.apps.v1.Deployment")
    }

    fn check(original: Value, patch: Value, expected: Value) {
        let got = apply(&original, &patch, pod_schema()).unwrap_or_else(|e| panic!("{patch}: {e}"));
        assert_eq!(got, expected, "patch {patch}");
    }

    fn containers(list: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": list}}}})
    }

    #[test]
    fn kubectl_client_side_apply_patch() {
        // Containers a and b exist; the applied config drops b, adds c, changes a.
        let original = containers(json!([
            {"name": "a", "image": "img:1", "ports": [{"containerPort": 80}, {"containerPort": 8080}],
             "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "img:1"}
        ]));
        let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
        "containers": [
            {"image": "img:3", "name": "c"},
            {"$setElementOrder/env": [{"name": "Y"}], "$setElementOrder/ports": [{"containerPort": 8080}],
             "env": [{"$patch": "delete", "name": "X"}], "image": "img:2", "name": "a",
             "ports": [{"containerPort": 8080}, {"$patch": "delete", "containerPort": 80}]},
            {"$patch": "delete", "name": "b"}
        ]}}}});
        check(
            original,
            patch,
            containers(json!([
                {"image": "img:3", "name": "c"},
                {"name": "a", "image": "img:2", "ports": [{"containerPort": 8080}], "env": [{"name": "Y", "value": "2"}]}
            ])),
        );
    }

    #[test]
    fn set_image_and_restart() {
        let original =
            containers(json!([{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]));
        check(
            original.clone(),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"image": "x:2", "name": "a"}]}}}}),
            containers(json!([{"name": "a", "image": "x:2"}, {"name": "b", "image": "y:1"}])),
        );
        let mut restarted = original.clone();
        restarted["spec"]["template"]["metadata"] =
            json!({"annotations": {"kubectl.kubernetes.io/restartedAt": "t"}});
        check(
            original,
            json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "t"}}}}}),
            restarted,
        );
    }

    #[test]
    fn maps_nulls_and_map_directives() {
        check(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"b": null, "c": "3"}}}),
            json!({"metadata": {"labels": {"a": "1", "c": "3"}}}),
        );
        check(
            json!({"metadata": {"labels": {"a": "1"}}}),
            json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}}),
            json!({"metadata": {"labels": {"z": "9"}}}),
        );
        check(
            json!({"metadata": {"labels": {"a": "1"}, "name": "n"}}),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
            json!({"metadata": {"name": "n"}}),
        );
        // Atomic lists (no merge strategy) are replaced.
        check(
            containers(json!([{"name": "a", "args": ["1", "2"]}])),
            containers(json!([{"name": "a", "args": ["3"]}])),
            containers(json!([{"name": "a", "args": ["3"]}])),
        );
    }

    #[test]
    fn retain_keys_and_primitive_lists() {
        // Deployment strategy uses retainKeys: switching type drops rollingUpdate.
        check(
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        // Finalizers are a merged primitive list.
        check(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        );
        check(
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            json!({"metadata": {"finalizers": ["a", "c"]}}),
        );
        check(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"]}}),
            json!({"metadata": {"finalizers": ["b", "a"]}}),
        );
        // A list element `$patch: replace` replaces the whole list.
        check(
            containers(json!([{"name": "a"}, {"name": "b"}])),
            containers(json!([{"name": "z"}, {"$patch": "replace"}])),
            containers(json!([{"name": "z"}])),
        );
    }

    #[test]
    fn errors() {
        let bad = |patch: Value| apply(&json!({}), &patch, pod_schema()).is_err();
        assert!(bad(json!([1])));
        assert!(bad(json!({"$patch": "explode"})));
        assert!(bad(json!({"$bogus": 1})));
        assert!(bad(containers(json!([{"image": "no-name"}]))));
        assert!(bad(json!({"metadata": {"$retainKeys": "x"}})));
        let mut deep = json!({});
        for _ in 0..300 {
            deep = json!({"a": deep});
        }
        assert!(bad(deep));
    }

    #[test]
    fn without_schema_lists_replace() {
        let got = apply::<Node<'_>>(
            &json!({"a": [1, 2], "m": {"x": 1}}),
            &json!({"a": [3], "m": {"y": 2}}),
            None,
        );
        assert_eq!(got, Ok(json!({"a": [3], "m": {"x": 1, "y": 2}})));
    }
}
