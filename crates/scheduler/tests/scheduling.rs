//! The scheduling loop end to end: load spreading, default topology spreading of pods
//! that Services and controllers group, preferences, unschedulable pods that are reported
//! and later placed, queue order by priority, and scheduling gates.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn least_allocated_spreads_pods_over_nodes() {
    let c = Cluster::start().await;
    for i in 0..4 {
        c.node(&format!("n{i}"), "4", "8Gi", json!({})).await;
    }
    for i in 0..8 {
        c.pod(&format!("p{i}"), "500m", "512Mi", json!({})).await;
    }
    let mut per_node = BTreeMap::new();
    for i in 0..8 {
        *per_node.entry(c.bound(&format!("p{i}")).await).or_insert(0) += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2, 2],
        "{per_node:?}"
    );
}

/// Creates pods `names` (100m CPU, 128Mi each, plus `extra`) one by one, each after the
/// previous is bound, and counts them per node.
async fn place_one_by_one(
    c: &Cluster,
    names: &[String],
    extra: serde_json::Value,
) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    for name in names {
        c.pod(name, "100m", "128Mi", extra.clone()).await;
        *per_node.entry(c.bound(name).await).or_insert(0) += 1;
    }
    per_node
}

#[tokio::test]
async fn pods_grouped_by_a_replica_set_or_a_service_spread_over_hosts_by_default() {
    let mut c = Cluster::without_scheduler().await;
    // LeastAllocated and BalancedAllocation favour the big node for every pod below;
    // only the default hostname spreading (maxSkew 3, ScheduleAnyway) moves pods off it.
    c.node("big", "64", "128Gi", json!({})).await;
    for name in ["small-a", "small-b", "small-c"] {
        c.node(name, "2", "4Gi", json!({})).await;
    }
    let replica_sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }}
    }))
    .unwrap();
    let rs = replica_sets
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    c.start_scheduler();

    // Nothing groups these: the scores alone stack them on the big node.
    let loners: Vec<String> = (0..4).map(|i| format!("loner-{i}")).collect();
    let per_node = place_one_by_one(
        &c,
        &loners,
        json!({"metadata": {"labels": {"app": "loner"}}}),
    )
    .await;
    assert_eq!(per_node, BTreeMap::from([("big".to_owned(), 4)]));

    // The ReplicaSet's pods: one per node first, then the big node takes a second one
    // (all hosts equal again) while the sixth goes to a small node.
    let owner = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
        "uid": rs.metadata.uid.unwrap(), "controller": true
    }]);
    let web: Vec<String> = (0..6).map(|i| format!("web-{i}")).collect();
    let extra = json!({"metadata": {"labels": {"app": "web"}, "ownerReferences": owner}});
    let per_node = place_one_by_one(&c, &web, extra).await;
    assert_eq!(per_node.get("big"), Some(&2), "{per_node:?}");
    assert_eq!(per_node.len(), 4, "every node has a web pod: {per_node:?}");

    // Bare pods the Service selects spread likewise: one per node.
    let api: Vec<String> = (0..4).map(|i| format!("api-{i}")).collect();
    let per_node =
        place_one_by_one(&c, &api, json!({"metadata": {"labels": {"app": "api"}}})).await;
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [1, 1, 1, 1],
        "{per_node:?}"
    );
}

#[tokio::test]
async fn preferences_steer_placement() {
    let c = Cluster::start().await;
    c.node(
        "plain",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "a"}}}),
    )
    .await;
    c.node(
        "ssd",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "b", "disk": "ssd"}}}),
    )
    .await;
    c.node(
        "soft-tainted",
        "4",
        "8Gi",
        json!({"metadata": {"labels": {"zone": "c"}}, "spec": {"taints": [{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}]}}),
    )
    .await;

    // Preferred node affinity wins over a little load difference.
    for i in 0..3 {
        c.pod(
            &format!("fast{i}"),
            "100m",
            "",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
            ]}}}}),
        )
        .await;
        assert_eq!(c.bound(&format!("fast{i}")).await, "ssd");
    }
    // PreferNoSchedule taints are avoided while other nodes have room.
    for i in 0..4 {
        c.pod(&format!("any{i}"), "100m", "", json!({})).await;
        assert_ne!(c.bound(&format!("any{i}")).await, "soft-tainted");
    }
    // Preferred pod affinity draws a pod to its peer; preferred anti-affinity away.
    c.pod("cache", "", "", json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"nodeSelector": {"zone": "c"}, "tolerations": [{"key": "spot", "operator": "Exists"}]}})).await;
    assert_eq!(c.bound("cache").await, "soft-tainted");
    c.pod(
        "near-cache",
        "",
        "",
        json!({"spec": {"tolerations": [{"key": "spot", "operator": "Exists"}], "affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}
        ]}}}}),
    )
    .await;
    assert_eq!(c.bound("near-cache").await, "soft-tainted");
    c.pod(
        "away-from-ssd-users",
        "",
        "",
        json!({"metadata": {"labels": {"app": "x"}}, "spec": {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "fast0"}}, "topologyKey": "zone"}}
        ]}}}}),
    )
    .await;
    assert_ne!(c.bound("away-from-ssd-users").await, "ssd");
    // ScheduleAnyway spread: the zone with fewer matching pods is preferred.
    let spread = json!({"metadata": {"labels": {"app": "fast"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "fast"}}}
    ], "tolerations": [{"key": "spot", "operator": "Exists"}]}});
    // The three fastN pods carry app=fastN, so relabel them into one group first.
    for i in 0..3 {
        c.pods()
            .patch(
                &format!("fast{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"app": "fast"}}})),
            )
            .await
            .unwrap();
    }
    c.pod("spread0", "", "", spread.clone()).await;
    assert_ne!(c.bound("spread0").await, "ssd");
}

#[tokio::test]
async fn unschedulable_pod_gets_condition_and_event_then_runs_when_a_node_appears() {
    let c = Cluster::start().await;
    c.node("small", "1", "2Gi", json!({})).await;
    c.node(
        "tainted",
        "8",
        "16Gi",
        json!({"spec": {"taints": [{"key": "team", "value": "infra", "effect": "NoSchedule"}]}}),
    )
    .await;
    c.pod("big", "2", "1Gi", json!({})).await;
    let expected = "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {team: infra}. \
                    preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.";
    assert_eq!(c.unschedulable("big").await, expected);
    assert_eq!(c.event("big", "FailedScheduling").await, expected);
    let pod = c.pods().get("big").await.unwrap();
    assert!(pod.spec.unwrap().node_name.is_none());

    // A node with room arrives: the pod leaves the unschedulable pool at once (not after
    // the 60 s flush) and is placed.
    let started = tokio::time::Instant::now();
    c.node("large", "4", "8Gi", json!({})).await;
    assert_eq!(c.bound("big").await, "large");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        c.event("big", "Scheduled").await,
        "Successfully assigned default/big to large"
    );
    let pod = c.pods().get("big").await.unwrap();
    let scheduled = pod
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(scheduled.status, "True");

    // A freed node helps too: fill "large", then delete the pod holding it.
    c.pod(
        "filler",
        "2",
        "",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "large"}}}),
    )
    .await;
    c.bound("filler").await;
    c.pod(
        "waiting",
        "2",
        "",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "large"}}}),
    )
    .await;
    c.unschedulable("waiting").await;
    c.pods()
        .delete(
            "filler",
            &kube::api::DeleteParams::default().grace_period(0),
        )
        .await
        .unwrap();
    assert_eq!(c.bound("waiting").await, "large");
}

#[tokio::test]
async fn no_nodes_is_reported_and_retried() {
    let c = Cluster::start().await;
    c.pod("early", "", "", json!({})).await;
    let pods = c.pods();
    let message = wait_for(
        Duration::from_secs(20),
        "SchedulerError condition",
        || async {
            let pod = pods.get("early").await.ok()?;
            let c = pod
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?;
            (c.reason.as_deref() == Some("SchedulerError")).then(|| c.message.unwrap_or_default())
        },
    )
    .await;
    assert_eq!(message, "no nodes available to schedule pods");
    c.node("late", "1", "1Gi", json!({})).await;
    assert_eq!(c.bound("early").await, "late");
}

#[tokio::test]
async fn queue_orders_by_priority_and_resolves_priority_classes() {
    let mut c = Cluster::without_scheduler().await;
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(c.client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "high"}, "value": 1000})).unwrap(),
        )
        .await
        .unwrap();
    c.node("only", "1", "2Gi", json!({})).await;
    // Created first, but lower priority.
    c.pod("low", "1", "", json!({})).await;
    c.pod(
        "high",
        "1",
        "",
        json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    c.start_scheduler();
    assert_eq!(c.bound("high").await, "only");
    c.unschedulable("low").await;
    assert_eq!(c.node_of("low").await, None);
}

#[tokio::test]
async fn scheduling_gates_hold_pods_until_removed() {
    let c = Cluster::start().await;
    c.node("n", "2", "2Gi", json!({})).await;
    c.pod(
        "gated",
        "",
        "",
        json!({"spec": {"schedulingGates": [{"name": "example.com/wait"}]}}),
    )
    .await;
    let pods = c.pods();
    wait_for(
        Duration::from_secs(20),
        "SchedulingGated condition",
        || async {
            let pod = pods.get("gated").await.ok()?;
            let c = pod
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?;
            (c.reason.as_deref() == Some("SchedulingGated")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.node_of("gated").await, None);
    let mut pod: Pod = pods.get("gated").await.unwrap();
    pod.spec.as_mut().unwrap().scheduling_gates = None;
    pods.replace("gated", &PostParams::default(), &pod)
        .await
        .unwrap();
    assert_eq!(c.bound("gated").await, "n");
}

#[tokio::test]
async fn pods_for_other_schedulers_are_left_alone() {
    let c = Cluster::start().await;
    c.node("n", "2", "2Gi", json!({})).await;
    c.pod(
        "other",
        "",
        "",
        json!({"spec": {"schedulerName": "my-scheduler"}}),
    )
    .await;
    c.pod("mine", "", "", json!({})).await;
    c.bound("mine").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.node_of("other").await, None);
}
