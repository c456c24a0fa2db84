//! OpenAPI definitions of the built-in API with Kubernetes extensions (`x-kubernetes-*`), and a
//! walker over them for strategic merge patch, field validation and server-side apply.
//!
//! Definitions are kept in one canonical form, OpenAPI v3 style: references point at
//! `#/components/schemas/<name>`, and a reference that carries siblings (a description, a patch
//! strategy) is wrapped as `{"allOf": [{"$ref": …}], …}` as upstream's v3 documents do.
//! [`crate::openapi`] turns them into v3 and v2 documents.

mod build;
mod decode;
mod extensions;
#[allow(clippy::all)]
mod extensions_table;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::kinds::GroupVersionKind;

pub use build::add_gvk;
pub use decode::{Decoded, TypeError};
pub use walk::Node;

/// The prefix of every reference inside the canonical definitions.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// A set of named OpenAPI definitions (the built-in API, or later a cluster's CRDs as well).
#[derive(Clone, Debug, Default)]
pub struct Schemas {
    /// Definitions by name, in sorted order.
    definitions: Map<String, Value>,
}

static BUILTIN: LazyLock<Schemas> = LazyLock::new(build::builtin);

/// The definitions of the built-in API, built once and shared by every tenant.
pub fn builtin() -> &'static Schemas {
    &BUILTIN
}

impl Schemas {
    /// Builds a set from definitions in the canonical form (references to
    /// `#/components/schemas/<name>`). Keys are sorted so that output is deterministic.
    pub fn from_definitions(definitions: Map<String, Value>) -> Self {
        let mut entries: Vec<(String, Value)> = definitions.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            definitions: entries.into_iter().collect(),
        }
    }

    /// Returns a copy with `extra` definitions added (replacing same-named ones), such as a
    /// cluster's CRD schemas on top of the built-in ones.
    pub fn with_definitions(&self, extra: Map<String, Value>) -> Self {
        let mut definitions = self.definitions.clone();
        definitions.extend(extra);
        Self::from_definitions(definitions)
    }

    /// All definitions by name, in sorted order.
    pub fn definitions(&self) -> &Map<String, Value> {
        &self.definitions
    }

    /// The definition named `name`, such as `io.k8s.api.apps.v1.Deployment`.
    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.definitions.get(name)
    }

    /// A walker positioned at the definition named `name`.
    pub fn node(&self, name: &str) -> Option<Node<'_>> {
        self.definitions
            .get_key_value(name)
            .map(|(name, schema)| Node::definition(self, name, schema))
    }

    /// The name of the definition whose `x-kubernetes-group-version-kind` lists `gvk`.
    pub fn find_by_gvk(&self, gvk: &GroupVersionKind) -> Option<&str> {
        self.definitions
            .iter()
            .find_map(|(name, schema)| gvks_of(schema).any(|g| g == *gvk).then_some(name.as_str()))
    }

    /// The names of `roots` and of every definition they reference, transitively; names that
    /// are not defined are left out.
    pub fn reachable<'n>(&self, roots: impl IntoIterator<Item = &'n str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = roots.into_iter().map(str::to_owned).collect();
        while let Some(name) = stack.pop() {
            let Some(schema) = self.definitions.get(&name) else {
                continue;
            };
            if !seen.insert(name) {
                continue;
            }
            collect_refs(schema, &mut |target| {
                if !seen.contains(target) {
                    stack.push(target.to_owned());
                }
            });
        }
        seen
    }

    /// Lists the fields of `obj` that the definition `root` does not declare, as paths such as
    /// `spec.template.spec.containers[0].bogus` (the form of upstream's strict decoding errors).
    /// Objects whose schema preserves unknown fields, or is a free-form object, are not
    /// descended into. Returns nothing when `root` is not defined.
    pub fn unknown_fields(&self, root: &str, obj: &Value) -> Vec<String> {
        self.decode(root, obj).unknown
    }

    /// Checks `obj` as decoding it into the typed object of `root` does upstream, in one pass:
    /// the unknown fields, and the first value whose JSON type the field cannot hold (`null`
    /// is fine anywhere). Finds nothing when `root` is not defined.
    pub fn decode(&self, root: &str, obj: &Value) -> Decoded {
        self.node(root)
            .map(|node| decode::check(node, obj))
            .unwrap_or_default()
    }

    /// Drops the fields [`Schemas::unknown_fields`] reports, as decoding into the typed
    /// object does upstream.
    pub fn prune(&self, root: &str, obj: &mut Value) {
        if let Some(node) = self.node(root) {
            walk::prune(node, obj);
        }
    }
}

/// The GVKs a definition's `x-kubernetes-group-version-kind` lists.
pub fn gvks_of(schema: &Value) -> impl Iterator<Item = GroupVersionKind> + '_ {
    let entries = schema
        .get("x-kubernetes-group-version-kind")
        .and_then(Value::as_array);
    entries.into_iter().flatten().filter_map(|entry| {
        let field = |key: &str| entry.get(key).and_then(Value::as_str);
        Some(GroupVersionKind::new(
            field("group")?,
            field("version")?,
            field("kind")?,
        ))
    })
}

/// Calls `found` with the definition name of every canonical `$ref` inside `schema`.
pub fn collect_refs(schema: &Value, found: &mut impl FnMut(&str)) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    if let Some(target) = value.as_str().and_then(|r| r.strip_prefix(REF_PREFIX)) {
                        found(target);
                    }
                } else {
                    collect_refs(value, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, found)),
        _ => {}
    }
}
