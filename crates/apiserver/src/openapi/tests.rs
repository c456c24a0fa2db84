//! Tests of `/openapi/v2` content negotiation and of the gnostic protobuf form: bytes are
//! decoded back with the same field numbers gnostic's Go types use.

use prost::Message as _;
use serde_json::{Value, json};

use super::v2_proto::{
    AdditionalPropertiesOneof, Document, NonBodyParameterOneof, ParameterOneof,
    ParametersItemOneof, ResponseValueOneof, Schema, SchemaItemOneof,
};
use super::{V2_PROTOBUF, V2_PROTOBUF_DEPRECATED, V2Format, v2_format, v2_proto};

const TOKEN_REVIEW: &str = "io.k8s.api.authentication.v1.TokenReview";

fn builtin_v2() -> Value {
    apimachinery::openapi::v2(
        apimachinery::schema::builtin(),
        &apimachinery::kinds::builtin(),
    )
}

fn definition<'a>(doc: &'a Document, name: &str) -> &'a Schema {
    doc.definitions
        .as_ref()
        .and_then(|d| d.additional_properties.iter().find(|s| s.name == name))
        .and_then(|s| s.value.as_ref())
        .unwrap_or_else(|| panic!("no definition {name}"))
}

fn property<'a>(schema: &'a Schema, name: &str) -> &'a Schema {
    schema
        .properties
        .as_ref()
        .and_then(|p| p.additional_properties.iter().find(|s| s.name == name))
        .and_then(|s| s.value.as_ref())
        .unwrap_or_else(|| panic!("no property {name}"))
}

/// The YAML of a vendor extension, parsed back into JSON.
fn extension(extensions: &[super::v2_proto::NamedAny], name: &str) -> Value {
    let yaml = extensions
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_ref())
        .map(|a| a.yaml.clone())
        .unwrap_or_else(|| panic!("no extension {name}"));
    serde_yaml::from_str(&yaml).expect("extension holds YAML")
}

fn decoded() -> (Value, Document) {
    let json = builtin_v2();
    let bytes = v2_proto::encode(&json);
    (json, Document::decode(bytes.as_slice()).expect("decodes"))
}

#[test]
fn definitions_keep_their_gvk_and_refs() {
    let (json, doc) = decoded();
    assert_eq!(doc.swagger, "2.0");
    assert_eq!(
        doc.info.as_ref().map(|i| i.title.as_str()),
        Some("Kubernetes")
    );
    let definitions = doc.definitions.as_ref().expect("definitions");
    assert_eq!(
        definitions.additional_properties.len(),
        json["definitions"].as_object().map_or(0, |d| d.len())
    );

    let review = definition(&doc, TOKEN_REVIEW);
    assert_eq!(
        extension(&review.vendor_extension, "x-kubernetes-group-version-kind"),
        json!([{"group": "authentication.k8s.io", "kind": "TokenReview", "version": "v1"}])
    );
    assert_eq!(
        review.r#type.as_ref().map(|t| t.value.clone()),
        Some(vec!["object".to_owned()])
    );
    assert!(
        review.required.contains(&"spec".to_owned()),
        "{:?}",
        review.required
    );
    assert_eq!(
        property(review, "spec").xref,
        "#/definitions/io.k8s.api.authentication.v1.TokenReviewSpec"
    );
    assert_eq!(
        property(review, "metadata").xref,
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    let spec = definition(&doc, "io.k8s.api.authentication.v1.TokenReviewSpec");
    let audiences = property(spec, "audiences");
    assert_eq!(
        audiences.r#type.as_ref().map(|t| t.value.clone()),
        Some(vec!["array".to_owned()])
    );
    assert_eq!(
        audiences.items.as_ref().map(|i| i.schema.len()),
        Some(1),
        "items is exactly one schema"
    );
}

#[test]
fn nested_schemas_extensions_and_maps_survive() {
    let (_, doc) = decoded();
    let pod_spec = definition(&doc, "io.k8s.api.core.v1.PodSpec");
    let containers = property(pod_spec, "containers");
    let item = &containers.items.as_ref().expect("items").schema[0];
    assert_eq!(item.xref, "#/definitions/io.k8s.api.core.v1.Container");
    assert_eq!(
        extension(&containers.vendor_extension, "x-kubernetes-patch-merge-key"),
        json!("name")
    );
    assert_eq!(
        extension(&containers.vendor_extension, "x-kubernetes-patch-strategy"),
        json!("merge")
    );
    // `nodeSelector` is a map of strings: additionalProperties holds a schema.
    let node_selector = property(pod_spec, "nodeSelector");
    match node_selector
        .additional_properties
        .as_ref()
        .and_then(|a| a.oneof.as_ref())
    {
        Some(AdditionalPropertiesOneof::Schema(s)) => {
            assert_eq!(
                s.r#type.as_ref().map(|t| t.value.clone()),
                Some(vec!["string".to_owned()])
            );
        }
        other => panic!("nodeSelector additionalProperties: {other:?}"),
    }
}

#[test]
fn patch_operations_carry_gvk_and_field_validation() {
    let (_, doc) = decoded();
    let path = doc
        .paths
        .as_ref()
        .and_then(|p| {
            p.path
                .iter()
                .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        })
        .and_then(|p| p.value.as_ref())
        .expect("deployment path");
    let patch = path.patch.as_ref().expect("patch operation");
    assert_eq!(
        extension(&patch.vendor_extension, "x-kubernetes-group-version-kind"),
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    assert_eq!(
        extension(&patch.vendor_extension, "x-kubernetes-action"),
        json!("patch")
    );
    let query_names: Vec<&str> = patch
        .parameters
        .iter()
        .filter_map(|p| match p.oneof.as_ref()? {
            ParametersItemOneof::Parameter(p) => match p.oneof.as_ref()? {
                ParameterOneof::NonBodyParameter(n) => match n.oneof.as_ref()? {
                    NonBodyParameterOneof::QueryParameterSubSchema(q) => Some(q.name.as_str()),
                    _ => None,
                },
                ParameterOneof::BodyParameter(_) => None,
            },
            ParametersItemOneof::JsonReference(_) => None,
        })
        .collect();
    assert!(query_names.contains(&"fieldValidation"), "{query_names:?}");
    let body = patch
        .parameters
        .iter()
        .find_map(|p| match p.oneof.as_ref()? {
            ParametersItemOneof::Parameter(p) => match p.oneof.as_ref()? {
                ParameterOneof::BodyParameter(b) => Some(b),
                ParameterOneof::NonBodyParameter(_) => None,
            },
            ParametersItemOneof::JsonReference(_) => None,
        });
    assert_eq!(body.map(|b| b.r#in.as_str()), Some("body"));
    let ok = patch
        .responses
        .as_ref()
        .and_then(|r| r.response_code.iter().find(|c| c.name == "200"))
        .and_then(|c| c.value.as_ref()?.oneof.as_ref());
    match ok {
        Some(ResponseValueOneof::Response(r)) => {
            match r.schema.as_ref().and_then(|s| s.oneof.as_ref()) {
                Some(SchemaItemOneof::Schema(s)) => {
                    assert_eq!(s.xref, "#/definitions/io.k8s.api.apps.v1.Deployment");
                }
                None => panic!("200 has no schema"),
            }
        }
        other => panic!("200 response: {other:?}"),
    }
    // A path-level `{name}` parameter is a path parameter.
    assert!(path.parameters.iter().any(|p| matches!(
        p.oneof.as_ref(),
        Some(ParametersItemOneof::Parameter(p)) if matches!(
            p.oneof.as_ref(),
            Some(ParameterOneof::NonBodyParameter(n)) if matches!(
                n.oneof.as_ref(),
                Some(NonBodyParameterOneof::PathParameterSubSchema(s)) if s.name == "name" && s.required
            )
        )
    )));
}

#[test]
fn free_form_values_and_boolean_maps_convert() {
    let doc = v2_proto::document(&json!({
        "swagger": "2.0",
        "definitions": {
            "a": {
                "type": ["string", "null"],
                "enum": ["x", 1],
                "default": {"k": [1, 2]},
                "additionalProperties": false,
                "properties": {},
                "maxLength": 5,
                "minimum": 1.5,
                "allOf": [{"$ref": "#/definitions/b"}],
            }
        }
    }));
    let a = definition(&doc, "a");
    assert_eq!(a.r#type.as_ref().map(|t| t.value.len()), Some(2));
    let enums: Vec<Value> = a
        .r#enum
        .iter()
        .map(|e| serde_yaml::from_str(&e.yaml).expect("yaml"))
        .collect();
    assert_eq!(enums, vec![json!("x"), json!(1)]);
    let default: Value =
        serde_yaml::from_str(&a.default.as_ref().expect("default").yaml).expect("yaml");
    assert_eq!(default, json!({"k": [1, 2]}));
    assert!(matches!(
        a.additional_properties
            .as_ref()
            .and_then(|p| p.oneof.as_ref()),
        Some(AdditionalPropertiesOneof::Boolean(false))
    ));
    // Present-but-empty properties must stay present for kube-openapi's parser.
    let bytes = v2_proto::encode(&json!({"definitions": {"a": {"properties": {}}}}));
    let back = Document::decode(bytes.as_slice()).expect("decodes");
    assert!(definition(&back, "a").properties.is_some());
    assert_eq!(a.max_length, 5);
    assert_eq!(a.minimum, 1.5);
    assert_eq!(a.all_of[0].xref, "#/definitions/b");
}

#[test]
fn accept_picks_json_or_protobuf() {
    assert_eq!(v2_format(None), Some(V2Format::Json));
    assert_eq!(v2_format(Some("application/json")), Some(V2Format::Json));
    assert_eq!(v2_format(Some("*/*")), Some(V2Format::Json));
    assert_eq!(v2_format(Some(V2_PROTOBUF)), Some(V2Format::Protobuf));
    assert_eq!(
        v2_format(Some(V2_PROTOBUF_DEPRECATED)),
        Some(V2Format::Protobuf)
    );
    assert_eq!(
        v2_format(Some(&format!("application/json;q=0.5, {V2_PROTOBUF}"))),
        Some(V2Format::Protobuf)
    );
    assert_eq!(
        v2_format(Some(&format!("application/json, {V2_PROTOBUF}"))),
        Some(V2Format::Json)
    );
    assert_eq!(v2_format(Some("application/yaml")), None);
    assert_eq!(v2_format(Some("application/json;q=0")), None);
}

/// The served bytes, through the real router: content type, ETag, 304 on a match, and a
/// body that decodes.
#[tokio::test]
async fn served_protobuf_decodes_and_has_its_own_etag() -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;
    let dir = tempfile::tempdir()?;
    let server = crate::testing::InProcess::start(dir.path()).await?;
    let client = server.client();
    let get = |accept: &str, if_none_match: Option<&str>| {
        let mut req = http::Request::get("/openapi/v2").header(http::header::ACCEPT, accept);
        if let Some(tag) = if_none_match {
            req = req.header(http::header::IF_NONE_MATCH, tag);
        }
        let req = req.body(Vec::new()).expect("request");
        let client = client.clone();
        async move {
            let res = client.send(req.map(kube::client::Body::from)).await?;
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, headers, body))
        }
    };
    // kubectl asks with the deprecated name; the reply names the type Go can parse.
    let (status, headers, body) = get(V2_PROTOBUF_DEPRECATED, None).await?;
    assert_eq!(status, 200);
    assert_eq!(headers[http::header::CONTENT_TYPE], V2_PROTOBUF);
    let doc = Document::decode(body)?;
    let review = definition(&doc, TOKEN_REVIEW);
    assert_eq!(
        extension(&review.vendor_extension, "x-kubernetes-group-version-kind"),
        json!([{"group": "authentication.k8s.io", "kind": "TokenReview", "version": "v1"}])
    );
    let proto_etag = headers[http::header::ETAG].to_str()?.to_owned();

    let (status, headers, body) = get("application/json", None).await?;
    assert_eq!(status, 200);
    assert_eq!(headers[http::header::CONTENT_TYPE], "application/json");
    let json: Value = serde_json::from_slice(&body)?;
    assert_eq!(json["swagger"], "2.0");
    assert_ne!(headers[http::header::ETAG].to_str()?, proto_etag);

    let (status, _, _) = get(V2_PROTOBUF, Some(&proto_etag)).await?;
    assert_eq!(status, 304);
    let (status, _, _) = get("application/yaml", None).await?;
    assert_eq!(status, 406);
    Ok(())
}
