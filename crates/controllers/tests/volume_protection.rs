//! Storage object in-use protection with the controllers running: new claims and volumes
//! get their protection finalizer at admission; a deleted claim stays (Terminating) while
//! a scheduled pod uses it and goes once the pod is gone; a deleted volume stays while it
//! is bound and goes once its claim is gone and the binder released it.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn create<K>(api: &Api<K>, obj: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj).expect("object"),
    )
    .await
    .expect("create")
}

fn claim(name: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"],
        "storageClassName": "manual", "resources": {"requests": {"storage": "1Gi"}}}})
}

fn pod(name: &str, claim: &str, node: Option<&str>) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {
        "nodeName": node,
        "containers": [{"name": "app", "image": "busybox"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

fn volume(name: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
        "hostPath": {"path": format!("/tmp/{name}")}}})
}

/// Waits until the object is gone.
async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(TIMEOUT, &format!("{name} to be deleted"), || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// Waits until the binder has marked a new volume Available (a claim created earlier
/// would wait for the binder's periodic resync).
async fn wait_available(volumes: &Api<PersistentVolume>, name: &str) {
    wait_for(TIMEOUT, &format!("{name} to be Available"), || async {
        let pv = volumes.get(name).await.unwrap();
        (pv.status?.phase.as_deref() == Some("Available")).then_some(())
    })
    .await;
}

/// Checks, for a while, that a deleted object stays, Terminating with its finalizer.
async fn assert_held<K>(api: &Api<K>, name: &str, finalizer: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // Long enough for the protection loops to have acted on the deletion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = api
        .get_opt(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name} should be held"));
    assert!(held.meta().deletion_timestamp.is_some(), "{held:?}");
    assert_eq!(held.finalizers(), [finalizer]);
}

#[tokio::test]
async fn claims_stay_while_a_scheduled_pod_uses_them() {
    let cluster = Cluster::start().await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(cluster.client.clone(), "default");
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default");

    let used: PersistentVolumeClaim = create(&claims, claim("used")).await;
    assert_eq!(used.finalizers(), ["kubernetes.io/pvc-protection"]);
    create::<PersistentVolumeClaim>(&claims, claim("unused")).await;
    create::<PersistentVolumeClaim>(&claims, claim("waiting")).await;
    create::<Pod>(&pods, pod("user", "used", Some("node-1"))).await;
    // Not scheduled yet: the scheduler refuses claims being deleted, so it holds nothing.
    create::<Pod>(&pods, pod("pending", "waiting", None)).await;

    claims
        .delete("used", &DeleteParams::default())
        .await
        .unwrap();
    claims
        .delete("unused", &DeleteParams::default())
        .await
        .unwrap();
    claims
        .delete("waiting", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&claims, "unused").await;
    wait_gone(&claims, "waiting").await;
    assert_held(&claims, "used", "kubernetes.io/pvc-protection").await;

    pods.delete("user", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_gone(&claims, "used").await;
}

#[tokio::test]
async fn volumes_stay_while_bound() {
    let cluster = Cluster::start().await;
    let volumes = Api::<PersistentVolume>::all(cluster.client.clone());
    let claims = Api::<PersistentVolumeClaim>::namespaced(cluster.client.clone(), "default");

    let bound: PersistentVolume = create(&volumes, volume("bound")).await;
    assert_eq!(bound.finalizers(), ["kubernetes.io/pv-protection"]);
    wait_available(&volumes, "bound").await;
    create::<PersistentVolumeClaim>(&claims, claim("data")).await;
    wait_for(TIMEOUT, "the volume to bind", || async {
        let pv = volumes.get("bound").await.unwrap();
        (pv.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;

    volumes
        .delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    assert_held(&volumes, "bound", "kubernetes.io/pv-protection").await;

    create::<PersistentVolume>(&volumes, volume("free")).await;
    wait_available(&volumes, "free").await;
    volumes
        .delete("free", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&volumes, "free").await;

    // No pod uses the claim: it goes, the binder releases the volume, and the volume goes.
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&claims, "data").await;
    wait_gone(&volumes, "bound").await;
}
