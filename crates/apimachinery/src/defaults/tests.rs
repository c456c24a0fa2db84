//! Expected-output tests of defaulting: an input object, and the object upstream returns.

use serde_json::{Value, json};

use super::apply;

/// Defaults `input` as `group`/`kind` and compares with `expected`; also checks that a
/// second pass changes nothing.
fn check(group: &str, kind: &str, mut input: Value, expected: Value) {
    apply(group, kind, &mut input);
    assert_eq!(
        input,
        expected,
        "\n got: {}\nwant: {}",
        serde_json::to_string_pretty(&input).unwrap_or_default(),
        serde_json::to_string_pretty(&expected).unwrap_or_default()
    );
    let again = input.clone();
    apply(group, kind, &mut input);
    assert_eq!(input, again, "defaulting is not idempotent");
}

/// The defaulted form of a container with only a name and an image of tag `tag`.
fn container(name: &str, image: &str, pull: &str) -> Value {
    json!({
        "name": name, "image": image, "imagePullPolicy": pull,
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"
    })
}

/// The defaulted form of a template pod spec with the given containers.
fn pod_spec(containers: Value) -> Value {
    json!({
        "containers": containers,
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "terminationGracePeriodSeconds": 30
    })
}

fn template(labels: Value) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}
    })
}

#[test]
fn minimal_deployment() {
    check(
        "apps",
        "Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "progressDeadlineSeconds": 600,
                "replicas": 1,
                "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": pod_spec(json!([container("app", "nginx:1.25", "IfNotPresent")]))
                }
            }
        }),
    );
}

#[test]
fn deployment_keeps_given_values() {
    check(
        "apps",
        "Deployment",
        json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "revisionHistoryLimit": 2}}),
        json!({"spec": {
            "replicas": 0, "strategy": {"type": "Recreate"}, "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": 600
        }}),
    );
    check(
        "apps",
        "Deployment",
        json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 3}}}}),
        json!({"spec": {
            "replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": "25%"}}
        }}),
    );
}

#[test]
fn pod() {
    check(
        "",
        "Pod",
        json!({
            "metadata": {"name": "p"},
            "spec": {
                "hostNetwork": true,
                "containers": [{
                    "name": "a", "image": "busybox",
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}},
                    "livenessProbe": {"httpGet": {"port": 80}},
                    "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
                    "env": [
                        {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
                    ]
                }],
                "initContainers": [{"name": "i", "image": "busybox@sha256:0123", "resources": {"limits": {"memory": "1Gi"}}}],
                "volumes": [
                    {"name": "e"},
                    {"name": "c", "configMap": {"name": "cm"}},
                    {"name": "s", "secret": {"secretName": "s", "defaultMode": 256}},
                    {"name": "h", "hostPath": {"path": "/tmp"}},
                    {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
                ]
            }
        }),
        json!({
            "metadata": {"name": "p"},
            "spec": {
                "hostNetwork": true,
                "containers": [{
                    "name": "a", "image": "busybox", "imagePullPolicy": "Always",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "ports": [{"containerPort": 80, "hostPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1", "memory": "1Gi"}},
                    "livenessProbe": {
                        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                        "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
                    },
                    "readinessProbe": {
                        "tcpSocket": {"port": 80},
                        "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3
                    },
                    "env": [
                        {"name": "N", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                        {"name": "C", "valueFrom": {"resourceFieldRef": {"divisor": "0", "resource": "limits.cpu"}}}
                    ]
                }],
                "initContainers": [{
                    "name": "i", "image": "busybox@sha256:0123", "imagePullPolicy": "IfNotPresent",
                    "resources": {"limits": {"memory": "1Gi"}, "requests": {"memory": "1Gi"}},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"
                }],
                "volumes": [
                    {"name": "e", "emptyDir": {}},
                    {"name": "c", "configMap": {"name": "cm", "defaultMode": 420}},
                    {"name": "s", "secret": {"secretName": "s", "defaultMode": 256}},
                    {"name": "h", "hostPath": {"path": "/tmp", "type": ""}},
                    {"name": "p", "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {"path": "t", "expirationSeconds": 3600}}]}}
                ],
                "dnsPolicy": "ClusterFirst",
                "enableServiceLinks": true,
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "terminationGracePeriodSeconds": 30,
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                ]
            }
        }),
    );
}

#[test]
fn default_toleration_seconds() {
    let base = |tolerations: Value| json!({"spec": {"containers": [], "tolerations": tolerations}});
    let tolerations = |obj: Value| {
        let mut obj = obj;
        crate::defaults::apply("", "Pod", &mut obj);
        obj["spec"]["tolerations"].clone()
    };
    // An own toleration of a taint (any value of tolerationSeconds) is kept; the other
    // one is added.
    let own = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
    assert_eq!(
        tolerations(base(json!([own.clone()]))),
        json!([own, {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}])
    );
    // A toleration of everything covers both.
    let all = json!({"operator": "Exists"});
    assert_eq!(tolerations(base(json!([all.clone()]))), json!([all]));
    // A NoSchedule toleration does not.
    let no_schedule = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"});
    assert_eq!(
        tolerations(base(json!([no_schedule])))
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn templates_do_not_get_pod_only_defaults() {
    check(
        "apps",
        "ReplicaSet",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:latest", "resources": {"limits": {"cpu": "1"}}}]}}}}),
        json!({"spec": {"replicas": 1, "template": {"spec": pod_spec(json!([{
            "name": "a", "image": "x:latest", "imagePullPolicy": "Always",
            "resources": {"limits": {"cpu": "1"}},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File"
        }]))}}}),
    );
}

#[test]
fn stateful_set() {
    check(
        "apps",
        "StatefulSet",
        json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
        json!({"spec": {
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"},
                "status": {"phase": "Pending"}
            }]
        }}),
    );
    check(
        "apps",
        "StatefulSet",
        json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
        json!({"spec": {
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "replicas": 1,
            "revisionHistoryLimit": 10
        }}),
    );
}

#[test]
fn daemon_set() {
    check(
        "apps",
        "DaemonSet",
        json!({"spec": {}}),
        json!({"spec": {
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "revisionHistoryLimit": 10
        }}),
    );
}

#[test]
fn job() {
    let job_spec = |extra: Value| {
        let mut spec = json!({
            "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": false,
            "podReplacementPolicy": "TerminatingOrFailed",
            "template": {
                "metadata": {"labels": {"job": "j"}},
                "spec": pod_spec(json!([container("app", "nginx:1.25", "IfNotPresent")]))
            }
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        spec
    };
    let mut t = template(json!({"job": "j"}));
    t["spec"]["restartPolicy"] = json!("Never");
    let mut expected = job_spec(json!({"completions": 1, "parallelism": 1}));
    expected["template"]["spec"]["restartPolicy"] = json!("Never");
    check(
        "batch",
        "Job",
        json!({"metadata": {"name": "j"}, "spec": {"template": t}}),
        json!({"metadata": {"name": "j", "labels": {"job": "j"}}, "spec": expected}),
    );
    check(
        "batch",
        "Job",
        json!({"metadata": {"labels": {"own": "x"}}, "spec": {"parallelism": 3, "template": template(json!({"job": "j"}))}}),
        json!({"metadata": {"labels": {"own": "x"}}, "spec": job_spec(json!({"parallelism": 3}))}),
    );
    check(
        "batch",
        "Job",
        json!({"spec": {"completions": 4, "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": []}}}),
        json!({"spec": {
            "completions": 4, "parallelism": 1, "backoffLimitPerIndex": 1, "backoffLimit": 2147483647,
            "podFailurePolicy": {"rules": []}, "podReplacementPolicy": "Failed",
            "completionMode": "NonIndexed", "suspend": false
        }}),
    );
}

#[test]
fn cron_job() {
    check(
        "batch",
        "CronJob",
        json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template(json!({"a": "b"}))}}}}),
        json!({"spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Allow", "suspend": false,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": pod_spec(json!([container("app", "nginx:1.25", "IfNotPresent")]))
            }}}
        }}),
    );
}

#[test]
fn replication_controller() {
    check(
        "",
        "ReplicationController",
        json!({"spec": {"template": template(json!({"app": "rc"}))}}),
        json!({
            "metadata": {"labels": {"app": "rc"}},
            "spec": {
                "replicas": 1,
                "selector": {"app": "rc"},
                "template": {
                    "metadata": {"labels": {"app": "rc"}},
                    "spec": pod_spec(json!([container("app", "nginx:1.25", "IfNotPresent")]))
                }
            }
        }),
    );
}

#[test]
fn service() {
    check(
        "",
        "Service",
        json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
        json!({"spec": {
            "ports": [
                {"port": 80, "protocol": "TCP", "targetPort": 80},
                {"port": 53, "protocol": "UDP", "targetPort": "dns"}
            ],
            "sessionAffinity": "None",
            "type": "ClusterIP",
            "internalTrafficPolicy": "Cluster"
        }}),
    );
    check(
        "",
        "Service",
        json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 443, "targetPort": 0}]}}),
        json!({"spec": {
            "type": "LoadBalancer",
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
            "ports": [{"port": 443, "protocol": "TCP", "targetPort": 443}],
            "externalTrafficPolicy": "Cluster",
            "internalTrafficPolicy": "Cluster",
            "allocateLoadBalancerNodePorts": true
        }}),
    );
    check(
        "",
        "Service",
        json!({"spec": {"type": "ExternalName", "externalName": "example.com", "sessionAffinityConfig": {"clientIP": {}}}}),
        json!({"spec": {"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "None"}}),
    );
}

#[test]
fn core_kinds() {
    check(
        "",
        "Secret",
        json!({"data": {}}),
        json!({"data": {}, "type": "Opaque"}),
    );
    check(
        "",
        "Secret",
        json!({"type": "kubernetes.io/tls"}),
        json!({"type": "kubernetes.io/tls"}),
    );
    check(
        "",
        "Namespace",
        json!({"metadata": {"name": "dev"}}),
        json!({
            "metadata": {"name": "dev", "labels": {"kubernetes.io/metadata.name": "dev"}},
            "status": {"phase": "Active"}
        }),
    );
    check(
        "",
        "PersistentVolumeClaim",
        json!({"spec": {"accessModes": ["ReadWriteOnce"]}}),
        json!({"spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}, "status": {"phase": "Pending"}}),
    );
    check(
        "",
        "PersistentVolume",
        json!({"spec": {}}),
        json!({"spec": {"persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"}, "status": {"phase": "Pending"}}),
    );
    check(
        "",
        "Endpoints",
        json!({"subsets": [{"ports": [{"port": 1}]}]}),
        json!({"subsets": [{"ports": [{"port": 1, "protocol": "TCP"}]}]}),
    );
    check(
        "",
        "LimitRange",
        json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}},
            {"type": "Pod", "max": {"cpu": "2"}}
        ]}}),
        json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"},
             "default": {"cpu": "2"}, "defaultRequest": {"cpu": "2", "memory": "1Mi"}},
            {"type": "Pod", "max": {"cpu": "2"}}
        ]}}),
    );
    check(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"spec": {"egress": [{"ports": [{"port": 53}]}]}}),
        json!({"spec": {"egress": [{"ports": [{"port": 53, "protocol": "TCP"}]}], "policyTypes": ["Ingress", "Egress"]}}),
    );
    check(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"ports": [{"port": 80}]}),
        json!({"ports": [{"port": 80, "name": "", "protocol": "TCP"}]}),
    );
    check(
        "",
        "ConfigMap",
        json!({"data": {"a": "b"}}),
        json!({"data": {"a": "b"}}),
    );
}

#[test]
fn arbitrary_json_does_not_panic() {
    let shapes = [
        json!(null),
        json!(1),
        json!("x"),
        json!([1, 2]),
        json!({"spec": 3}),
        json!({"spec": {"template": "x", "strategy": 1, "updateStrategy": [], "ports": {}}}),
        json!({"spec": {"template": {"spec": {"containers": [1, null, {"ports": "x", "livenessProbe": 2}], "volumes": [null, 3, {"secret": 1}]}}}}),
        json!({"spec": {"containers": {"a": 1}, "hostNetwork": true}, "metadata": []}),
        json!({"metadata": {"name": 3, "labels": "x"}, "spec": {"limits": [{"type": "Container", "default": 1}]}}),
    ];
    let kinds = [
        ("", "Pod"),
        ("", "Service"),
        ("", "Namespace"),
        ("", "ReplicationController"),
        ("", "LimitRange"),
        ("", "Secret"),
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("networking.k8s.io", "NetworkPolicy"),
    ];
    for shape in &shapes {
        for (group, kind) in kinds {
            let mut obj = shape.clone();
            apply(group, kind, &mut obj);
        }
    }
}
