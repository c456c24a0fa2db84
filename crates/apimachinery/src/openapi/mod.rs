//! OpenAPI documents built from [`Schemas`] and the kinds registry: the v3 root index, one v3
//! document per group version, and a swagger 2.0 document.
//!
//! These are pure functions; callers cache the results. Output is deterministic (sorted keys),
//! so a hash of the serialised bytes can serve as an ETag.

mod paths;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::kinds::{GroupVersion, KindInfo};
use crate::schema::{REF_PREFIX, Schemas};

use paths::{
    API_RESOURCE_LIST, DELETE_OPTIONS, Operation, PATCH, Param, PathItem, STATUS, WATCH_EVENT,
};

/// The prefix of references in swagger 2.0 documents.
const V2_REF_PREFIX: &str = "#/definitions/";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The media types of ordinary responses.
const RESPONSE_TYPES: &[&str] = &["application/json", "application/yaml"];
/// The media types of watch responses.
const WATCH_TYPES: &[&str] = &["application/json;stream=watch"];

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}, …}}`.
pub fn v3_root(
    group_versions: &[GroupVersion],
    hash_of: impl Fn(&GroupVersion) -> String,
) -> Value {
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    for gv in group_versions {
        let path = gv_path(gv);
        let url = format!("/openapi/v3/{path}?hash={}", hash_of(gv));
        entries.insert(path, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": entries.into_iter().collect::<Map<String, Value>>() })
}

/// The key of a group version in the v3 index: `api/v1` or `apis/<group>/<version>`.
pub fn gv_path(gv: &GroupVersion) -> String {
    if gv.group.is_empty() {
        format!("api/{}", gv.version)
    } else {
        format!("apis/{}/{}", gv.group, gv.version)
    }
}

/// The OpenAPI 3.0 document of one group version: paths for every kind of `kinds` in `gv`,
/// and every definition they reach under `components.schemas`.
pub fn v3_group_version(schemas: &Schemas, gv: &GroupVersion, kinds: &[KindInfo]) -> Value {
    let mut served: Vec<&KindInfo> = kinds
        .iter()
        .filter(|k| k.group == gv.group && k.version == gv.version)
        .collect();
    served.sort_by(|a, b| a.plural.cmp(&b.plural));
    let mut path_items = vec![resources_path(gv)];
    for kind in &served {
        path_items.extend(paths::kind_paths(schemas, kind));
    }
    let paths = render_paths(&path_items, render_v3_operation, render_param_v3);
    let schemas_out = components(schemas, &served, &path_items, false);
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "components": { "schemas": schemas_out },
    })
}

/// A swagger 2.0 document with the paths of every kind in `kinds` and the definitions they reach.
pub fn v2(schemas: &Schemas, kinds: &[KindInfo]) -> Value {
    let mut sorted: Vec<&KindInfo> = kinds.iter().collect();
    sorted
        .sort_by(|a, b| (&a.group, &a.version, &a.plural).cmp(&(&b.group, &b.version, &b.plural)));
    let mut group_versions: Vec<GroupVersion> = sorted.iter().map(|k| k.group_version()).collect();
    group_versions.dedup();
    let mut path_items: Vec<PathItem> = group_versions.iter().map(resources_path).collect();
    for kind in &sorted {
        path_items.extend(paths::kind_paths(schemas, kind));
    }
    let paths = render_paths(&path_items, render_v2_operation, render_param_v2);
    let definitions = components(schemas, &sorted, &path_items, true);
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "definitions": definitions,
    })
}

/// The `GET /apis/<group>/<version>/` path answering with an APIResourceList.
fn resources_path(gv: &GroupVersion) -> PathItem {
    let stem = format!(
        "{}{}",
        paths::group_camel(&gv.group),
        capitalise(&gv.version)
    );
    PathItem {
        path: format!("{}/", paths::gv_prefix(&gv.group, &gv.version)),
        params: Vec::new(),
        operations: vec![Operation {
            method: "get",
            operation_id: format!("get{stem}APIResources"),
            description: "get available resources".to_owned(),
            action: "",
            gvk: crate::kinds::GroupVersionKind::new("", "", ""),
            params: Vec::new(),
            body: None,
            responses: vec![(200, "OK", Some(API_RESOURCE_LIST.to_owned()))],
            watch: false,
        }],
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Renders path items, sorted by path, with `render` for each operation.
fn render_paths(
    items: &[PathItem],
    render: fn(&Operation) -> Value,
    render_param: fn(&Param) -> Value,
) -> Map<String, Value> {
    let mut by_path: BTreeMap<&str, &PathItem> = BTreeMap::new();
    for item in items {
        by_path.entry(item.path.as_str()).or_insert(item);
    }
    by_path
        .into_iter()
        .map(|(path, item)| {
            let mut rendered = Map::new();
            for operation in &item.operations {
                rendered.insert(operation.method.to_owned(), render(operation));
            }
            if !item.params.is_empty() {
                rendered.insert(
                    "parameters".into(),
                    Value::Array(item.params.iter().map(render_param).collect()),
                );
            }
            (path.to_owned(), Value::Object(rendered))
        })
        .collect()
}

fn render_param_v3(param: &Param) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), param.name.into());
    out.insert("in".into(), param.location.into());
    out.insert("description".into(), param.description.into());
    if param.required {
        out.insert("required".into(), true.into());
    }
    out.insert(
        "schema".into(),
        json!({ "type": param.ty, "uniqueItems": true }),
    );
    Value::Object(out)
}

fn render_param_v2(param: &Param) -> Value {
    let mut out = Map::new();
    out.insert("uniqueItems".into(), true.into());
    out.insert("type".into(), param.ty.into());
    out.insert("name".into(), param.name.into());
    out.insert("in".into(), param.location.into());
    out.insert("description".into(), param.description.into());
    if param.required {
        out.insert("required".into(), true.into());
    }
    Value::Object(out)
}

/// The GVK object of an operation.
fn gvk_value(operation: &Operation) -> Option<Value> {
    (!operation.action.is_empty()).then(|| {
        json!({ "group": operation.gvk.group, "kind": operation.gvk.kind, "version": operation.gvk.version })
    })
}

fn schema_ref(name: &str, prefix: &str) -> Value {
    json!({ "$ref": format!("{prefix}{name}") })
}

fn render_v3_operation(operation: &Operation) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), operation.description.clone().into());
    out.insert("operationId".into(), operation.operation_id.clone().into());
    if !operation.params.is_empty() {
        out.insert(
            "parameters".into(),
            Value::Array(operation.params.iter().map(render_param_v3).collect()),
        );
    }
    if let Some(body) = &operation.body {
        let content: Map<String, Value> = body
            .media_types
            .iter()
            .map(|t| {
                (
                    (*t).to_owned(),
                    json!({ "schema": schema_ref(&body.schema, REF_PREFIX) }),
                )
            })
            .collect();
        let mut request = Map::new();
        request.insert("content".into(), Value::Object(content));
        if body.required {
            request.insert("required".into(), true.into());
        }
        out.insert("requestBody".into(), Value::Object(request));
    }
    let media = if operation.watch {
        WATCH_TYPES
    } else {
        RESPONSE_TYPES
    };
    let mut responses = Map::new();
    for (code, description, schema) in &operation.responses {
        let mut response = Map::new();
        response.insert("description".into(), (*description).into());
        if let Some(schema) = schema {
            let content: Map<String, Value> = media
                .iter()
                .map(|t| {
                    (
                        (*t).to_owned(),
                        json!({ "schema": schema_ref(schema, REF_PREFIX) }),
                    )
                })
                .collect();
            response.insert("content".into(), Value::Object(content));
        }
        responses.insert(code.to_string(), Value::Object(response));
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));
    out.insert("responses".into(), Value::Object(responses));
    out.insert("tags".into(), json!([tag(operation)]));
    if !operation.action.is_empty() {
        out.insert("x-kubernetes-action".into(), operation.action.into());
    }
    if let Some(gvk) = gvk_value(operation) {
        out.insert("x-kubernetes-group-version-kind".into(), gvk);
    }
    Value::Object(out)
}

fn render_v2_operation(operation: &Operation) -> Value {
    let mut out = Map::new();
    if let Some(body) = &operation.body {
        out.insert("consumes".into(), json!(body.media_types));
    }
    out.insert("description".into(), operation.description.clone().into());
    out.insert("operationId".into(), operation.operation_id.clone().into());
    let mut params: Vec<Value> = Vec::new();
    if let Some(body) = &operation.body {
        let mut param = Map::new();
        param.insert("name".into(), "body".into());
        param.insert("in".into(), "body".into());
        if body.required {
            param.insert("required".into(), true.into());
        }
        param.insert("schema".into(), schema_ref(&body.schema, V2_REF_PREFIX));
        params.push(Value::Object(param));
    }
    params.extend(operation.params.iter().map(render_param_v2));
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    let media = if operation.watch {
        WATCH_TYPES
    } else {
        RESPONSE_TYPES
    };
    out.insert("produces".into(), json!(media));
    let mut responses = Map::new();
    for (code, description, schema) in &operation.responses {
        let mut response = Map::new();
        response.insert("description".into(), (*description).into());
        if let Some(schema) = schema {
            response.insert("schema".into(), schema_ref(schema, V2_REF_PREFIX));
        }
        responses.insert(code.to_string(), Value::Object(response));
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));
    out.insert("responses".into(), Value::Object(responses));
    out.insert("schemes".into(), json!(["https"]));
    out.insert("tags".into(), json!([tag(operation)]));
    if !operation.action.is_empty() {
        out.insert("x-kubernetes-action".into(), operation.action.into());
    }
    if let Some(gvk) = gvk_value(operation) {
        out.insert("x-kubernetes-group-version-kind".into(), gvk);
    }
    Value::Object(out)
}

/// The tag of an operation: `apps_v1`, `core_v1`, `rbacAuthorization_v1`.
fn tag(operation: &Operation) -> String {
    let camel = paths::group_camel(&operation.gvk.group);
    let mut chars = camel.chars();
    let lower: String = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default();
    if operation.gvk.version.is_empty() {
        lower
    } else {
        format!("{lower}_{}", operation.gvk.version)
    }
}

/// The definitions reached from the kinds, their lists and the operations; kind schemas get
/// their GVK from the registry when they lack it (CRDs). In v2 form when `v2` is set.
fn components(
    schemas: &Schemas,
    kinds: &[&KindInfo],
    items: &[PathItem],
    v2: bool,
) -> Map<String, Value> {
    let mut roots: Vec<String> = vec![
        STATUS.to_owned(),
        DELETE_OPTIONS.to_owned(),
        PATCH.to_owned(),
        WATCH_EVENT.to_owned(),
        API_RESOURCE_LIST.to_owned(),
    ];
    for item in items {
        for operation in &item.operations {
            roots.extend(operation.body.iter().map(|b| b.schema.clone()));
            roots.extend(operation.responses.iter().filter_map(|r| r.2.clone()));
        }
    }
    roots.extend(kinds.iter().filter_map(|k| k.schema_name.clone()));
    let names = schemas.reachable(roots.iter().map(String::as_str));
    let mut out = Map::new();
    for name in names {
        let Some(definition) = schemas.definition(&name) else {
            continue;
        };
        let mut definition = definition.clone();
        if let Value::Object(map) = &mut definition {
            for kind in kinds
                .iter()
                .filter(|k| k.schema_name.as_deref() == Some(name.as_str()))
            {
                crate::schema::add_gvk(map, &kind.group, &kind.version, &kind.kind);
            }
        }
        if v2 {
            definition = to_v2(&name, definition);
        }
        out.insert(name, definition);
    }
    out
}

/// Converts one canonical (v3) definition into swagger 2.0 form.
fn to_v2(name: &str, definition: Value) -> Value {
    let description = definition.get("description").cloned();
    let special = match name {
        INT_OR_STRING => Some(json!({ "type": "string", "format": "int-or-string" })),
        QUANTITY => Some(json!({ "type": "string" })),
        _ => None,
    };
    if let Some(Value::Object(mut special)) = special {
        if let Some(description) = description {
            special.insert("description".into(), description);
        }
        return Value::Object(special);
    }
    let mut definition = definition;
    rewrite_v2(&mut definition);
    definition
}

/// Rewrites references to `#/definitions/` and unwraps single-reference `allOf`.
fn rewrite_v2(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let single_ref = match map
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                Some([only]) => only.get("$ref").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            };
            if let Some(reference) = single_ref {
                map.shift_remove("allOf");
                let mut unwrapped = Map::new();
                unwrapped.insert("$ref".into(), reference.into());
                unwrapped.extend(std::mem::take(map));
                *map = unwrapped;
            }
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(target) = reference.strip_prefix(REF_PREFIX)
            {
                *reference = format!("{V2_REF_PREFIX}{target}");
            }
            map.values_mut().for_each(rewrite_v2);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_v2),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
