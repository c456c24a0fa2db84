//! Schema-driven walks over objects: the field set an object sets, merging an applied
//! configuration into a live object, comparing two objects, and removing a set of fields.
//!
//! The schema decides how each value is treated, as structured-merge-diff does: structs and
//! granular maps recurse by field (`f:`), `x-kubernetes-list-type: map` lists by key (`k:`),
//! `set` lists by value (`v:`); atomic lists and maps, scalars, and values whose shape does not
//! match the schema are single leaves. Without a schema (and under free-form or
//! preserve-unknown-fields schemas), objects are granular maps and lists are atomic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::ApplyError;
use super::fieldset::{FieldSet, PathElement};
use crate::schema::Node;

/// How deep objects are walked; anything deeper is treated as one atomic leaf.
pub(crate) const MAX_DEPTH: usize = 96;

/// How a value is treated at one position.
enum Form<'a> {
    /// A single leaf: scalars, null, atomic lists and maps, shape mismatches.
    Leaf,
    /// A struct or granular map: recurse by field name.
    Fields,
    /// A `set` list: items by value.
    Set,
    /// A `map` list: items by key fields.
    Assoc(Vec<&'a str>),
}

fn form<'a>(node: Option<Node<'a>>, value: &Value, depth: usize) -> Form<'a> {
    if depth >= MAX_DEPTH {
        return Form::Leaf;
    }
    match value {
        Value::Object(_) => match node {
            None => Form::Fields,
            Some(n) if n.map_type() == Some("atomic") => Form::Leaf,
            Some(n) if n.is_object() || n.is_free_form() || n.preserves_unknown_fields() => {
                Form::Fields
            }
            Some(_) => Form::Leaf,
        },
        Value::Array(_) => match node {
            Some(n) if n.is_array() => match n.list_type() {
                Some("set") => Form::Set,
                Some("map") => Form::Assoc(n.list_map_keys()),
                Some(_) => Form::Leaf,
                None => match (n.patch_strategy(), n.patch_merge_key()) {
                    (Some(strategy), Some(key)) if strategy.contains("merge") => {
                        Form::Assoc(vec![key])
                    }
                    (Some(strategy), None) if strategy.contains("merge") => Form::Set,
                    _ => Form::Leaf,
                },
            },
            _ => Form::Leaf,
        },
        _ => Form::Leaf,
    }
}

/// The schema of field `name` of a struct or map, and whether it is a declared struct field.
fn field_node<'a>(node: Option<Node<'a>>, name: &str) -> (Option<Node<'a>>, bool) {
    let Some(n) = node else {
        return (None, false);
    };
    if n.is_free_form() && n.known_properties().next().is_none() {
        return (None, false);
    }
    match n.property(name) {
        Some(child) => (Some(child), true),
        None => (n.additional_properties(), false),
    }
}

fn item_node(node: Option<Node<'_>>) -> Option<Node<'_>> {
    node.and_then(|n| n.items())
}

/// The path element of a list item in a `set` or `map` list.
fn item_element(form: &Form<'_>, item_schema: Option<Node<'_>>, item: &Value) -> PathElement {
    match (form, item) {
        (Form::Assoc(keys), Value::Object(fields)) => {
            PathElement::key(keys.iter().filter_map(|key| {
                let value = fields.get(*key).cloned().or_else(|| {
                    item_schema
                        .and_then(|n| n.property(key))
                        .and_then(|n| n.schema().get("default").cloned())
                })?;
                Some(((*key).to_owned(), value))
            }))
        }
        _ => PathElement::value(item),
    }
}

/// The items of a list with their path elements; `None` in place of duplicates after the first.
fn indexed<'v>(
    form: &Form<'_>,
    item_schema: Option<Node<'_>>,
    items: &'v [Value],
) -> Vec<(PathElement, &'v Value, bool)> {
    let mut seen = BTreeSet::new();
    items
        .iter()
        .map(|item| {
            let element = item_element(form, item_schema, item);
            let first = seen.insert(element.clone());
            (element, item, first)
        })
        .collect()
}

/// Fails when a list in the applied configuration has two items with the same key or value.
pub(crate) fn check_duplicates(
    node: Option<Node<'_>>,
    value: &Value,
    path: &mut Vec<PathElement>,
) -> Result<(), ApplyError> {
    let depth = path.len();
    match (form(node, value, depth), value) {
        (Form::Fields, Value::Object(fields)) => {
            for (name, child) in fields {
                let (child_node, _) = field_node(node, name);
                path.push(PathElement::Field(name.clone()));
                let result = check_duplicates(child_node, child, path);
                path.pop();
                result?;
            }
            Ok(())
        }
        (form @ (Form::Set | Form::Assoc(_)), Value::Array(items)) => {
            let item_schema = item_node(node);
            for (element, item, first) in indexed(&form, item_schema, items) {
                if !first {
                    let list = super::fieldset::Path(path.clone());
                    return Err(ApplyError::Invalid(format!(
                        "{list}: duplicate entries for key {element}"
                    )));
                }
                path.push(element);
                let result = match form {
                    Form::Assoc(_) => check_duplicates(item_schema, item, path),
                    _ => Ok(()),
                };
                path.pop();
                result?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The set of fields `value` sets (upstream's `ToFieldSet`).
pub(crate) fn to_field_set(node: Option<Node<'_>>, value: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    field_set_into(node, value, &mut Vec::new(), &mut set);
    set
}

fn field_set_into(
    node: Option<Node<'_>>,
    value: &Value,
    path: &mut Vec<PathElement>,
    out: &mut FieldSet,
) {
    match (form(node, value, path.len()), value) {
        (Form::Fields, Value::Object(fields)) => {
            for (name, child) in fields {
                let (child_node, declared) = field_node(node, name);
                path.push(PathElement::Field(name.clone()));
                field_set_into(child_node, child, path, out);
                let empty_object = child.as_object().is_some_and(Map::is_empty);
                if child.is_null() || empty_object || !declared {
                    out.insert(path);
                }
                path.pop();
            }
        }
        (form @ (Form::Set | Form::Assoc(_)), Value::Array(items)) => {
            let item_schema = item_node(node);
            for (element, item, _) in indexed(&form, item_schema, items) {
                path.push(element);
                if matches!(form, Form::Assoc(_)) {
                    field_set_into(item_schema, item, path, out);
                }
                out.insert(path);
                path.pop();
            }
        }
        _ => out.insert(path),
    }
}

/// `set` with every declared struct field that has members below it made a member too
/// (upstream's `EnsureNamedFieldsAreMembers`), so removing by it drops emptied structs.
pub(crate) fn ensure_named_fields(node: Option<Node<'_>>, set: &FieldSet) -> FieldSet {
    let mut out = FieldSet::new();
    ensure_into(node, set, &mut out, 0);
    out
}

fn ensure_into(node: Option<Node<'_>>, set: &FieldSet, out: &mut FieldSet, depth: usize) {
    for member in set.members() {
        out.insert_member(member.clone());
    }
    for (element, child) in set.children() {
        let child_node = match element {
            PathElement::Field(name) => {
                let (child_node, declared) = field_node(node, name);
                if declared {
                    out.insert_member(element.clone());
                }
                child_node
            }
            _ => item_node(node),
        };
        let mut below = FieldSet::new();
        if depth < MAX_DEPTH {
            ensure_into(child_node, child, &mut below, depth + 1);
        }
        out.add_child(element.clone(), below);
    }
}

/// Merges the applied configuration `rhs` into `lhs` (upstream's `Merge`): fields of `rhs`
/// win, maps merge recursively, lists merge by their list type. `null` in `rhs` deletes.
pub(crate) fn merge(node: Option<Node<'_>>, lhs: &Value, rhs: &Value, depth: usize) -> Value {
    match (form(node, rhs, depth), lhs, rhs) {
        (Form::Fields, Value::Object(left), Value::Object(right)) => {
            let mut out = left.clone();
            for (name, value) in right {
                if value.is_null() {
                    out.remove(name);
                    continue;
                }
                let (child_node, _) = field_node(node, name);
                let merged = match left.get(name) {
                    Some(existing) => merge(child_node, existing, value, depth + 1),
                    None => without_nulls(value, depth + 1),
                };
                out.insert(name.clone(), merged);
            }
            Value::Object(out)
        }
        (form @ (Form::Set | Form::Assoc(_)), Value::Array(left), Value::Array(right)) => {
            let item_schema = item_node(node);
            let merge_item = |existing: Option<&Value>, item: &Value| match (&form, existing) {
                (Form::Assoc(_), Some(existing)) => merge(item_schema, existing, item, depth + 1),
                _ => without_nulls(item, depth + 1),
            };
            Value::Array(merge_lists(
                &indexed(&form, item_schema, left),
                &indexed(&form, item_schema, right),
                merge_item,
            ))
        }
        _ => without_nulls(rhs, depth),
    }
}

/// Merges list items as upstream does: items of the applied list in its order, merged with
/// their live counterparts, and live-only items kept in their place relative to them.
fn merge_lists(
    left: &[(PathElement, &Value, bool)],
    right: &[(PathElement, &Value, bool)],
    merge_item: impl Fn(Option<&Value>, &Value) -> Value,
) -> Vec<Value> {
    let in_left: BTreeMap<&PathElement, &Value> = left
        .iter()
        .filter(|(_, _, first)| *first)
        .map(|(element, item, _)| (element, *item))
        .collect();
    let in_right: BTreeSet<&PathElement> = right.iter().map(|(element, _, _)| element).collect();
    let shared: Vec<&PathElement> = right
        .iter()
        .filter(|(element, _, first)| *first && in_left.contains_key(element))
        .map(|(element, _, _)| element)
        .collect();
    let mut next_shared = 0;
    let mut merged: BTreeSet<&PathElement> = BTreeSet::new();
    let mut out = Vec::with_capacity(left.len().max(right.len()));
    let (mut l, mut r) = (0, 0);
    while l < left.len() || r < right.len() {
        if l < left.len() && r < right.len() {
            let element = &left[l].0;
            if *element == right[r].0 {
                if merged.insert(element) {
                    out.push(merge_item(Some(left[l].1), right[r].1));
                }
                if shared.get(next_shared) == Some(&element) {
                    next_shared += 1;
                }
                l += 1;
                r += 1;
                continue;
            }
            let wanted = shared.get(next_shared);
            if in_right.contains(element) && wanted.is_some_and(|w| *w != element) {
                l += 1;
                continue;
            }
        }
        if l < left.len() {
            let element = &left[l].0;
            if !in_right.contains(element) {
                out.push(left[l].1.clone());
                l += 1;
                continue;
            }
            if merged.contains(element) {
                l += 1;
                continue;
            }
        }
        if r < right.len() {
            let element = &right[r].0;
            if merged.insert(element) {
                out.push(merge_item(in_left.get(element).copied(), right[r].1));
            }
            if shared.get(next_shared) == Some(&element) {
                next_shared += 1;
            }
            r += 1;
        } else {
            // Only live items that the applied list names remain; they were merged already.
            l += 1;
        }
    }
    out
}

/// `value` with `null` object fields dropped (the decoding of typed objects drops them).
fn without_nulls(value: &Value, depth: usize) -> Value {
    match value {
        Value::Object(fields) if depth < MAX_DEPTH => Value::Object(
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v, depth + 1)))
                .collect(),
        ),
        Value::Array(items) if depth < MAX_DEPTH => {
            Value::Array(items.iter().map(|v| without_nulls(v, depth + 1)).collect())
        }
        other => other.clone(),
    }
}

/// What changed between two objects, as field sets (upstream's `Comparison`).
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    /// Paths only the new object has.
    pub added: FieldSet,
    /// Leaf paths whose value changed.
    pub modified: FieldSet,
    /// Paths only the old object has.
    pub removed: FieldSet,
}

impl Comparison {
    /// Drops top-level fields named in `ignored` from every set.
    pub fn exclude_top_level(&mut self, ignored: &[&str]) {
        for name in ignored {
            let element = PathElement::Field((*name).to_owned());
            self.added.take(&element);
            self.modified.take(&element);
            self.removed.take(&element);
        }
    }
}

/// Compares `lhs` (old) with `rhs` (new). With `structs_as_parents`, an added or removed struct
/// or required field is not itself recorded, only what it contains, as for upstream's typed
/// objects, where such fields always exist (empty or null).
pub(crate) fn compare(
    node: Option<Node<'_>>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    structs_as_parents: bool,
) -> Comparison {
    let mut out = Comparison::default();
    compare_into(
        node,
        lhs,
        rhs,
        false,
        structs_as_parents,
        &mut Vec::new(),
        &mut out,
    );
    out
}

fn compare_into(
    node: Option<Node<'_>>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    skippable: bool,
    structs_as_parents: bool,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let depth = path.len();
    let form_of = |v: Option<&Value>| v.map(|v| form(node, v, depth));
    let (left_form, right_form) = (form_of(lhs), form_of(rhs));
    let both_fields = |f: &Option<Form<'_>>| matches!(f, None | Some(Form::Fields));
    let both_lists = |f: &Option<Form<'_>>| matches!(f, None | Some(Form::Set | Form::Assoc(_)));
    let leaf = |out: &mut Comparison, path: &[PathElement]| match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(a), Some(b)) if a != b => out.modified.insert(path),
        _ => {}
    };
    let parent = |out: &mut Comparison, path: &[PathElement]| {
        // An empty struct or list is a leaf of the field set, so it is recorded.
        let present = lhs.or(rhs);
        let non_empty = present.is_some_and(|v| match v {
            Value::Object(m) => !m.is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => false,
        });
        if !(structs_as_parents && skippable && non_empty) {
            match (lhs, rhs) {
                (None, Some(_)) => out.added.insert(path),
                (Some(_), None) => out.removed.insert(path),
                _ => {}
            }
        }
    };
    if both_fields(&left_form) && both_fields(&right_form) {
        let empty = Map::new();
        let left = lhs.and_then(Value::as_object).unwrap_or(&empty);
        let right = rhs.and_then(Value::as_object).unwrap_or(&empty);
        let names: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
        let required_names = node
            .and_then(|n| n.schema().get("required"))
            .and_then(Value::as_array);
        for name in names {
            let (child_node, _) = field_node(node, name);
            let is_struct = child_node.is_some_and(|n| n.known_properties().next().is_some());
            let required =
                required_names.is_some_and(|r| r.iter().any(|v| v.as_str() == Some(name)));
            path.push(PathElement::Field(name.clone()));
            compare_into(
                child_node,
                left.get(name.as_str()),
                right.get(name.as_str()),
                is_struct || required,
                structs_as_parents,
                path,
                out,
            );
            path.pop();
        }
        if !path.is_empty() {
            parent(out, path);
        }
        return;
    }
    let list_form = match (&left_form, &right_form) {
        (Some(f @ (Form::Set | Form::Assoc(_))), _) | (None, Some(f)) => Some(f),
        _ => None,
    };
    if let Some(list_form) = list_form.filter(|_| both_lists(&left_form) && both_lists(&right_form))
    {
        let item_schema = item_node(node);
        let no_items: &[Value] = &[];
        let left_items = lhs
            .and_then(Value::as_array)
            .map_or(no_items, Vec::as_slice);
        let right_items = rhs
            .and_then(Value::as_array)
            .map_or(no_items, Vec::as_slice);
        let left = first_items(list_form, item_schema, left_items);
        let right = first_items(list_form, item_schema, right_items);
        let elements: BTreeSet<&PathElement> = left.keys().chain(right.keys()).collect();
        for element in elements {
            path.push(element.clone());
            let (a, b) = (left.get(element).copied(), right.get(element).copied());
            if matches!(list_form, Form::Assoc(_)) {
                compare_into(item_schema, a, b, false, structs_as_parents, path, out);
            } else {
                match (a, b) {
                    (None, Some(_)) => out.added.insert(path),
                    (Some(_), None) => out.removed.insert(path),
                    _ => {}
                }
            }
            path.pop();
        }
        parent(out, path);
        return;
    }
    leaf(out, path);
}

fn first_items<'v>(
    form: &Form<'_>,
    item_schema: Option<Node<'_>>,
    items: &'v [Value],
) -> BTreeMap<PathElement, &'v Value> {
    let mut out = BTreeMap::new();
    for item in items {
        out.entry(item_element(form, item_schema, item))
            .or_insert(item);
    }
    out
}

/// Removes from `value` every field, map key and list item whose path is a member of `remove`
/// (upstream's `RemoveItems`).
pub(crate) fn remove_items(node: Option<Node<'_>>, value: &mut Value, remove: &FieldSet) {
    remove_into(node, value, remove, 0);
}

fn remove_into(node: Option<Node<'_>>, value: &mut Value, remove: &FieldSet, depth: usize) {
    match form(node, value, depth) {
        Form::Fields => {
            let Value::Object(fields) = value else {
                return;
            };
            fields.retain(|name, _| !remove.has_member(&PathElement::Field(name.clone())));
            for (name, child) in fields.iter_mut() {
                if let Some(below) = remove.child(&PathElement::Field(name.clone())) {
                    let (child_node, _) = field_node(node, name);
                    remove_into(child_node, child, below, depth + 1);
                }
            }
        }
        form @ (Form::Set | Form::Assoc(_)) => {
            let item_schema = item_node(node);
            let Value::Array(items) = value else {
                return;
            };
            let mut kept = Vec::with_capacity(items.len());
            for mut item in std::mem::take(items) {
                let element = item_element(&form, item_schema, &item);
                if remove.has_member(&element) {
                    continue;
                }
                if let (Form::Assoc(_), Some(below)) = (&form, remove.child(&element)) {
                    remove_into(item_schema, &mut item, below, depth + 1);
                }
                kept.push(item);
            }
            *items = kept;
        }
        Form::Leaf => {}
    }
}
