//! Tests of protobuf body decoding: bodies are built with k8s-pb's prost types, as client-go
//! would send them, and compared with the JSON Go writes for the same objects.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

/// Wraps an object's encoding in `k8s\0` + `runtime.Unknown`, as client-go does (Go writes the
/// empty content encoding and type too).
fn body(api_version: &str, kind: &str, object: &impl prost::Message) -> Vec<u8> {
    envelope(api_version, kind, object.encode_to_vec(), "")
}

/// An envelope around `raw` with the given content type.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>, content_type: &str) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(content_type.into()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

/// Object metadata with a name and labels, as kubectl fills it.
fn named(name: &str, labels: &[(&str, &str)]) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: Some(name.into()),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        ..Default::default()
    }
}

/// Decodes `body` and checks it against `expected`, then checks that the k8s-openapi type `T`
/// reads the JSON without losing anything (k8s-openapi ignores unknown fields, so a misnamed
/// field would vanish in the round trip).
fn check<T: DeserializeOwned + Serialize>(body: &[u8], expected: Value) {
    let decoded = decode(body).expect("decodes");
    assert_eq!(decoded, expected);
    let typed: T = serde_json::from_value(decoded.clone()).expect("k8s-openapi reads it");
    let round_trip = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(
        round_trip,
        without_nulls(decoded),
        "lost in the typed round trip"
    );
}

/// `value` with `null` object members removed (k8s-openapi writes `None` as absent).
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

#[test]
fn namespace_as_kubectl_create_sends_it() {
    // Go's marshaller writes every non-pointer field, empty or not; the zero Time is an empty
    // message.
    let namespace = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            name: Some("team-a".into()),
            generate_name: Some(String::new()),
            namespace: Some(String::new()),
            self_link: Some(String::new()),
            uid: Some(String::new()),
            resource_version: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus {
            phase: Some(String::new()),
            ..Default::default()
        }),
    };
    check::<k8s_openapi::api::core::v1::Namespace>(
        &body("v1", "Namespace", &namespace),
        json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {"name": "team-a", "creationTimestamp": null},
            "spec": {},
            "status": {}
        }),
    );
}

#[test]
fn deployment_with_containers_ports_resources_and_labels() {
    let labels = [("app", "web")];
    let quantities = |cpu: &str, memory: &str| -> BTreeMap<String, Quantity> {
        BTreeMap::from([
            (
                "cpu".into(),
                Quantity {
                    string: Some(cpu.into()),
                },
            ),
            (
                "memory".into(),
                Quantity {
                    string: Some(memory.into()),
                },
            ),
        ])
    };
    let deployment = apps::Deployment {
        metadata: Some(named("web", &labels)),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: BTreeMap::from([("app".into(), "web".into())]),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(named("", &labels)),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("nginx".into()),
                        image: Some("nginx:1.27".into()),
                        ports: vec![core::ContainerPort {
                            container_port: Some(80),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }],
                        resources: Some(core::ResourceRequirements {
                            limits: quantities("500m", "128Mi"),
                            requests: quantities("250m", "64Mi"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: None,
    };
    check::<k8s_openapi::api::apps::v1::Deployment>(
        &body("apps/v1", "Deployment", &deployment),
        json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                // A pointer: zero is kept.
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": "250m", "memory": "64Mi"}
                            }
                        }]
                    }
                },
                // Values with omitempty: zero is dropped; structs are always written.
                "strategy": {}
            },
            "status": {}
        }),
    );
}

#[test]
fn secret_data_is_base64() {
    let secret = core::Secret {
        metadata: Some(named("creds", &[])),
        data: BTreeMap::from([
            ("bin".into(), vec![0, 1, 2, 0xff]),
            ("empty".into(), Vec::new()),
        ]),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    check::<k8s_openapi::api::core::v1::Secret>(
        &body("v1", "Secret", &secret),
        json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": "creds", "creationTimestamp": null},
            "data": {"bin": "AAEC/w==", "empty": ""},
            "type": "Opaque"
        }),
    );
}

#[test]
fn configmap_data_and_binary_data() {
    let config_map = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: Some("settings".into()),
            namespace: Some("prod".into()),
            ..Default::default()
        }),
        immutable: Some(false),
        data: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        binary_data: BTreeMap::from([("blob".into(), b"hi".to_vec())]),
    };
    check::<k8s_openapi::api::core::v1::ConfigMap>(
        &body("v1", "ConfigMap", &config_map),
        json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "settings", "namespace": "prod", "creationTimestamp": null},
            "immutable": false,
            "data": {"a": "1", "b": "2"},
            "binaryData": {"blob": "aGk="}
        }),
    );
}

#[test]
fn service_target_ports_int_and_string() {
    let port = |name: &str, port: i32, target: IntOrString| core::ServicePort {
        name: Some(name.into()),
        protocol: Some("TCP".into()),
        port: Some(port),
        target_port: Some(target),
        node_port: Some(0),
        ..Default::default()
    };
    let service = core::Service {
        metadata: Some(named("web", &[("app", "web")])),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port(
                    "http",
                    80,
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: Some(String::new()),
                    },
                ),
                port(
                    "https",
                    443,
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("tls".into()),
                    },
                ),
            ],
            selector: BTreeMap::from([("app".into(), "web".into())]),
            r#type: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus::default()),
    };
    check::<k8s_openapi::api::core::v1::Service>(
        &body("v1", "Service", &service),
        json!({
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "tls"}
                ],
                "selector": {"app": "web"},
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        }),
    );
}

#[test]
fn self_subject_access_review_from_auth_can_i() {
    let review = authz::SelfSubjectAccessReview {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: Some("default".into()),
                verb: Some("create".into()),
                group: Some(String::new()),
                version: Some(String::new()),
                resource: Some("pods".into()),
                subresource: Some(String::new()),
                name: Some(String::new()),
                ..Default::default()
            }),
            non_resource_attributes: None,
        }),
        status: Some(authz::SubjectAccessReviewStatus {
            allowed: Some(false),
            denied: Some(false),
            reason: Some(String::new()),
            evaluation_error: Some(String::new()),
        }),
    };
    check::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>(
        &body(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &review,
        ),
        json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {
                "resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}
            },
            // `allowed` has no omitempty.
            "status": {"allowed": false}
        }),
    );
}

#[test]
fn job_with_command_and_pointer_zero() {
    let job = batch::Job {
        metadata: Some(named("once", &[])),
        spec: Some(batch::JobSpec {
            backoff_limit: Some(0),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta::default()),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("once".into()),
                        image: Some("busybox".into()),
                        command: vec!["echo".into(), "hi".into()],
                        resources: Some(core::ResourceRequirements::default()),
                        ..Default::default()
                    }],
                    restart_policy: Some("Never".into()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: Some(batch::JobStatus::default()),
    };
    check::<k8s_openapi::api::batch::v1::Job>(
        &body("batch/v1", "Job", &job),
        json!({
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": {"name": "once", "creationTimestamp": null},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"creationTimestamp": null},
                    "spec": {
                        "containers": [{
                            "name": "once",
                            "image": "busybox",
                            "command": ["echo", "hi"],
                            "resources": {}
                        }],
                        "restartPolicy": "Never"
                    }
                }
            },
            "status": {}
        }),
    );
}

#[test]
fn volumes_and_env_sources_are_inlined() {
    let pod = core::Pod {
        metadata: Some(named("p", &[])),
        spec: Some(core::PodSpec {
            volumes: vec![core::Volume {
                name: Some("cfg".into()),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: Some("settings".into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            containers: vec![core::Container {
                name: Some("c".into()),
                env_from: vec![core::EnvFromSource {
                    secret_ref: Some(core::SecretEnvSource {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: Some("creds".into()),
                        }),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }],
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: Some("/healthz".into()),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: None,
                                str_val: Some("http".into()),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    check::<k8s_openapi::api::core::v1::Pod>(
        &body("v1", "Pod", &pod),
        json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "p", "creationTimestamp": null},
            "spec": {
                "volumes": [{"name": "cfg", "configMap": {"name": "settings"}}],
                "containers": [{
                    "name": "c",
                    "envFrom": [{"secretRef": {"name": "creds", "optional": true}}],
                    "resources": {},
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http"},
                        "periodSeconds": 5
                    }
                }]
            },
            "status": {}
        }),
    );
}

#[test]
fn times_micro_times_and_managed_fields() {
    let lease = coordination::Lease {
        metadata: Some(meta::ObjectMeta {
            name: Some("leader".into()),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_704_164_645),
                nanos: Some(999),
            }),
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                operation: Some("Update".into()),
                api_version: Some("coordination.k8s.io/v1".into()),
                fields_type: Some("FieldsV1".into()),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:spec":{"f:holderIdentity":{}}}"#.to_vec()),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        spec: Some(coordination::LeaseSpec {
            holder_identity: Some("node-1".into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_704_164_645),
                nanos: Some(123_456_789),
            }),
            ..Default::default()
        }),
    };
    check::<k8s_openapi::api::coordination::v1::Lease>(
        &body("coordination.k8s.io/v1", "Lease", &lease),
        json!({
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {
                "name": "leader",
                "creationTimestamp": "2024-01-02T03:04:05Z",
                "managedFields": [{
                    "manager": "kubectl",
                    "operation": "Update",
                    "apiVersion": "coordination.k8s.io/v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:holderIdentity": {}}}
                }]
            },
            "spec": {
                "holderIdentity": "node-1",
                "leaseDurationSeconds": 40,
                "renewTime": "2024-01-02T03:04:05.123456Z"
            }
        }),
    );
}

#[test]
fn raw_extension_embeds_json() {
    let revision = apps::ControllerRevision {
        metadata: Some(named("web-1", &[])),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"replicas":3}}"#.to_vec()),
        }),
        revision: Some(1),
    };
    check::<k8s_openapi::api::apps::v1::ControllerRevision>(
        &body("apps/v1", "ControllerRevision", &revision),
        json!({
            "kind": "ControllerRevision",
            "apiVersion": "apps/v1",
            "metadata": {"name": "web-1", "creationTimestamp": null},
            "data": {"spec": {"replicas": 3}},
            "revision": 1
        }),
    );
}

#[test]
fn eviction_and_delete_options() {
    let eviction = policy::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: Some("web-abc".into()),
            namespace: Some("prod".into()),
            ..Default::default()
        }),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            dry_run: vec!["All".into()],
            ..Default::default()
        }),
    };
    check::<k8s_openapi::api::policy::v1::Eviction>(
        &body("policy/v1", "Eviction", &eviction),
        json!({
            "kind": "Eviction",
            "apiVersion": "policy/v1",
            "metadata": {"name": "web-abc", "namespace": "prod", "creationTimestamp": null},
            "deleteOptions": {"gracePeriodSeconds": 0, "dryRun": ["All"]}
        }),
    );
    // DeleteOptions is accepted under any supported group version, as upstream registers it
    // in each.
    let options = meta::DeleteOptions {
        propagation_policy: Some("Foreground".into()),
        ..Default::default()
    };
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        assert_eq!(
            decode(&body(api_version, "DeleteOptions", &options)).unwrap(),
            json!({
                "kind": "DeleteOptions",
                "apiVersion": api_version,
                "propagationPolicy": "Foreground"
            })
        );
    }
}

#[test]
fn empty_lists_without_omitempty_are_null() {
    // `rules` and pointers without omitempty (`expirationSeconds`, `boundObjectRef`) are
    // written as null, as Go does for a nil slice and a nil pointer.
    let role = k8s_pb::api::rbac::v1::Role {
        metadata: Some(named("empty", &[])),
        rules: Vec::new(),
    };
    assert_eq!(
        decode(&body("rbac.authorization.k8s.io/v1", "Role", &role)).unwrap(),
        json!({
            "kind": "Role",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "empty", "creationTimestamp": null},
            "rules": null
        })
    );
    let request = k8s_pb::api::authentication::v1::TokenRequest {
        spec: Some(k8s_pb::api::authentication::v1::TokenRequestSpec {
            audiences: vec!["api".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let decoded = decode(&body("authentication.k8s.io/v1", "TokenRequest", &request)).unwrap();
    assert_eq!(
        decoded["spec"],
        json!({"audiences": ["api"], "expirationSeconds": null, "boundObjectRef": null})
    );
    assert_eq!(
        decoded["status"],
        json!({"token": "", "expirationTimestamp": null})
    );
}

#[test]
fn user_extra_values_are_arrays() {
    let review = authz::SubjectAccessReview {
        spec: Some(authz::SubjectAccessReviewSpec {
            user: Some("alice".into()),
            extra: BTreeMap::from([(
                "scopes".into(),
                authz::ExtraValue {
                    items: vec!["a".into(), "b".into()],
                },
            )]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let decoded = decode(&body(
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        &review,
    ))
    .unwrap();
    assert_eq!(
        decoded["spec"],
        json!({"user": "alice", "extra": {"scopes": ["a", "b"]}})
    );
}

#[test]
fn repeated_message_occurrences_merge_and_unknown_fields_are_skipped() {
    let first = core::Namespace {
        metadata: Some(named("a", &[("x", "1")])),
        ..Default::default()
    };
    let second = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            labels: BTreeMap::from([("y".into(), "2".into())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut raw = first.encode_to_vec();
    raw.extend(second.encode_to_vec());
    // Field 99, varint: unknown to the schema.
    raw.extend([0x98, 0x06, 0x01]);
    assert_eq!(
        decode(&envelope("v1", "Namespace", raw, "")).unwrap(),
        json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {"name": "a", "creationTimestamp": null, "labels": {"x": "1", "y": "2"}},
            "spec": {},
            "status": {}
        })
    );
}

#[test]
fn json_content_in_the_envelope() {
    let body = envelope(
        "v1",
        "ConfigMap",
        br#"{"metadata":{"name":"j"}}"#.to_vec(),
        "application/json",
    );
    assert_eq!(
        decode(&body).unwrap(),
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "j"}})
    );
}

#[test]
fn every_served_kind_is_known() {
    for (api_version, kind) in [
        ("v1", "Pod"),
        ("v1", "ServiceAccount"),
        ("v1", "ResourceQuota"),
        ("apps/v1", "StatefulSet"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("coordination.k8s.io/v1", "Lease"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("events.k8s.io/v1", "Event"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "Ingress"),
        ("storage.k8s.io/v1", "StorageClass"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("autoscaling/v1", "HorizontalPodAutoscaler"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("node.k8s.io/v1", "RuntimeClass"),
        ("certificates.k8s.io/v1", "CertificateSigningRequest"),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
        ),
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
        ("authentication.k8s.io/v1", "TokenReview"),
        ("meta.k8s.io/v1", "DeleteOptions"),
    ] {
        assert!(supports(api_version, kind), "{api_version} {kind}");
    }
    // Nested types are not kinds; unknown groups and versions are not served.
    assert!(!supports("v1", "Container"));
    assert!(!supports("apps/v1beta1", "Deployment"));
    assert!(!supports("example.com/v1", "Widget"));
}

#[test]
fn table_is_sorted_and_references_are_valid() {
    for pair in MESSAGES.windows(2) {
        assert!(pair[0].name < pair[1].name, "{} sorted", pair[1].name);
    }
    for message in MESSAGES {
        for field in message.fields {
            if let schema::Ty::Msg(target) = field.ty {
                assert!(usize::from(target) < MESSAGES.len(), "{}", message.name);
            }
            let named = !field.json.is_empty();
            let needs_name = message.special == schema::Special::Object
                && !matches!(
                    field.presence,
                    schema::Presence::Inline | schema::Presence::Skip
                );
            assert!(!needs_name || named, "{}#{}", message.name, field.tag);
        }
    }
}

#[test]
fn malformed_bodies_are_errors() {
    let namespace = body("v1", "Namespace", &core::Namespace::default());
    assert_eq!(
        decode(&namespace[1..]),
        Err(ProtobufError::MissingMagic),
        "missing magic"
    );
    assert_eq!(decode(b""), Err(ProtobufError::MissingMagic));

    // The envelope's key says "varint" and the varint never ends.
    let mut truncated = MAGIC.to_vec();
    truncated.extend([0x08, 0x80, 0x80]);
    assert_eq!(
        decode(&truncated),
        Err(ProtobufError::Truncated { offset: 1 })
    );

    // metadata (field 1) sent as a varint.
    let wrong = envelope("v1", "Namespace", vec![0x08, 0x01], "");
    assert_eq!(
        decode(&wrong),
        Err(ProtobufError::WrongWireType {
            message: "io.k8s.api.core.v1.Namespace",
            field: 1,
            found: 0,
            expected: 2
        })
    );
    // A string field (metadata.name) sent as fixed64.
    let wrong = envelope(
        "v1",
        "Namespace",
        vec![0x0a, 0x09, 0x09, 1, 2, 3, 4, 5, 6, 7, 8],
        "",
    );
    assert!(matches!(
        decode(&wrong),
        Err(ProtobufError::WrongWireType {
            field: 1,
            found: 1,
            ..
        })
    ));

    // A length that runs past the end of the object.
    let short = envelope("v1", "Namespace", vec![0x0a, 0x7f, 0x0a], "");
    assert_eq!(decode(&short), Err(ProtobufError::Truncated { offset: 1 }));

    let unknown = body("example.com/v1", "Widget", &core::Namespace::default());
    let err = decode(&unknown).unwrap_err();
    assert_eq!(
        err,
        ProtobufError::UnknownKind {
            api_version: "example.com/v1".into(),
            kind: "Widget".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "no protobuf decoding for kind \"Widget\" of apiVersion \"example.com/v1\""
    );

    let mut no_type = MAGIC.to_vec();
    no_type.extend(
        Unknown {
            raw: Some(Vec::new()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(decode(&no_type), Err(ProtobufError::MissingTypeMeta));

    assert_eq!(
        decode(&envelope("v1", "Namespace", Vec::new(), "application/yaml")),
        Err(ProtobufError::UnsupportedContentType(
            "application/yaml".into()
        ))
    );
}

#[test]
fn bad_special_values_are_errors() {
    let service = core::Service {
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                target_port: Some(IntOrString {
                    r#type: Some(7),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        decode(&body("v1", "Service", &service)),
        Err(ProtobufError::InvalidValue {
            message: "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            ..
        })
    ));

    let revision = apps::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(b"not json".to_vec()),
        }),
        ..Default::default()
    };
    assert!(matches!(
        decode(&body("apps/v1", "ControllerRevision", &revision)),
        Err(ProtobufError::InvalidValue { .. })
    ));

    let far_future = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            creation_timestamp: Some(meta::Time {
                seconds: Some(i64::MAX),
                nanos: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(matches!(
        decode(&body("v1", "Namespace", &far_future)),
        Err(ProtobufError::InvalidValue { .. })
    ));
}

#[test]
fn absurd_nesting_is_an_error_not_a_crash() {
    // Embedded JSON nested far deeper than any parser stack allows.
    let mut deep = "[".repeat(100_000).into_bytes();
    deep.extend("]".repeat(100_000).into_bytes());
    let revision = apps::ControllerRevision {
        data: Some(RawExtension { raw: Some(deep) }),
        ..Default::default()
    };
    assert!(matches!(
        decode(&body("apps/v1", "ControllerRevision", &revision)),
        Err(ProtobufError::InvalidValue { .. })
    ));

    // The schema has no recursive messages, so wire nesting is bounded by it; the walker still
    // refuses to go past MAX_DEPTH.
    let namespace = find_message("io.k8s.api.core.v1.Namespace").unwrap();
    assert_eq!(
        decode::Decoder::new(1000).message(namespace, &[&[]], MAX_DEPTH),
        Err(ProtobufError::TooDeep { limit: MAX_DEPTH })
    );
}

#[test]
fn output_is_bounded_by_input_size() {
    // Each empty list item is two bytes on the wire but a whole zero Deployment in JSON.
    let mut raw = Vec::new();
    for _ in 0..20_000 {
        raw.extend([0x12, 0x00]);
    }
    assert!(matches!(
        decode(&envelope("apps/v1", "DeploymentList", raw, "")),
        Err(ProtobufError::TooLarge { .. })
    ));
}
