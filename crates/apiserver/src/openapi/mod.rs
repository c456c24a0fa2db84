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

#[cfg(test)]
mod tests;
mod v2_proto;

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

/// Takes one built-in document from the cache, rendering it (bytes and ETag) on first use.
fn cached(key: &str, render: impl FnOnce() -> Vec<u8>) -> Arc<Rendered> {
    if let Some(hit) = BUILTIN_DOCS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
    {
        return hit.clone();
    }
    let entry = rendered(render());
    BUILTIN_DOCS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_owned(), entry.clone());
    entry
}

/// A document's bytes with their ETag (a hash of the bytes).
fn rendered(bytes: Vec<u8>) -> Arc<Rendered> {
    let etag = hex(&Sha256::digest(&bytes)[..16]);
    Arc::new((Bytes::from(bytes), etag))
}

/// One group version's v3 document: cached for built-in group versions, rendered with the
/// CRDs' schemas for custom ones.
fn render_gv(cp: &ControlPlane, gv: &GroupVersion) -> Arc<Rendered> {
    let kinds = kinds_of(cp, gv);
    let custom = custom_definitions(cp, &kinds);
    if custom.is_empty() {
        let schemas = apimachinery::schema::builtin();
        return cached(&doc_key(gv), || {
            serde_json::to_vec(&apimachinery::openapi::v3_group_version(
                schemas, gv, &kinds,
            ))
            .unwrap_or_default()
        });
    }
    let schemas = apimachinery::schema::builtin().with_definitions(custom);
    rendered(
        serde_json::to_vec(&apimachinery::openapi::v3_group_version(
            &schemas, gv, &kinds,
        ))
        .unwrap_or_default(),
    )
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

/// The media type of gnostic's `openapi.v2.Document`, and the one protobuf replies carry.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// The deprecated name of the same media type, which kubectl 1.32 still asks with. Its `@`
/// is not legal in a media type, so replies never carry it (Go's `mime` parser rejects it).
pub const V2_PROTOBUF_DEPRECATED: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The form of `/openapi/v2` a client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V2Format {
    Json,
    Protobuf,
}

/// Picks the form from `Accept` as kube-openapi does: media ranges by descending `q`
/// (client order among equals), the first one that JSON or protobuf satisfies wins, JSON
/// first for wildcards. No `Accept` means JSON; nothing acceptable means `None`.
fn v2_format(accept: Option<&str>) -> Option<V2Format> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(V2Format::Json);
    };
    let quality = |r: &crate::negotiate::MediaRange| {
        r.param("q")
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0)
    };
    let mut ranges = crate::negotiate::parse_accept(accept);
    ranges.retain(|r| quality(r) > 0.0);
    ranges.sort_by(|a, b| quality(b).total_cmp(&quality(a)));
    ranges.iter().find_map(|r| {
        if r.is_json() {
            Some(V2Format::Json)
        } else if r.essence == V2_PROTOBUF || r.essence == V2_PROTOBUF_DEPRECATED {
            Some(V2Format::Protobuf)
        } else {
            None
        }
    })
}

/// Renders the v2 document in `format`.
fn encode_v2(doc: &serde_json::Value, format: V2Format) -> Vec<u8> {
    match format {
        V2Format::Json => serde_json::to_vec(doc).unwrap_or_default(),
        V2Format::Protobuf => v2_proto::encode(doc),
    }
}

/// `/openapi/v2` as JSON or, for kubectl, as gnostic protobuf. Each form is cached while
/// only built-in kinds exist; with custom kinds it is rendered per request, like v3.
pub fn v2(cp: &ControlPlane, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let Some(format) = v2_format(accept) else {
        return Err(ApiError::not_acceptable(format!(
            "/openapi/v2 is served as application/json or {V2_PROTOBUF}"
        )));
    };
    let kinds: Vec<KindInfo> = cp
        .registry()
        .kinds()
        .iter()
        .map(|k| (**k).clone())
        .collect();
    let custom = custom_definitions(cp, &kinds);
    let doc = if custom.is_empty() {
        let key = match format {
            V2Format::Json => "v2",
            V2Format::Protobuf => "v2.pb",
        };
        cached(key, || {
            let doc = apimachinery::openapi::v2(apimachinery::schema::builtin(), &kinds);
            encode_v2(&doc, format)
        })
    } else {
        let schemas = apimachinery::schema::builtin().with_definitions(custom);
        rendered(encode_v2(
            &apimachinery::openapi::v2(&schemas, &kinds),
            format,
        ))
    };
    let content_type = match format {
        V2Format::Json => "application/json",
        V2Format::Protobuf => V2_PROTOBUF,
    };
    Ok(bytes_response(
        content_type,
        doc.0.clone(),
        Some(&doc.1),
        headers,
    ))
}
