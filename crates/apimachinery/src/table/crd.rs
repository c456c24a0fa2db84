//! Custom resources printed through a CRD version's `additionalPrinterColumns`, with the small
//! JSONPath dialect those columns use (`.spec.replicas`, `.status.conditions[?(@.type=="Ready")].status`).

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::fields::{parse_time, str_at};
use super::{column_json, human_signed_duration};

/// One printer column of a custom resource (a CRD version's `additionalPrinterColumns` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdColumn {
    /// Header text.
    pub name: String,
    /// Cell type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// OpenAPI format hint, passed through.
    pub format: String,
    /// Description; upstream falls back to naming the JSONPath.
    pub description: String,
    /// 0 for the default view, 1 or more for `-o wide`.
    pub priority: i32,
    /// The JSONPath evaluated against each object, such as `.spec.replicas`.
    pub json_path: String,
}

impl CrdColumn {
    /// The column as its `columnDefinitions` JSON entry.
    pub fn to_json(&self) -> Value {
        column_json(
            &self.name,
            &self.type_,
            &self.format,
            &self.description,
            self.priority,
        )
    }
}

/// The printer columns of a CRD version, from its `additionalPrinterColumns` JSON.
///
/// Entries that are not objects are skipped. When there are none, upstream serves a single
/// `Age` column over `.metadata.creationTimestamp`, and so does this function. The `Name` column
/// is not included: every custom resource table starts with it (see `crd_table`).
pub fn crd_columns(printer_columns: &Value) -> Vec<CrdColumn> {
    let columns: Vec<CrdColumn> = printer_columns
        .as_array()
        .into_iter()
        .flatten()
        .filter(|column| column.is_object())
        .map(|column| {
            let json_path = str_at(column, &["jsonPath"]).to_owned();
            let description = match str_at(column, &["description"]) {
                "" => {
                    format!("Custom resource definition column (in JSONPath format): {json_path}")
                }
                given => given.to_owned(),
            };
            let priority = column.get("priority").and_then(Value::as_i64).unwrap_or(0);
            CrdColumn {
                name: str_at(column, &["name"]).to_owned(),
                type_: str_at(column, &["type"]).to_owned(),
                format: str_at(column, &["format"]).to_owned(),
                description,
                priority: i32::try_from(priority).unwrap_or(0),
                json_path,
            }
        })
        .collect();
    if !columns.is_empty() {
        return columns;
    }
    vec![CrdColumn {
        name: "Age".to_owned(),
        type_: "date".to_owned(),
        format: String::new(),
        description: "Time since the object was created (metadata.creationTimestamp).".to_owned(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".to_owned(),
    }]
}

/// The cells of one custom resource: its name, then one cell per column.
///
/// A path that matches nothing (or does not parse) gives a `null` cell, as upstream; a value of
/// the wrong type for the column also gives `null`; a `date` that does not parse gives
/// `<invalid>`, and a valid one its age.
pub fn crd_cells(columns: &[CrdColumn], obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut cells = Vec::with_capacity(columns.len() + 1);
    cells.push(Value::String(str_at(obj, &["metadata", "name"]).to_owned()));
    for column in columns {
        let first = JsonPath::parse(&column.json_path)
            .ok()
            .and_then(|path| path.evaluate(obj).into_iter().next());
        cells.push(match first {
            None => Value::Null,
            Some(value) => cell_for(&column.type_, value, now),
        });
    }
    cells
}

/// Converts the first JSONPath match to a cell of the column's type.
fn cell_for(type_: &str, value: &Value, now: Timestamp) -> Value {
    match (type_, value) {
        (_, Value::Null) => Value::Null,
        ("string", value) => Value::String(print_value(value)),
        ("integer", Value::Number(number)) => match number.as_i64() {
            Some(int) => Value::from(int),
            None => Value::from(number.as_f64().map_or(0, |float| float as i64)),
        },
        ("number", Value::Number(number)) => number.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(flag)) => Value::Bool(*flag),
        ("date", Value::String(raw)) => {
            if raw.is_empty() || raw == "null" {
                Value::String("<unknown>".to_owned())
            } else {
                match parse_time(Some(value)) {
                    Some(timestamp) => {
                        Value::String(human_signed_duration(now.duration_since(timestamp)))
                    }
                    None if raw.parse::<Timestamp>().is_ok() => {
                        Value::String("<unknown>".to_owned())
                    }
                    None => Value::String("<invalid>".to_owned()),
                }
            }
        }
        _ => Value::Null,
    }
}

/// Prints a JSONPath result as kubectl's JSONPath printer does: strings raw, other scalars in
/// Go's `%v` form, objects and arrays as compact JSON with sorted keys.
fn print_value(value: &Value) -> String {
    match value {
        Value::String(string) => string.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(int), _) => int.to_string(),
            (None, Some(unsigned)) => unsigned.to_string(),
            _ => number.as_f64().map(go_float).unwrap_or_default(),
        },
        Value::Null => String::new(),
        Value::Array(_) | Value::Object(_) => sorted(value).to_string(),
    }
}

/// A copy of `value` with object keys sorted at every level (Go's `json.Marshal` order).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|left, right| left.0.cmp(right.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), sorted(value)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Formats a float as Go's `%v`: shortest digits, exponent form below 1e-4 or from 1e21.
fn go_float(float: f64) -> String {
    if float == 0.0 || (1e-4..1e21).contains(&float.abs()) {
        return format!("{float}");
    }
    let rendered = format!("{float:e}");
    match rendered.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => rendered,
    }
}

/// A parsed JSONPath expression.
#[derive(Debug, PartialEq)]
struct JsonPath {
    steps: Vec<Step>,
}

/// One step of a JSONPath.
#[derive(Debug, PartialEq)]
enum Step {
    /// `.name` or `['name']`.
    Field(String),
    /// `..name`: the field at any depth.
    Descend(String),
    /// `.*` or `[*]`: every child.
    Wildcard,
    /// `[n]`, negative counting from the end.
    Index(i64),
    /// `[start:end]`.
    Slice(Option<i64>, Option<i64>),
    /// `[?(@.path op literal)]` or `[?(@.path)]`.
    Filter(Filter),
}

/// A filter expression over the elements of an array.
#[derive(Debug, PartialEq)]
struct Filter {
    path: Vec<String>,
    comparison: Option<(Operator, Value)>,
}

/// A comparison operator of a filter.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Operator {
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

/// Why a JSONPath did not parse.
#[derive(Debug, PartialEq)]
struct ParseError;

impl JsonPath {
    /// Parses a path such as `.status.conditions[?(@.type=="Ready")].status`; an optional `{...}`
    /// wrapper and a leading `$` are accepted.
    fn parse(source: &str) -> Result<Self, ParseError> {
        let mut source = source.trim();
        if let Some(inner) = source
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        {
            source = inner.trim();
        }
        let source = source.strip_prefix('$').unwrap_or(source);
        let chars: Vec<char> = source.chars().collect();
        let mut steps = Vec::new();
        let mut position = 0;
        while position < chars.len() {
            match chars[position] {
                '.' if chars.get(position + 1) == Some(&'.') => {
                    let (field, next) = read_identifier(&chars, position + 2);
                    if field.is_empty() {
                        return Err(ParseError);
                    }
                    steps.push(Step::Descend(field));
                    position = next;
                }
                '.' => {
                    if chars.get(position + 1) == Some(&'*') {
                        steps.push(Step::Wildcard);
                        position += 2;
                        continue;
                    }
                    let (field, next) = read_identifier(&chars, position + 1);
                    if !field.is_empty() {
                        steps.push(Step::Field(field));
                    }
                    position = next;
                }
                '[' => {
                    let close = find_closing_bracket(&chars, position).ok_or(ParseError)?;
                    let inner: String = chars[position + 1..close].iter().collect();
                    steps.push(parse_bracket(inner.trim())?);
                    position = close + 1;
                }
                _ => return Err(ParseError),
            }
        }
        Ok(Self { steps })
    }

    /// Every value the path selects in `root`, in document order.
    fn evaluate<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.steps {
            let mut next = Vec::new();
            for value in current {
                apply_step(step, value, &mut next);
            }
            current = next;
        }
        current
    }
}

/// Reads a field name starting at `start`; stops at `.` or `[`.
fn read_identifier(chars: &[char], start: usize) -> (String, usize) {
    let mut end = start;
    while end < chars.len() && chars[end] != '.' && chars[end] != '[' {
        end += 1;
    }
    (chars[start..end].iter().collect(), end)
}

/// Finds the `]` closing the `[` at `open`, skipping quoted strings and nested brackets.
fn find_closing_bracket(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (index, &character) in chars.iter().enumerate().skip(open) {
        match (quote, character) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(character),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses the inside of `[...]`.
fn parse_bracket(inner: &str) -> Result<Step, ParseError> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(expression) = inner
        .strip_prefix("?(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return parse_filter(expression.trim()).map(Step::Filter);
    }
    if let Some(quoted) = unquote(inner) {
        return Ok(Step::Field(quoted));
    }
    if let Some((start, end)) = inner.split_once(':') {
        let bound = |text: &str| -> Result<Option<i64>, ParseError> {
            let text = text.trim();
            if text.is_empty() {
                Ok(None)
            } else {
                text.parse().map(Some).map_err(|_| ParseError)
            }
        };
        // A step (`[a:b:c]`) is not supported.
        if end.contains(':') {
            return Err(ParseError);
        }
        return Ok(Step::Slice(bound(start)?, bound(end)?));
    }
    inner.parse().map(Step::Index).map_err(|_| ParseError)
}

/// The contents of a `'...'` or `"..."` literal.
fn unquote(text: &str) -> Option<String> {
    let first = text.chars().next()?;
    if (first == '\'' || first == '"') && text.len() >= 2 && text.ends_with(first) {
        Some(text[1..text.len() - 1].to_owned())
    } else {
        None
    }
}

/// Parses `@.a.b op literal` or `@.a.b`.
fn parse_filter(expression: &str) -> Result<Filter, ParseError> {
    const OPERATORS: [(&str, Operator); 6] = [
        ("==", Operator::Equal),
        ("!=", Operator::NotEqual),
        ("<=", Operator::LessEqual),
        (">=", Operator::GreaterEqual),
        ("<", Operator::Less),
        (">", Operator::Greater),
    ];
    let operator = OPERATORS
        .iter()
        .filter_map(|(token, operator)| expression.find(token).map(|at| (at, *token, *operator)))
        .min_by_key(|(at, token, _)| (*at, std::cmp::Reverse(token.len())));
    let (left, comparison) = match operator {
        Some((at, token, operator)) => {
            let right = expression[at + token.len()..].trim();
            (
                expression[..at].trim(),
                Some((operator, parse_literal(right)?)),
            )
        }
        None => (expression, None),
    };
    let path = left.strip_prefix('@').ok_or(ParseError)?;
    let path = path
        .split('.')
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Filter { path, comparison })
}

/// Parses a filter's right-hand side: a quoted string, a number, `true`, `false` or `null`.
fn parse_literal(text: &str) -> Result<Value, ParseError> {
    if let Some(string) = unquote(text) {
        return Ok(Value::String(string));
    }
    match text {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "null" | "nil" => return Ok(Value::Null),
        _ => {}
    }
    if let Ok(int) = text.parse::<i64>() {
        return Ok(Value::from(int));
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or(ParseError)
}

/// Applies one step to `value`, pushing the selected values.
fn apply_step<'a>(step: &Step, value: &'a Value, out: &mut Vec<&'a Value>) {
    match step {
        Step::Field(field) => {
            if let Some(child) = value.as_object().and_then(|map| map.get(field)) {
                out.push(child);
            }
        }
        Step::Descend(field) => descend(field, value, out),
        Step::Wildcard => match value {
            Value::Array(items) => out.extend(items),
            Value::Object(map) => out.extend(sorted_values(map)),
            _ => {}
        },
        Step::Index(index) => {
            if let Some(items) = value.as_array()
                && let Some(item) = resolve_index(*index, items.len()).and_then(|at| items.get(at))
            {
                out.push(item);
            }
        }
        Step::Slice(start, end) => {
            if let Some(items) = value.as_array() {
                let length = items.len() as i64;
                let clamp = |bound: i64| {
                    (if bound < 0 { bound + length } else { bound }).clamp(0, length) as usize
                };
                let from = clamp(start.unwrap_or(0));
                let to = clamp(end.unwrap_or(length));
                if from < to {
                    out.extend(&items[from..to]);
                }
            }
        }
        Step::Filter(filter) => {
            let candidates: Box<dyn Iterator<Item = &'a Value>> = match value {
                Value::Array(items) => Box::new(items.iter()),
                other => Box::new(std::iter::once(other)),
            };
            out.extend(candidates.filter(|candidate| filter.matches(candidate)));
        }
    }
}

/// The values of an object in key order, so results do not depend on insertion order.
fn sorted_values(map: &Map<String, Value>) -> Vec<&Value> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|left, right| left.0.cmp(right.0));
    entries.into_iter().map(|(_, value)| value).collect()
}

/// A possibly negative index into a list of `length`, or `None` when out of range.
fn resolve_index(index: i64, length: usize) -> Option<usize> {
    let length = i64::try_from(length).ok()?;
    let resolved = if index < 0 { index + length } else { index };
    if (0..length).contains(&resolved) {
        usize::try_from(resolved).ok()
    } else {
        None
    }
}

/// Collects `field` at every depth under `value`, in document order.
fn descend<'a>(field: &str, value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if let Some(child) = map.get(field) {
                out.push(child);
            }
            for child in sorted_values(map) {
                descend(field, child, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                descend(field, item, out);
            }
        }
        _ => {}
    }
}

impl Filter {
    /// Whether `candidate` passes the filter.
    fn matches(&self, candidate: &Value) -> bool {
        let mut current = candidate;
        for part in &self.path {
            match current.as_object().and_then(|map| map.get(part)) {
                Some(child) => current = child,
                None => return false,
            }
        }
        let Some((operator, literal)) = &self.comparison else {
            return true;
        };
        let ordering = match (current, literal) {
            (Value::String(left), Value::String(right)) => Some(left.cmp(right)),
            (Value::Number(left), Value::Number(right)) => left
                .as_f64()
                .zip(right.as_f64())
                .and_then(|(left, right)| left.partial_cmp(&right)),
            (Value::Bool(left), Value::Bool(right)) => Some(left.cmp(right)),
            (Value::Null, Value::Null) => Some(std::cmp::Ordering::Equal),
            _ => None,
        };
        use std::cmp::Ordering::{Equal, Greater, Less};
        matches!(
            (operator, ordering),
            (Operator::Equal, Some(Equal))
                | (Operator::NotEqual, Some(Less | Greater) | None)
                | (Operator::Less, Some(Less))
                | (Operator::LessEqual, Some(Less | Equal))
                | (Operator::Greater, Some(Greater))
                | (Operator::GreaterEqual, Some(Greater | Equal))
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn select(path: &str, document: &Value) -> Vec<Value> {
        JsonPath::parse(path)
            .expect(path)
            .evaluate(document)
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn paths_select_like_kubectl_jsonpath() {
        let document = json!({
            "spec": {"replicas": 3, "containers": [{"name": "a", "ports": [80]}, {"name": "b", "ports": [443, 8443]}]},
            "status": {"conditions": [
                {"type": "Progressing", "status": "True"},
                {"type": "Ready", "status": "False", "weight": 2}
            ]},
            "metadata": {"labels": {"app.kubernetes.io/name": "web"}}
        });
        let cases: &[(&str, Value)] = &[
            (".spec.replicas", json!([3])),
            ("{.spec.replicas}", json!([3])),
            ("$.spec.replicas", json!([3])),
            (".spec.missing", json!([])),
            (".spec.containers[0].name", json!(["a"])),
            (".spec.containers[-1].name", json!(["b"])),
            (".spec.containers[5].name", json!([])),
            (".spec.containers[*].name", json!(["a", "b"])),
            (".spec.containers[0:1].name", json!(["a"])),
            (
                ".status.conditions[?(@.type==\"Ready\")].status",
                json!(["False"]),
            ),
            (
                ".status.conditions[?(@.type=='Ready')].status",
                json!(["False"]),
            ),
            (
                ".status.conditions[?(@.type != \"Ready\")].type",
                json!(["Progressing"]),
            ),
            (".status.conditions[?(@.weight>1)].type", json!(["Ready"])),
            (".status.conditions[?(@.weight)].type", json!(["Ready"])),
            (".metadata.labels['app.kubernetes.io/name']", json!(["web"])),
            ("..ports", json!([[80], [443, 8443]])),
            (
                ".spec.*",
                json!([[{"name": "a", "ports": [80]}, {"name": "b", "ports": [443, 8443]}], 3]),
            ),
            (".spec.missing[*]", json!([])),
        ];
        for (path, expected) in cases {
            assert_eq!(Value::Array(select(path, &document)), *expected, "{path}");
        }
    }

    #[test]
    fn malformed_paths_do_not_parse() {
        for path in ["spec", ".a[", ".a[?(type==1)]", ".a[x]", "..", ".a[1:2:3]"] {
            assert_eq!(JsonPath::parse(path), Err(ParseError), "{path}");
        }
    }

    #[test]
    fn floats_print_as_go_does() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(3.0), "3");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1.5e-7), "1.5e-07");
    }
}
