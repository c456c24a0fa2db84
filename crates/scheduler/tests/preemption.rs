//! Preemption: a high-priority pod evicts the fewest, least important pods, gets a
//! nominated node and runs there, sparing pods whose PodDisruptionBudget is exhausted
//! where it can; `preemptionPolicy: Never` and equal priorities do not preempt.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
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

/// Creates a PodDisruptionBudget over pods labelled `app: <app>` whose status, as the
/// disruption controller would write it, allows no further disruption.
async fn exhausted_budget(c: &Cluster, app: &str) {
    let api: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), "default");
    let pdb = json!({
        "metadata": {"name": app},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}}
    });
    api.create(
        &PostParams::default(),
        &serde_json::from_value(pdb).unwrap(),
    )
    .await
    .unwrap();
    let status = json!({"status": {
        "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1
    }});
    api.patch_status(app, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// Names of the pods in `default` not being deleted.
async fn live_pods(c: &Cluster) -> Vec<String> {
    c.pods()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect()
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

#[tokio::test]
async fn preemption_prefers_nodes_where_no_disruption_budget_is_violated() {
    let mut c = Cluster::without_scheduler().await;
    priority_class(&c, "lowest", 100, false).await;
    priority_class(&c, "low", 200, false).await;
    priority_class(&c, "high", 1000, false).await;
    exhausted_budget(&c, "guarded").await;
    c.start_scheduler();
    c.node("n1", "1", "4Gi", json!({})).await;
    c.node("n2", "1", "4Gi", json!({})).await;
    let on = |node: &str, class: &str, app: &str| json!({"metadata": {"labels": {"app": app}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "priorityClassName": class}});
    // By priority alone n1's victim is the cheaper one; its budget is exhausted though.
    c.pod("guarded", "1", "", on("n1", "lowest", "guarded"))
        .await;
    c.pod("free", "1", "", on("n2", "low", "free")).await;
    c.bound("guarded").await;
    c.bound("free").await;
    let agent = finish_deleted_pods(&c);

    let high = json!({"spec": {"priorityClassName": "high"}});
    c.pod("urgent", "1", "", high.clone()).await;
    assert_eq!(c.bound("urgent").await, "n2");
    let mut live = live_pods(&c).await;
    live.sort();
    assert_eq!(live, ["guarded", "urgent"]);

    // Budgets are honoured on a best-effort basis: when only protected pods can make
    // room, they are preempted all the same.
    c.pod("urgent-2", "1", "", high).await;
    assert_eq!(c.bound("urgent-2").await, "n1");
    let mut live = live_pods(&c).await;
    live.sort();
    assert_eq!(live, ["urgent", "urgent-2"]);
    c.event("guarded", "Preempted").await;
    agent.abort();
}

#[tokio::test]
async fn pods_a_disruption_budget_protects_are_reprieved_first() {
    let mut c = Cluster::without_scheduler().await;
    priority_class(&c, "lowest", 100, false).await;
    priority_class(&c, "low", 200, false).await;
    priority_class(&c, "high", 1000, false).await;
    exhausted_budget(&c, "protected").await;
    c.start_scheduler();
    c.node("n1", "2", "4Gi", json!({})).await;
    // Without the budget, the more important `senior` would be spared and `protected`
    // evicted.
    c.pod(
        "protected",
        "1",
        "",
        json!({"metadata": {"labels": {"app": "protected"}}, "spec": {"priorityClassName": "lowest"}}),
    )
    .await;
    c.pod(
        "senior",
        "1",
        "",
        json!({"spec": {"priorityClassName": "low"}}),
    )
    .await;
    c.bound("protected").await;
    c.bound("senior").await;
    let agent = finish_deleted_pods(&c);
    c.pod(
        "urgent",
        "1",
        "",
        json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    assert_eq!(c.bound("urgent").await, "n1");
    let mut live = live_pods(&c).await;
    live.sort();
    assert_eq!(live, ["protected", "urgent"]);
    agent.abort();
}
