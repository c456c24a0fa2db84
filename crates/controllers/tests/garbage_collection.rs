//! The garbage collector against a real API server: background deletion of dependents,
//! dependents with several owners, foreground deletion through `blockOwnerDeletion` chains,
//! orphaning, and custom resources (owners and dependents alike).

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

fn owner_ref(owner: &ConfigMap, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        block_owner_deletion: Some(block),
        controller: None,
    }
}

async fn config_map(
    api: &Api<ConfigMap>,
    name: &str,
    owners: Vec<OwnerReference>,
    finalizers: &[&str],
) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.owner_references = Some(owners).filter(|o| !o.is_empty());
    cm.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect())
        .filter(|f: &Vec<_>| !f.is_empty());
    api.create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    wait_for(TIMEOUT, &format!("{name} to be deleted"), || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}

/// Checks for a while that `name` stays.
async fn stays(api: &Api<ConfigMap>, name: &str) -> ConfigMap {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{name} should still exist: {e}"))
}

fn configmaps(client: &Client) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), "default")
}

#[tokio::test]
async fn background_deletion_and_several_owners() {
    let cluster = Cluster::start().await;
    let api = configmaps(&cluster.client);
    let owner = config_map(&api, "bg-owner", vec![], &[]).await;
    config_map(&api, "bg-a", vec![owner_ref(&owner, false)], &[]).await;
    config_map(&api, "bg-b", vec![owner_ref(&owner, true)], &[]).await;
    let other = config_map(&api, "bg-other", vec![], &[]).await;
    config_map(
        &api,
        "bg-shared",
        vec![owner_ref(&owner, false), owner_ref(&other, false)],
        &[],
    )
    .await;
    // A dependent whose owner never existed goes too.
    let mut ghost = owner_ref(&owner, false);
    ghost.name = "ghost".into();
    ghost.uid = "00000000-0000-0000-0000-000000000001".into();
    config_map(&api, "bg-orphaned-at-birth", vec![ghost], &[]).await;

    // Deleting the owner without a policy is a background deletion: it goes at once.
    api.delete("bg-owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    assert!(api.get_opt("bg-owner").await.expect("get").is_none());
    wait_gone(&api, "bg-a").await;
    wait_gone(&api, "bg-b").await;
    wait_gone(&api, "bg-orphaned-at-birth").await;
    // A dependent with a live owner stays; the dangling reference is removed.
    let shared = wait_for(TIMEOUT, "the dangling reference to go", || async {
        let cm = api.get("bg-shared").await.ok()?;
        (cm.owner_references().len() == 1).then_some(cm)
    })
    .await;
    assert_eq!(
        shared.owner_references()[0].uid,
        other.uid().unwrap_or_default()
    );
    api.delete("bg-other", &DeleteParams::background())
        .await
        .expect("delete other");
    wait_gone(&api, "bg-shared").await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let cluster = Cluster::start().await;
    let api = configmaps(&cluster.client);
    let owner = config_map(&api, "or-owner", vec![], &[]).await;
    let other = config_map(&api, "or-other", vec![], &[]).await;
    config_map(&api, "or-a", vec![owner_ref(&owner, true)], &[]).await;
    config_map(
        &api,
        "or-b",
        vec![owner_ref(&owner, false), owner_ref(&other, false)],
        &[],
    )
    .await;
    api.delete("or-owner", &DeleteParams::orphan())
        .await
        .expect("delete owner");
    wait_gone(&api, "or-owner").await;
    let a = stays(&api, "or-a").await;
    assert!(a.owner_references().is_empty(), "{a:?}");
    let b = api.get("or-b").await.expect("or-b");
    assert_eq!(
        b.owner_references()
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        vec!["or-other"]
    );
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let cluster = Cluster::start().await;
    let api = configmaps(&cluster.client);
    let owner = config_map(&api, "fg-owner", vec![], &[]).await;
    let child = config_map(&api, "fg-child", vec![owner_ref(&owner, true)], &[]).await;
    config_map(&api, "fg-free", vec![owner_ref(&owner, false)], &[]).await;
    // The grandchild holds the chain with a finalizer of its own.
    config_map(
        &api,
        "fg-grandchild",
        vec![owner_ref(&child, true)],
        &["example.com/hold"],
    )
    .await;

    api.delete("fg-owner", &DeleteParams::foreground())
        .await
        .expect("delete owner");
    let marked = api.get("fg-owner").await.expect("owner kept");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    // Non-blocking dependents are deleted too.
    wait_gone(&api, "fg-free").await;
    // The child has dependents of its own, so it is deleted in the foreground as well.
    wait_for(TIMEOUT, "the grandchild to be marked", || async {
        let cm = api.get("fg-grandchild").await.ok()?;
        cm.metadata.deletion_timestamp.is_some().then_some(())
    })
    .await;
    let child = stays(&api, "fg-child").await;
    assert!(child.metadata.deletion_timestamp.is_some());
    assert!(child.finalizers().iter().any(|f| f == "foregroundDeletion"));
    assert!(api.get("fg-owner").await.is_ok(), "the owner waits");

    api.patch(
        "fg-grandchild",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the grandchild");
    wait_gone(&api, "fg-grandchild").await;
    wait_gone(&api, "fg-child").await;
    wait_gone(&api, "fg-owner").await;

    // An owner without dependents goes at once, finalizer removed by the collector.
    config_map(&api, "fg-alone", vec![], &[]).await;
    api.delete("fg-alone", &DeleteParams::foreground())
        .await
        .expect("delete");
    wait_gone(&api, "fg-alone").await;
}

#[tokio::test]
async fn custom_resources_are_owners_and_dependents() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.gc.example.com"},
        "spec": {
            "group": "gc.example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("crd");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create crd");
    let ar = ApiResource {
        group: "gc.example.com".into(),
        version: "v1".into(),
        api_version: "gc.example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let api = configmaps(&client);

    // A widget owned by a config map.
    let owner = config_map(&api, "cr-owner", vec![], &[]).await;
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gc.example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "owned", "ownerReferences": [owner_ref(&owner, true)]},
        "spec": {"size": 1}
    }))
    .expect("widget");
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .expect("create widget");
    // A config map owned by a widget.
    let parent: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gc.example.com/v1", "kind": "Widget", "metadata": {"name": "parent"}
    }))
    .expect("widget");
    let parent = widgets
        .create(&PostParams::default(), &parent)
        .await
        .expect("create parent");
    let by_widget = OwnerReference {
        api_version: "gc.example.com/v1".into(),
        kind: "Widget".into(),
        name: "parent".into(),
        uid: parent.uid().unwrap_or_default(),
        block_owner_deletion: Some(true),
        controller: Some(true),
    };
    config_map(&api, "cr-child", vec![by_widget], &[]).await;

    api.delete("cr-owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    wait_gone(&widgets, "owned").await;
    widgets
        .delete("parent", &DeleteParams::foreground())
        .await
        .expect("delete parent");
    wait_gone(&api, "cr-child").await;
    wait_gone(&widgets, "parent").await;
}
