//! `metadata.managedFields` entries: reading them from an object, writing them back in
//! upstream's order, and the metadata fields no manager is ever recorded as owning.

use std::fmt;

use serde_json::{Map, Value, json};

use super::fieldset::{FieldSet, FieldsV1Error, PathElement};

/// Why `metadata.managedFields` could not be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManagedFieldsError {
    /// `metadata.managedFields` is not a list, or an entry is not an object.
    #[error("metadata.managedFields must be a list of objects")]
    NotAList,
    /// An entry has an operation other than `Apply` or `Update`.
    #[error("managed fields entry {index} has unknown operation {operation:?}")]
    UnknownOperation {
        /// Position of the entry.
        index: usize,
        /// The operation found.
        operation: String,
    },
    /// An entry's `fieldsType` is not `FieldsV1`.
    #[error("managed fields entry {index} has wrong fieldsType {fields_type:?}, expected FieldsV1")]
    WrongFieldsType {
        /// Position of the entry.
        index: usize,
        /// The type found.
        fields_type: String,
    },
    /// An entry's `fieldsV1` is malformed.
    #[error("managed fields entry {index}: {source}")]
    Fields {
        /// Position of the entry.
        index: usize,
        /// What was wrong.
        #[source]
        source: FieldsV1Error,
    },
}

/// The kind of write that gave a manager its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write: create, update, patch.
    Update,
}

impl Operation {
    /// The wire name (`Apply`, `Update`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    /// The field manager's name.
    pub manager: String,
    /// How the fields were written.
    pub operation: Operation,
    /// The apiVersion of the object the manager wrote.
    pub api_version: String,
    /// When the entry last changed (RFC 3339), if known.
    pub time: Option<String>,
    /// The subresource written through (`status`, `scale`), if any.
    pub subresource: Option<String>,
    /// The fields owned.
    pub fields: FieldSet,
}

impl ManagedFieldsEntry {
    /// True when `self` is the entry of (`manager`, `operation`, `api_version`, `subresource`);
    /// the apiVersion counts only for `Update` entries, as upstream keys them.
    pub fn is(
        &self,
        manager: &str,
        operation: Operation,
        api_version: &str,
        subresource: Option<&str>,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// The entry as JSON, fields in upstream's order.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("manager".into(), json!(self.manager));
        out.insert("operation".into(), json!(self.operation.as_str()));
        if !self.api_version.is_empty() {
            out.insert("apiVersion".into(), json!(self.api_version));
        }
        if let Some(time) = &self.time {
            out.insert("time".into(), json!(time));
        }
        out.insert("fieldsType".into(), json!("FieldsV1"));
        out.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            out.insert("subresource".into(), json!(subresource));
        }
        Value::Object(out)
    }

    /// Reads one entry; `index` is used in errors.
    pub fn from_json(index: usize, entry: &Value) -> Result<Self, ManagedFieldsError> {
        let Value::Object(fields) = entry else {
            return Err(ManagedFieldsError::NotAList);
        };
        let text = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or_default();
        let operation = match text("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            other => {
                return Err(ManagedFieldsError::UnknownOperation {
                    index,
                    operation: other.to_owned(),
                });
            }
        };
        if text("fieldsType") != "FieldsV1" {
            return Err(ManagedFieldsError::WrongFieldsType {
                index,
                fields_type: text("fieldsType").to_owned(),
            });
        }
        let set = match fields.get("fieldsV1") {
            Some(v) => FieldSet::from_fields_v1(v)
                .map_err(|source| ManagedFieldsError::Fields { index, source })?,
            None => FieldSet::new(),
        };
        let optional = |key: &str| Some(text(key)).filter(|s| !s.is_empty()).map(str::to_owned);
        Ok(ManagedFieldsEntry {
            manager: text("manager").to_owned(),
            operation,
            api_version: text("apiVersion").to_owned(),
            time: optional("time"),
            subresource: optional("subresource"),
            fields: set,
        })
    }
}

/// Reads `metadata.managedFields` of `object`; entries with the same identity are merged.
pub fn decode(object: &Value) -> Result<Vec<ManagedFieldsEntry>, ManagedFieldsError> {
    let raw = match object.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(raw)) => raw,
        Some(_) => return Err(ManagedFieldsError::NotAList),
    };
    let mut entries: Vec<ManagedFieldsEntry> = Vec::with_capacity(raw.len());
    for (index, value) in raw.iter().enumerate() {
        let entry = ManagedFieldsEntry::from_json(index, value)?;
        let same = entries.iter_mut().find(|e| {
            e.is(
                &entry.manager,
                entry.operation,
                &entry.api_version,
                entry.subresource.as_deref(),
            )
        });
        match same {
            Some(existing) => existing.fields.union_with(&entry.fields),
            None => entries.push(entry),
        }
    }
    Ok(entries)
}

/// Writes `entries` into `metadata.managedFields` of `object` in upstream's order (operation,
/// time, manager, apiVersion, subresource), dropping empty ones; no entries removes the field.
pub fn encode(object: &mut Value, mut entries: Vec<ManagedFieldsEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (
            a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Value::Object(root) = object else {
        return;
    };
    if entries.is_empty() && !root.contains_key("metadata") {
        return;
    }
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    let Value::Object(metadata) = metadata else {
        return;
    };
    if entries.is_empty() {
        metadata.remove("managedFields");
    } else {
        let list = entries.iter().map(ManagedFieldsEntry::to_json).collect();
        metadata.insert("managedFields".into(), Value::Array(list));
    }
}

/// Removes `metadata.managedFields` from `object`.
pub fn remove(object: &mut Value) {
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.remove("managedFields");
    }
}

/// Removes from `set` the fields upstream never records as owned: `apiVersion`, `kind`, the
/// `metadata` field itself, and the identity and bookkeeping fields of `metadata`.
pub fn strip_meta(set: &mut FieldSet) {
    for name in ["apiVersion", "kind", "metadata"] {
        set.remove_member(&PathElement::Field(name.to_owned()));
    }
    let metadata = PathElement::Field("metadata".to_owned());
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.remove_path(&[metadata.clone(), PathElement::Field(name.to_owned())]);
    }
}
