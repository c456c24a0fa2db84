//! Unit tests of the built-in definitions, the walker and unknown-field detection.

use serde_json::{Value, json};

use super::{REF_PREFIX, Schemas, builtin, collect_refs, gvks_of};
use crate::kinds::{self, GroupVersionKind};

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";

#[test]
fn every_reference_resolves_and_every_builtin_kind_has_a_schema() {
    let schemas = builtin();
    for (name, schema) in schemas.definitions() {
        collect_refs(schema, &mut |target| {
            assert!(
                schemas.definition(target).is_some(),
                "{name} refers to missing {target}"
            )
        });
        let text = schema.to_string();
        assert!(
            !text.contains("\"#/$defs/") && !text.contains("\"#/definitions/"),
            "{name} has a foreign reference"
        );
    }
    for kind in kinds::builtin() {
        let name = kind.schema_name.clone().unwrap_or_default();
        let schema = schemas
            .definition(&name)
            .unwrap_or_else(|| panic!("no schema {name}"));
        assert!(
            gvks_of(schema).any(|g| g == kind.gvk()),
            "{name} lacks GVK {:?}",
            kind.gvk()
        );
        let list = name
            .strip_suffix(&kind.kind)
            .map(|p| format!("{p}{}", kind.list_kind))
            .unwrap_or_default();
        let listable = kind.verbs.iter().any(|v| v == "list");
        assert_eq!(
            schemas.definition(&list).is_some(),
            listable,
            "list schema {list}"
        );
    }
}

#[test]
fn gvk_is_an_array_and_lookup_by_gvk_works() {
    let schemas = builtin();
    let deployment = schemas.definition(DEPLOYMENT).cloned().unwrap_or_default();
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }])
    );
    assert_eq!(
        schemas.find_by_gvk(&GroupVersionKind::new("apps", "v1", "DeploymentList")),
        Some("io.k8s.api.apps.v1.DeploymentList")
    );
    let delete_options = schemas
        .definition("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
        .cloned()
        .unwrap_or_default();
    let gvks: Vec<GroupVersionKind> = gvks_of(&delete_options).collect();
    assert!(gvks.contains(&GroupVersionKind::new("", "v1", "DeleteOptions")));
    assert!(gvks.contains(&GroupVersionKind::new("apps", "v1", "DeleteOptions")));
}

#[test]
fn special_types_have_upstream_shapes() {
    let schemas = builtin();
    let def = |n: &str| schemas.definition(n).cloned().unwrap_or_default();
    let int_or_string = def("io.k8s.apimachinery.pkg.util.intstr.IntOrString");
    assert_eq!(int_or_string["format"], "int-or-string");
    assert_eq!(
        int_or_string["oneOf"],
        json!([{ "type": "integer" }, { "type": "string" }])
    );
    assert_eq!(
        def("io.k8s.apimachinery.pkg.api.resource.Quantity")["oneOf"],
        json!([{ "type": "string" }, { "type": "number" }])
    );
    assert_eq!(
        def("io.k8s.apimachinery.pkg.apis.meta.v1.Time")["format"],
        "date-time"
    );
    assert_eq!(
        def("io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime")["type"],
        "string"
    );
    assert_eq!(
        def("io.k8s.apimachinery.pkg.runtime.RawExtension")["type"],
        "object"
    );
    assert!(
        def("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON")
            .get("type")
            .is_none()
    );
    // A reference with a description is wrapped in allOf, as in upstream's v3 documents.
    let selector = &def("io.k8s.api.apps.v1.DeploymentSpec")["properties"]["selector"];
    assert_eq!(
        selector["allOf"],
        json!([{ "$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector") }])
    );
    assert!(selector.get("$ref").is_none());
}

#[test]
fn walker_follows_references_and_reads_extensions() {
    let schemas = builtin();
    let pod_spec = schemas.node(POD_SPEC).expect("PodSpec");
    assert!(pod_spec.is_object());
    let containers = pod_spec.property("containers").expect("containers");
    assert!(containers.is_array());
    assert_eq!(containers.patch_strategy(), Some("merge"));
    assert_eq!(containers.patch_merge_key(), Some("name"));
    assert_eq!(containers.list_type(), Some("map"));
    assert_eq!(containers.list_map_keys(), vec!["name"]);
    let container = containers.items().expect("items");
    assert!(container.known_properties().any(|p| p == "image"));
    let ports = container.property("ports").expect("ports");
    assert_eq!(ports.list_map_keys(), vec!["containerPort", "protocol"]);
    assert_eq!(ports.patch_merge_key(), Some("containerPort"));
    assert_eq!(
        pod_spec
            .property("volumes")
            .and_then(|v| v.patch_strategy()),
        Some("merge,retainKeys")
    );
    assert_eq!(
        pod_spec.property("tolerations").and_then(|v| v.list_type()),
        Some("atomic")
    );
    let node_selector = pod_spec.property("nodeSelector").expect("nodeSelector");
    assert_eq!(node_selector.map_type(), Some("atomic"));
    assert_eq!(
        node_selector
            .additional_properties()
            .map(|v| v.schema()["type"].clone()),
        Some(json!("string"))
    );

    let deployment = schemas.node(DEPLOYMENT).expect("Deployment");
    let spec = deployment.property("spec").expect("spec");
    let strategy = spec.property("strategy").expect("strategy");
    assert_eq!(strategy.patch_strategy(), Some("retainKeys"));
    let max_surge = strategy
        .property("rollingUpdate")
        .and_then(|r| r.property("maxSurge"))
        .expect("maxSurge");
    assert!(max_surge.is_int_or_string());
    assert!(!strategy.is_int_or_string());
    // Definition-level map type is seen through the reference.
    assert_eq!(
        spec.property("selector").and_then(|s| s.map_type()),
        Some("atomic")
    );
    assert!(deployment.property("bogus").is_none());
    assert!(schemas.node("no.such.Definition").is_none());
}

#[test]
fn unknown_fields_are_reported_with_upstream_paths() {
    let schemas = builtin();
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "labels": { "any": "label" }, "annotations": { "a": "b" }, "bogusMeta": 1 },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "strategy": { "rollingUpdate": { "maxSurge": "25%" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "containers": [
                        { "name": "a", "image": "busybox", "resources": { "limits": { "cpu": "1" } } },
                        { "name": "b", "image": "busybox", "bogus": true, "ports": [{ "containerPort": 80, "extra": 1 }] }
                    ],
                    "nodeSelector": { "disk": "ssd" }
                }
            },
            "bogus": {}
        },
        "status": {}
    });
    let unknown = schemas.unknown_fields(DEPLOYMENT, &deployment);
    assert_eq!(
        unknown,
        vec![
            "metadata.bogusMeta",
            "spec.template.spec.containers[1].bogus",
            "spec.template.spec.containers[1].ports[0].extra",
            "spec.bogus",
        ]
    );
    assert!(
        schemas
            .unknown_fields(DEPLOYMENT, &json!({ "kind": "Deployment" }))
            .is_empty()
    );
    assert!(
        schemas
            .unknown_fields("no.such.Definition", &json!({ "x": 1 }))
            .is_empty()
    );
}

#[test]
fn unknown_fields_skip_free_form_and_preserved_objects() {
    let schemas = builtin();
    // WatchEvent.object is a RawExtension: anything goes inside it.
    let event = json!({ "type": "ADDED", "object": { "anything": { "deep": 1 } }, "extra": 1 });
    assert_eq!(
        schemas.unknown_fields("io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent", &event),
        vec!["extra"]
    );
    // A CRD's default value is JSON: free-form.
    let props =
        json!({ "type": "object", "default": { "whatever": true }, "x-kubernetes-bogus": 1 });
    let crd_props = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
    assert_eq!(
        schemas.unknown_fields(crd_props, &props),
        vec!["x-kubernetes-bogus"]
    );

    let mut custom = serde_json::Map::new();
    custom.insert(
        "example.v1.Thing".into(),
        json!({
            "type": "object",
            "properties": {
                "spec": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                "status": { "type": "object", "properties": { "ready": { "type": "boolean" } } },
                "port": { "x-kubernetes-int-or-string": true }
            }
        }),
    );
    let custom = Schemas::from_definitions(custom);
    let thing = json!({ "spec": { "free": 1 }, "status": { "ready": true, "nope": 1 } });
    assert_eq!(
        custom.unknown_fields("example.v1.Thing", &thing),
        vec!["status.nope"]
    );
    let node = custom.node("example.v1.Thing").expect("Thing");
    assert!(
        node.property("spec")
            .is_some_and(|s| s.preserves_unknown_fields())
    );
    assert!(node.property("port").is_some_and(|p| p.is_int_or_string()));
}

#[test]
fn reachable_follows_references_transitively() {
    let schemas = builtin();
    let reached = schemas.reachable([DEPLOYMENT]);
    assert!(reached.contains(POD_SPEC));
    assert!(reached.contains("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    assert!(reached.contains("io.k8s.apimachinery.pkg.util.intstr.IntOrString"));
    assert!(!reached.contains("io.k8s.api.core.v1.Service"));
}

#[test]
fn builtin_is_shared() {
    assert!(std::ptr::eq(builtin(), builtin()));
    let value: &Value = builtin().definition(DEPLOYMENT).expect("Deployment");
    assert_eq!(value["type"], "object");
}

const POD: &str = "io.k8s.api.core.v1.Pod";

/// The decoding error `decode` reports for `pod`, if any.
fn pod_type_error(pod: Value) -> Option<String> {
    builtin().decode(POD, &pod).type_error.map(|e| e.message)
}

#[test]
fn wrongly_typed_values_are_reported_as_go_decoding_errors() {
    let cases = [
        (
            json!({"spec": {"terminationGracePeriodSeconds": "abc"}}),
            "json: cannot unmarshal string into Go struct field PodSpec.spec.terminationGracePeriodSeconds of type int64",
        ),
        (
            json!({"spec": {"volumes": [{"name": "v", "secret": {"secretName": true}}]}}),
            "json: cannot unmarshal bool into Go struct field SecretVolumeSource.spec.volumes.secret.secretName of type string",
        ),
        (
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1.5}]}]}}),
            "json: cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32",
        ),
        (
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 3_000_000_000u64}]}]}}),
            "json: cannot unmarshal number 3000000000 into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32",
        ),
        (
            json!({"metadata": {"labels": {"a": 1}}}),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string",
        ),
        (
            json!({"spec": {"containers": "c"}}),
            "json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container",
        ),
        (
            json!({"spec": []}),
            "json: cannot unmarshal array into Go struct field Pod.spec of type v1.PodSpec",
        ),
        (
            json!({"spec": {"nodeSelector": ["a"]}}),
            "json: cannot unmarshal array into Go struct field PodSpec.spec.nodeSelector of type map[string]string",
        ),
        (
            json!({"spec": {"hostNetwork": "true"}}),
            "json: cannot unmarshal string into Go struct field PodSpec.spec.hostNetwork of type bool",
        ),
        (
            json!({"spec": {"containers": [{"name": "c", "livenessProbe": {"httpGet": {"port": true}}}]}}),
            "json: cannot unmarshal bool into Go struct field HTTPGetAction.spec.containers.livenessProbe.httpGet.port of type int32",
        ),
        (
            json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "lots"}}}]}}),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ),
        (
            json!({"metadata": {"creationTimestamp": 5}}),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.creationTimestamp of type string",
        ),
    ];
    for (pod, want) in cases {
        assert_eq!(pod_type_error(pod.clone()).as_deref(), Some(want), "{pod}");
    }
}

#[test]
fn well_typed_values_and_nulls_decode() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}, "creationTimestamp": null,
                     "deletionTimestamp": "2024-01-02T03:04:05Z"},
        "spec": {
            "terminationGracePeriodSeconds": null,
            "activeDeadlineSeconds": 30,
            "hostNetwork": false,
            "containers": [{
                "name": "c",
                "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "500m", "memory": 1024}, "requests": null},
                "livenessProbe": {"httpGet": {"port": "http"}, "periodSeconds": 5},
                "readinessProbe": {"tcpSocket": {"port": 8080}},
            }],
            "volumes": [{"name": "v", "secret": {"secretName": "s", "defaultMode": 420}}],
        },
    });
    assert_eq!(builtin().decode(POD, &pod), Default::default());
    let secret = json!({"data": {"k": "aGVsbG8=", "n": null}});
    assert!(
        builtin()
            .decode("io.k8s.api.core.v1.Secret", &secret)
            .type_error
            .is_none()
    );
}

#[test]
fn bad_times_bytes_and_ints_out_of_range_are_refused() {
    let time = pod_type_error(json!({"metadata": {"deletionTimestamp": "yesterday"}}));
    assert!(time.is_some_and(|m| m.starts_with("parsing time \"yesterday\"")));
    let secret = json!({"data": {"k": "not base64!"}});
    let bytes = builtin()
        .decode("io.k8s.api.core.v1.Secret", &secret)
        .type_error;
    assert_eq!(
        bytes.map(|e| e.message).as_deref(),
        Some("illegal base64 data at input byte 3")
    );
    let replicas = json!({"spec": {"replicas": 1e3}});
    let err = builtin()
        .decode(DEPLOYMENT, &replicas)
        .type_error
        .expect("float replicas");
    assert_eq!(err.path, "spec.replicas");
    assert_eq!(
        (err.expected, err.given),
        ("numeric (int or float)", "float64")
    );
}

#[test]
fn one_pass_reports_unknown_fields_and_the_first_type_error() {
    let pod = json!({"spec": {"bogus": 1, "priority": "high", "hostPID": "yes"}});
    let decoded = builtin().decode(POD, &pod);
    assert_eq!(decoded.unknown, vec!["spec.bogus".to_owned()]);
    let err = decoded.type_error.expect("type error");
    assert_eq!(err.path, "spec.priority");
    assert!(err.message.contains("PodSpec.spec.priority of type int32"));
}
