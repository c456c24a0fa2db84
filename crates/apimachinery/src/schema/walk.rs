//! A walker over the definitions: follows references, exposes types, merge and list
//! extensions, and prunes unknown fields.

use serde_json::{Map, Value};

use super::{REF_PREFIX, Schemas};

/// How many references are followed before giving up (guards against reference cycles).
const MAX_REF_HOPS: usize = 16;

/// A position in the schemas: the schema where a field is used (which carries per-use
/// extensions such as the patch strategy) and the schema it resolves to (after `$ref`/`allOf`).
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    schemas: &'a Schemas,
    /// The schema at the point of use.
    site: &'a Value,
    /// The schema after following references.
    resolved: &'a Value,
    /// The name of the definition the last followed reference named, if any.
    name: Option<&'a str>,
}

impl<'a> Node<'a> {
    /// A node for `site`, resolving its references in `schemas`.
    pub(super) fn new(schemas: &'a Schemas, site: &'a Value) -> Self {
        let (resolved, name) = resolve(schemas, site);
        Self {
            schemas,
            site,
            resolved,
            name,
        }
    }

    /// A node for the definition `name` itself.
    pub(super) fn definition(schemas: &'a Schemas, name: &'a str, schema: &'a Value) -> Self {
        let node = Self::new(schemas, schema);
        Self {
            name: node.name.or(Some(name)),
            ..node
        }
    }

    /// The name of the definition this node resolves to, such as `io.k8s.api.core.v1.PodSpec`;
    /// `None` for inline schemas.
    pub fn definition_name(&self) -> Option<&'a str> {
        self.name
    }

    /// The schema's `type` when it names a single type.
    pub fn type_name(&self) -> Option<&'a str> {
        self.resolved.get("type").and_then(Value::as_str)
    }

    /// The schema's `format`, such as `int32`, `date-time` or `byte`.
    pub fn format(&self) -> Option<&'a str> {
        self.resolved.get("format").and_then(Value::as_str)
    }

    /// The declared properties and their schemas.
    pub(super) fn declared(&self) -> Option<&'a Map<String, Value>> {
        self.properties()
    }

    /// A node for a schema inside the same set of definitions.
    pub(super) fn child(&self, schema: &'a Value) -> Node<'a> {
        Node::new(self.schemas, schema)
    }

    /// The schema at the point of use (with its own description and extensions).
    pub fn site(&self) -> &'a Value {
        self.site
    }

    /// The schema after following `$ref` and single-element `allOf`.
    pub fn schema(&self) -> &'a Value {
        self.resolved
    }

    /// The schema of property `name`, if declared.
    pub fn property(&self, name: &str) -> Option<Node<'a>> {
        self.properties()?
            .get(name)
            .map(|schema| Node::new(self.schemas, schema))
    }

    /// The schema of the items of an array.
    pub fn items(&self) -> Option<Node<'a>> {
        let items = self
            .resolved
            .get("items")
            .or_else(|| self.site.get("items"))?;
        items.is_object().then(|| Node::new(self.schemas, items))
    }

    /// The schema of the values of a map (`additionalProperties` given as a schema).
    pub fn additional_properties(&self) -> Option<Node<'a>> {
        let values = self.resolved.get("additionalProperties")?;
        values.is_object().then(|| Node::new(self.schemas, values))
    }

    /// True for objects (structs and maps).
    pub fn is_object(&self) -> bool {
        self.type_is("object")
    }

    /// True for arrays.
    pub fn is_array(&self) -> bool {
        self.type_is("array")
    }

    /// The names of the declared properties, in schema order.
    pub fn known_properties(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.properties()
            .into_iter()
            .flat_map(|p| p.keys().map(String::as_str))
    }

    /// True when the schema says unknown fields are kept (`x-kubernetes-preserve-unknown-fields`).
    pub fn preserves_unknown_fields(&self) -> bool {
        self.extension("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// True for int-or-string values (built-in `IntOrString`, or CRDs' `x-kubernetes-int-or-string`).
    pub fn is_int_or_string(&self) -> bool {
        self.extension("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || self.resolved.get("format").and_then(Value::as_str) == Some("int-or-string")
    }

    /// True for objects that accept any fields: no declared properties and no value schema
    /// (such as `RawExtension`), or a schema without any type (such as `JSON`).
    pub fn is_free_form(&self) -> bool {
        let Some(map) = self.resolved.as_object() else {
            return false;
        };
        let untyped =
            !map.contains_key("type") && !map.contains_key("oneOf") && !map.contains_key("anyOf");
        let open_object = self.is_object()
            && !map.contains_key("properties")
            && !map
                .get("additionalProperties")
                .is_some_and(|a| a.is_object() || a == &Value::Bool(false));
        untyped || open_object
    }

    /// `x-kubernetes-patch-strategy`: `merge`, `retainKeys`, `merge,retainKeys` or `replace`.
    pub fn patch_strategy(&self) -> Option<&'a str> {
        self.extension("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
    }

    /// `x-kubernetes-patch-merge-key`: the field that identifies list items in strategic merge patch.
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.extension("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
    }

    /// `x-kubernetes-list-type`: `atomic`, `set` or `map`.
    pub fn list_type(&self) -> Option<&'a str> {
        self.extension("x-kubernetes-list-type")
            .and_then(Value::as_str)
    }

    /// `x-kubernetes-list-map-keys` of a `map` list; empty otherwise.
    pub fn list_map_keys(&self) -> Vec<&'a str> {
        let keys = self
            .extension("x-kubernetes-list-map-keys")
            .and_then(Value::as_array);
        keys.into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    }

    /// `x-kubernetes-map-type`: `atomic` or `granular`, on maps and on structs.
    pub fn map_type(&self) -> Option<&'a str> {
        self.extension("x-kubernetes-map-type")
            .and_then(Value::as_str)
    }

    /// An extension, looked up at the point of use first, then on the resolved definition.
    fn extension(&self, key: &str) -> Option<&'a Value> {
        self.site.get(key).or_else(|| self.resolved.get(key))
    }

    fn properties(&self) -> Option<&'a Map<String, Value>> {
        self.resolved.get("properties").and_then(Value::as_object)
    }

    fn type_is(&self, wanted: &str) -> bool {
        match self.resolved.get("type") {
            Some(Value::String(t)) => t == wanted,
            Some(Value::Array(types)) => types.iter().any(|t| t == wanted),
            _ => false,
        }
    }
}

/// Follows `$ref` and single-reference `allOf` until a schema without them is reached; also
/// returns the name of the last definition followed.
fn resolve<'a>(schemas: &'a Schemas, mut schema: &'a Value) -> (&'a Value, Option<&'a str>) {
    let mut name = None;
    for _ in 0..MAX_REF_HOPS {
        let target = match schema.get("$ref") {
            Some(Value::String(reference)) => reference.strip_prefix(REF_PREFIX),
            _ => match schema
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                Some([only]) => match only.get("$ref") {
                    Some(Value::String(reference)) => reference.strip_prefix(REF_PREFIX),
                    _ => return (schema, name),
                },
                _ => return (schema, name),
            },
        };
        match target.and_then(|t| schemas.definition(t).map(|next| (t, next))) {
            Some((t, next)) => {
                schema = next;
                name = Some(t);
            }
            None => return (schema, name),
        }
    }
    (schema, name)
}

/// Removes the fields [`super::decode::check`] reports as unknown, in place.
pub(super) fn prune(node: Node<'_>, value: &mut Value) {
    if node.preserves_unknown_fields() || node.is_free_form() {
        return;
    }
    match value {
        Value::Object(fields) if node.is_object() => {
            let values = node.additional_properties();
            let declared = node.properties();
            if declared.is_none() && values.is_none() {
                return;
            }
            fields
                .retain(|key, _| declared.is_some_and(|d| d.contains_key(key)) || values.is_some());
            for (key, field_value) in fields.iter_mut() {
                let child = match declared.and_then(|d| d.get(key)) {
                    Some(schema) => Some(Node::new(node.schemas, schema)),
                    None => values,
                };
                if let Some(child) = child {
                    prune(child, field_value);
                }
            }
        }
        Value::Array(items) if node.is_array() => {
            if let Some(item_node) = node.items() {
                for item in items.iter_mut() {
                    prune(item_node, item);
                }
            }
        }
        _ => {}
    }
}
