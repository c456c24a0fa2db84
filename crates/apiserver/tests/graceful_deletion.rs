//! Graceful pod deletion through the whole request pipeline, in process: a second delete
//! may only shorten the grace period (moving `deletionTimestamp` earlier), grace 0 removes
//! the pod, and pods on no node go at once.

use apiserver::testing::InProcess;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn create_pod(pods: &Api<Pod>, name: &str, node: Option<&str>, finalizers: &[&str]) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .expect("create pod")
}

fn grace(pod: &Pod) -> Option<i64> {
    pod.metadata.deletion_grace_period_seconds
}

fn deletion_timestamp(pod: &Pod) -> jiff::Timestamp {
    pod.metadata
        .deletion_timestamp
        .as_ref()
        .expect("deletionTimestamp")
        .0
}

async fn delete(pods: &Api<Pod>, name: &str, grace: Option<u32>) {
    let params = DeleteParams {
        grace_period_seconds: grace,
        ..Default::default()
    };
    pods.delete(name, &params).await.expect("delete");
}

#[tokio::test]
async fn a_second_delete_shortens_the_grace_period_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    create_pod(&pods, "web", Some("node-1"), &[]).await;

    let before = jiff::Timestamp::now();
    delete(&pods, "web", Some(300)).await;
    let first = pods.get("web").await.expect("still there, terminating");
    assert_eq!(grace(&first), Some(300));
    let first_deadline = deletion_timestamp(&first);
    let seconds_ahead = (first_deadline - before).get_seconds();
    assert!((298..=302).contains(&seconds_ahead), "{seconds_ahead}");

    // Longer, equal or no grace period: nothing changes, not even the resourceVersion.
    for longer in [Some(600), Some(300), None] {
        delete(&pods, "web", longer).await;
        let unchanged = pods.get("web").await.unwrap();
        assert_eq!(
            unchanged.metadata.resource_version,
            first.metadata.resource_version
        );
        assert_eq!(grace(&unchanged), Some(300));
    }

    // Shorter: the deadline moves to the first deletion's time plus the new period.
    delete(&pods, "web", Some(2)).await;
    let shortened = pods.get("web").await.unwrap();
    assert_eq!(grace(&shortened), Some(2));
    assert_eq!(
        deletion_timestamp(&shortened),
        first_deadline - jiff::SignedDuration::from_secs(298)
    );

    // Grace 0 (kubectl's --force --grace-period=0): gone from the store at once.
    delete(&pods, "web", Some(0)).await;
    assert!(pods.get_opt("web").await.unwrap().is_none());
}

#[tokio::test]
async fn pods_on_no_node_go_at_once_and_finalizers_hold_a_forced_pod() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(dir.path()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");

    create_pod(&pods, "unscheduled", None, &[]).await;
    delete(&pods, "unscheduled", Some(300)).await;
    assert!(
        pods.get_opt("unscheduled").await.unwrap().is_none(),
        "no node has anything to stop"
    );

    create_pod(&pods, "held", Some("node-1"), &["example.com/hold"]).await;
    delete(&pods, "held", Some(300)).await;
    delete(&pods, "held", Some(0)).await;
    let held = pods.get("held").await.expect("the finalizer holds it");
    assert_eq!(grace(&held), Some(0));
    pods.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(pods.get_opt("held").await.unwrap().is_none());
}
