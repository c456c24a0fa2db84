//! Field sets: the tree of field paths a manager owns, in the `FieldsV1` JSON format of
//! `metadata.managedFields[].fieldsV1`, with set algebra (union, difference, intersection).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// How deep a `FieldsV1` document may nest before it is refused.
pub const MAX_FIELDS_DEPTH: usize = 128;

/// Why a `FieldsV1` document could not be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldsV1Error {
    /// A node of the tree is not a JSON object.
    #[error("fieldsV1 node at {path} is not an object")]
    NotAnObject {
        /// Where the bad node is (upstream display form).
        path: String,
    },
    /// A key has no known prefix (`f:`, `k:`, `v:`, `i:` or `.`).
    #[error("fieldsV1 key {key:?} at {path} has no known prefix")]
    UnknownPrefix {
        /// The offending key.
        key: String,
        /// Where it is.
        path: String,
    },
    /// The JSON after `k:` or `v:`, or the index after `i:`, does not parse.
    #[error("fieldsV1 key {key:?} at {path} is malformed")]
    Malformed {
        /// The offending key.
        key: String,
        /// Where it is.
        path: String,
    },
    /// The tree nests deeper than [`MAX_FIELDS_DEPTH`].
    #[error("fieldsV1 nests deeper than {MAX_FIELDS_DEPTH} levels")]
    TooDeep,
}

/// One step in a field path.
///
/// The variant order is the order upstream sorts path elements in: field names, then keys of
/// associative lists, then values of set lists, then indexes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A struct field or a map key (`f:<name>`).
    Field(String),
    /// An item of an associative list, identified by its key fields: the canonical JSON text
    /// of an object with the key fields in name order (`k:{"name":"nginx"}`).
    Key(String),
    /// An item of a set list, identified by its value: canonical JSON text (`v:"a"`).
    Value(String),
    /// An item of a list by position (`i:0`); not produced by kumo, accepted when read.
    Index(usize),
}

impl PathElement {
    /// The element for an associative-list item with key fields `keys` (sorted by name here).
    pub fn key(keys: impl IntoIterator<Item = (String, Value)>) -> Self {
        let sorted: BTreeMap<String, Value> = keys.into_iter().collect();
        let object: Map<String, Value> = sorted.into_iter().collect();
        PathElement::Key(canonical_json(&Value::Object(object)))
    }

    /// The element for a set-list item with value `value`.
    pub fn value(value: &Value) -> Self {
        PathElement::Value(canonical_json(value))
    }

    /// The `FieldsV1` key of this element (`f:name`, `k:{…}`, `v:…`, `i:N`).
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Parses a `FieldsV1` key; `None` when it has no known prefix or bad JSON.
    pub fn from_fields_v1_key(key: &str) -> Option<Self> {
        let (prefix, rest) = key.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_owned())),
            "k:" => match serde_json::from_str::<Value>(rest).ok()? {
                Value::Object(fields) => Some(PathElement::key(fields)),
                _ => None,
            },
            "v:" => serde_json::from_str::<Value>(rest)
                .ok()
                .map(|v| PathElement::value(&v)),
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }
}

impl fmt::Display for PathElement {
    /// Upstream's display form: `.name`, `[name="nginx"]`, `[="a"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(json) => {
                let fields = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(fields)) => fields,
                    _ => return write!(f, "[{json}]"),
                };
                f.write_str("[")?;
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{name}={}", display_value(value))?;
                }
                f.write_str("]")
            }
            PathElement::Value(json) => match serde_json::from_str::<Value>(json) {
                Ok(value) => write!(f, "[={}]", display_value(&value)),
                Err(_) => write!(f, "[={json}]"),
            },
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// A path from the object root, shown as upstream shows it (`.spec.replicas`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|element| element.fmt(f))
    }
}

/// A set of field paths, stored as a tree: at each level, the elements that are members of the
/// set, and the subtrees below elements that have members deeper down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the set has no paths.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds `path`; the empty path is ignored (the root is never a member).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Removes the member `element` (one level down), keeping paths below it.
    pub fn remove_member(&mut self, element: &PathElement) {
        self.members.remove(element);
    }

    /// Removes the member `path`, keeping paths below it; emptied subtrees are dropped.
    pub fn remove_path(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove_path(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// True when `path` is a member.
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// True when `element` (one level down) is a member.
    pub fn has_member(&self, element: &PathElement) -> bool {
        self.members.contains(element)
    }

    /// Adds `element` (one level down) as a member.
    pub fn insert_member(&mut self, element: PathElement) {
        self.members.insert(element);
    }

    /// The subtree under `element`, if any path goes through it.
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Removes and returns the subtree under `element` and its membership.
    pub fn take(&mut self, element: &PathElement) -> (bool, Option<FieldSet>) {
        (self.members.remove(element), self.children.remove(element))
    }

    /// The members one level down.
    pub fn members(&self) -> impl Iterator<Item = &PathElement> {
        self.members.iter()
    }

    /// The subtrees one level down.
    pub fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    /// Adds every path of `child` below `element`.
    pub fn add_child(&mut self, element: PathElement, child: FieldSet) {
        if child.is_empty() {
            return;
        }
        match self.children.get_mut(&element) {
            Some(existing) => existing.union_with(&child),
            None => {
                self.children.insert(element, child);
            }
        }
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// Adds every path of `other` to `self`.
    pub fn union_with(&mut self, other: &FieldSet) {
        self.members.extend(other.members.iter().cloned());
        for (element, child) in &other.children {
            self.children
                .entry(element.clone())
                .or_default()
                .union_with(child);
        }
    }

    /// Paths in `self` but not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                children.insert(element.clone(), rest);
            }
        }
        FieldSet { members, children }
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    children.insert(element.clone(), both);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Every member path, in sorted order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        let mut elements: BTreeSet<&PathElement> = self.members.iter().collect();
        elements.extend(self.children.keys());
        for element in elements {
            prefix.push(element.clone());
            if self.members.contains(element) {
                out.push(Path(prefix.clone()));
            }
            if let Some(child) = self.children.get(element) {
                child.collect_paths(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The `FieldsV1` JSON form: `{"f:spec":{"f:replicas":{}}}`, with `".":{}` marking a
    /// member that also has members below it.
    pub fn to_fields_v1(&self) -> Value {
        let mut elements: BTreeSet<&PathElement> = self.members.iter().collect();
        elements.extend(self.children.keys());
        let mut out = Map::new();
        for element in elements {
            let mut node = match self.children.get(element) {
                Some(child) => match child.to_fields_v1() {
                    Value::Object(map) => map,
                    _ => Map::new(),
                },
                None => Map::new(),
            };
            if self.members.contains(element) && !node.is_empty() {
                let mut with_dot = Map::new();
                with_dot.insert(".".to_owned(), Value::Object(Map::new()));
                with_dot.extend(node);
                node = with_dot;
            }
            out.insert(element.to_fields_v1_key(), Value::Object(node));
        }
        Value::Object(out)
    }

    /// Reads the `FieldsV1` JSON form.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldsV1Error> {
        let mut path = Vec::new();
        Self::read(value, &mut path)
    }

    fn read(value: &Value, path: &mut Vec<PathElement>) -> Result<FieldSet, FieldsV1Error> {
        if path.len() > MAX_FIELDS_DEPTH {
            return Err(FieldsV1Error::TooDeep);
        }
        let Value::Object(entries) = value else {
            return Err(FieldsV1Error::NotAnObject {
                path: Path(path.clone()).to_string(),
            });
        };
        let mut set = FieldSet::new();
        for (key, child) in entries {
            if key == "." {
                continue;
            }
            let element = match PathElement::from_fields_v1_key(key) {
                Some(element) => element,
                None => {
                    let path = Path(path.clone()).to_string();
                    let key = key.clone();
                    return Err(if matches!(key.get(..2), Some("f:" | "k:" | "v:" | "i:")) {
                        FieldsV1Error::Malformed { key, path }
                    } else {
                        FieldsV1Error::UnknownPrefix { key, path }
                    });
                }
            };
            let Value::Object(grandchildren) = child else {
                path.push(element);
                return Err(FieldsV1Error::NotAnObject {
                    path: Path(std::mem::take(path)).to_string(),
                });
            };
            if grandchildren.is_empty() || grandchildren.contains_key(".") {
                set.members.insert(element.clone());
            }
            path.push(element.clone());
            let below = Self::read(child, path)?;
            path.pop();
            if !below.is_empty() {
                set.children.insert(element, below);
            }
        }
        Ok(set)
    }
}

/// JSON text with object keys sorted at every level, so equal values give equal text.
pub(crate) fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value, depth: usize) -> Value {
        match value {
            Value::Object(fields) if depth < MAX_FIELDS_DEPTH => {
                let ordered: BTreeMap<&String, Value> = fields
                    .iter()
                    .map(|(k, v)| (k, sorted(v, depth + 1)))
                    .collect();
                Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(items) if depth < MAX_FIELDS_DEPTH => {
                Value::Array(items.iter().map(|v| sorted(v, depth + 1)).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value, 0).to_string()
}

/// A value as upstream prints it inside a path: strings quoted, everything else as JSON.
fn display_value(value: &Value) -> String {
    value.to_string()
}
