//! Server-side apply and field ownership: merging an applied configuration into a live object
//! with conflict detection ([`apply`]), and recording which manager changed which fields on
//! ordinary writes ([`track_update`]), kept in `metadata.managedFields` as upstream does.
//!
//! The semantics follow structured-merge-diff and the API server's field manager: the applied
//! configuration is merged into the live object by the schema's list and map types; fields the
//! applier owned before and no longer applies are removed unless someone else owns them;
//! changing a field another manager owns is a conflict unless forced, and forcing (or any
//! ordinary write) takes the field from that manager. These are pure functions: no IO.

mod fieldset;
mod managed;
mod typed;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::{Map, Value};

pub use fieldset::{FieldSet, FieldsV1Error, MAX_FIELDS_DEPTH, Path, PathElement};
pub use managed::{ManagedFieldsEntry, ManagedFieldsError, Operation};

use crate::schema::Node;

/// The annotation where client-side apply keeps the last applied configuration.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The field manager `kubectl apply --server-side` uses; only it upgrades from client-side
/// apply and keeps the last-applied annotation in sync, as upstream does.
pub const KUBECTL_MANAGER: &str = "kubectl";

/// The manager that receives every field of an object applied to for the first time when the
/// object has no managed fields yet.
pub const BEFORE_FIRST_APPLY_MANAGER: &str = "before-first-apply";

/// Upstream's limit on the total size of an object's annotations.
const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

/// The result of a successful [`apply`].
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyOutcome {
    /// The merged object, with updated `metadata.managedFields`.
    pub object: Value,
    /// False when the apply changed nothing (neither the object nor its managed fields), so
    /// the caller may skip the write.
    pub changed: bool,
}

/// One field another manager owns that the applied configuration would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// How that manager wrote the field.
    pub operation: Operation,
    /// The apiVersion of that manager's entry.
    pub api_version: String,
    /// The subresource of that manager's entry, if any.
    pub subresource: Option<String>,
    /// The field.
    pub path: Path,
}

impl Conflict {
    /// The manager as upstream prints it: `"x"`, `"x" using apps/v1` for updaters, with
    /// `with subresource "status"` when written through a subresource.
    pub fn manager_display(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(subresource) = &self.subresource {
            out.push_str(&format!(" with subresource {subresource:?}"));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    /// The message of the `FieldManagerConflict` status cause: `conflict with "x" using apps/v1`.
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_display())
    }

    /// The `field` of the status cause: the path in upstream's form (`.spec.replicas`).
    pub fn field(&self) -> String {
        self.path.to_string()
    }
}

/// The conflicts of a refused apply, in manager then path order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflicts(pub Vec<Conflict>);

impl fmt::Display for Conflicts {
    /// The message of the 409 status, as upstream words it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(
                f,
                "Apply failed with 1 conflict: {}: {}",
                one.cause_message(),
                one.path
            ),
            all => {
                write!(f, "Apply failed with {} conflicts: ", all.len())?;
                let mut lines = Vec::new();
                let mut last_manager = None;
                for conflict in all {
                    let manager = conflict.manager_display();
                    if last_manager.as_ref() != Some(&manager) {
                        lines.push(format!("conflicts with {manager}:"));
                        last_manager = Some(manager);
                    }
                    lines.push(format!("- {}", conflict.path));
                }
                f.write_str(&lines.join("\n"))
            }
        }
    }
}

/// Why an apply was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    /// Fields owned by other managers would change (409 Conflict, reason
    /// `FieldManagerConflict` per cause).
    #[error("{0}")]
    Conflict(Conflicts),
    /// The applied configuration is not a JSON object.
    #[error("applied configuration must be an object")]
    NotAnObject,
    /// The applied configuration sets `metadata.managedFields`.
    #[error("metadata.managedFields must be nil")]
    ManagedFieldsSet,
    /// The applied configuration is malformed (such as duplicate keys in an associative list).
    #[error("{0}")]
    Invalid(String),
    /// The live object's `metadata.managedFields` cannot be read.
    #[error("failed to decode managed fields: {0}")]
    ManagedFields(#[from] ManagedFieldsError),
}

/// Applies `applied` for `manager` to `live` (absent when the apply creates the object).
///
/// `schema` is the kind's schema (`None` treats objects as granular maps and lists as atomic);
/// `ignored` names top-level fields this endpoint does not write (such as `status` on the main
/// resource): they are dropped from the applied configuration and from ownership. `now` is the
/// RFC 3339 time written into the manager's entry when something changed.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: Option<Node<'_>>,
    ignored: &[&str],
    now: &str,
) -> Result<ApplyOutcome, ApplyError> {
    if !applied.is_object() {
        return Err(ApplyError::NotAnObject);
    }
    match applied.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.is_empty() => {}
        Some(_) => return Err(ApplyError::ManagedFieldsSet),
    }
    typed::check_duplicates(schema, applied, &mut Vec::new())?;
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();

    let mut config = applied.clone();
    managed::remove(&mut config);
    remove_top_level(&mut config, ignored);

    let mut entries = match live {
        Some(live) => managed::decode(live)?,
        None => Vec::new(),
    };
    let mut live_object = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    managed::remove(&mut live_object);
    if live.is_some() && entries.is_empty() {
        let writer = Writer {
            manager: BEFORE_FIRST_APPLY_MANAGER,
            api_version: &api_version,
            subresource: None,
        };
        record_update(
            &mut entries,
            schema,
            None,
            &live_object,
            &writer,
            ignored,
            now,
        );
    }

    let mut merged = typed::merge(schema, &live_object, &config, 0);
    let mut new_set = typed::to_field_set(schema, &config);
    managed::strip_meta(&mut new_set);
    let is_applier = |e: &ManagedFieldsEntry| e.is(manager, Operation::Apply, "", None);
    let previous = entries
        .iter()
        .position(is_applier)
        .map(|i| entries.remove(i));
    let last_set = previous.as_ref().map(|e| e.fields.clone());

    if let Some(last_set) = last_set.filter(|s| !s.is_empty()) {
        let mut owned = new_set.clone();
        for entry in &entries {
            owned.union_with(&entry.fields);
        }
        let merged_set = typed::ensure_named_fields(schema, &typed::to_field_set(schema, &merged));
        let owned = typed::ensure_named_fields(schema, &owned);
        let last = typed::ensure_named_fields(schema, &last_set);
        let remove = merged_set.difference(&owned).intersection(&last);
        typed::remove_items(schema, &mut merged, &remove);
    }

    let mut comparison = typed::compare(schema, Some(&live_object), Some(&merged), false);
    comparison.exclude_top_level(ignored);
    let changed_fields = comparison.modified.union(&comparison.added);
    let mut conflicts = Vec::new();
    for entry in &entries {
        for path in entry.fields.intersection(&changed_fields).paths() {
            conflicts.push(Conflict {
                manager: entry.manager.clone(),
                operation: entry.operation,
                api_version: entry.api_version.clone(),
                subresource: entry.subresource.clone(),
                path,
            });
        }
    }
    if !conflicts.is_empty() && !force {
        let allowed = if manager == KUBECTL_MANAGER {
            allowed_by_last_applied(&live_object, schema, &api_version)
        } else {
            None
        };
        if let Some(allowed) = allowed {
            conflicts.retain(|c| !allowed.has(&c.path.0));
        }
        if !conflicts.is_empty() {
            conflicts.sort_by(|a, b| {
                (a.manager_display(), &a.path).cmp(&(b.manager_display(), &b.path))
            });
            return Err(ApplyError::Conflict(Conflicts(conflicts)));
        }
    }
    for entry in &mut entries {
        entry.fields = entry
            .fields
            .difference(&changed_fields)
            .difference(&comparison.removed);
    }

    let object_changed = merged != live_object;
    let entry_changed = previous
        .as_ref()
        .is_none_or(|p| p.fields != new_set || p.api_version != api_version);
    let time = match &previous {
        Some(p) if !object_changed && !entry_changed => p.time.clone(),
        _ => Some(now.to_owned()),
    };
    entries.push(ManagedFieldsEntry {
        manager: manager.to_owned(),
        operation: Operation::Apply,
        api_version,
        time,
        subresource: None,
        fields: new_set,
    });

    if manager == KUBECTL_MANAGER {
        sync_last_applied(&mut merged, applied);
    }
    managed::encode(&mut merged, entries);
    let changed = match live {
        Some(live) => &merged != live,
        None => true,
    };
    Ok(ApplyOutcome {
        object: merged,
        changed,
    })
}

/// Records a non-apply write (create, update, patch) by `manager` that turned `old` (absent on
/// create) into `new`: the fields that changed join the manager's `Update` entry and leave
/// every other entry; entries left empty are dropped. `metadata.managedFields` of `new` is
/// rewritten.
///
/// Managed fields sent by the client in `new` are kept as the starting point when they are
/// valid (so clients can edit them), `[{}]` resets them, and otherwise those of `old` are used.
/// `ignored` names top-level fields this endpoint does not write (such as `status`).
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    schema: Option<Node<'_>>,
    ignored: &[&str],
    now: &str,
) {
    track(old, new, manager, None, schema, ignored, now);
}

/// [`track_update`] for a write through a subresource (such as `status`): the manager's entry
/// carries `subresource`, and managed fields sent by the client are ignored, as upstream does.
/// `ignored` names the top-level fields the subresource does not write (such as `spec`).
pub fn track_subresource_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    schema: Option<Node<'_>>,
    ignored: &[&str],
    now: &str,
) {
    track(old, new, manager, Some(subresource), schema, ignored, now);
}

fn track(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    schema: Option<Node<'_>>,
    ignored: &[&str],
    now: &str,
) {
    let mut entries = match new.pointer("/metadata/managedFields") {
        _ if subresource.is_some() => decode_or_empty(old),
        Some(Value::Array(list)) if list.len() == 1 && list[0] == Value::Object(Map::new()) => {
            Vec::new()
        }
        Some(Value::Array(list)) if !list.is_empty() => match managed::decode(new) {
            Ok(entries) => entries,
            Err(_) => decode_or_empty(old),
        },
        _ => decode_or_empty(old),
    };
    let mut old_object = old.cloned();
    if let Some(old_object) = &mut old_object {
        managed::remove(old_object);
    }
    managed::remove(new);
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let writer = Writer {
        manager,
        api_version: &api_version,
        subresource,
    };
    record_update(
        &mut entries,
        schema,
        old_object.as_ref(),
        new,
        &writer,
        ignored,
        now,
    );
    managed::encode(new, entries);
}

/// Who makes an `Update`.
struct Writer<'a> {
    manager: &'a str,
    api_version: &'a str,
    subresource: Option<&'a str>,
}

/// The core of an `Update`: moves the fields that changed between `old` and `new` to
/// `manager`'s `Update` entry.
fn record_update(
    entries: &mut Vec<ManagedFieldsEntry>,
    schema: Option<Node<'_>>,
    old: Option<&Value>,
    new: &Value,
    writer: &Writer<'_>,
    ignored: &[&str],
    now: &str,
) {
    // Structs and required fields always exist in upstream's typed objects, so their own
    // paths are never recorded as added or removed by an update, only what they contain.
    let mut comparison = typed::compare(schema, old, Some(new), true);
    comparison.exclude_top_level(ignored);
    let mut changed = comparison.modified.union(&comparison.added);
    for entry in entries.iter_mut() {
        entry.fields = entry
            .fields
            .difference(&changed)
            .difference(&comparison.removed);
    }
    managed::strip_meta(&mut changed);
    if !changed.is_empty() {
        let is_writer = |e: &ManagedFieldsEntry| {
            e.is(
                writer.manager,
                Operation::Update,
                writer.api_version,
                writer.subresource,
            )
        };
        match entries.iter_mut().find(|e| is_writer(e)) {
            Some(entry) => {
                entry.fields.union_with(&changed);
                entry.time = Some(now.to_owned());
            }
            None => entries.push(ManagedFieldsEntry {
                manager: writer.manager.to_owned(),
                operation: Operation::Update,
                api_version: writer.api_version.to_owned(),
                time: Some(now.to_owned()),
                subresource: writer.subresource.map(str::to_owned),
                fields: changed,
            }),
        }
    }
    for entry in entries.iter_mut() {
        managed::strip_meta(&mut entry.fields);
    }
    entries.retain(|e| !e.fields.is_empty());
}

fn decode_or_empty(object: Option<&Value>) -> Vec<ManagedFieldsEntry> {
    object
        .and_then(|o| managed::decode(o).ok())
        .unwrap_or_default()
}

fn remove_top_level(object: &mut Value, ignored: &[&str]) {
    if let Value::Object(fields) = object {
        for name in ignored {
            fields.remove(*name);
        }
    }
}

/// The fields a switch from client-side to server-side apply may take without conflict: those
/// the last-applied annotation sets to the value they still have (upstream's
/// `lastAppliedManager`). `None` when there is no usable annotation.
fn allowed_by_last_applied(
    live: &Value,
    schema: Option<Node<'_>>,
    api_version: &str,
) -> Option<FieldSet> {
    let text = live
        .get("metadata")?
        .get("annotations")?
        .get(LAST_APPLIED_ANNOTATION)?
        .as_str()?;
    let last_applied: Value = serde_json::from_str(text).ok()?;
    if last_applied.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
        return None;
    }
    let set = typed::to_field_set(schema, &last_applied);
    let comparison = typed::compare(schema, Some(&last_applied), Some(live), false);
    Some(
        set.difference(&comparison.modified)
            .difference(&comparison.added)
            .difference(&comparison.removed),
    )
}

/// Keeps the last-applied annotation in step with server-side applies by `kubectl`, when the
/// object has one (upstream's `lastAppliedUpdater`), so a later client-side apply computes its
/// patch against what was really applied. Too large an annotation is dropped instead.
fn sync_last_applied(object: &mut Value, applied: &Value) {
    let Some(Value::Object(annotations)) = object
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
    else {
        return;
    };
    if annotations
        .get(LAST_APPLIED_ANNOTATION)
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return;
    }
    let mut last_applied = applied.clone();
    if let Some(Value::Object(theirs)) = last_applied
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
    {
        theirs.remove(LAST_APPLIED_ANNOTATION);
    }
    let text = format!("{}\n", fieldset::canonical_json(&last_applied));
    annotations.insert(LAST_APPLIED_ANNOTATION.to_owned(), Value::String(text));
    let size: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size > ANNOTATIONS_SIZE_LIMIT {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}
