//! Per-namespace defaults: every namespace gets the `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap, and gets them back when they are deleted or edited.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);
const CA: &str = "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n";

#[tokio::test]
async fn namespaces_get_default_service_account_and_root_ca() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-a"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    let uid = wait_for(TIMEOUT, "the default service account", || async {
        sas.get_opt("default")
            .await
            .ok()
            .flatten()
            .and_then(|sa| sa.uid())
    })
    .await;
    let cm = wait_for(TIMEOUT, "kube-root-ca.crt", || async {
        cms.get_opt("kube-root-ca.crt").await.ok().flatten()
    })
    .await;
    assert_eq!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .map(String::as_str),
        Some(CA)
    );
    // Built-in namespaces get them too.
    let system: Api<ServiceAccount> = Api::namespaced(client.clone(), "kube-system");
    wait_for(TIMEOUT, "kube-system's default service account", || async {
        system.get_opt("default").await.ok().flatten()
    })
    .await;

    // Deleted: created again (a new object).
    sas.delete("default", &DeleteParams::default())
        .await
        .expect("delete sa");
    wait_for(TIMEOUT, "the service account to come back", || async {
        let sa = sas.get_opt("default").await.ok().flatten()?;
        (sa.uid() != Some(uid.clone())).then_some(())
    })
    .await;
    cms.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .expect("delete cm");
    wait_for(TIMEOUT, "the CA config map to come back", || async {
        cms.get_opt("kube-root-ca.crt").await.ok().flatten()
    })
    .await;
    // Edited: restored.
    cms.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ca.crt": "forged", "extra": "x"}})),
    )
    .await
    .expect("edit cm");
    wait_for(TIMEOUT, "the CA config map to be restored", || async {
        let cm = cms.get("kube-root-ca.crt").await.ok()?;
        let data = cm.data?;
        (data.len() == 1 && data.get("ca.crt").map(String::as_str) == Some(CA)).then_some(())
    })
    .await;

    // A terminating namespace is left alone, and deleting it is not blocked.
    namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .expect("delete ns");
    wait_for(TIMEOUT, "the namespace to go", || async {
        namespaces
            .get_opt("team-a")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
