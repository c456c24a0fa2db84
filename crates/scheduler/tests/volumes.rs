//! VolumeBinding end to end over the in-process API server: claims that wait for their
//! first consumer learn its node, bound local volumes pin pods to their node, and a
//! missing claim keeps the pod pending with upstream's reason.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

async fn claim(c: &Cluster, name: &str, class: &str) {
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create claim");
}

fn uses(claim: &str) -> serde_json::Value {
    json!({"spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

#[tokio::test]
async fn a_waiting_claim_learns_the_node_of_its_first_consumer() {
    let c = Cluster::start().await;
    c.node("n1", "4", "8Gi", json!({})).await;
    c.node("n2", "4", "8Gi", json!({})).await;
    // local-path is the default class every cluster starts with (WaitForFirstConsumer).
    claim(&c, "data", "local-path").await;
    c.pod("consumer", "100m", "", uses("data")).await;
    let node = c.bound("consumer").await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default");
    let pvc = claims.get("data").await.unwrap();
    assert_eq!(
        pvc.metadata
            .annotations
            .unwrap_or_default()
            .get("volume.kubernetes.io/selected-node"),
        Some(&node),
        "the claim names the pod's node"
    );
}

#[tokio::test]
async fn a_bound_local_volume_pins_the_pod_to_its_node() {
    let c = Cluster::start().await;
    for n in ["n1", "n2", "n3"] {
        c.node(
            n,
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"kubernetes.io/hostname": n}}}),
        )
        .await;
    }
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "on-n2"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual", "local": {"path": "/mnt/disk"},
            "claimRef": {"namespace": "default", "name": "pinned"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}
    }))
    .unwrap();
    Api::<PersistentVolume>::all(c.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    // Bound as the binder would bind it.
    let claims = Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "pinned"},
        "spec": {"storageClassName": "manual", "volumeName": "on-n2", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    claims.create(&PostParams::default(), &pvc).await.unwrap();
    claims
        .patch_status(
            "pinned",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .unwrap();
    for i in 0..4 {
        let name = format!("reader{i}");
        c.pod(&name, "100m", "", uses("pinned")).await;
        assert_eq!(c.bound(&name).await, "n2");
    }
    // A node selector that excludes n2 leaves the pod nowhere to go.
    let mut extra = uses("pinned");
    extra["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "n1"});
    c.pod("conflicted", "100m", "", extra).await;
    let message = c.unschedulable("conflicted").await;
    assert!(
        message.contains("1 node(s) had volume node affinity conflict"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_claim_keeps_the_pod_pending_until_it_exists() {
    let c = Cluster::start().await;
    c.node("n1", "4", "8Gi", json!({})).await;
    c.pod("waiting", "100m", "", uses("later")).await;
    let message = c.unschedulable("waiting").await;
    assert!(
        message.starts_with("0/1 nodes are available: persistentvolumeclaim \"later\" not found."),
        "{message}"
    );
    let note = c.event("waiting", "FailedScheduling").await;
    assert!(
        note.contains("persistentvolumeclaim \"later\" not found"),
        "{note}"
    );
    // An unbound claim of an immediate class is no better.
    Api::<k8s_openapi::api::storage::v1::StorageClass>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "immediate"}, "provisioner": "example.com/x"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    claim(&c, "later", "immediate").await;
    wait_for(
        Duration::from_secs(20),
        "the immediate-claim reason",
        || async {
            let pod = c.pods().get("waiting").await.ok()?;
            let conditions = pod.status?.conditions?;
            let message = conditions
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?
                .message?;
            message
                .contains("pod has unbound immediate PersistentVolumeClaims")
                .then_some(())
        },
    )
    .await;
    assert_eq!(c.node_of("waiting").await, None);
    // Once bound, the pod schedules.
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "pv-later"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "immediate", "hostPath": {"path": "/tmp/x"}}
    }))
    .unwrap();
    Api::<PersistentVolume>::all(c.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default")
        .patch(
            "later",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeName": "pv-later"}})),
        )
        .await
        .unwrap();
    assert_eq!(c.bound("waiting").await, "n1");
}
