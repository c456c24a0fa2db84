//! Serving OpenAPI: the v3 index, per group-version v3 documents and the v2 document,
//! rendered once per control plane and cached with an ETag.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};

use apimachinery::kinds::{GroupVersion, KindInfo};
use apimachinery::status::ApiError;
use bytes::Bytes;
use http::{HeaderMap, Response};
use sha2::{Digest, Sha256};

use crate::control_plane::ControlPlane;
use crate::server::{Body, bytes_response, json_response};

/// The index key of a group version: `api/v1` or `apis/<group>/<version>`.
fn doc_key(gv: &GroupVersion) -> String {
    if gv.group.is_empty() {
        format!("api/{}", gv.version)
    } else {
        format!("apis/{}/{}", gv.group, gv.version)
    }
}

fn kinds_of(cp: &ControlPlane, gv: &GroupVersion) -> Vec<KindInfo> {
    cp.registry()
        .group_version(&gv.group, &gv.version)
        .iter()
        .map(|k| (**k).clone())
        .collect()
}

/// A rendered document and its ETag.
type Rendered = (Bytes, String);

/// Rendered documents of the built-in API, shared by every control plane (they are the
/// same for all tenants, and large: rendering them per tenant would cost megabytes each).
static BUILTIN_DOCS: LazyLock<Mutex<BTreeMap<String, Arc<Rendered>>>> =
    LazyLock::new(Default::default);

/// Renders (or takes from the cache) one document: its bytes and ETag.
fn cached(
    _cp: &ControlPlane,
    key: &str,
    render: impl FnOnce() -> serde_json::Value,
) -> Arc<(Bytes, String)> {
    if let Some(hit) = BUILTIN_DOCS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
    {
        return hit.clone();
    }
    let bytes = Bytes::from(serde_json::to_vec(&render()).unwrap_or_default());
    let etag = hex(&Sha256::digest(&bytes)[..16]);
    let entry = Arc::new((bytes, etag));
    BUILTIN_DOCS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_owned(), entry.clone());
    entry
}

/// One group version's v3 document: cached for built-in group versions, rendered with the
/// CRDs' schemas for custom ones.
fn render_gv(cp: &ControlPlane, gv: &GroupVersion) -> Arc<Rendered> {
    let kinds = kinds_of(cp, gv);
    let custom = custom_definitions(cp, &kinds);
    if custom.is_empty() {
        let schemas = apimachinery::schema::builtin();
        return cached(cp, &doc_key(gv), || {
            apimachinery::openapi::v3_group_version(schemas, gv, &kinds)
        });
    }
    let schemas = apimachinery::schema::builtin().with_definitions(custom);
    let bytes = Bytes::from(
        serde_json::to_vec(&apimachinery::openapi::v3_group_version(
            &schemas, gv, &kinds,
        ))
        .unwrap_or_default(),
    );
    let etag = hex(&Sha256::digest(&bytes)[..16]);
    Arc::new((bytes, etag))
}

/// OpenAPI definitions for the custom kinds among `kinds`: each version's schema with the
/// standard object fields and its GVK, and its list.
fn custom_definitions(
    cp: &ControlPlane,
    kinds: &[KindInfo],
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let registry = cp.registry();
    let meta = |name: &str| json!({"$ref": format!("{}io.k8s.apimachinery.pkg.apis.meta.v1.{name}", apimachinery::schema::REF_PREFIX)});
    let mut defs = serde_json::Map::new();
    for kind in kinds {
        let (Some(custom), Some(name)) = (registry.custom(kind), kind.schema_name.as_deref())
        else {
            continue;
        };
        let mut schema = custom.schema.clone();
        if !schema.is_object() {
            schema = json!({});
        }
        schema["type"] = json!("object");
        schema["properties"]["apiVersion"] = json!({"type": "string"});
        schema["properties"]["kind"] = json!({"type": "string"});
        schema["properties"]["metadata"] = meta("ObjectMeta");
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": kind.group, "version": kind.version, "kind": kind.kind}]);
        defs.insert(name.to_owned(), schema);
        defs.insert(
            format!("{name}List"),
            json!({
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": meta("ListMeta"),
                    "items": {"type": "array", "items": {"$ref": format!("{}{name}", apimachinery::schema::REF_PREFIX)}},
                },
                "x-kubernetes-group-version-kind": [{"group": kind.group, "version": kind.version, "kind": kind.list_kind}],
            }),
        );
    }
    defs
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn group_versions(cp: &ControlPlane) -> Vec<GroupVersion> {
    cp.registry()
        .groups()
        .into_iter()
        .flat_map(|(g, versions)| versions.into_iter().map(move |v| GroupVersion::new(&g, &v)))
        .collect()
}

/// `/openapi/v3`: the index of per group-version documents with content hashes.
pub fn root(cp: &ControlPlane, _prefix: &str) -> Response<Body> {
    let gvs = group_versions(cp);
    let index = apimachinery::openapi::v3_root(&gvs, |gv| render_gv(cp, gv).1.clone());
    json_response(200, &index, &[])
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`.
pub fn group_version(
    cp: &ControlPlane,
    gv: &GroupVersion,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let kinds = kinds_of(cp, gv);
    if kinds.is_empty() {
        return Err(ApiError::no_route());
    }
    let doc = render_gv(cp, gv);
    Ok(bytes_response(
        "application/json",
        doc.0.clone(),
        Some(&doc.1),
        headers,
    ))
}

/// `/openapi/v2` as JSON (clients asking only for the protobuf form get 406).
pub fn v2(cp: &ControlPlane, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    if let Some(accept) = accept
        && !crate::negotiate::parse_accept(accept)
            .iter()
            .any(|r| r.is_json())
    {
        return Err(ApiError::not_acceptable(
            "only application/json is served for /openapi/v2",
        ));
    }
    let kinds: Vec<KindInfo> = cp
        .registry()
        .kinds()
        .iter()
        .map(|k| (**k).clone())
        .collect();
    let custom = custom_definitions(cp, &kinds);
    let doc = if custom.is_empty() {
        cached(cp, "v2", || {
            apimachinery::openapi::v2(apimachinery::schema::builtin(), &kinds)
        })
    } else {
        let schemas = apimachinery::schema::builtin().with_definitions(custom);
        let bytes = Bytes::from(
            serde_json::to_vec(&apimachinery::openapi::v2(&schemas, &kinds)).unwrap_or_default(),
        );
        let etag = hex(&Sha256::digest(&bytes)[..16]);
        Arc::new((bytes, etag))
    };
    Ok(bytes_response(
        "application/json",
        doc.0.clone(),
        Some(&doc.1),
        headers,
    ))
}
