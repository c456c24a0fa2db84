//! Server-side Table printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`): the
//! column sets and cell formats of upstream's built-in printers, the default Name/Created At
//! table, CRD `additionalPrinterColumns`, and the `meta.k8s.io/v1` Table document itself.
//!
//! Everything here is pure: the current time is a parameter, and any object JSON is accepted
//! (missing or wrongly-typed fields render as upstream renders unset fields).
//! As upstream's servers do, cells always include the wide (priority 1) columns; kubectl hides
//! them unless asked for `-o wide`.

mod cluster;
mod core;
mod crd;
mod fields;
mod workloads;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

pub use crd::{CrdColumn, crd_cells, crd_columns};

/// One column definition of a Table (`meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Human-readable header, such as `Ready`.
    pub name: &'static str,
    /// OpenAPI type of the cells: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// OpenAPI format hint: `""`, or `name` for the column that holds the object's name.
    pub format: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// 0 for the default view, 1 (or more) for columns shown only with `-o wide`.
    pub priority: i32,
}

impl Column {
    /// The column as its `columnDefinitions` JSON entry.
    pub fn to_json(&self) -> Value {
        column_json(
            self.name,
            self.type_,
            self.format,
            self.description,
            self.priority,
        )
    }
}

/// Builds one `columnDefinitions` entry; upstream always serializes all five fields.
fn column_json(name: &str, type_: &str, format: &str, description: &str, priority: i32) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

/// A column shown by default.
const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

/// A column shown only with `-o wide`.
const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

/// The `Name` column every printer starts with.
const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: "Name of the object, unique within its namespace (or cluster, for cluster-scoped kinds).",
    priority: 0,
};

/// The `Age` column: time since `metadata.creationTimestamp`.
const AGE: Column = col(
    "Age",
    "string",
    "Time since the object was created (metadata.creationTimestamp).",
);

/// Wide columns shared by the pod-template-owning workloads.
const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// Upstream's default table for kinds without a printer: Name and Created At.
const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Created At",
        "date",
        "Time the object was created (metadata.creationTimestamp), RFC 3339 in UTC.",
    ),
];

/// A kind's printer: its columns and the function rendering one object's cells.
pub(crate) struct Printer {
    /// Column definitions, wide ones included.
    pub(crate) columns: &'static [Column],
    /// Renders the cells of one object, matching `columns` one to one.
    pub(crate) cells: fn(&Value, Timestamp) -> Vec<Value>,
}

/// The printer of a built-in kind, or `None` when upstream uses its default table.
fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    let group = if group == "core" { "" } else { group };
    workloads::printer(group, kind)
        .or_else(|| core::printer(group, kind))
        .or_else(|| cluster::printer(group, kind))
}

/// Columns for a kind (`group` is `""` or `"core"` for the core group).
///
/// Kinds without an upstream printer (Roles, ClusterRoles, LimitRanges, CRDs, ...) get the
/// default Name / Created At columns.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    printer(group, kind)
        .map_or(DEFAULT_COLUMNS, |printer| printer.columns)
        .to_vec()
}

/// The cells of one object's row, matching [`columns`] for the same `group` and `kind`.
pub fn cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match printer(group, kind) {
        Some(printer) => (printer.cells)(obj, now),
        None => vec![
            fields::text(fields::name(obj)),
            fields::text(fields::created_at(obj)),
        ],
    }
}

/// Upstream's `HumanDuration`: a succinct age with two or three significant figures, such as
/// `45s`, `5m10s`, `3h12m`, `2d` or `3y15d`.
pub fn human_duration(d: std::time::Duration) -> String {
    human_nanos(i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// [`human_duration`] for a signed duration: up to one second in the future reads `0s`, further
/// in the future reads `<invalid>` (clock skew tolerance, as upstream).
pub fn human_signed_duration(d: jiff::SignedDuration) -> String {
    human_nanos(d.as_nanos())
}

/// The age of an RFC 3339 timestamp at `now`, or `<unknown>` when it is missing or unparsable.
pub fn age_since(timestamp: Option<&str>, now: Timestamp) -> String {
    fields::since(
        timestamp.map(|raw| Value::String(raw.to_owned())).as_ref(),
        now,
    )
}

/// The shared body of the human-duration functions, over nanoseconds.
///
/// Go's `time.Duration` saturates at about 292 years; the clamp keeps the same answers there.
fn human_nanos(nanos: i128) -> String {
    let nanos = nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let seconds = nanos / 1_000_000_000;
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let rest = seconds % 60;
        return if rest == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rest}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let rest = minutes % 60;
        return if rest == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rest}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let rest = hours % 24;
        return if rest == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{rest}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// What each row's `object` carries (the `includeObject` query parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No `object` field.
    None,
    /// A `meta.k8s.io/v1` `PartialObjectMetadata` with the object's metadata (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (`None`, `Metadata`, `Object`); `None` for
    /// anything else, which callers answer with 400 Bad Request.
    pub fn from_param(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "Metadata" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// How to build a Table document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// What each row's `object` carries.
    pub include_object: IncludeObject,
    /// Leave out `columnDefinitions` (watch events after the first; kubectl reuses the last).
    pub omit_column_definitions: bool,
    /// `metadata.resourceVersion` of the list (or of the single object).
    pub resource_version: Option<String>,
    /// `metadata.continue` of a paginated list.
    pub continue_token: Option<String>,
    /// `metadata.remainingItemCount` of a paginated list.
    pub remaining_item_count: Option<i64>,
}

/// Builds the `meta.k8s.io/v1` Table for objects of a built-in kind (or the default table).
pub fn table(
    group: &str,
    kind: &str,
    objects: &[Value],
    options: &TableOptions,
    now: Timestamp,
) -> Value {
    let definitions = columns(group, kind).iter().map(Column::to_json).collect();
    let is_pod = matches!(group, "" | "core") && kind == "Pod";
    let rows = objects
        .iter()
        .map(|object| {
            let conditions = if is_pod {
                workloads::pod_row_conditions(object)
            } else {
                None
            };
            RowInput {
                cells: cells(group, kind, object, now),
                conditions,
                object,
            }
        })
        .collect();
    build_table(definitions, rows, options)
}

/// Builds the `meta.k8s.io/v1` Table for custom resources printed with `columns` (from
/// [`crd_columns`]).
pub fn crd_table(
    columns: &[CrdColumn],
    objects: &[Value],
    options: &TableOptions,
    now: Timestamp,
) -> Value {
    let mut definitions = vec![NAME.to_json()];
    definitions.extend(columns.iter().map(CrdColumn::to_json));
    let rows = objects
        .iter()
        .map(|object| RowInput {
            cells: crd_cells(columns, object, now),
            conditions: None,
            object,
        })
        .collect();
    build_table(definitions, rows, options)
}

/// One row before serialization.
struct RowInput<'a> {
    cells: Vec<Value>,
    conditions: Option<Value>,
    object: &'a Value,
}

/// Assembles the Table document from column definitions and rows.
fn build_table(definitions: Vec<Value>, rows: Vec<RowInput<'_>>, options: &TableOptions) -> Value {
    let mut metadata = Map::new();
    if let Some(resource_version) = options
        .resource_version
        .as_ref()
        .filter(|value| !value.is_empty())
    {
        metadata.insert(
            "resourceVersion".into(),
            Value::String(resource_version.clone()),
        );
    }
    if let Some(continue_token) = options
        .continue_token
        .as_ref()
        .filter(|value| !value.is_empty())
    {
        metadata.insert("continue".into(), Value::String(continue_token.clone()));
    }
    if let Some(remaining) = options.remaining_item_count {
        metadata.insert("remainingItemCount".into(), Value::from(remaining));
    }

    let rows: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let mut entry = Map::new();
            entry.insert("cells".into(), Value::Array(row.cells));
            if let Some(conditions) = row.conditions {
                entry.insert("conditions".into(), conditions);
            }
            match options.include_object {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    entry.insert("object".into(), partial_object_metadata(row.object));
                }
                IncludeObject::Object => {
                    entry.insert("object".into(), row.object.clone());
                }
            }
            Value::Object(entry)
        })
        .collect();

    let mut table = Map::new();
    table.insert("kind".into(), Value::from("Table"));
    table.insert("apiVersion".into(), Value::from("meta.k8s.io/v1"));
    table.insert("metadata".into(), Value::Object(metadata));
    if !options.omit_column_definitions {
        table.insert("columnDefinitions".into(), Value::Array(definitions));
    }
    table.insert("rows".into(), Value::Array(rows));
    Value::Object(table)
}

/// The `PartialObjectMetadata` form of an object: its metadata under `meta.k8s.io/v1`.
pub fn partial_object_metadata(object: &Value) -> Value {
    let metadata = match fields::get(object, &["metadata"]) {
        Some(Value::Object(metadata)) => Value::Object(metadata.clone()),
        _ => Value::Object(Map::new()),
    };
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
}

#[cfg(test)]
mod tests;
