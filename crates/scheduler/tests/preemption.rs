//! Preemption: a high-priority pod evicts the fewest, least important pods, gets a
//! nominated node and runs there; `preemptionPolicy: Never` and equal priorities do not
//! preempt.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

async fn priority_class(c: &Cluster, name: &str, value: i32, never: bool) {
    let api: Api<PriorityClass> = Api::all(c.client.clone());
    let mut class = json!({"metadata": {"name": name}, "value": value});
    if never {
        class["preemptionPolicy"] = json!("Never");
    }
    api.create(
        &PostParams::default(),
        &serde_json::from_value(class).unwrap(),
    )
    .await
    .unwrap();
}

/// Plays the node agent: pods marked for deletion are deleted for good.
fn finish_deleted_pods(c: &Cluster) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list.items {
                    if p.metadata.deletion_timestamp.is_some() {
                        let name = p.metadata.name.unwrap_or_default();
                        let _ = pods
                            .delete(&name, &DeleteParams::default().grace_period(0))
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test]
async fn high_priority_pod_preempts_the_least_important_victims() {
    let mut c = Cluster::without_scheduler().await;
    priority_class(&c, "low", 100, false).await;
    priority_class(&c, "mid", 500, false).await;
    priority_class(&c, "high", 1000, false).await;
    c.start_scheduler();
    c.node("n1", "2", "4Gi", json!({})).await;
    c.node("n2", "2", "4Gi", json!({})).await;
    // n1: two low pods; n2: one mid pod and one low pod. Each takes a full CPU.
    let on = |node: &str, class: &str| json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "priorityClassName": class}});
    c.pod("low-a", "1", "", on("n1", "low")).await;
    c.pod("low-b", "1", "", on("n1", "low")).await;
    c.pod("mid-c", "1", "", on("n2", "mid")).await;
    c.pod("low-d", "1", "", on("n2", "low")).await;
    for p in ["low-a", "low-b", "mid-c", "low-d"] {
        c.bound(p).await;
    }
    let agent = finish_deleted_pods(&c);

    // Needs one CPU: evicting one low pod on n1 costs less than anything on n2 (whose
    // candidate victim set would hold... only low-d, equally cheap) — both nodes offer a
    // single low victim; either is fine, but a mid pod must never be chosen.
    c.pod(
        "urgent",
        "1",
        "",
        json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    let node = c.bound("urgent").await;
    let pods = c.pods();
    let remaining: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(remaining.contains(&"mid-c".to_owned()), "{remaining:?}");
    assert_eq!(remaining.len(), 4, "exactly one victim: {remaining:?}");
    let victim = ["low-a", "low-b", "low-d"]
        .into_iter()
        .find(|v| !remaining.contains(&(*v).to_owned()))
        .unwrap();
    let expected_node = if victim == "low-d" { "n2" } else { "n1" };
    assert_eq!(node, expected_node);
    let note = c.event(victim, "Preempted").await;
    assert!(
        note.starts_with("Preempted by pod ") && note.ends_with(&format!(" on node {node}")),
        "{note}"
    );
    agent.abort();
}

#[tokio::test]
async fn preemption_sets_the_nominated_node_while_victims_terminate() {
    let mut c = Cluster::without_scheduler().await;
    priority_class(&c, "low", 100, false).await;
    priority_class(&c, "high", 1000, false).await;
    c.start_scheduler();
    c.node("n1", "2", "4Gi", json!({})).await;
    c.pod(
        "low",
        "2",
        "",
        json!({"spec": {"priorityClassName": "low", "terminationGracePeriodSeconds": 30}}),
    )
    .await;
    c.bound("low").await;
    c.pod(
        "high",
        "1",
        "",
        json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    let pods = c.pods();
    // Without a node agent the victim stays terminating; the preemptor is nominated.
    let nominated = wait_for(Duration::from_secs(20), "nominatedNodeName", || async {
        pods.get("high").await.ok()?.status?.nominated_node_name
    })
    .await;
    assert_eq!(nominated, "n1");
    // Victims are evicted in the background, the DisruptionTarget condition first.
    let victim = wait_for(Duration::from_secs(20), "victim terminating", || async {
        let pod = pods.get("low").await.ok()?;
        pod.metadata.deletion_timestamp.is_some().then_some(pod)
    })
    .await;
    let target = victim
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .unwrap();
    assert_eq!(target.reason.as_deref(), Some("PreemptionByScheduler"));
    // A lower-priority pod arriving meanwhile must not take the room reserved for it.
    c.pod(
        "sneaky",
        "1",
        "",
        json!({"spec": {"priorityClassName": "low"}}),
    )
    .await;
    c.unschedulable("sneaky").await;
    let message = c.unschedulable("high").await;
    assert!(
        message.starts_with("0/1 nodes are available: 1 Insufficient cpu."),
        "{message}"
    );
    // The node agent finishes the victim: the preemptor runs on its nominated node.
    pods.delete("low", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(c.bound("high").await, "n1");
}

#[tokio::test]
async fn no_preemption_for_never_policy_or_equal_priority() {
    let mut c = Cluster::without_scheduler().await;
    priority_class(&c, "low", 100, false).await;
    priority_class(&c, "high-polite", 1000, true).await;
    c.start_scheduler();
    c.node("n1", "1", "4Gi", json!({})).await;
    c.pod(
        "low",
        "1",
        "",
        json!({"spec": {"priorityClassName": "low"}}),
    )
    .await;
    c.bound("low").await;
    c.pod(
        "polite",
        "1",
        "",
        json!({"spec": {"priorityClassName": "high-polite"}}),
    )
    .await;
    assert_eq!(
        c.unschedulable("polite").await,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
    c.pod(
        "peer",
        "1",
        "",
        json!({"spec": {"priorityClassName": "low"}}),
    )
    .await;
    assert_eq!(
        c.unschedulable("peer").await,
        "0/1 nodes are available: 1 Insufficient cpu. \
         preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
    let low = c.pods().get("low").await.unwrap();
    assert!(low.metadata.deletion_timestamp.is_none());
}

#[tokio::test]
async fn anti_affinity_victims_are_preempted() {
    let mut c = Cluster::without_scheduler().await;
    priority_class(&c, "low", 100, false).await;
    priority_class(&c, "high", 1000, false).await;
    c.start_scheduler();
    c.node("n1", "4", "8Gi", json!({})).await;
    c.pod(
        "blocker",
        "",
        "",
        json!({"metadata": {"labels": {"app": "blocker"}}, "spec": {"priorityClassName": "low"}}),
    )
    .await;
    c.bound("blocker").await;
    let agent = finish_deleted_pods(&c);
    c.pod(
        "picky",
        "",
        "",
        json!({"spec": {"priorityClassName": "high", "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "blocker"}}, "topologyKey": "kubernetes.io/hostname"}
        ]}}}}),
    )
    .await;
    assert_eq!(c.bound("picky").await, "n1");
    assert!(c.pods().get("blocker").await.is_err());
    agent.abort();
}
