//! Strategic merge patch (`application/strategic-merge-patch+json`), the patch kubectl sends
//! for client-side apply, `patch`, `set image` and `rollout restart`. Maps merge
//! recursively and `null` deletes a key; lists whose schema says `merge` merge by their
//! merge key (or as a set, for primitives); other lists are replaced. The directives
//! `$patch`, `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`
//! delete, replace, retain and reorder, and never appear in the result.
//!
//! Semantics follow upstream's `k8s.io/apimachinery/pkg/util/strategicpatch` as applied by
//! the API server, including its ordering rules: without `$setElementOrder`, items named
//! by the patch take the patch's order and items new to the list go before the live items
//! they cannot be placed against (as upstream does; kustomize documents this as
//! "prepend"). Where upstream keeps a directive or a `null` in new content, this
//! implementation drops it, so directives never leak into stored objects.

use serde_json::{Map, Value};

use super::PatchError;
use super::merge::kind_of;
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

/// Applies a strategic merge patch to a copy of `original`, driven by `schema` (the
/// schema of the whole object). Without a schema every list is replaced and maps merge:
/// JSON merge patch semantics plus the map directives. Kinds that have no patch metadata
/// at all (custom resources) should refuse strategic merge patch with [`unsupported`]
/// rather than call this, as upstream does.
pub fn apply<S: PatchSchema>(
    original: &Value,
    patch: &Value,
    schema: Option<S>,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Invalid(format!(
            "a strategic merge patch must be a JSON object, not {}",
            kind_of(patch)
        )));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::Invalid(format!(
                "the object to patch must be a JSON object, not {}",
                kind_of(other)
            )));
        }
    };
    merge_map(original, patch, schema.as_ref(), 0).map(Value::Object)
}

/// The error for a strategic merge patch on a kind without patch metadata (`what` names
/// the resource, e.g. `widgets.example.com`); its HTTP status is 415.
pub fn unsupported(what: &str) -> PatchError {
    PatchError::StrategicMergePatchUnsupported(what.to_owned())
}

/// The deepest nesting of maps and lists a patch may have (it is untrusted input).
pub const MAX_DEPTH: usize = 128;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// The words of `x-kubernetes-patch-strategy` that change how a field merges.
#[derive(Clone, Copy, Default)]
struct Strategy {
    merge: bool,
    replace: bool,
}

fn strategy_of<S: PatchSchema>(schema: Option<&S>) -> Strategy {
    let mut strategy = Strategy::default();
    for word in schema
        .and_then(|s| s.patch_strategy())
        .unwrap_or_default()
        .split(',')
    {
        match word.trim() {
            "merge" => strategy.merge = true,
            "replace" => strategy.replace = true,
            _ => {}
        }
    }
    strategy
}

/// The schema of the value under `key` of a map described by `schema`.
fn field_schema<S: PatchSchema>(schema: Option<&S>, key: &str) -> Option<S> {
    let schema = schema?;
    schema
        .property(key)
        .or_else(|| schema.additional_properties())
}

fn merge_key_of<S: PatchSchema>(schema: Option<&S>) -> Option<String> {
    schema
        .and_then(|s| s.patch_merge_key())
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

fn check_depth(depth: usize) -> Result<(), PatchError> {
    if depth > MAX_DEPTH {
        Err(PatchError::TooDeep(MAX_DEPTH))
    } else {
        Ok(())
    }
}

/// The `$patch` value of a patch map, if any.
fn patch_directive(map: &Map<String, Value>) -> Option<&Value> {
    map.get(PATCH)
}

/// True when `value` is a map carrying `$patch: delete`.
fn is_delete(value: &Value) -> bool {
    value
        .as_object()
        .and_then(patch_directive)
        .and_then(Value::as_str)
        == Some("delete")
}

/// Merges `patch` into `original` (a map described by `schema`).
fn merge_map<S: PatchSchema>(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<&S>,
    depth: usize,
) -> Result<Map<String, Value>, PatchError> {
    check_depth(depth)?;
    match patch_directive(patch) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        // The whole map is deleted: what remains is an empty map.
        Some(Value::String(d)) if d == "delete" => return Ok(Map::new()),
        Some(Value::String(d)) if d == "replace" => {
            let mut content = patch.clone();
            content.remove(PATCH);
            return merge_map(Map::new(), &content, schema, depth + 1);
        }
        Some(other) => {
            return Err(PatchError::BadPatchType {
                value: other.to_string(),
                context: "a map",
            });
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        apply_retain_keys(&mut original, patch, retain)?;
    }

    // Lists with an explicit order merge first, together with their order.
    let mut ordered: Vec<&str> = Vec::new();
    for (key, order) in patch {
        let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        if field.is_empty() {
            return Err(PatchError::UnknownDirective(key.clone()));
        }
        let Value::Array(order) = order else {
            return Err(PatchError::BadDirectiveValue {
                directive: key.clone(),
                expected: "a list",
            });
        };
        merge_ordered_list(&mut original, patch, field, order, schema, depth)?;
        ordered.push(field);
    }

    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if ordered.contains(&key.as_str()) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(remove) = value else {
                return Err(PatchError::BadDirectiveValue {
                    directive: key.clone(),
                    expected: "a list",
                });
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|item| !remove.iter().any(|r| same(r, item)));
            }
            continue;
        }
        let sub_schema = field_schema(schema, key);
        if key.starts_with('$') && sub_schema.is_none() {
            return Err(PatchError::UnknownDirective(key.clone()));
        }
        if value.is_null() || (is_delete(value) && !original.get(key).is_some_and(Value::is_object))
        {
            // `null` deletes the field; so does `$patch: delete` where there is no map.
            original.shift_remove(key);
            continue;
        }
        let merged = match (original.get_mut(key), value) {
            (Some(Value::Object(base)), Value::Object(p)) => {
                if strategy_of(sub_schema.as_ref()).replace {
                    build(value, sub_schema.as_ref(), key, depth + 1)?
                } else {
                    let base = std::mem::take(base);
                    Value::Object(merge_map(base, p, sub_schema.as_ref(), depth + 1)?)
                }
            }
            (Some(Value::Array(base)), Value::Array(p)) => {
                let base = std::mem::take(base);
                Value::Array(merge_list(base, p, sub_schema.as_ref(), key, depth + 1)?)
            }
            // New fields, changed types and scalars take the patch value.
            _ => build(value, sub_schema.as_ref(), key, depth + 1)?,
        };
        original.insert(key.clone(), merged);
    }
    Ok(original)
}

/// `$retainKeys`: fields of `original` not listed are cleared; every field the patch sets
/// must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
) -> Result<(), PatchError> {
    let bad = || PatchError::BadDirectiveValue {
        directive: RETAIN_KEYS.to_owned(),
        expected: "a list of field names",
    };
    let Value::Array(retain) = retain else {
        return Err(bad());
    };
    let retain: Vec<&str> = retain
        .iter()
        .map(|k| k.as_str().ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    for (key, value) in patch {
        // Directives are checked where they are applied.
        if !key.starts_with('$') && !value.is_null() && !retain.contains(&key.as_str()) {
            return Err(PatchError::NotInRetainKeys { field: key.clone() });
        }
    }
    original.retain(|k, _| retain.contains(&k.as_str()));
    Ok(())
}

/// Merges list `field` (if the patch has it) and then orders it as
/// `$setElementOrder/<field>` says.
fn merge_ordered_list<S: PatchSchema>(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    field: &str,
    order: &[Value],
    schema: Option<&S>,
    depth: usize,
) -> Result<(), PatchError> {
    let sub_schema = field_schema(schema, field);
    let merge_key = merge_key_of(sub_schema.as_ref());
    let patch_list = match patch.get(field) {
        None => None,
        Some(Value::Array(list)) => Some(list.as_slice()),
        Some(_) => {
            return Err(PatchError::BadDirectiveValue {
                directive: format!("{field} (ordered by {SET_ELEMENT_ORDER}{field})"),
                expected: "a list",
            });
        }
    };
    if let Some(key) = &merge_key {
        for item in order {
            identity(item, Some(key))?;
        }
    }
    if let Some(list) = patch_list {
        check_order(field, list, order, merge_key.as_deref())?;
    }
    let server = match original.get(field) {
        Some(Value::Array(list)) => Some(list.clone()),
        _ => None,
    };
    let merged = match (&server, patch_list) {
        (Some(live), Some(list)) => {
            merge_list(live.clone(), list, sub_schema.as_ref(), field, depth + 1)?
        }
        (None, Some(list)) => merge_list(Vec::new(), list, sub_schema.as_ref(), field, depth + 1)?,
        (Some(live), None) => live.clone(),
        (None, None) => return Ok(()),
    };
    let server = server.unwrap_or_default();
    let ordered = sort_by_order(merged, order, &server, merge_key.as_deref())?;
    original.insert(field.to_owned(), Value::Array(ordered));
    Ok(())
}

/// The patch's own elements (deletions and other directive elements aside) must appear
/// in `$setElementOrder` in the same relative order.
fn check_order(
    field: &str,
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    let order_ids: Vec<&Value> = order
        .iter()
        .map(|o| identity(o, merge_key))
        .collect::<Result<_, _>>()?;
    let mut position = 0;
    for item in patch {
        if item.as_object().is_some_and(|m| m.contains_key(PATCH)) {
            continue;
        }
        let id = identity(item, merge_key)?;
        let found = order_ids[position..].iter().position(|o| same(o, id));
        match found {
            Some(offset) => position += offset + 1,
            None => {
                return Err(PatchError::OrderMismatch {
                    field: field.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Merges list `field` by its schema's strategy.
fn merge_list<S: PatchSchema>(
    original: Vec<Value>,
    patch: &[Value],
    schema: Option<&S>,
    field: &str,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    check_depth(depth)?;
    let items = schema.and_then(|s| s.items());
    if !strategy_of(schema).merge {
        return replace_list(patch, items.as_ref(), field, depth);
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let elements_are_maps = element_kind(field, &original, patch)?;
    if !elements_are_maps {
        return Ok(merge_primitives(original, patch));
    }
    let Some(merge_key) = merge_key_of(schema) else {
        return Err(PatchError::UnmergeableList {
            field: field.to_owned(),
            reason: "its schema declares no merge key",
        });
    };
    let merge_key = merge_key.as_str();

    // Directive elements first: deletions, and a replacement of the whole list.
    let mut server = original;
    let mut plain: Vec<&Map<String, Value>> = Vec::new();
    let mut replace = false;
    // The element check above makes every element a map.
    for map in patch.iter().filter_map(Value::as_object) {
        match patch_directive(map) {
            None => plain.push(map),
            Some(Value::String(d)) if d == "merge" => plain.push(map),
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "delete" => {
                let id = map
                    .get(merge_key)
                    .ok_or_else(|| PatchError::MissingMergeKey {
                        merge_key: merge_key.to_owned(),
                        element: Value::Object(map.clone()).to_string(),
                    })?;
                server.retain(|live| live.get(merge_key).is_none_or(|v| !same(v, id)));
            }
            Some(other) => {
                return Err(PatchError::BadPatchType {
                    value: other.to_string(),
                    context: "a list element",
                });
            }
        }
    }
    if replace {
        return plain
            .into_iter()
            .map(|map| build_map_without_directive(map, items.as_ref(), depth))
            .collect();
    }

    let mut merged = server.clone();
    for map in &plain {
        let id = map
            .get(merge_key)
            .ok_or_else(|| PatchError::MissingMergeKey {
                merge_key: merge_key.to_owned(),
                element: Value::Object((*map).clone()).to_string(),
            })?;
        let position = merged
            .iter()
            .position(|live| live.get(merge_key).is_some_and(|v| same(v, id)));
        match position {
            Some(i) => {
                let base = match merged[i].take() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                merged[i] = Value::Object(merge_map(base, map, items.as_ref(), depth + 1)?);
            }
            None => merged.push(Value::Object(merge_map(
                Map::new(),
                map,
                items.as_ref(),
                depth + 1,
            )?)),
        }
    }
    let order: Vec<Value> = plain.iter().map(|m| Value::Object((*m).clone())).collect();
    sort_by_order(merged, &order, &server, Some(merge_key))
}

/// A replaced list: the patch's elements, elements carrying `$patch` dropped and
/// directives inside the others processed.
fn replace_list<S: PatchSchema>(
    patch: &[Value],
    items: Option<&S>,
    field: &str,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    patch
        .iter()
        .filter(|item| !item.as_object().is_some_and(|m| m.contains_key(PATCH)))
        .map(|item| build(item, items, field, depth + 1))
        .collect()
}

fn build_map_without_directive<S: PatchSchema>(
    map: &Map<String, Value>,
    items: Option<&S>,
    depth: usize,
) -> Result<Value, PatchError> {
    let mut content = map.clone();
    content.remove(PATCH);
    merge_map(Map::new(), &content, items, depth + 1).map(Value::Object)
}

/// A union of primitive lists: live values, then new ones, duplicates removed, then
/// ordered as the patch names them.
fn merge_primitives(original: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for item in original.iter().chain(patch) {
        if !merged.iter().any(|m| same(m, item)) {
            merged.push(item.clone());
        }
    }
    let server: Vec<Value> = merged
        .iter()
        .filter(|m| original.iter().any(|o| same(o, m)))
        .cloned()
        .collect();
    // Primitives have no merge key, so ordering cannot fail.
    sort_by_order(merged.clone(), patch, &server, None).unwrap_or(merged)
}

/// Checks that every element of both lists has one JSON type and is not a list; returns
/// true for lists of maps.
fn element_kind(field: &str, original: &[Value], patch: &[Value]) -> Result<bool, PatchError> {
    let mut kind: Option<&'static str> = None;
    for item in original.iter().chain(patch) {
        if item.is_array() {
            return Err(PatchError::UnmergeableList {
                field: field.to_owned(),
                reason: "lists of lists cannot be merged",
            });
        }
        let this = kind_of(item);
        match kind {
            None => kind = Some(this),
            Some(k) if k == this => {}
            Some(_) => {
                return Err(PatchError::UnmergeableList {
                    field: field.to_owned(),
                    reason: "its elements have different types",
                });
            }
        }
    }
    Ok(kind == Some("an object"))
}

/// The value that identifies a list element: its merge key, or the element itself.
fn identity<'v>(item: &'v Value, merge_key: Option<&str>) -> Result<&'v Value, PatchError> {
    match merge_key {
        None => Ok(item),
        Some(key) => item.get(key).ok_or_else(|| PatchError::MissingMergeKey {
            merge_key: key.to_owned(),
            element: item.to_string(),
        }),
    }
}

/// JSON equality where `80` and `80.0` are the same number, as in upstream's decoded
/// (float) values.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Orders `merged`: the items `order` names come in that order; the others (live items
/// the patch does not name) keep their live order and are placed before the first named
/// item that follows them in `server` (the live list). The relative order of the named
/// items always wins over the live order.
fn sort_by_order(
    merged: Vec<Value>,
    order: &[Value],
    server: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let order_ids: Vec<&Value> = order
        .iter()
        .map(|o| identity(o, merge_key))
        .collect::<Result<_, _>>()?;
    let server_ids: Vec<Option<&Value>> =
        server.iter().map(|s| identity(s, merge_key).ok()).collect();
    let position_in = |ids: &[&Value], id: &Value| ids.iter().position(|o| same(o, id));
    let server_position = |id: &Value| {
        server_ids
            .iter()
            .position(|s| s.is_some_and(|s| same(s, id)))
    };

    let mut named: Vec<(usize, Value)> = Vec::new();
    let mut rest: Vec<Value> = Vec::new();
    for item in merged {
        let id = identity(&item, merge_key)?;
        match position_in(&order_ids, id) {
            Some(rank) => named.push((rank, item)),
            None => rest.push(item),
        }
    }
    named.sort_by_key(|(rank, _)| *rank);

    let mut result = Vec::with_capacity(named.len() + rest.len());
    let mut named = named.into_iter().map(|(_, v)| v).peekable();
    let mut rest = rest.into_iter().peekable();
    loop {
        let take_rest = match (rest.peek(), named.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(r), Some(n)) => {
                let r_pos = identity(r, merge_key).ok().and_then(server_position);
                let n_pos = identity(n, merge_key).ok().and_then(server_position);
                matches!((r_pos, n_pos), (Some(r), Some(n)) if r < n)
            }
        };
        let next = if take_rest { rest.next() } else { named.next() };
        result.extend(next);
    }
    Ok(result)
}

/// A patch value placed where the object has nothing: directives processed against an
/// empty value, nulls dropped.
fn build<S: PatchSchema>(
    value: &Value,
    schema: Option<&S>,
    field: &str,
    depth: usize,
) -> Result<Value, PatchError> {
    check_depth(depth)?;
    match value {
        Value::Object(map) => merge_map(Map::new(), map, schema, depth).map(Value::Object),
        Value::Array(list) => merge_list(Vec::new(), list, schema, field, depth).map(Value::Array),
        scalar => Ok(scalar.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A hand-written schema: `properties`, `items`, `additionalProperties` and the two
    /// patch extensions, as in OpenAPI.
    #[derive(Clone, Copy)]
    struct TestSchema<'a>(&'a Value);

    impl PatchSchema for TestSchema<'_> {
        fn property(&self, name: &str) -> Option<Self> {
            self.0.get("properties")?.get(name).map(TestSchema)
        }
        fn items(&self) -> Option<Self> {
            self.0.get("items").map(TestSchema)
        }
        fn additional_properties(&self) -> Option<Self> {
            self.0.get("additionalProperties").map(TestSchema)
        }
        fn patch_strategy(&self) -> Option<&str> {
            self.0.get("x-kubernetes-patch-strategy")?.as_str()
        }
        fn patch_merge_key(&self) -> Option<&str> {
            self.0.get("x-kubernetes-patch-merge-key")?.as_str()
        }
    }

    fn merged_by(key: &str, items: Value) -> Value {
        json!({"x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": key, "items": items})
    }

    /// A Deployment-like object: pod template with containers merged by name, ports by
    /// containerPort, volumes with `merge,retainKeys`, merged finalizers, atomic args.
    fn schema() -> Value {
        let metadata = json!({"properties": {
            "labels": {"additionalProperties": {}},
            "annotations": {"additionalProperties": {}},
            "finalizers": {"x-kubernetes-patch-strategy": "merge", "items": {}},
        }});
        let container = json!({"properties": {
            "name": {}, "image": {},
            "args": {"items": {}},
            "ports": merged_by("containerPort", json!({})),
            "env": merged_by("name", json!({})),
        }});
        let pod = json!({"properties": {
            "containers": merged_by("name", container),
            "volumes": {
                "x-kubernetes-patch-strategy": "merge,retainKeys",
                "x-kubernetes-patch-merge-key": "name",
                "items": {"properties": {"name": {}, "emptyDir": {}, "hostPath": {}}},
            },
            "nodeSelector": {"additionalProperties": {}},
            "tolerations": {"items": {}},
            "resources": {"x-kubernetes-patch-strategy": "replace"},
        }});
        json!({"properties": {
            "metadata": metadata.clone(),
            "spec": {"properties": {
                "strategy": {"x-kubernetes-patch-strategy": "retainKeys"},
                "template": {"properties": {"metadata": metadata, "spec": pod}},
            }},
            "mergingList": merged_by("name", json!({})),
            "mergingIntList": {"x-kubernetes-patch-strategy": "merge", "items": {}},
            "mergingLists": merged_by("name", json!({})),
            "$ref": {},
        }})
    }

    fn run(original: &Value, patch: &Value) -> Result<Value, PatchError> {
        let schema = schema();
        apply(original, patch, Some(TestSchema(&schema)))
    }

    fn check(original: Value, patch: Value, expected: Value) {
        match run(&original, &patch) {
            Ok(got) => assert_eq!(got, expected, "patch {patch}"),
            Err(e) => panic!("patch {patch}: {e}"),
        }
    }

    /// The patch must fail with a message containing `message`.
    fn check_err(original: Value, patch: Value, message: &str) {
        match run(&original, &patch) {
            Ok(got) => panic!("patch {patch} should fail, got {got}"),
            Err(e) => assert!(e.to_string().contains(message), "patch {patch}: got {e:?}"),
        }
    }

    fn pod_spec(spec: Value) -> Value {
        json!({"spec": {"template": {"spec": spec}}})
    }

    #[test]
    fn kubectl_client_side_apply_patch() {
        // kubectl-wire.md section 7: d1 had containers a and b; d2 drops b, adds c,
        // reorders, drops env X and port 80, drops label b.
        let original = json!({
            "metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{old}\n"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "img:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                 "ports": [{"containerPort": 80}, {"containerPort": 8080}]},
                {"name": "b", "image": "img:1"},
            ]}}},
        });
        let patch = json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{new}\n"},"labels":{"b":null}},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"},{"name":"a"}],"containers":[{"image":"img:3","name":"c"},{"$setElementOrder/env":[{"name":"Y"}],"$setElementOrder/ports":[{"containerPort":8080}],"env":[{"$patch":"delete","name":"X"}],"image":"img:2","name":"a","ports":[{"containerPort":8080},{"$patch":"delete","containerPort":80}]},{"$patch":"delete","name":"b"}]}}}});
        let expected = json!({
            "metadata": {"labels": {"a": "1"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{new}\n"}},
            "spec": {"template": {"spec": {"containers": [
                {"image": "img:3", "name": "c"},
                {"name": "a", "image": "img:2", "env": [{"name": "Y", "value": "2"}], "ports": [{"containerPort": 8080}]},
            ]}}},
        });
        check(original, patch, expected);
    }

    #[test]
    fn kubectl_commands() {
        let two = pod_spec(
            json!({"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}),
        );
        // kubectl set image deploy/d a=x:2
        check(
            two.clone(),
            pod_spec(
                json!({"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"image": "x:2", "name": "a"}]}),
            ),
            pod_spec(
                json!({"containers": [{"name": "a", "image": "x:2"}, {"name": "b", "image": "y:1"}]}),
            ),
        );
        // kubectl rollout restart
        check(
            two.clone(),
            json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}}),
            json!({"spec": {"template": {
                "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]},
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}},
            }}}),
        );
        // kubectl patch adding a container: new items go first, as upstream.
        check(
            two.clone(),
            pod_spec(json!({"containers": [{"name": "new", "image": "z:1"}]})),
            pod_spec(
                json!({"containers": [{"name": "new", "image": "z:1"}, {"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}),
            ),
        );
        // Changing an existing element keeps its place.
        check(
            two,
            pod_spec(json!({"containers": [{"name": "b", "image": "y:2"}]})),
            pod_spec(
                json!({"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}]}),
            ),
        );
    }

    #[test]
    fn maps() {
        let labels = |v: Value| json!({"metadata": {"labels": v, "name": "n"}});
        check(
            labels(json!({"a": "1", "b": "2"})),
            json!({"metadata": {"labels": {"b": null, "c": "3"}}}),
            labels(json!({"a": "1", "c": "3"})),
        );
        check(
            labels(json!({"a": "1"})),
            json!({"metadata": {"labels": {"zz": null}}}),
            labels(json!({"a": "1"})),
        );
        check(
            labels(json!({"a": "1"})),
            json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}}),
            labels(json!({"z": "9"})),
        );
        check(
            labels(json!({"a": "1"})),
            json!({"metadata": {"labels": {"$patch": "merge", "z": "9"}}}),
            labels(json!({"a": "1", "z": "9"})),
        );
        // `$patch: delete` on a map leaves it empty, as upstream; on a missing map, nothing.
        check(
            labels(json!({"a": "1"})),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
            labels(json!({})),
        );
        check(
            json!({"metadata": {"name": "n"}}),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
            json!({"metadata": {"name": "n"}}),
        );
        check(json!({"a": 1}), json!({"$patch": "delete"}), json!({}));
        check(
            json!({"a": 1}),
            json!({"$patch": "replace", "b": 2}),
            json!({"b": 2}),
        );
        check(
            json!({"m": 1}),
            json!({"m": {"x": 1, "y": null}}),
            json!({"m": {"x": 1}}),
        );
        check(json!({"m": {"x": 1}}), json!({"m": 2}), json!({"m": 2}));
        check(json!({"m": {"x": 1}}), json!({"m": null}), json!({}));
        // A field with patch strategy `replace` is replaced whole.
        check(
            pod_spec(json!({"resources": {"limits": {"cpu": "1"}}})),
            pod_spec(json!({"resources": {"requests": {"cpu": "2"}}})),
            pod_spec(json!({"resources": {"requests": {"cpu": "2"}}})),
        );
        // A `$` key the schema declares is an ordinary field.
        check(json!({}), json!({"$ref": "#/x"}), json!({"$ref": "#/x"}));
    }

    #[test]
    fn key_order_is_kept() {
        let got = run(
            &json!({"a": 1, "b": 2, "c": 3}),
            &json!({"a": 9, "b": null}),
        )
        .expect("valid");
        assert_eq!(
            got.as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["a".to_owned(), "c".to_owned()])
        );
    }

    #[test]
    fn lists() {
        let containers = |v: Value| pod_spec(json!({"containers": v}));
        // `$patch: delete` on an element; deleting a missing element is harmless.
        check(
            containers(json!([{"name": "a"}, {"name": "b"}])),
            containers(json!([{"$patch": "delete", "name": "a"}])),
            containers(json!([{"name": "b"}])),
        );
        check(
            containers(json!([{"name": "a"}])),
            containers(json!([{"$patch": "delete", "name": "zz"}])),
            containers(json!([{"name": "a"}])),
        );
        // `$patch: replace` as an element replaces the whole list.
        check(
            containers(json!([{"name": "a"}, {"name": "b"}])),
            containers(json!([{"name": "z"}, {"$patch": "replace"}])),
            containers(json!([{"name": "z"}])),
        );
        // Atomic lists (args, tolerations) are replaced.
        check(
            containers(json!([{"name": "a", "args": ["1", "2"]}])),
            containers(json!([{"name": "a", "args": ["3"]}])),
            containers(json!([{"name": "a", "args": ["3"]}])),
        );
        check(
            pod_spec(json!({"tolerations": [{"key": "a"}]})),
            pod_spec(json!({"tolerations": [{"key": "b"}]})),
            pod_spec(json!({"tolerations": [{"key": "b"}]})),
        );
        // Nested merge lists, with numeric merge keys compared as numbers.
        check(
            containers(json!([{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}]}])),
            containers(json!([{"name": "a", "ports": [{"containerPort": 80.0, "name": "http"}]}])),
            containers(
                json!([{"name": "a", "ports": [{"containerPort": 80.0, "protocol": "TCP", "name": "http"}]}]),
            ),
        );
        // A list the object lacks, or has with another type, is taken from the patch.
        check(
            pod_spec(json!({})),
            containers(json!([{"name": "a"}, {"$patch": "delete", "name": "b"}])),
            containers(json!([{"name": "a"}])),
        );
        check(
            pod_spec(json!({"containers": "junk"})),
            containers(json!([{"name": "a"}])),
            containers(json!([{"name": "a"}])),
        );
    }

    #[test]
    fn primitive_lists() {
        let finalizers = |v: Value| json!({"metadata": {"finalizers": v}});
        // A union ordered by the patch, as upstream.
        check(
            finalizers(json!(["a", "b"])),
            finalizers(json!(["c", "a"])),
            finalizers(json!(["c", "a", "b"])),
        );
        check(
            finalizers(json!(["a", "b"])),
            finalizers(json!(["b"])),
            finalizers(json!(["a", "b"])),
        );
        check(
            finalizers(json!(["a", "a"])),
            finalizers(json!([])),
            finalizers(json!(["a"])),
        );
        check(
            json!({}),
            finalizers(json!(["x", "x"])),
            finalizers(json!(["x"])),
        );
        check(
            finalizers(json!(["a", "b", "c"])),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}}),
            finalizers(json!(["a", "c"])),
        );
        check(
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            json!({"metadata": {}}),
        );
        check(
            finalizers(json!(["a", "b"])),
            json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"]}}),
            finalizers(json!(["b", "a"])),
        );
        // Upstream: add and delete items in lists of scalars.
        check(
            json!({"mergingIntList": [1, 2, 3, 4]}),
            json!({"$setElementOrder/mergingIntList": [1, 2, 4], "$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"mergingIntList": [1, 2, 4]}),
        );
        // Upstream: add an item in a list of primitives and preserve order.
        check(
            json!({"mergingIntList": [1, 4, 2]}),
            json!({"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]}),
            json!({"mergingIntList": [3, 1, 4, 2]}),
        );
    }

    #[test]
    fn retain_keys() {
        // The Deployment strategy switches type: rollingUpdate goes.
        check(
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        // A volume changes its source; null fields need not be listed.
        check(
            pod_spec(
                json!({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]}),
            ),
            pod_spec(
                json!({"volumes": [{"$retainKeys": ["hostPath", "name"], "name": "v", "hostPath": {"path": "/x"}, "emptyDir": null}]}),
            ),
            pod_spec(
                json!({"volumes": [{"name": "v", "hostPath": {"path": "/x"}}, {"name": "w", "emptyDir": {}}]}),
            ),
        );
    }

    #[test]
    fn element_order() {
        let list = |names: &[u32]| json!({"mergingList": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()});
        let order = |names: &[u32]| json!({"$setElementOrder/mergingList": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()});
        // Upstream "set elements order in a list with server-only items" 1 to 3.
        check(
            list(&[1, 3, 4, 2, 9]),
            order(&[4, 2, 3, 1]),
            list(&[4, 2, 3, 1, 9]),
        );
        check(
            list(&[1, 2, 9, 3, 4]),
            order(&[2, 1, 4, 3]),
            list(&[2, 1, 9, 4, 3]),
        );
        check(
            list(&[1, 2, 7, 9, 8, 3, 4]),
            order(&[2, 1, 4, 3]),
            list(&[2, 1, 7, 9, 8, 4, 3]),
        );
        // Upstream "add an item in a list and preserve order".
        check(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2}]}),
            json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 1}, {"name": 2}], "mergingList": [{"name": 3, "value": 3}]}),
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "other": "a"}, {"name": 2, "value": 2}]}),
        );
        // Upstream "add and delete an item in a list and preserve order".
        check(
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": 2}, {"name": 3}]}),
            json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 1}], "mergingList": [{"name": 4, "value": 4}, {"name": 3, "$patch": "delete"}]}),
            json!({"mergingList": [{"name": 4, "value": 4}, {"name": 2, "value": 2}, {"name": 1}]}),
        );
        // An order for a list neither side has changes nothing.
        check(json!({}), order(&[1]), json!({}));
        // An order for a list only the patch has.
        check(
            json!({}),
            json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}], "mergingList": [{"name": 2}, {"name": 1}]}),
            list(&[2, 1]),
        );
    }

    #[test]
    fn directives_never_leak() {
        // New content with directives inside: processed against nothing.
        check(
            pod_spec(json!({})),
            pod_spec(
                json!({"containers": [{"name": "a", "$setElementOrder/env": [{"name": "E"}], "env": [{"name": "E"}, {"$patch": "delete", "name": "F"}], "args": [{"$patch": "replace"}, "x"], "bad": null}]}),
            ),
            pod_spec(json!({"containers": [{"name": "a", "env": [{"name": "E"}], "args": ["x"]}]})),
        );
        check(
            json!({}),
            json!({"metadata": {"labels": {"$patch": "replace", "a": "1"}}}),
            json!({"metadata": {"labels": {"a": "1"}}}),
        );
        check(
            json!({}),
            json!({"metadata": {"labels": {"$patch": "delete", "a": "1"}}}),
            json!({"metadata": {}}),
        );
        check(
            json!({}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
    }

    #[test]
    fn errors() {
        check_err(json!({}), json!([1]), "must be a JSON object, not a list");
        check_err(json!({}), json!("x"), "must be a JSON object, not a string");
        check_err(
            json!({}),
            json!({"$patch": "explode"}),
            "unknown patch type \"explode\" in a map",
        );
        check_err(
            json!({}),
            json!({"metadata": {"$patch": 1}}),
            "unknown patch type 1 in a map",
        );
        check_err(
            json!({}),
            json!({"$bogus": 1}),
            "unknown patch directive \"$bogus\"",
        );
        check_err(
            json!({}),
            json!({"$setElementOrder/": []}),
            "unknown patch directive",
        );
        check_err(
            json!({}),
            pod_spec(json!({"containers": [{"image": "no-name"}]})),
            "does not contain declared merge key: name",
        );
        check_err(
            pod_spec(json!({"containers": [{"name": "a"}]})),
            pod_spec(json!({"containers": [{"$patch": "delete", "image": "x"}]})),
            "declared merge key: name",
        );
        check_err(
            json!({}),
            pod_spec(json!({"containers": [{"name": "a", "$patch": "bogus"}]})),
            "in a list element",
        );
        check_err(
            json!({}),
            json!({"metadata": {"$retainKeys": "x"}}),
            "$retainKeys must be a list of field names",
        );
        check_err(
            json!({}),
            json!({"metadata": {"$retainKeys": [1]}}),
            "$retainKeys must be a list of field names",
        );
        check_err(
            json!({}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
            "field \"rollingUpdate\" is not listed in $retainKeys",
        );
        check_err(
            json!({}),
            pod_spec(json!({"$setElementOrder/containers": "x"})),
            "$setElementOrder/containers must be a list",
        );
        check_err(
            json!({}),
            pod_spec(json!({"$setElementOrder/containers": [{"image": "x"}]})),
            "declared merge key: name",
        );
        check_err(
            json!({}),
            pod_spec(
                json!({"$setElementOrder/containers": [{"name": "a"}], "containers": {"name": "a"}}),
            ),
            "must be a list",
        );
        check_err(
            json!({}),
            pod_spec(
                json!({"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b"}, {"name": "a"}]}),
            ),
            "does not match its $setElementOrder list",
        );
        check_err(
            json!({}),
            pod_spec(
                json!({"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "c"}]}),
            ),
            "does not match",
        );
        check_err(
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [1]}}),
            "different types",
        );
        check_err(
            json!({}),
            json!({"mergingIntList": [[1]]}),
            "lists of lists",
        );
        check_err(
            json!({}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": 5}}),
            "must be a list",
        );
        check_err(
            json!({"a": 1}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "$bogus": 1}}}),
            "unknown patch directive",
        );
        let mut deep = json!({});
        for _ in 0..(MAX_DEPTH + 5) {
            deep = json!({"a": deep});
        }
        check_err(json!({}), deep, "nested more than 128 levels deep");
        // The original is never modified, and errors map to 400.
        let original = json!({"metadata": {"labels": {"a": "1"}}});
        let err = run(
            &original,
            &json!({"metadata": {"labels": {"a": null}}, "$bogus": 1}),
        )
        .expect_err("bad");
        assert_eq!(err.http_status(), 400);
        assert_eq!(original, json!({"metadata": {"labels": {"a": "1"}}}));
        assert_eq!(unsupported("widgets.example.com").http_status(), 415);
    }

    #[test]
    fn without_schema_lists_replace() {
        let got = apply::<TestSchema<'_>>(
            &json!({"a": [1, 2], "m": {"x": 1}, "l": [{"name": "a"}]}),
            &json!({"a": [3], "m": {"y": 2, "x": null}, "l": [{"name": "b"}]}),
            None,
        );
        assert_eq!(
            got,
            Ok(json!({"a": [3], "m": {"y": 2}, "l": [{"name": "b"}]}))
        );
    }

    #[test]
    fn builtin_schema_drives_patches() {
        // The real Deployment schema merges containers by name.
        let schema = crate::schema::builtin().node("io.k8s.api.apps.v1.Deployment");
        assert!(schema.is_some(), "Deployment schema");
        let got = apply(
            &pod_spec(
                json!({"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}),
            ),
            &pod_spec(json!({"containers": [{"name": "b", "image": "y:2"}]})),
            schema,
        );
        assert_eq!(
            got,
            Ok(pod_spec(
                json!({"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}]})
            ))
        );
    }
}
