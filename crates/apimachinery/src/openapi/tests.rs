//! Tests of the OpenAPI documents: the shape kubectl relies on, references, determinism.

use serde_json::{Value, json};

use super::{v2, v3_group_version, v3_root};
use crate::kinds::{self, GroupVersion};
use crate::schema::{self, collect_refs};

fn apps_v1() -> Value {
    v3_group_version(
        schema::builtin(),
        &GroupVersion::new("apps", "v1"),
        &kinds::builtin(),
    )
}

#[test]
fn root_lists_group_versions_with_hashes() {
    let gvs = [GroupVersion::new("apps", "v1"), GroupVersion::new("", "v1")];
    let root = v3_root(&gvs, |gv| format!("H{}", gv.version));
    assert_eq!(
        root,
        json!({ "paths": {
            "api/v1": { "serverRelativeURL": "/openapi/v3/api/v1?hash=Hv1" },
            "apis/apps/v1": { "serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=Hv1" },
        }})
    );
    let keys: Vec<&String> = root["paths"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["api/v1", "apis/apps/v1"]);
}

#[test]
fn patch_operation_has_what_kubectl_looks_for() {
    let doc = apps_v1();
    assert_eq!(doc["openapi"], "3.0.0");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({ "group": "apps", "kind": "Deployment", "version": "v1" })
    );
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for wanted in ["dryRun", "fieldManager", "fieldValidation", "force"] {
        assert!(params.contains(&wanted), "missing {wanted}");
    }
    let content = patch["requestBody"]["content"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for media in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content.contains_key(media), "missing {media}");
    }
    // The kind schema carries its GVK as an array, with merge keys inside.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"],
        "Deployment"
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
        "name"
    );
}

#[test]
fn paths_cover_collections_watches_and_subresources() {
    let doc = apps_v1();
    let paths = &doc["paths"];
    let op = |path: &str, method: &str| {
        paths[path][method]["operationId"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(op("/apis/apps/v1/", "get"), "getAppsV1APIResources");
    assert_eq!(
        op("/apis/apps/v1/namespaces/{namespace}/deployments", "get"),
        "listAppsV1NamespacedDeployment"
    );
    assert_eq!(
        op("/apis/apps/v1/namespaces/{namespace}/deployments", "post"),
        "createAppsV1NamespacedDeployment"
    );
    assert_eq!(
        op("/apis/apps/v1/namespaces/{namespace}/deployments", "delete"),
        "deleteAppsV1CollectionNamespacedDeployment"
    );
    assert_eq!(
        op("/apis/apps/v1/deployments", "get"),
        "listAppsV1DeploymentForAllNamespaces"
    );
    assert_eq!(
        op(
            "/apis/apps/v1/watch/namespaces/{namespace}/deployments",
            "get"
        ),
        "watchAppsV1NamespacedDeploymentList"
    );
    assert_eq!(
        op(
            "/apis/apps/v1/watch/namespaces/{namespace}/deployments/{name}",
            "get"
        ),
        "watchAppsV1NamespacedDeployment"
    );
    assert_eq!(
        op("/apis/apps/v1/watch/deployments", "get"),
        "watchAppsV1DeploymentListForAllNamespaces"
    );
    assert_eq!(
        op(
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status",
            "patch"
        ),
        "patchAppsV1NamespacedDeploymentStatus"
    );
    let scale = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["get"];
    assert_eq!(scale["operationId"], "readAppsV1NamespacedDeploymentScale");
    assert_eq!(
        scale["x-kubernetes-group-version-kind"]["group"],
        "autoscaling"
    );
    assert!(
        paths.get("/api/v1/namespaces/{namespace}/pods").is_none(),
        "core paths leak into apps/v1"
    );

    let core = v3_group_version(
        schema::builtin(),
        &GroupVersion::new("", "v1"),
        &kinds::builtin(),
    );
    assert_eq!(
        core["paths"]["/api/v1/namespaces/{name}"]["get"]["operationId"],
        "readCoreV1Namespace"
    );
    let rbac = v3_group_version(
        schema::builtin(),
        &GroupVersion::new("rbac.authorization.k8s.io", "v1"),
        &kinds::builtin(),
    );
    assert_eq!(
        rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["get"]["operationId"],
        "listRbacAuthorizationV1ClusterRole"
    );
}

#[test]
fn every_reference_resolves_inside_the_document() {
    for gv in [
        GroupVersion::new("", "v1"),
        GroupVersion::new("apps", "v1"),
        GroupVersion::new("apiextensions.k8s.io", "v1"),
    ] {
        let doc = v3_group_version(schema::builtin(), &gv, &kinds::builtin());
        let components = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(components.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.Status"));
        collect_refs(&doc, &mut |target| {
            assert!(components.contains_key(target), "{gv}: dangling {target}")
        });
    }
}

#[test]
fn documents_are_deterministic() {
    let a = serde_json::to_vec(&apps_v1()).unwrap_or_default();
    let b = serde_json::to_vec(&apps_v1()).unwrap_or_default();
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn v2_uses_definitions_references() {
    let doc = v2(schema::builtin(), &kinds::builtin());
    assert_eq!(doc["swagger"], "2.0");
    let text = doc.to_string();
    assert!(!text.contains("#/components/schemas/"));
    let definitions = doc["definitions"].as_object().cloned().unwrap_or_default();
    assert_eq!(
        definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
        "int-or-string"
    );
    assert_eq!(
        definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"],
        "string"
    );
    let selector = &definitions["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["selector"];
    assert_eq!(
        selector["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
    );
    assert!(selector.get("allOf").is_none());
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(patch["consumes"].as_array().is_some_and(|c| c.len() == 4));
    let body = patch["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["in"] == "body"))
        .cloned();
    assert_eq!(
        body.map(|b| b["schema"]["$ref"].clone()),
        Some(json!(
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
        ))
    );
    let mut dangling = Vec::new();
    check_v2_refs(&doc, &definitions, &mut dangling);
    assert!(dangling.is_empty(), "dangling: {dangling:?}");
}

fn check_v2_refs(
    value: &Value,
    definitions: &serde_json::Map<String, Value>,
    dangling: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(r)) => {
                        let target = r.strip_prefix("#/definitions/").unwrap_or(r);
                        if !definitions.contains_key(target) {
                            dangling.push(r.clone());
                        }
                    }
                    _ => check_v2_refs(child, definitions, dangling),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|i| check_v2_refs(i, definitions, dangling)),
        _ => {}
    }
}
