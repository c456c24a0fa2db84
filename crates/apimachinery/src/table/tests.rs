//! Data-driven tests of the Table printers: expected rows for each kind, robustness against
//! arbitrary JSON, and the Table document.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;

/// The fixed "now" of every test.
fn now() -> Timestamp {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

/// Metadata created `ago` before [`now`] (an RFC 3339 timestamp is given directly).
fn meta(name: &str, created: &str) -> Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": created})
}

/// Asserts the cells of `object` and that they match the kind's column count.
fn check(group: &str, kind: &str, object: Value, expected: Value) {
    let cells = cells(group, kind, &object, now());
    assert_eq!(
        Value::Array(cells.clone()),
        expected,
        "{group}/{kind}: {object}"
    );
    assert_eq!(
        cells.len(),
        columns(group, kind).len(),
        "{group}/{kind} cell count"
    );
}

/// The column names of a kind, with `*` marking wide ones.
fn headers(group: &str, kind: &str) -> Vec<String> {
    columns(group, kind)
        .iter()
        .map(|column| {
            if column.priority > 0 {
                format!("{}*", column.name)
            } else {
                column.name.to_owned()
            }
        })
        .collect()
}

#[test]
fn human_durations_match_upstream() {
    let cases: &[(i64, &str)] = &[
        (-5, "<invalid>"),
        (-2, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (5 * 60 + 10, "5m10s"),
        (10 * 60 + 10, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 12 * 60, "3h12m"),
        (8 * 3600 + 59 * 60, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (745 * 86400, "2y15d"),
        (8 * 365 * 86400, "8y"),
    ];
    for (seconds, expected) in cases {
        assert_eq!(
            human_signed_duration(jiff::SignedDuration::from_secs(*seconds)),
            *expected,
            "{seconds}s"
        );
        if *seconds >= 0 {
            let unsigned = std::time::Duration::from_secs(seconds.unsigned_abs());
            assert_eq!(human_duration(unsigned), *expected, "{seconds}s");
        }
    }
    // Go's time.Duration saturates near 292 years.
    assert_eq!(
        human_duration(std::time::Duration::from_secs(u64::MAX)),
        "292y"
    );
    assert_eq!(age_since(Some("2024-05-01T11:55:00Z"), now()), "5m");
    assert_eq!(age_since(None, now()), "<unknown>");
}

#[test]
fn column_sets_match_upstream() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "",
            "Pod",
            &[
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP*",
                "Node*",
                "Nominated Node*",
                "Readiness Gates*",
            ],
        ),
        (
            "apps",
            "Deployment",
            &[
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers*",
                "Images*",
                "Selector*",
            ],
        ),
        (
            "apps",
            "ReplicaSet",
            &[
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Age",
                "Containers*",
                "Images*",
                "Selector*",
            ],
        ),
        (
            "apps",
            "StatefulSet",
            &["Name", "Ready", "Age", "Containers*", "Images*"],
        ),
        (
            "apps",
            "DaemonSet",
            &[
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age",
                "Containers*",
                "Images*",
                "Selector*",
            ],
        ),
        (
            "batch",
            "Job",
            &[
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers*",
                "Images*",
                "Selector*",
            ],
        ),
        (
            "batch",
            "CronJob",
            &[
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers*",
                "Images*",
                "Selector*",
            ],
        ),
        (
            "core",
            "Service",
            &[
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector*",
            ],
        ),
        (
            "",
            "Node",
            &[
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP*",
                "External-IP*",
                "OS-Image*",
                "Kernel-Version*",
                "Container-Runtime*",
            ],
        ),
        (
            "",
            "Event",
            &[
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject*",
                "Source*",
                "Message",
                "First Seen*",
                "Count*",
                "Name*",
            ],
        ),
        (
            "rbac.authorization.k8s.io",
            "RoleBinding",
            &[
                "Name",
                "Role",
                "Age",
                "Users*",
                "Groups*",
                "ServiceAccounts*",
            ],
        ),
        ("rbac.authorization.k8s.io", "Role", &["Name", "Created At"]),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            &["Name", "Created At"],
        ),
        ("", "LimitRange", &["Name", "Created At"]),
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &["Name", "Created At"],
        ),
        ("example.com", "Widget", &["Name", "Created At"]),
        ("", "ConfigMap", &["Name", "Data", "Age"]),
        ("", "Secret", &["Name", "Type", "Data", "Age"]),
        ("", "ResourceQuota", &["Name", "Request", "Limit", "Age"]),
        (
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &[
                "Name",
                "Age",
                "SignerName",
                "Requestor",
                "RequestedDuration",
                "Condition",
            ],
        ),
    ];
    for (group, kind, expected) in cases {
        assert_eq!(headers(group, kind), *expected, "{group}/{kind}");
    }
    let name = columns("", "Pod")[0];
    assert_eq!((name.type_, name.format), ("string", "name"));
    assert_eq!(columns("", "LimitRange")[1].type_, "date");
    // Kubectl finds the name column by its format, also when it is a wide column.
    assert_eq!(columns("events.k8s.io", "Event")[9].format, "name");
}

#[test]
fn pod_rows() {
    let created = "2024-05-01T11:00:00Z";
    let pod = |spec: Value, status: Value| json!({"metadata": meta("web", created), "spec": spec, "status": status});
    let two_containers = json!({"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"});
    let running =
        |ready: bool| json!({"ready": ready, "restartCount": 0, "state": {"running": {}}});

    check(
        "",
        "Pod",
        pod(
            two_containers.clone(),
            json!({"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "containerStatuses": [running(true), running(false)]}),
        ),
        json!([
            "web", "1/2", "Running", "0", "60m", "10.0.0.5", "n1", "<none>", "<none>"
        ]),
    );
    // A crash-looping container with its last restart five minutes ago.
    check(
        "",
        "Pod",
        pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Running", "podIP": "10.0.0.6", "containerStatuses": [{
                "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:55:00Z"}}
            }]}),
        ),
        json!([
            "web",
            "0/1",
            "CrashLoopBackOff",
            "4 (5m ago)",
            "60m",
            "10.0.0.6",
            "<none>",
            "<none>",
            "<none>"
        ]),
    );
    // Second of three init containers still running.
    check(
        "",
        "Pod",
        pod(
            json!({"initContainers": [{"name": "i1"}, {"name": "i2"}, {"name": "i3"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                {"name": "i2", "state": {"running": {}}},
                {"name": "i3", "state": {"waiting": {"reason": "PodInitializing"}}}
            ]}),
        ),
        json!([
            "web", "0/1", "Init:1/3", "0", "60m", "<none>", "<none>", "<none>", "<none>"
        ]),
    );
    // A failing init container.
    check(
        "",
        "Pod",
        pod(
            json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}),
        ),
        json!([
            "web",
            "0/1",
            "Init:CrashLoopBackOff",
            "2",
            "60m",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ]),
    );
    check(
        "",
        "Pod",
        pod(
            json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 3}}}
            ]}),
        ),
        json!([
            "web",
            "0/1",
            "Init:ExitCode:3",
            "0",
            "60m",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ]),
    );
    // A running sidecar (restartable init container) counts towards Ready.
    check(
        "",
        "Pod",
        pod(
            json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [running(true)]}),
        ),
        json!([
            "web", "2/2", "Running", "1", "60m", "<none>", "<none>", "<none>", "<none>"
        ]),
    );
    // Image not pulled yet.
    check(
        "",
        "Pod",
        pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        ),
        json!([
            "web",
            "0/1",
            "ContainerCreating",
            "0",
            "60m",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ]),
    );
    // Completed, and a completed container beside a running one.
    check(
        "",
        "Pod",
        pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        ),
        json!([
            "web",
            "0/1",
            "Completed",
            "0",
            "60m",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ]),
    );
    check(
        "",
        "Pod",
        pod(
            two_containers.clone(),
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
                {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, running(true)
            ]}),
        ),
        json!([
            "web", "1/2", "NotReady", "0", "60m", "<none>", "n1", "<none>", "<none>"
        ]),
    );
    // Killed by a signal without a reason.
    check(
        "",
        "Pod",
        pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Failed", "containerStatuses": [
                {"state": {"terminated": {"exitCode": 137, "signal": 9}}}
            ]}),
        ),
        json!([
            "web", "0/1", "Signal:9", "0", "60m", "<none>", "<none>", "<none>", "<none>"
        ]),
    );
    // Terminating, unless already finished; NodeLost reads Unknown.
    let mut deleting = pod(
        json!({"containers": [{"name": "a"}]}),
        json!({"phase": "Running", "containerStatuses": [running(true)]}),
    );
    deleting["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
    check(
        "",
        "Pod",
        deleting.clone(),
        json!([
            "web",
            "1/1",
            "Terminating",
            "0",
            "60m",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ]),
    );
    deleting["status"]["reason"] = json!("NodeLost");
    check(
        "",
        "Pod",
        deleting.clone(),
        json!([
            "web", "1/1", "Unknown", "0", "60m", "<none>", "<none>", "<none>", "<none>"
        ]),
    );
    deleting["status"] = json!({"phase": "Succeeded"});
    check(
        "",
        "Pod",
        deleting,
        json!([
            "web",
            "0/1",
            "Succeeded",
            "0",
            "60m",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ]),
    );
    // Scheduling gates and readiness gates.
    check(
        "",
        "Pod",
        pod(
            json!({"containers": [{"name": "a"}], "readinessGates": [{"conditionType": "lb/ready"}, {"conditionType": "x"}]}),
            json!({"phase": "Pending", "nominatedNodeName": "n2", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"},
                {"type": "lb/ready", "status": "True"}
            ]}),
        ),
        json!([
            "web",
            "0/1",
            "SchedulingGated",
            "0",
            "60m",
            "<none>",
            "<none>",
            "n2",
            "1/2"
        ]),
    );
}

#[test]
fn workload_rows() {
    let created = "2024-04-29T12:00:00Z";
    let template = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1"}, {"name": "log", "image": "busybox"}]}});
    check(
        "apps",
        "Deployment",
        json!({"metadata": meta("web", created), "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
        json!([
            "web",
            "2/3",
            3,
            2,
            "2d",
            "web,log",
            "nginx:1,busybox",
            "app=web"
        ]),
    );
    check(
        "apps",
        "Deployment",
        json!({"metadata": meta("bare", created), "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Nope"}]}}}),
        json!(["bare", "0/1", 0, 0, "2d", "", "", "<invalid>"]),
    );
    check(
        "apps",
        "ReplicaSet",
        json!({"metadata": meta("web-5d8", created), "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8"}}, "template": template},
            "status": {"replicas": 2, "readyReplicas": 1}}),
        json!([
            "web-5d8",
            2,
            2,
            1,
            "2d",
            "web,log",
            "nginx:1,busybox",
            "app=web,pod-template-hash=5d8"
        ]),
    );
    check(
        "apps",
        "StatefulSet",
        json!({"metadata": meta("db", created), "spec": {"replicas": 3, "template": template}, "status": {"readyReplicas": 3}}),
        json!(["db", "3/3", "2d", "web,log", "nginx:1,busybox"]),
    );
    check(
        "apps",
        "DaemonSet",
        json!({"metadata": meta("agent", created), "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "a", "image": "agent:2"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}}),
        json!([
            "agent",
            3,
            3,
            2,
            3,
            2,
            "kubernetes.io/os=linux",
            "2d",
            "a",
            "agent:2",
            "app=agent"
        ]),
    );
    check(
        "",
        "ReplicationController",
        json!({"metadata": meta("rc", created), "spec": {"replicas": 2, "selector": {"app": "rc"}, "template": template}, "status": {"replicas": 2, "readyReplicas": 2}}),
        json!(["rc", 2, 2, 2, "2d", "web,log", "nginx:1,busybox", "app=rc"]),
    );
    check(
        "batch",
        "Job",
        json!({"metadata": meta("pi", created), "spec": {"completions": 3, "selector": {"matchLabels": {"job-name": "pi"}}, "template": template},
            "status": {"succeeded": 3, "startTime": "2024-05-01T10:00:00Z", "completionTime": "2024-05-01T10:01:30Z",
                "conditions": [{"type": "Complete", "status": "True"}]}}),
        json!([
            "pi",
            "Complete",
            "3/3",
            "90s",
            "2d",
            "web,log",
            "nginx:1,busybox",
            "job-name=pi"
        ]),
    );
    check(
        "batch",
        "Job",
        json!({"metadata": meta("par", created), "spec": {"parallelism": 4}, "status": {"startTime": "2024-05-01T11:30:00Z"}}),
        json!(["par", "Running", "0/1 of 4", "30m", "2d", "", "", "<none>"]),
    );
    check(
        "batch",
        "Job",
        json!({"metadata": meta("f", created), "spec": {}, "status": {"conditions": [
            {"type": "Suspended", "status": "True"}, {"type": "Failed", "status": "True"}
        ]}}),
        json!(["f", "Failed", "0/1", "", "2d", "", "", "<none>"]),
    );
    check(
        "batch",
        "CronJob",
        json!({"metadata": meta("nightly", created), "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": template}}},
            "status": {"active": [{"name": "x"}], "lastScheduleTime": "2024-05-01T01:00:00Z"}}),
        json!([
            "nightly",
            "0 1 * * *",
            "<none>",
            "False",
            1,
            "11h",
            "2d",
            "web,log",
            "nginx:1,busybox",
            "<none>"
        ]),
    );
    check(
        "batch",
        "CronJob",
        json!({"metadata": meta("s", created), "spec": {"schedule": "@hourly", "timeZone": "Etc/UTC", "suspend": true}}),
        json!([
            "s", "@hourly", "Etc/UTC", "True", 0, "<none>", "2d", "", "", "<none>"
        ]),
    );
    check(
        "apps",
        "ControllerRevision",
        json!({"metadata": {"name": "db-7f", "creationTimestamp": created, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true}
        ]}, "revision": 2}),
        json!(["db-7f", "statefulset.apps/db", 2, "2d"]),
    );
    check(
        "policy",
        "PodDisruptionBudget",
        json!({"metadata": meta("pdb", created), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}}),
        json!(["pdb", "50%", "N/A", 1, "2d"]),
    );
    check(
        "autoscaling",
        "HorizontalPodAutoscaler",
        json!({"metadata": meta("web", created), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                {"type": "Pods", "pods": {"target": {"averageValue": "1k"}}}
            ]},
            "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}}),
        json!([
            "web",
            "Deployment/web",
            "cpu: 12%/50%, memory: <unknown>/100Mi + 1 more...",
            "1",
            10,
            2,
            "2d"
        ]),
    );
    check(
        "autoscaling",
        "HorizontalPodAutoscaler",
        json!({"metadata": meta("v1", created), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}}),
        json!([
            "v1",
            "Deployment/web",
            "cpu: <unknown>/70%",
            "2",
            5,
            0,
            "2d"
        ]),
    );
}

#[test]
fn core_rows() {
    let created = "2024-05-01T09:00:00Z";
    check(
        "",
        "Service",
        json!({"metadata": meta("web", created), "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30001}]}}),
        json!([
            "web",
            "NodePort",
            "10.96.0.10",
            "<none>",
            "80/TCP,443:30001/TCP",
            "3h",
            "app=web"
        ]),
    );
    check(
        "",
        "Service",
        json!({"metadata": meta("lb", created), "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11", "externalIPs": ["1.2.3.4"],
            "ports": [{"port": 53, "protocol": "UDP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}}),
        json!([
            "lb",
            "LoadBalancer",
            "10.96.0.11",
            "5.6.7.8,lb.example.com,1.2.3.4",
            "53/UDP",
            "3h",
            "<none>"
        ]),
    );
    check(
        "",
        "Service",
        json!({"metadata": meta("pending", created), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"]}}),
        json!([
            "pending",
            "LoadBalancer",
            "10.96.0.12",
            "<pending>",
            "<none>",
            "3h",
            "<none>"
        ]),
    );
    check(
        "",
        "Service",
        json!({"metadata": meta("ext", created), "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
        json!([
            "ext",
            "ExternalName",
            "<none>",
            "db.example.com",
            "<none>",
            "3h",
            "<none>"
        ]),
    );
    check(
        "",
        "Endpoints",
        json!({"metadata": meta("web", created), "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "fd00::1"}]}
        ]}),
        json!([
            "web",
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more...",
            "3h"
        ]),
    );
    check(
        "",
        "Endpoints",
        json!({"metadata": meta("none", created)}),
        json!(["none", "<none>", "3h"]),
    );
    check(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": meta("web-abc", created), "addressType": "IPv4", "ports": [{"port": 80}, {"name": "http"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3", "10.0.0.4"]}]}),
        json!([
            "web-abc",
            "IPv4",
            "80,http,*",
            "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
            "3h"
        ]),
    );
    check(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": meta("empty", created), "addressType": "IPv6"}),
        json!(["empty", "IPv6", "<unset>", "<unset>", "3h"]),
    );
    check(
        "",
        "Node",
        json!({"metadata": {"name": "n1", "creationTimestamp": "2024-04-01T12:00:00Z",
            "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 13", "kernelVersion": "6.12.0", "containerRuntimeVersion": "containerd://2.0.0"}}}),
        json!([
            "n1",
            "Ready,SchedulingDisabled",
            "control-plane,edge,worker",
            "30d",
            "v1.32.0",
            "192.168.1.10",
            "<none>",
            "Debian GNU/Linux 13",
            "6.12.0",
            "containerd://2.0.0"
        ]),
    );
    check(
        "",
        "Node",
        json!({"metadata": meta("n2", created), "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        json!([
            "n2",
            "NotReady",
            "<none>",
            "3h",
            "",
            "<none>",
            "<none>",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ]),
    );
    check(
        "",
        "Node",
        json!({"metadata": meta("n3", created)}),
        json!([
            "n3",
            "Unknown",
            "<none>",
            "3h",
            "",
            "<none>",
            "<none>",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ]),
    );
    check(
        "",
        "Namespace",
        json!({"metadata": meta("kube-system", created), "status": {"phase": "Terminating"}}),
        json!(["kube-system", "Terminating", "3h"]),
    );
    check(
        "",
        "Namespace",
        json!({"metadata": meta("fresh", created)}),
        json!(["fresh", "Active", "3h"]),
    );
    check(
        "",
        "ConfigMap",
        json!({"metadata": meta("cm", created), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
        json!(["cm", 3, "3h"]),
    );
    check(
        "",
        "Secret",
        json!({"metadata": meta("s", created), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
        json!(["s", "kubernetes.io/tls", 2, "3h"]),
    );
    check(
        "",
        "Secret",
        json!({"metadata": meta("o", created)}),
        json!(["o", "Opaque", 0, "3h"]),
    );
    check(
        "",
        "ServiceAccount",
        json!({"metadata": meta("default", created), "secrets": [{"name": "t"}]}),
        json!(["default", 1, "3h"]),
    );
    check(
        "",
        "PersistentVolume",
        json!({"metadata": meta("pv1", created), "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "fast", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}}),
        json!([
            "pv1",
            "10Gi",
            "RWO,RWX",
            "Retain",
            "Bound",
            "default/data",
            "fast",
            "<unset>",
            "",
            "3h",
            "Filesystem"
        ]),
    );
    check(
        "",
        "PersistentVolumeClaim",
        json!({"metadata": meta("data", created), "spec": {"volumeName": "pv1", "storageClassName": "fast"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}}),
        json!([
            "data", "Bound", "pv1", "10Gi", "RWO", "fast", "<unset>", "3h", "<unset>"
        ]),
    );
    check(
        "",
        "PersistentVolumeClaim",
        json!({"metadata": {"name": "p", "creationTimestamp": created, "deletionTimestamp": created,
            "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}}, "spec": {"storageClassName": "new"}, "status": {"phase": "Pending"}}),
        json!([
            "p",
            "Terminating",
            "",
            "",
            "",
            "old",
            "<unset>",
            "3h",
            "<unset>"
        ]),
    );
    check(
        "",
        "ResourceQuota",
        json!({"metadata": meta("q", created), "status": {"hard": {"pods": "10", "limits.cpu": "4", "requests.cpu": "2", "limits.memory": "8Gi"},
            "used": {"pods": "3", "limits.cpu": "1", "requests.cpu": "500m"}}}),
        json!([
            "q",
            "pods: 3/10, requests.cpu: 500m/2",
            "limits.cpu: 1/4, limits.memory: 0/8Gi",
            "3h"
        ]),
    );
}

#[test]
fn event_rows() {
    check(
        "",
        "Event",
        json!({"metadata": meta("web.17a", "2024-05-01T11:00:00Z"), "type": "Warning", "reason": "BackOff",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{web}"},
            "message": " Back-off restarting failed container \n", "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z", "count": 7}),
        json!([
            "2m",
            "Warning",
            "BackOff",
            "pod/web",
            "spec.containers{web}",
            "kubelet, n1",
            "Back-off restarting failed container",
            "60m",
            7,
            "web.17a"
        ]),
    );
    check(
        "",
        "Event",
        json!({"metadata": meta("e2", "2024-05-01T11:00:00Z"), "type": "Normal", "reason": "Scheduled", "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:59:30.000000Z", "reportingController": "default-scheduler", "message": "ok"}),
        json!([
            "30s",
            "Normal",
            "Scheduled",
            "node",
            "",
            "default-scheduler",
            "ok",
            "30s",
            1,
            "e2"
        ]),
    );
    check(
        "events.k8s.io",
        "Event",
        json!({"metadata": meta("e3", "2024-05-01T11:00:00Z"), "type": "Normal", "reason": "Pulled", "note": "pulled image",
            "regarding": {"kind": "Pod", "name": "web"}, "eventTime": "2024-05-01T11:00:00.000000Z", "reportingController": "kubelet", "reportingInstance": "n1",
            "series": {"count": 4, "lastObservedTime": "2024-05-01T11:50:00.000000Z"}}),
        json!([
            "10m",
            "Normal",
            "Pulled",
            "pod/web",
            "",
            "kubelet, n1",
            "pulled image",
            "60m",
            4,
            "e3"
        ]),
    );
}

#[test]
fn cluster_rows() {
    let created = "2024-05-01T11:30:00Z";
    check(
        "networking.k8s.io",
        "Ingress",
        json!({"metadata": meta("web", created), "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "c.example.com"}, {"host": "d.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}]}}}),
        json!([
            "web",
            "nginx",
            "a.example.com,b.example.com,c.example.com + 2 more...",
            "10.0.0.9",
            "80, 443",
            "30m"
        ]),
    );
    check(
        "networking.k8s.io",
        "Ingress",
        json!({"metadata": meta("bare", created), "spec": {}}),
        json!(["bare", "<none>", "*", "", "80", "30m"]),
    );
    check(
        "networking.k8s.io",
        "IngressClass",
        json!({"metadata": meta("nginx", created), "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external"}}}),
        json!([
            "nginx",
            "k8s.io/ingress-nginx",
            "IngressParameters.k8s.example.com/external",
            "30m"
        ]),
    );
    check(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"metadata": meta("deny", created), "spec": {"podSelector": {}}}),
        json!(["deny", "<none>", "30m"]),
    );
    check(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"metadata": meta("db", created), "spec": {"podSelector": {"matchLabels": {"role": "db"}}}}),
        json!(["db", "role=db", "30m"]),
    );
    check(
        "storage.k8s.io",
        "StorageClass",
        json!({"metadata": {"name": "local", "creationTimestamp": created, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}),
        json!([
            "local (default)",
            "rancher.io/local-path",
            "Delete",
            "WaitForFirstConsumer",
            false,
            "30m"
        ]),
    );
    check(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        json!({"metadata": meta("admins", created), "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [
            {"kind": "User", "name": "alice"}, {"kind": "Group", "name": "system:masters"}, {"kind": "User", "name": "bob"},
            {"kind": "ServiceAccount", "namespace": "kube-system", "name": "ctrl"}
        ]}),
        json!([
            "admins",
            "ClusterRole/cluster-admin",
            "30m",
            "alice, bob",
            "system:masters",
            "kube-system/ctrl"
        ]),
    );
    check(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        json!({"metadata": meta("rb", created), "roleRef": {"kind": "Role", "name": "reader"}}),
        json!(["rb", "Role/reader", "30m", "", "", ""]),
    );
    check(
        "rbac.authorization.k8s.io",
        "ClusterRole",
        json!({"metadata": {"name": "view", "creationTimestamp": "2024-04-01T08:09:10Z"}}),
        json!(["view", "2024-04-01T08:09:10Z"]),
    );
    check(
        "coordination.k8s.io",
        "Lease",
        json!({"metadata": meta("n1", created), "spec": {"holderIdentity": "n1"}}),
        json!(["n1", "n1", "30m"]),
    );
    check(
        "scheduling.k8s.io",
        "PriorityClass",
        json!({"metadata": meta("system-node-critical", created), "value": 2000001000}),
        json!([
            "system-node-critical",
            2000001000,
            false,
            "30m",
            "PreemptLowerPriority"
        ]),
    );
    check(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        json!({"metadata": meta("csr-1", created), "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "username": "alice", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"}}),
        json!([
            "csr-1",
            "30m",
            "kubernetes.io/kube-apiserver-client",
            "alice",
            "24h",
            "Approved,Issued"
        ]),
    );
    check(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        json!({"metadata": meta("csr-2", created), "spec": {}, "status": {"conditions": [{"type": "Denied"}, {"type": "Failed"}]}}),
        json!(["csr-2", "30m", "<none>", "", "<none>", "Denied,Failed"]),
    );
    check(
        "node.k8s.io",
        "RuntimeClass",
        json!({"metadata": meta("gvisor", created), "handler": "runsc"}),
        json!(["gvisor", "runsc", "30m"]),
    );
}

#[test]
fn every_kind_survives_arbitrary_json() {
    let kinds: &[(&str, &str)] = &[
        ("", "Pod"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ControllerRevision"),
        ("", "ReplicationController"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("policy", "PodDisruptionBudget"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("", "Service"),
        ("", "Endpoints"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("", "Node"),
        ("", "Namespace"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "ResourceQuota"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("storage.k8s.io", "StorageClass"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("coordination.k8s.io", "Lease"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("node.k8s.io", "RuntimeClass"),
        ("", "LimitRange"),
    ];
    let weird = [
        json!(null),
        json!([1, 2]),
        json!("pod"),
        json!({}),
        json!({"metadata": 5, "spec": "x", "status": [1]}),
        json!({"metadata": {"name": 7, "creationTimestamp": "2999-01-01T00:00:00Z", "labels": [1]},
            "spec": {"containers": "no", "replicas": "3", "ports": [{"port": "80"}], "selector": [1], "completions": -1,
                "expirationSeconds": -5, "metrics": [{"type": "Resource"}], "claimRef": 1, "podSelector": 3},
            "status": {"conditions": [1, null, {"type": 1}], "containerStatuses": [{"state": 1}, null],
                "initContainerStatuses": [{"state": {"terminated": "x"}}], "hard": {"cpu": 1}, "loadBalancer": {"ingress": "x"}},
            "subsets": [{"addresses": [1], "ports": [null]}], "endpoints": [{"addresses": [1]}], "series": {"count": "x"},
            "involvedObject": 5, "subjects": [1], "data": "x"}),
    ];
    for (group, kind) in kinds {
        let expected = columns(group, kind).len();
        for object in &weird {
            let row = cells(group, kind, object, now());
            assert_eq!(row.len(), expected, "{group}/{kind} on {object}");
        }
    }
    // A creation time in the future beyond clock skew reads <invalid>, as upstream.
    assert_eq!(
        cells("", "ConfigMap", &weird[5], now())[2],
        json!("<invalid>")
    );
}

#[test]
fn crd_columns_and_cells() {
    let printer_columns = json!([
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Readiness"},
        {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio", "priority": 1},
        {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
        {"name": "Labels", "type": "string", "jsonPath": ".metadata.labels"},
        {"name": "Seen", "type": "date", "jsonPath": ".status.lastSeen"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        "not a column"
    ]);
    let columns = crd_columns(&printer_columns);
    assert_eq!(columns.len(), 7);
    assert_eq!(
        columns[0].description,
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    );
    assert_eq!(columns[1].description, "Readiness");
    assert_eq!(columns[2].priority, 1);

    let check_crd = |object: Value, expected: Value| {
        assert_eq!(
            Value::Array(crd_cells(&columns, &object, now())),
            expected,
            "{object}"
        );
    };
    check_crd(
        json!({"metadata": {"name": "w1", "creationTimestamp": "2024-05-01T11:00:00Z", "labels": {"b": "2", "a": "1"}},
            "spec": {"replicas": 3.0, "paused": false},
            "status": {"ratio": 2, "lastSeen": "2024-05-01T11:59:00Z",
                "conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}}),
        json!([
            "w1",
            3,
            "True",
            2.0,
            false,
            "{\"a\":\"1\",\"b\":\"2\"}",
            "60s",
            "60m"
        ]),
    );
    // Missing paths and wrongly-typed values give null; bad dates give <invalid>.
    check_crd(
        json!({"metadata": {"name": "w2"}, "spec": {"replicas": "three", "paused": "no"}, "status": {"lastSeen": "soon", "ratio": null}}),
        json!(["w2", null, null, null, null, null, "<invalid>", null]),
    );
    check_crd(
        json!("garbage"),
        json!(["", null, null, null, null, null, null, null]),
    );

    let defaults = crd_columns(&json!(null));
    assert_eq!(defaults.len(), 1);
    assert_eq!(
        (defaults[0].name.as_str(), defaults[0].type_.as_str()),
        ("Age", "date")
    );
    assert_eq!(
        crd_cells(
            &defaults,
            &json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T11:57:00Z"}}),
            now()
        ),
        vec![json!("x"), json!("3m")]
    );

    let table = crd_table(
        &defaults,
        &[json!({"metadata": {"name": "x"}})],
        &TableOptions::default(),
        now(),
    );
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert_eq!(
        table["columnDefinitions"][1],
        json!({"name": "Age", "type": "date", "format": "", "description": defaults[0].description, "priority": 0})
    );
    // Upstream servers always set creationTimestamp; without one the path matches nothing.
    assert_eq!(table["rows"][0]["cells"], json!(["x", null]));
}

#[test]
fn table_documents() {
    let pods = [
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "ns", "labels": {"app": "a"}, "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Succeeded"}}),
    ];
    let options = TableOptions {
        resource_version: Some("42".into()),
        ..TableOptions::default()
    };
    let table = table("", "Pod", &pods, &options, now());
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(table["metadata"], json!({"resourceVersion": "42"}));
    assert_eq!(
        table["columnDefinitions"][1],
        json!({"name": "Ready", "type": "string", "format": "", "description": "The aggregate readiness state of this pod for accepting traffic.", "priority": 0})
    );
    assert_eq!(table["columnDefinitions"][5]["priority"], 1);
    assert_eq!(
        table["rows"][0]["cells"],
        json!([
            "a",
            "0/1",
            "Succeeded",
            "0",
            "60s",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ])
    );
    assert_eq!(table["rows"][0]["conditions"][0]["reason"], "Succeeded");
    assert_eq!(
        table["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": pods[0]["metadata"]})
    );

    let full = TableOptions {
        include_object: IncludeObject::Object,
        omit_column_definitions: true,
        continue_token: Some("abc".into()),
        remaining_item_count: Some(3),
        ..TableOptions::default()
    };
    let watch_table = super::table("", "ConfigMap", &pods, &full, now());
    assert!(watch_table.get("columnDefinitions").is_none());
    assert_eq!(
        watch_table["metadata"],
        json!({"continue": "abc", "remainingItemCount": 3})
    );
    assert_eq!(watch_table["rows"][0]["object"], pods[0]);
    assert!(watch_table["rows"][0].get("conditions").is_none());

    let bare = TableOptions {
        include_object: IncludeObject::None,
        ..TableOptions::default()
    };
    let bare_table = super::table("", "ConfigMap", &pods, &bare, now());
    assert!(bare_table["rows"][0].get("object").is_none());
    assert_eq!(
        super::table("", "ConfigMap", &[], &bare, now())["rows"],
        json!([])
    );

    assert_eq!(
        IncludeObject::from_param("Object"),
        Some(IncludeObject::Object)
    );
    assert_eq!(IncludeObject::from_param("object"), None);
    assert_eq!(partial_object_metadata(&json!(1))["metadata"], json!({}));
}
