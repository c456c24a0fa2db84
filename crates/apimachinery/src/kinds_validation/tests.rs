//! Data-driven tests of built-in kind validation: valid objects pass, each broken field
//! yields upstream's reason, path and message.

use serde_json::{Value, json};

use super::{validate_create, validate_update};
use crate::defaults;

/// Compares causes with `(reason, field, message)` triples, ignoring order.
fn check(causes: Vec<crate::status::StatusCause>, expected: &[(&str, &str, &str)]) {
    let mut got: Vec<(String, String, String)> = causes
        .into_iter()
        .map(|c| (c.reason, c.field, c.message))
        .collect();
    let mut want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(r, f, m)| ((*r).to_owned(), (*f).to_owned(), (*m).to_owned()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// Validates `obj` as a new `group`/`kind` and compares the causes.
fn check_create(group: &str, kind: &str, obj: &Value, expected: &[(&str, &str, &str)]) {
    check(validate_create(group, kind, obj), expected);
}

/// Validates `old` → `new` and compares the causes.
fn check_update(
    group: &str,
    kind: &str,
    new: &Value,
    old: &Value,
    expected: &[(&str, &str, &str)],
) {
    check(validate_update(group, kind, new, old), expected);
}

/// `obj` with each JSON-pointer target replaced (`null` removes it); parents must exist.
fn with(obj: &Value, edits: &[(&str, Value)]) -> Value {
    let mut obj = obj.clone();
    for (pointer, value) in edits {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        let target = obj.pointer_mut(parent);
        match target {
            Some(Value::Object(m)) if value.is_null() => {
                m.remove(key);
            }
            Some(Value::Object(m)) => {
                m.insert(key.to_owned(), value.clone());
            }
            Some(Value::Array(a)) => {
                if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *slot = value.clone();
                } else {
                    a.push(value.clone());
                }
            }
            _ => panic!("no parent for {pointer}"),
        }
    }
    obj
}

/// `Invalid value: <JSON at pointer>: field is immutable`.
fn immutable_message(obj: &Value, pointer: &str) -> String {
    let v = obj.pointer(pointer).cloned().unwrap_or_default();
    format!("Invalid value: {v}: field is immutable")
}

fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
    defaults::apply(group, kind, &mut obj);
    obj
}

/// A full Deployment: ports, probes, env, volumes, mounts, resources.
fn deployment() -> Value {
    defaulted(
        "apps",
        "Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 3,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]
                },
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {
                        "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["true"]}],
                        "containers": [{
                            "name": "web",
                            "image": "nginx:1.25",
                            "ports": [{"name": "http", "containerPort": 80}, {"name": "metrics", "containerPort": 9090}],
                            "env": [
                                {"name": "MODE", "value": "prod"},
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                            ],
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
                            "livenessProbe": {"httpGet": {"port": "http", "path": "/healthz"}},
                            "readinessProbe": {"tcpSocket": {"port": 80}, "successThreshold": 2},
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "config", "mountPath": "/etc/app"}]
                        }],
                        "volumes": [
                            {"name": "data", "emptyDir": {}},
                            {"name": "config", "configMap": {"name": "app"}}
                        ]
                    }
                }
            }
        }),
    )
}

const C: &str = "/spec/template/spec/containers/0";
const CP: &str = "spec.template.spec.containers[0]";

#[test]
fn full_deployment_passes() {
    check_create("apps", "Deployment", &deployment(), &[]);
    check_update("apps", "Deployment", &deployment(), &deployment(), &[]);
}

#[test]
fn containers() {
    let d = deployment();
    check_create(
        "apps",
        "Deployment",
        &with(&d, &[("/spec/template/spec/containers", json!([]))]),
        &[(
            "FieldValueRequired",
            "spec.template.spec.containers",
            "Required value",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&format!("{C}/name"), json!("Web_1")),
                (&format!("{C}/image"), json!("")),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                &format!("{CP}.name"),
                "Invalid value: \"Web_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ),
            (
                "FieldValueRequired",
                &format!("{CP}.image"),
                "Required value",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&format!("{C}/name"), json!("init")),
                (&format!("{C}/imagePullPolicy"), json!("Sometimes")),
            ],
        ),
        &[
            (
                "FieldValueDuplicate",
                &format!("{CP}.name"),
                "Duplicate value: \"init\"",
            ),
            (
                "FieldValueNotSupported",
                &format!("{CP}.imagePullPolicy"),
                "Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(&d, &[(&format!("{C}/name"), Value::Null)]),
        &[(
            "FieldValueRequired",
            &format!("{CP}.name"),
            "Required value",
        )],
    );
}

#[test]
fn ports() {
    let d = deployment();
    let p = |i: usize, field: &str| format!("{C}/ports/{i}/{field}");
    let f = |i: usize, field: &str| format!("{CP}.ports[{i}].{field}");
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&p(0, "containerPort"), json!(70000)),
                (&p(1, "protocol"), json!("HTTP")),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                &f(0, "containerPort"),
                "Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
            (
                "FieldValueNotSupported",
                &f(1, "protocol"),
                "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&p(0, "containerPort"), Value::Null),
                (&p(1, "name"), json!("http")),
            ],
        ),
        &[
            (
                "FieldValueRequired",
                &f(0, "containerPort"),
                "Required value",
            ),
            (
                "FieldValueDuplicate",
                &f(1, "name"),
                "Duplicate value: \"http\"",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&p(0, "name"), json!("a-very-long-port-name")),
                (&p(1, "name"), json!("80")),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                &f(0, "name"),
                "Invalid value: \"a-very-long-port-name\": must be no more than 15 characters",
            ),
            (
                "FieldValueInvalid",
                &f(1, "name"),
                "Invalid value: \"80\": must contain at least one letter (a-z)",
            ),
        ],
    );
}

#[test]
fn probes() {
    let d = deployment();
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[(&format!("{C}/livenessProbe"), json!({"periodSeconds": 5}))],
        ),
        &[(
            "FieldValueRequired",
            &format!("{CP}.livenessProbe"),
            "Required value: must specify a handler type",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&format!("{C}/livenessProbe/tcpSocket"), json!({"port": 0})),
                (&format!("{C}/livenessProbe/successThreshold"), json!(2)),
            ],
        ),
        &[
            (
                "FieldValueForbidden",
                &format!("{CP}.livenessProbe.tcpSocket"),
                "Forbidden: may not specify more than 1 handler type",
            ),
            (
                "FieldValueInvalid",
                &format!("{CP}.livenessProbe.tcpSocket.port"),
                "Invalid value: 0: must be between 1 and 65535, inclusive",
            ),
            (
                "FieldValueInvalid",
                &format!("{CP}.livenessProbe.successThreshold"),
                "Invalid value: 2: must be 1",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[(&format!("{C}/readinessProbe/timeoutSeconds"), json!(-1))],
        ),
        &[(
            "FieldValueInvalid",
            &format!("{CP}.readinessProbe.timeoutSeconds"),
            "Invalid value: -1: must be greater than or equal to 0",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[(
                "/spec/template/spec/initContainers/0/readinessProbe",
                json!({"exec": {"command": ["true"]}}),
            )],
        ),
        &[(
            "FieldValueForbidden",
            "spec.template.spec.initContainers[0].readinessProbe",
            "Forbidden: may not be set for init containers without restartPolicy=Always",
        )],
    );
}

#[test]
fn volumes_and_mounts() {
    let d = deployment();
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                ("/spec/template/spec/volumes/1/name", json!("data")),
                (
                    "/spec/template/spec/volumes/0/secret",
                    json!({"secretName": "s"}),
                ),
            ],
        ),
        &[
            (
                "FieldValueDuplicate",
                "spec.template.spec.volumes[1].name",
                "Duplicate value: \"data\"",
            ),
            (
                "FieldValueForbidden",
                "spec.template.spec.volumes[0].secret",
                "Forbidden: may not specify more than 1 volume type",
            ),
            (
                "FieldValueNotFound",
                &format!("{CP}.volumeMounts[1].name"),
                "Not found: \"config\"",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&format!("{C}/volumeMounts/1/mountPath"), json!("/data")),
                (&format!("{C}/volumeMounts/0/mountPath"), json!("")),
            ],
        ),
        &[(
            "FieldValueRequired",
            &format!("{CP}.volumeMounts[0].mountPath"),
            "Required value",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[(&format!("{C}/volumeMounts/1/mountPath"), json!("/data"))],
        ),
        &[(
            "FieldValueInvalid",
            &format!("{CP}.volumeMounts[1].mountPath"),
            "Invalid value: \"/data\": must be unique",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[("/spec/template/spec/volumes/2", json!({"name": "x"}))],
        ),
        &[(
            "FieldValueRequired",
            "spec.template.spec.volumes[2]",
            "Required value: must specify a volume type",
        )],
    );
}

#[test]
fn resources_and_env() {
    let d = deployment();
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&format!("{C}/resources/requests/cpu"), json!("1500m")),
                (&format!("{C}/resources/limits/memory"), json!("lots")),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                &format!("{CP}.resources.requests"),
                "Invalid value: \"1500m\": must be less than or equal to cpu limit of 1",
            ),
            (
                "FieldValueInvalid",
                &format!("{CP}.resources.limits[memory]"),
                "Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[(&format!("{C}/resources/requests/memory"), json!("128Mi"))],
        ),
        &[],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&format!("{C}/env/0/name"), json!("A=B")),
                (&format!("{C}/env/1/value"), json!("x")),
                (
                    &format!("{C}/env/2/valueFrom/configMapKeyRef"),
                    json!({"name": "c", "key": "k"}),
                ),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                &format!("{CP}.env[0].name"),
                "Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            ),
            (
                "FieldValueInvalid",
                &format!("{CP}.env[1].valueFrom"),
                "Invalid value: \"\": may not be specified when `value` is not empty",
            ),
            (
                "FieldValueInvalid",
                &format!("{CP}.env[2].valueFrom"),
                "Invalid value: \"\": may not have more than one field specified at a time",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                (&format!("{C}/env/0/name"), json!("")),
                (&format!("{C}/env/1/valueFrom"), json!({})),
            ],
        ),
        &[
            (
                "FieldValueRequired",
                &format!("{CP}.env[0].name"),
                "Required value",
            ),
            (
                "FieldValueInvalid",
                &format!("{CP}.env[1].valueFrom"),
                "Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ),
        ],
    );
}

#[test]
fn deployment_spec() {
    let d = deployment();
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                ("/spec/selector", Value::Null),
                ("/spec/replicas", json!(-1)),
            ],
        ),
        &[
            ("FieldValueRequired", "spec.selector", "Required value"),
            (
                "FieldValueInvalid",
                "spec.replicas",
                "Invalid value: -1: must be greater than or equal to 0",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(&d, &[("/spec/selector", json!({}))]),
        &[(
            "FieldValueInvalid",
            "spec.selector",
            "Invalid value: {}: empty selector is invalid for deployment",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[("/spec/template/metadata/labels", json!({"app": "other"}))],
        ),
        &[(
            "FieldValueInvalid",
            "spec.template.metadata.labels",
            "Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[
                ("/spec/template/spec/restartPolicy", json!("Never")),
                ("/spec/template/spec/activeDeadlineSeconds", json!(10)),
            ],
        ),
        &[
            (
                "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                "Unsupported value: \"Never\": supported values: \"Always\"",
            ),
            (
                "FieldValueForbidden",
                "spec.template.spec.activeDeadlineSeconds",
                "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(&d, &[("/spec/strategy/type", json!("Recreate"))]),
        &[(
            "FieldValueForbidden",
            "spec.strategy.rollingUpdate",
            "Forbidden: may not be specified when strategy `type` is 'Recreate'",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(&d, &[("/spec/strategy/type", json!("Blue"))]),
        &[(
            "FieldValueNotSupported",
            "spec.strategy.type",
            "Unsupported value: \"Blue\": supported values: \"Recreate\", \"RollingUpdate\"",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[(
                "/spec/strategy/rollingUpdate",
                json!({"maxSurge": 0, "maxUnavailable": "0%"}),
            )],
        ),
        &[(
            "FieldValueInvalid",
            "spec.strategy.rollingUpdate.maxUnavailable",
            "Invalid value: \"0%\": may not be 0 when `maxSurge` is 0",
        )],
    );
    check_create(
        "apps",
        "Deployment",
        &with(
            &d,
            &[(
                "/spec/strategy/rollingUpdate",
                json!({"maxSurge": "x", "maxUnavailable": "150%"}),
            )],
        ),
        &[
            (
                "FieldValueInvalid",
                "spec.strategy.rollingUpdate.maxSurge",
                "Invalid value: \"x\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            ),
            (
                "FieldValueInvalid",
                "spec.strategy.rollingUpdate.maxUnavailable",
                "Invalid value: \"150%\": must not be greater than 100%",
            ),
        ],
    );
    check_create(
        "apps",
        "Deployment",
        &with(&d, &[("/spec/minReadySeconds", json!(600))]),
        &[(
            "FieldValueInvalid",
            "spec.progressDeadlineSeconds",
            "Invalid value: 600: must be greater than minReadySeconds",
        )],
    );
    let moved = with(
        &d,
        &[
            ("/spec/selector/matchLabels/app", json!("web2")),
            ("/spec/template/metadata/labels/app", json!("web2")),
        ],
    );
    check_update(
        "apps",
        "Deployment",
        &moved,
        &d,
        &[(
            "FieldValueInvalid",
            "spec.selector",
            &immutable_message(&moved, "/spec/selector"),
        )],
    );
}

fn template(labels: Value, restart: &str) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "busybox"}]}
    })
}

#[test]
fn replica_set_and_rc() {
    let rs = defaulted(
        "apps",
        "ReplicaSet",
        json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": template(json!({"a": "b"}), "Always")}}),
    );
    check_create("apps", "ReplicaSet", &rs, &[]);
    check_create(
        "apps",
        "ReplicaSet",
        &with(
            &rs,
            &[(
                "/spec/selector",
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            )],
        ),
        &[(
            "FieldValueInvalid",
            "spec.selector",
            "Invalid value: {\"matchExpressions\":[{\"key\":\"a\",\"operator\":\"In\"}]}: values: for 'In' operator, values set can't be empty",
        )],
    );
    let rc = defaulted(
        "",
        "ReplicationController",
        json!({"spec": {"template": template(json!({"a": "b"}), "Always")}}),
    );
    check_create("", "ReplicationController", &rc, &[]);
    check_create(
        "",
        "ReplicationController",
        &with(&rc, &[("/spec/selector", json!({"a": "c"}))]),
        &[(
            "FieldValueInvalid",
            "spec.template.metadata.labels",
            "Invalid value: {\"a\":\"b\"}: `selector` does not match template `labels`",
        )],
    );
    check_create(
        "",
        "ReplicationController",
        &json!({"spec": {"replicas": 1}}),
        &[
            ("FieldValueRequired", "spec.selector", "Required value"),
            ("FieldValueRequired", "spec.template", "Required value"),
        ],
    );
}

#[test]
fn stateful_set() {
    let s = defaulted(
        "apps",
        "StatefulSet",
        json!({"spec": {"serviceName": "db", "selector": {"matchLabels": {"a": "b"}}, "template": template(json!({"a": "b"}), "Always")}}),
    );
    check_create("apps", "StatefulSet", &s, &[]);
    check_create(
        "apps",
        "StatefulSet",
        &with(
            &s,
            &[
                ("/spec/podManagementPolicy", json!("Random")),
                ("/spec/updateStrategy/rollingUpdate/partition", json!(-2)),
                (
                    "/spec/persistentVolumeClaimRetentionPolicy/whenScaled",
                    json!("Keep"),
                ),
            ],
        ),
        &[
            (
                "FieldValueNotSupported",
                "spec.podManagementPolicy",
                "Unsupported value: \"Random\": supported values: \"OrderedReady\", \"Parallel\"",
            ),
            (
                "FieldValueInvalid",
                "spec.updateStrategy.rollingUpdate.partition",
                "Invalid value: -2: must be greater than or equal to 0",
            ),
            (
                "FieldValueNotSupported",
                "spec.persistentVolumeClaimRetentionPolicy.whenScaled",
                "Unsupported value: \"Keep\": supported values: \"Retain\", \"Delete\"",
            ),
        ],
    );
    check_create(
        "apps",
        "StatefulSet",
        &with(&s, &[("/spec/updateStrategy/type", json!("OnDelete"))]),
        &[(
            "FieldValueInvalid",
            "spec.updateStrategy.rollingUpdate",
            "Invalid value: {\"partition\":0}: only allowed for updateStrategy 'RollingUpdate'",
        )],
    );
    check_update(
        "apps",
        "StatefulSet",
        &with(
            &s,
            &[
                ("/spec/replicas", json!(5)),
                ("/spec/template/spec/containers/0/image", json!("busybox:2")),
            ],
        ),
        &s,
        &[],
    );
    check_update(
        "apps",
        "StatefulSet",
        &with(&s, &[("/spec/serviceName", json!("other"))]),
        &s,
        &[(
            "FieldValueForbidden",
            "spec",
            "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        )],
    );
}

#[test]
fn daemon_set() {
    let ds = defaulted(
        "apps",
        "DaemonSet",
        json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": template(json!({"a": "b"}), "Always")}}),
    );
    check_create("apps", "DaemonSet", &ds, &[]);
    check_create(
        "apps",
        "DaemonSet",
        &with(
            &ds,
            &[
                (
                    "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                    json!(0),
                ),
                ("/spec/selector", json!({})),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                "Invalid value: 0: may not be 0 when `maxSurge` is 0",
            ),
            (
                "FieldValueInvalid",
                "spec.selector",
                "Invalid value: {}: empty selector is invalid for daemonset",
            ),
        ],
    );
    check_update(
        "apps",
        "DaemonSet",
        &with(
            &ds,
            &[
                ("/spec/selector/matchLabels/c", json!("d")),
                ("/spec/template/metadata/labels/c", json!("d")),
            ],
        ),
        &ds,
        &[(
            "FieldValueInvalid",
            "spec.selector",
            "Invalid value: {\"matchLabels\":{\"a\":\"b\",\"c\":\"d\"}}: field is immutable",
        )],
    );
}

#[test]
fn job() {
    let j = defaulted(
        "batch",
        "Job",
        json!({"spec": {"template": template(json!({"job": "x"}), "Never")}}),
    );
    check_create("batch", "Job", &j, &[]);
    check_create(
        "batch",
        "Job",
        &with(
            &j,
            &[
                ("/spec/template/spec/restartPolicy", json!("Always")),
                ("/spec/backoffLimit", json!(-1)),
            ],
        ),
        &[
            (
                "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
            ),
            (
                "FieldValueInvalid",
                "spec.backoffLimit",
                "Invalid value: -1: must be greater than or equal to 0",
            ),
        ],
    );
    check_create(
        "batch",
        "Job",
        &with(
            &j,
            &[
                ("/spec/manualSelector", json!(true)),
                ("/spec/completionMode", json!("Indexed")),
                ("/spec/completions", Value::Null),
            ],
        ),
        &[
            ("FieldValueRequired", "spec.selector", "Required value"),
            (
                "FieldValueRequired",
                "spec.completions",
                "Required value: when completion mode is Indexed",
            ),
        ],
    );
    check_create(
        "batch",
        "Job",
        &with(
            &j,
            &[("/spec/selector", json!({"matchLabels": {"job": "y"}}))],
        ),
        &[(
            "FieldValueInvalid",
            "spec.template.metadata.labels",
            "Invalid value: {\"job\":\"x\"}: `selector` does not match template `labels`",
        )],
    );
    let with_sel = with(
        &j,
        &[("/spec/selector", json!({"matchLabels": {"job": "x"}}))],
    );
    let new_image = with(
        &with_sel,
        &[
            ("/spec/template/spec/containers/0/image", json!("busybox:2")),
            ("/spec/parallelism", json!(4)),
        ],
    );
    check_update(
        "batch",
        "Job",
        &new_image,
        &with_sel,
        &[(
            "FieldValueInvalid",
            "spec.template",
            &immutable_message(&new_image, "/spec/template"),
        )],
    );
    let moved = with(
        &with_sel,
        &[
            ("/spec/selector/matchLabels/job", json!("z")),
            ("/spec/template/metadata/labels/job", json!("z")),
        ],
    );
    check_update(
        "batch",
        "Job",
        &moved,
        &with_sel,
        &[
            (
                "FieldValueInvalid",
                "spec.selector",
                "Invalid value: {\"matchLabels\":{\"job\":\"z\"}}: field is immutable",
            ),
            (
                "FieldValueInvalid",
                "spec.template",
                &immutable_message(&moved, "/spec/template"),
            ),
        ],
    );
    check_update(
        "batch",
        "Job",
        &with(
            &with_sel,
            &[
                ("/spec/completions", json!(3)),
                ("/spec/completionMode", json!("Indexed")),
            ],
        ),
        &with_sel,
        &[(
            "FieldValueInvalid",
            "spec.completionMode",
            "Invalid value: \"Indexed\": field is immutable",
        )],
    );
    check_update(
        "batch",
        "Job",
        &with(&with_sel, &[("/spec/completions", json!(3))]),
        &with_sel,
        &[(
            "FieldValueInvalid",
            "spec.completions",
            "Invalid value: 3: field is immutable",
        )],
    );
}

#[test]
fn suspended_job_scheduling_directives() {
    let j = defaulted(
        "batch",
        "Job",
        json!({"spec": {"suspend": true, "selector": {"matchLabels": {"job": "x"}}, "template": template(json!({"job": "x"}), "Never")}}),
    );
    let moved = with(
        &j,
        &[
            ("/spec/template/spec/nodeSelector", json!({"zone": "a"})),
            ("/spec/template/metadata/labels/queue", json!("q1")),
        ],
    );
    check_update("batch", "Job", &moved, &j, &[]);
    let started = with(
        &j,
        &[("/status", json!({"startTime": "2024-01-01T00:00:00Z"}))],
    );
    check_update(
        "batch",
        "Job",
        &moved,
        &started,
        &[(
            "FieldValueInvalid",
            "spec.template",
            &immutable_message(&moved, "/spec/template"),
        )],
    );
    let new_image = with(
        &j,
        &[("/spec/template/spec/containers/0/image", json!("y"))],
    );
    check_update(
        "batch",
        "Job",
        &new_image,
        &j,
        &[(
            "FieldValueInvalid",
            "spec.template",
            &immutable_message(&new_image, "/spec/template"),
        )],
    );
}

#[test]
fn cron_job() {
    let cj = defaulted(
        "batch",
        "CronJob",
        json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template(json!({}), "OnFailure")}}}}),
    );
    check_create("batch", "CronJob", &cj, &[]);
    check_create(
        "batch",
        "CronJob",
        &with(&cj, &[("/spec/schedule", json!("@hourly"))]),
        &[],
    );
    check_create(
        "batch",
        "CronJob",
        &with(
            &cj,
            &[
                ("/spec/schedule", json!("* * *")),
                ("/spec/concurrencyPolicy", json!("Sometimes")),
                (
                    "/spec/jobTemplate/spec/template/spec/restartPolicy",
                    json!("Always"),
                ),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                "spec.schedule",
                "Invalid value: \"* * *\": expected exactly 5 fields, found 3: \"* * *\"",
            ),
            (
                "FieldValueNotSupported",
                "spec.concurrencyPolicy",
                "Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            ),
            (
                "FieldValueNotSupported",
                "spec.jobTemplate.spec.template.spec.restartPolicy",
                "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
            ),
        ],
    );
    check_create(
        "batch",
        "CronJob",
        &with(&cj, &[("/spec/schedule", json!("CRON_TZ=UTC 0 * * * *"))]),
        &[(
            "FieldValueInvalid",
            "spec.schedule",
            "Invalid value: \"CRON_TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        )],
    );
    check_create(
        "batch",
        "CronJob",
        &with(&cj, &[("/spec/schedule", Value::Null)]),
        &[("FieldValueRequired", "spec.schedule", "Required value")],
    );
}

fn pod() -> Value {
    defaulted(
        "",
        "Pod",
        json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox:1", "ports": [{"containerPort": 8080}]}],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "activeDeadlineSeconds": 100
            }
        }),
    )
}

#[test]
fn pod_create() {
    check_create("", "Pod", &pod(), &[]);
    for policy in ["Always", "OnFailure", "Never"] {
        check_create(
            "",
            "Pod",
            &with(&pod(), &[("/spec/restartPolicy", json!(policy))]),
            &[],
        );
    }
    check_create(
        "",
        "Pod",
        &with(
            &pod(),
            &[
                ("/spec/restartPolicy", json!("Sometimes")),
                ("/spec/dnsPolicy", json!("Google")),
                ("/spec/activeDeadlineSeconds", json!(0)),
            ],
        ),
        &[
            (
                "FieldValueNotSupported",
                "spec.restartPolicy",
                "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
            (
                "FieldValueNotSupported",
                "spec.dnsPolicy",
                "Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
            ),
            (
                "FieldValueInvalid",
                "spec.activeDeadlineSeconds",
                "Invalid value: 0: must be between 1 and 2147483647, inclusive",
            ),
        ],
    );
    check_create(
        "",
        "Pod",
        &json!({"spec": {}}),
        &[
            ("FieldValueRequired", "spec.containers", "Required value"),
            ("FieldValueRequired", "spec.restartPolicy", "Required value"),
        ],
    );
}

#[test]
fn pod_update() {
    let p = pod();
    check_update(
        "",
        "Pod",
        &with(
            &p,
            &[
                ("/spec/containers/0/image", json!("busybox:2")),
                // Past the end (after the admission defaults): an addition.
                (
                    "/spec/tolerations/99",
                    json!({"key": "k2", "operator": "Exists"}),
                ),
                ("/spec/activeDeadlineSeconds", json!(50)),
            ],
        ),
        &p,
        &[],
    );
    check_update(
        "",
        "Pod",
        &with(
            &p,
            &[("/spec/containers/0/ports/0/containerPort", json!(9090))],
        ),
        &p,
        &[(
            "FieldValueForbidden",
            "spec",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        )],
    );
    check_update(
        "",
        "Pod",
        &with(
            &p,
            &[
                ("/spec/tolerations", json!([])),
                ("/spec/activeDeadlineSeconds", json!(200)),
            ],
        ),
        &p,
        &[
            (
                "FieldValueForbidden",
                "spec.tolerations",
                "Forbidden: existing toleration can not be modified except its tolerationSeconds",
            ),
            (
                "FieldValueInvalid",
                "spec.activeDeadlineSeconds",
                "Invalid value: 200: must be less than or equal to previous value",
            ),
        ],
    );
}

fn service() -> Value {
    defaulted(
        "",
        "Service",
        json!({"spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
}

#[test]
fn service_create() {
    let s = service();
    check_create("", "Service", &s, &[]);
    check_create(
        "",
        "Service",
        &json!({"spec": {"type": "ClusterIP", "clusterIP": "None"}}),
        &[],
    );
    check_create(
        "",
        "Service",
        &json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
        &[],
    );
    check_create(
        "",
        "Service",
        &with(&s, &[("/spec/ports", json!([]))]),
        &[("FieldValueRequired", "spec.ports", "Required value")],
    );
    check_create(
        "",
        "Service",
        &with(
            &s,
            &[
                ("/spec/type", json!("Magic")),
                ("/spec/ports/0/port", json!(0)),
                ("/spec/ports/1/name", json!("")),
                ("/spec/ports/1/protocol", json!("ICMP")),
            ],
        ),
        &[
            (
                "FieldValueNotSupported",
                "spec.type",
                "Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            ),
            (
                "FieldValueInvalid",
                "spec.ports[0].port",
                "Invalid value: 0: must be between 1 and 65535, inclusive",
            ),
            ("FieldValueRequired", "spec.ports[1].name", "Required value"),
            (
                "FieldValueNotSupported",
                "spec.ports[1].protocol",
                "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ),
        ],
    );
    check_create(
        "",
        "Service",
        &with(
            &s,
            &[
                ("/spec/ports/0/nodePort", json!(30080)),
                ("/spec/ports/1/name", json!("http")),
            ],
        ),
        &[
            (
                "FieldValueForbidden",
                "spec.ports[0].nodePort",
                "Forbidden: may not be used when `type` is 'ClusterIP'",
            ),
            (
                "FieldValueDuplicate",
                "spec.ports[1].name",
                "Duplicate value: \"http\"",
            ),
        ],
    );
    check_create(
        "",
        "Service",
        &with(
            &s,
            &[
                ("/spec/type", json!("NodePort")),
                ("/spec/ports/0/nodePort", json!(80)),
                ("/spec/ports/1/nodePort", json!(30053)),
                ("/spec/ports/1/targetPort", json!(70000)),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                "spec.ports[0].nodePort",
                "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ),
            (
                "FieldValueInvalid",
                "spec.ports[1].targetPort",
                "Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
        ],
    );
    check_create(
        "",
        "Service",
        &json!({"spec": {"type": "ExternalName", "sessionAffinity": "Sticky", "clusterIP": "1.2.3"}}),
        &[
            ("FieldValueRequired", "spec.externalName", "Required value"),
            (
                "FieldValueNotSupported",
                "spec.sessionAffinity",
                "Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
            ),
            (
                "FieldValueInvalid",
                "spec.clusterIPs[0]",
                "Invalid value: \"1.2.3\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ),
        ],
    );
}

#[test]
fn service_update() {
    let s = with(&service(), &[("/spec/clusterIP", json!("10.0.0.10"))]);
    check_update("", "Service", &s, &s, &[]);
    // A PUT without the allocated IP keeps it (the REST layer copies it).
    check_update("", "Service", &service(), &s, &[]);
    check_update("", "Service", &s, &service(), &[]);
    check_update(
        "",
        "Service",
        &with(&s, &[("/spec/clusterIP", json!("10.0.0.11"))]),
        &s,
        &[(
            "FieldValueInvalid",
            "spec.clusterIPs[0]",
            "Invalid value: \"10.0.0.11\": may not change once set",
        )],
    );
}

#[test]
fn config_maps_and_secrets() {
    let cm = json!({"data": {"a.conf": "x", "KEY_1": "y"}, "binaryData": {"bin-1": "AAEC"}});
    check_create("", "ConfigMap", &cm, &[]);
    check_create(
        "",
        "ConfigMap",
        &json!({"data": {"bad key": "x", "..hidden": "y", "dup": "z"}, "binaryData": {"dup": "AA=="}}),
        &[
            (
                "FieldValueInvalid",
                "data[bad key]",
                "Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ),
            (
                "FieldValueInvalid",
                "data[..hidden]",
                "Invalid value: \"..hidden\": must not start with '..'",
            ),
            (
                "FieldValueInvalid",
                "binaryData[dup]",
                "Invalid value: \"dup\": duplicate of key present in data",
            ),
        ],
    );
    let big = "x".repeat(super::core::DATA_MAX_BYTES + 1);
    check_create(
        "",
        "ConfigMap",
        &json!({"data": {"big": big}}),
        &[(
            "FieldValueTooLong",
            "",
            "Too long: may not be more than 1048576 bytes",
        )],
    );
    let secret = json!({"type": "Opaque", "data": {"password": "cGFzcw=="}});
    check_create("", "Secret", &secret, &[]);
    check_create(
        "",
        "Secret",
        &json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "a/b": ""}}),
        &[
            ("FieldValueRequired", "data[tls.key]", "Required value"),
            (
                "FieldValueInvalid",
                "data[a/b]",
                "Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ),
        ],
    );
    check_update(
        "",
        "Secret",
        &with(&secret, &[("/type", json!("kubernetes.io/basic-auth"))]),
        &secret,
        &[(
            "FieldValueInvalid",
            "type",
            "Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
        )],
    );
    // Mutable until `immutable: true`.
    check_update(
        "",
        "ConfigMap",
        &json!({"data": {"a": "2"}}),
        &json!({"data": {"a": "1"}}),
        &[],
    );
    let frozen = json!({"immutable": true, "data": {"a": "1"}});
    check_update("", "ConfigMap", &frozen, &frozen, &[]);
    check_update(
        "",
        "ConfigMap",
        &json!({"data": {"a": "2"}}),
        &frozen,
        &[
            (
                "FieldValueForbidden",
                "immutable",
                "Forbidden: field is immutable when `immutable` is set",
            ),
            (
                "FieldValueForbidden",
                "data",
                "Forbidden: field is immutable when `immutable` is set",
            ),
        ],
    );
    let frozen_secret = with(&secret, &[("/immutable", json!(true))]);
    check_update(
        "",
        "Secret",
        &with(&frozen_secret, &[("/data/password", json!("eA=="))]),
        &frozen_secret,
        &[(
            "FieldValueForbidden",
            "data",
            "Forbidden: field is immutable when `immutable` is set",
        )],
    );
}

#[test]
fn persistent_volume_claims() {
    let pvc = defaulted(
        "",
        "PersistentVolumeClaim",
        json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    check_create("", "PersistentVolumeClaim", &pvc, &[]);
    check_create(
        "",
        "PersistentVolumeClaim",
        &json!({"spec": {"accessModes": ["ReadWriteSometimes"], "volumeMode": "Disk"}}),
        &[
            (
                "FieldValueNotSupported",
                "spec.accessModes",
                "Unsupported value: \"ReadWriteSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"",
            ),
            (
                "FieldValueRequired",
                "spec.resources[storage]",
                "Required value",
            ),
            (
                "FieldValueNotSupported",
                "spec.volumeMode",
                "Unsupported value: \"Disk\": supported values: \"Block\", \"Filesystem\"",
            ),
        ],
    );
    check_update(
        "",
        "PersistentVolumeClaim",
        &with(
            &pvc,
            &[
                ("/spec/resources/requests/storage", json!("2Gi")),
                ("/spec/volumeName", json!("pv-1")),
            ],
        ),
        &pvc,
        &[],
    );
    check_update(
        "",
        "PersistentVolumeClaim",
        &with(&pvc, &[("/spec/accessModes", json!(["ReadWriteMany"]))]),
        &pvc,
        &[(
            "FieldValueForbidden",
            "spec",
            "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        )],
    );
    let bound = with(&pvc, &[("/spec/volumeName", json!("pv-1"))]);
    check_update(
        "",
        "PersistentVolumeClaim",
        &with(&bound, &[("/spec/volumeName", json!("pv-2"))]),
        &bound,
        &[(
            "FieldValueForbidden",
            "spec",
            "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        )],
    );
}

#[test]
fn quantities() {
    let check =
        |s: &str, expected: Option<f64>| assert_eq!(super::parse_quantity(s), expected, "{s}");
    check("1", Some(1.0));
    check("100m", Some(0.1));
    check("1Ki", Some(1024.0));
    check("2Gi", Some(2.0 * 1024.0 * 1024.0 * 1024.0));
    check("1.5", Some(1.5));
    check("1e3", Some(1000.0));
    check("5M", Some(5e6));
    check("", None);
    check("m", None);
    check("1Xi", None);
    check("lots", None);
}

#[test]
fn arbitrary_json_does_not_panic() {
    let shapes = [
        json!(null),
        json!(7),
        json!("x"),
        json!([]),
        json!({"spec": 1, "data": [], "type": 3}),
        json!({"spec": {"template": 1, "selector": "x", "ports": {}, "containers": "x", "strategy": 1}}),
        json!({"spec": {"selector": {"matchLabels": 1}, "template": {"metadata": {"labels": []}, "spec": {"containers": [1, {"ports": [1, {"containerPort": "x"}], "env": [1], "resources": {"limits": 1, "requests": {"cpu": []}}, "livenessProbe": 1, "volumeMounts": [1]}], "volumes": [1, {"name": 1}]}}}}),
        json!({"spec": {"containers": [{"name": "a", "livenessProbe": {"httpGet": {"port": []}, "grpc": {}}}], "tolerations": 1, "updateStrategy": {"type": 1, "rollingUpdate": "x"}, "schedule": 1, "jobTemplate": 1}}),
        json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": -1, "maxUnavailable": 1.5}}, "ports": [1, {"port": "x", "nodePort": "y", "targetPort": {}}], "accessModes": [1]}}),
    ];
    let kinds = [
        ("", "Pod"),
        ("", "PodTemplate"),
        ("", "Service"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ReplicationController"),
        ("", "PersistentVolumeClaim"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
    ];
    for new in &shapes {
        for old in &shapes {
            for (group, kind) in kinds {
                let _ = validate_update(group, kind, new, old);
            }
        }
    }
}

#[test]
fn pod_templates_and_volume_sources() {
    let t = defaulted(
        "",
        "PodTemplate",
        json!({"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}),
    );
    check_create("", "PodTemplate", &t, &[]);
    check_create(
        "",
        "PodTemplate",
        &with(
            &t,
            &[
                ("/template/metadata/labels/a", json!("not valid!")),
                (
                    "/template/spec/volumes",
                    json!([
                        {"name": "h", "hostPath": {"path": ""}},
                        {"name": "c", "persistentVolumeClaim": {}},
                        {"name": "s", "secret": {"secretName": "s", "defaultMode": 1000}},
                        {"name": "Bad"}
                    ]),
                ),
            ],
        ),
        &[
            (
                "FieldValueInvalid",
                "template.metadata.labels",
                "Invalid value: \"not valid!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
            (
                "FieldValueRequired",
                "template.spec.volumes[0].hostPath.path",
                "Required value",
            ),
            (
                "FieldValueRequired",
                "template.spec.volumes[1].persistentVolumeClaim.claimName",
                "Required value",
            ),
            (
                "FieldValueInvalid",
                "template.spec.volumes[2].secret.defaultMode",
                "Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
            ),
            (
                "FieldValueInvalid",
                "template.spec.volumes[3].name",
                "Invalid value: \"Bad\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ),
            (
                "FieldValueRequired",
                "template.spec.volumes[3]",
                "Required value: must specify a volume type",
            ),
        ],
    );
}

#[test]
fn unknown_kinds_pass() {
    check_create(
        "example.com",
        "Widget",
        &json!({"spec": {"containers": []}}),
        &[],
    );
    check_update("", "Pod2", &json!({"spec": 1}), &json!({"spec": 2}), &[]);
}
