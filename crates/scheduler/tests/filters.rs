//! Each filter against a real API server: where pods land, and the upstream-style
//! message of the PodScheduled condition when they fit nowhere.

mod common;

use common::Cluster;
use serde_json::json;

#[tokio::test]
async fn resources_fit_counts_cpu_memory_extended_pods_init_containers_and_overhead() {
    let c = Cluster::start().await;
    c.node("small", "1", "1Gi", json!({})).await;
    c.node(
        "gpu",
        "2",
        "4Gi",
        json!({"status": {"allocatable": {"example.com/gpu": "2", "pods": "2"}, "capacity": {"example.com/gpu": "2"}}}),
    )
    .await;

    // Fits only where 1.5 CPUs are free.
    c.pod("big", "1500m", "", json!({})).await;
    assert_eq!(c.bound("big").await, "gpu");
    // Memory beyond both nodes.
    c.pod("hungry", "", "8Gi", json!({})).await;
    assert_eq!(
        c.unschedulable("hungry").await,
        "0/2 nodes are available: 2 Insufficient memory. \
         preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    // Extended resources: only the gpu node has them, and it has 0.5 CPU left.
    c.pod("gpu-user", "100m", "", json!({"spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m", "example.com/gpu": "2"}, "limits": {"example.com/gpu": "2"}}}]}})).await;
    assert_eq!(c.bound("gpu-user").await, "gpu");
    // The gpu node now holds its maximum of 2 pods.
    c.pod(
        "third",
        "",
        "",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "gpu"}}}),
    )
    .await;
    let message = c.unschedulable("third").await;
    assert!(message.starts_with("0/2 nodes are available: 1 Too many pods, 1 node(s) didn't match Pod's node affinity/selector."), "{message}");

    // An init container needing 2 CPUs makes the pod need 2 CPUs, more than any node has
    // free; the app container alone would fit.
    c.pod(
        "init",
        "100m",
        "",
        json!({"spec": {"initContainers": [{"name": "i", "image": "busybox", "resources": {"requests": {"cpu": "2"}}}]}}),
    )
    .await;
    let message = c.unschedulable("init").await;
    assert!(message.contains("Insufficient cpu"), "{message}");
    // Overhead counts too: 900m + 200m overhead exceeds the small node's 1 CPU.
    c.pod(
        "overhead",
        "900m",
        "",
        json!({"spec": {"overhead": {"cpu": "200m"}, "nodeSelector": {"kubernetes.io/hostname": "small"}}}),
    )
    .await;
    let message = c.unschedulable("overhead").await;
    assert!(message.contains("1 Insufficient cpu"), "{message}");
    c.pod(
        "fits",
        "900m",
        "",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "small"}}}),
    )
    .await;
    assert_eq!(c.bound("fits").await, "small");
}

#[tokio::test]
async fn taints_are_honoured_unless_tolerated() {
    let c = Cluster::start().await;
    c.node(
        "dedicated",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    // As the node lifecycle controller taints a node that is not ready.
    c.node(
        "not-ready",
        "4",
        "8Gi",
        json!({"spec": {"taints": [
            {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
        ]}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    )
    .await;
    c.node("plain", "4", "8Gi", json!({})).await;

    for i in 0..3 {
        c.pod(&format!("p{i}"), "100m", "", json!({})).await;
    }
    for i in 0..3 {
        assert_eq!(c.bound(&format!("p{i}")).await, "plain");
    }
    // Tolerating the dedicated taint, and selecting its node.
    c.pod(
        "tolerant",
        "100m",
        "",
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}], "nodeSelector": {"kubernetes.io/hostname": "dedicated"}}}),
    )
    .await;
    assert_eq!(c.bound("tolerant").await, "dedicated");
    // A toleration of another value does not help.
    c.pod(
        "wrong-value",
        "100m",
        "",
        json!({"spec": {"tolerations": [{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}], "nodeSelector": {"kubernetes.io/hostname": "dedicated"}}}),
    )
    .await;
    assert_eq!(
        c.unschedulable("wrong-value").await,
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: gpu}, \
         1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // A node that is not ready is avoided through its taint, not its condition.
    c.pod(
        "on-not-ready",
        "100m",
        "",
        json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}], "nodeSelector": {"kubernetes.io/hostname": "not-ready"}}}),
    )
    .await;
    assert_eq!(c.bound("on-not-ready").await, "not-ready");
}

#[tokio::test]
async fn unschedulable_nodes_take_only_pods_tolerating_it() {
    let c = Cluster::start().await;
    c.node(
        "cordoned",
        "4",
        "8Gi",
        json!({"spec": {"unschedulable": true}}),
    )
    .await;
    c.pod("p", "100m", "", json!({})).await;
    assert_eq!(
        c.unschedulable("p").await,
        "0/1 nodes are available: 1 node(s) were unschedulable. \
         preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );
    c.pod(
        "daemon",
        "100m",
        "",
        json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
    )
    .await;
    assert_eq!(c.bound("daemon").await, "cordoned");
}

#[tokio::test]
async fn node_selector_and_required_node_affinity() {
    let c = Cluster::start().await;
    c.node(
        "a1",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "a", "cores": "4"}}}),
    )
    .await;
    c.node(
        "a2",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "a", "cores": "16"}}}),
    )
    .await;
    c.node(
        "b1",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "b", "disk": "ssd"}}}),
    )
    .await;

    let affinity = |terms: serde_json::Value| json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}});
    c.pod(
        "selector",
        "",
        "",
        json!({"spec": {"nodeSelector": {"zone": "b"}}}),
    )
    .await;
    assert_eq!(c.bound("selector").await, "b1");
    c.pod(
        "gt",
        "",
        "",
        affinity(
            json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]),
        ),
    )
    .await;
    assert_eq!(c.bound("gt").await, "a2");
    c.pod(
        "lt",
        "",
        "",
        affinity(
            json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]}]),
        ),
    )
    .await;
    assert_eq!(c.bound("lt").await, "a1");
    c.pod(
        "exists",
        "",
        "",
        affinity(json!([{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}])),
    )
    .await;
    assert_eq!(c.bound("exists").await, "b1");
    c.pod(
        "notin-doesnotexist",
        "",
        "",
        affinity(json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}, {"key": "cores", "operator": "DoesNotExist"}]}])),
    )
    .await;
    assert_eq!(
        c.unschedulable("notin-doesnotexist").await,
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // Terms are ORed; matchFields selects by name.
    c.pod(
        "fields",
        "",
        "",
        affinity(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["nowhere"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a1"]}]}
        ])),
    )
    .await;
    assert_eq!(c.bound("fields").await, "a1");
    // nodeSelector and affinity must both hold.
    let mut both = affinity(
        json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]),
    );
    both["spec"]["nodeSelector"] = json!({"cores": "16"});
    c.pod("both", "", "", both).await;
    assert_eq!(c.bound("both").await, "a2");
}

#[tokio::test]
async fn host_ports_conflict() {
    let c = Cluster::start().await;
    c.node("n1", "4", "8Gi", json!({})).await;
    c.node("n2", "4", "8Gi", json!({})).await;
    let ported = |port: i32, ip: &str| json!({"spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": "TCP"}]}]}});
    c.pod("web1", "", "", ported(8080, "")).await;
    let first = c.bound("web1").await;
    c.pod("web2", "", "", ported(8080, "")).await;
    let second = c.bound("web2").await;
    assert_ne!(first, second);
    // The wildcard address conflicts with a specific one.
    c.pod("web3", "", "", ported(8080, "10.0.0.1")).await;
    assert_eq!(
        c.unschedulable("web3").await,
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports. \
         preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    // Another port is free.
    c.pod("web4", "", "", ported(9090, "")).await;
    c.bound("web4").await;
}

#[tokio::test]
async fn pod_affinity_and_anti_affinity() {
    let c = Cluster::start().await;
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        c.node(
            name,
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
        )
        .await;
    }
    // One web pod per node.
    let anti = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
    ]}}}});
    let mut nodes = Vec::new();
    for i in 0..3 {
        c.pod(&format!("web{i}"), "", "", anti.clone()).await;
        nodes.push(c.bound(&format!("web{i}")).await);
    }
    nodes.sort();
    assert_eq!(nodes, ["a1", "a2", "b1"]);
    c.pod("web3", "", "", anti.clone()).await;
    assert_eq!(
        c.unschedulable("web3").await,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // An existing pod's anti-affinity keeps matching pods away from its zone.
    c.pod(
        "loner",
        "",
        "",
        json!({"metadata": {"labels": {"app": "loner"}}, "spec": {"nodeSelector": {"topology.kubernetes.io/zone": "b"}, "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"role": "noisy"}}, "topologyKey": "topology.kubernetes.io/zone"}
        ]}}}}),
    )
    .await;
    assert_eq!(c.bound("loner").await, "b1");
    for i in 0..3 {
        c.pod(
            &format!("noisy{i}"),
            "",
            "",
            json!({"metadata": {"labels": {"role": "noisy"}}}),
        )
        .await;
        assert_ne!(c.bound(&format!("noisy{i}")).await, "b1");
    }
    // Affinity: with the db pod in zone b, its clients go to zone b.
    c.pod("db", "", "", json!({"metadata": {"labels": {"app": "db"}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "b1"}}})).await;
    c.bound("db").await;
    let near_db = json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}
    ]}}}});
    for i in 0..2 {
        c.pod(&format!("client{i}"), "", "", near_db.clone()).await;
        assert_eq!(c.bound(&format!("client{i}")).await, "b1");
    }
    // Affinity to pods that exist nowhere, in another namespace by selector.
    c.pod(
        "orphan",
        "",
        "",
        json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "topologyKey": "topology.kubernetes.io/zone"}
        ]}}}}),
    )
    .await;
    assert_eq!(
        c.unschedulable("orphan").await,
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    // The first pod of a group with affinity to itself is not stuck.
    c.pod(
        "self1",
        "",
        "",
        json!({"metadata": {"labels": {"app": "self"}}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "self"}}, "topologyKey": "kubernetes.io/hostname"}
        ]}}}}),
    )
    .await;
    c.bound("self1").await;
}

#[tokio::test]
async fn topology_spread_do_not_schedule() {
    let c = Cluster::start().await;
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        c.node(
            name,
            "8",
            "16Gi",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}}),
        )
        .await;
    }
    // A node without the zone label is not a domain, and cannot take the pods.
    c.node("nozone", "64", "256Gi", json!({})).await;
    let spread = json!({"metadata": {"labels": {"app": "spread"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}
    ]}});
    let mut zones = std::collections::BTreeMap::new();
    for i in 0..6 {
        let name = format!("s{i}");
        c.pod(&name, "100m", "", spread.clone()).await;
        let node = c.bound(&name).await;
        assert_ne!(node, "nozone");
        *zones.entry(node.starts_with('a')).or_insert(0) += 1;
    }
    assert_eq!(zones.values().copied().collect::<Vec<_>>(), [3, 3]);

    // minDomains above the number of zones: the global minimum counts as 0, so each
    // zone takes at most maxSkew matching pods.
    let min_domains = json!({"metadata": {"labels": {"app": "md"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "minDomains": 3, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "md"}}}
    ]}});
    for i in 0..2 {
        c.pod(&format!("md{i}"), "100m", "", min_domains.clone())
            .await;
        c.bound(&format!("md{i}")).await;
    }
    c.pod("md2", "100m", "", min_domains.clone()).await;
    assert_eq!(
        c.unschedulable("md2").await,
        "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), \
         3 node(s) didn't match pod topology spread constraints. \
         preemption: 0/4 nodes are available: 1 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod."
    );

    // nodeAffinityPolicy Honor (the default): only zone-a nodes count when the pod is
    // restricted to zone a, so skew is judged among them alone.
    let honor = json!({"metadata": {"labels": {"app": "h"}}, "spec": {
        "nodeSelector": {"topology.kubernetes.io/zone": "a"},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "h"}}}]
    }});
    let mut nodes = Vec::new();
    for i in 0..4 {
        c.pod(&format!("h{i}"), "100m", "", honor.clone()).await;
        nodes.push(c.bound(&format!("h{i}")).await);
    }
    nodes.sort();
    assert_eq!(nodes, ["a1", "a1", "a2", "a2"]);
}
