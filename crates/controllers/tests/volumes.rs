//! PersistentVolumeClaims with the controllers and the scheduler: the default
//! `local-path` class, provisioning on the node the scheduler picked, binding of
//! provisioned and hand-made volumes, and deletion through a helper pod.

mod common;

use std::time::Duration;

use common::{Cluster, Options, wait_for};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

fn phase_of_claim(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.status.as_ref()?.phase.as_deref()
}

fn phase_of_volume(pv: &PersistentVolume) -> Option<&str> {
    pv.status.as_ref()?.phase.as_deref()
}

async fn create_claim(
    api: &Api<PersistentVolumeClaim>,
    claim: serde_json::Value,
) -> PersistentVolumeClaim {
    api.create(
        &PostParams::default(),
        &serde_json::from_value(claim).expect("claim"),
    )
    .await
    .expect("create claim")
}

/// A Ready node publishing its storage directory, as the agent registers it.
async fn node(client: &kube::Client, name: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
            "annotations": {"kumo.dev/storage-dir": format!("/var/lib/kumo/{name}/storage")}},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
}

#[tokio::test]
async fn claims_get_the_default_class_unless_they_name_one() {
    let cluster = Cluster::start().await;
    let class = Api::<StorageClass>::all(cluster.client.clone())
        .get("local-path")
        .await
        .expect("the default class exists from the start");
    assert_eq!(class.provisioner, "kumo.dev/local-path");
    assert_eq!(
        class.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(
        class
            .annotations()
            .get("storageclass.kubernetes.io/is-default-class"),
        Some(&"true".to_owned())
    );
    let claims = Api::<PersistentVolumeClaim>::namespaced(cluster.client.clone(), "default");
    let spec =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
    let defaulted = create_claim(&claims, json!({"metadata": {"name": "a"}, "spec": spec})).await;
    assert_eq!(
        defaulted.spec.unwrap().storage_class_name.as_deref(),
        Some("local-path")
    );
    let mut no_class = spec.clone();
    no_class["storageClassName"] = json!("");
    let explicit = create_claim(
        &claims,
        json!({"metadata": {"name": "b"}, "spec": no_class}),
    )
    .await;
    assert_eq!(
        explicit.spec.unwrap().storage_class_name.as_deref(),
        Some("")
    );
    // Unmarking the class: new claims stay without one.
    Api::<StorageClass>::all(cluster.client.clone())
        .patch(
            "local-path",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "false"}}})),
        )
        .await
        .unwrap();
    let plain = wait_for(
        TIMEOUT,
        "a claim created without a default class",
        || async {
            let name = format!("c-{}", rand_suffix());
            let created =
                create_claim(&claims, json!({"metadata": {"name": name}, "spec": spec})).await;
            created
                .spec
                .clone()
                .unwrap()
                .storage_class_name
                .is_none()
                .then_some(created)
        },
    )
    .await;
    assert_eq!(plain.spec.unwrap().storage_class_name, None);
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

#[tokio::test]
async fn local_path_volumes_are_provisioned_on_the_consumers_node_and_deleted_with_the_claim() {
    let cluster = Cluster::start_with(Options {
        scheduler: true,
        ..Options::default()
    })
    .await;
    let client = cluster.client.clone();
    node(&client, "n1").await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default");
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let claim = create_claim(
        &claims,
        json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}}}}),
    )
    .await;
    let uid = claim.uid().unwrap();
    // No consumer yet: nothing is provisioned.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        volumes
            .get_opt(&format!("pvc-{uid}"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        phase_of_claim(&claims.get("data").await.unwrap()),
        Some("Pending")
    );

    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "consumer"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let bound = wait_for(TIMEOUT, "the claim bound", || async {
        let pvc = claims.get("data").await.ok()?;
        (phase_of_claim(&pvc) == Some("Bound")).then_some(pvc)
    })
    .await;
    let pv_name = format!("pvc-{uid}");
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(pv_name.as_str())
    );
    assert_eq!(
        bound
            .annotations()
            .get("volume.kubernetes.io/selected-node"),
        Some(&"n1".to_owned())
    );
    let status = bound.status.clone().unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "2Gi");
    assert_eq!(status.access_modes.unwrap(), ["ReadWriteOnce"]);

    let pv = wait_for(TIMEOUT, "the volume bound", || async {
        let pv = volumes.get(&pv_name).await.ok()?;
        (phase_of_volume(&pv) == Some("Bound")).then_some(pv)
    })
    .await;
    assert_eq!(
        pv.annotations().get("pv.kubernetes.io/provisioned-by"),
        Some(&"kumo.dev/local-path".to_owned())
    );
    let spec = pv.spec.clone().unwrap();
    assert_eq!(
        spec.local.unwrap().path,
        format!("/var/lib/kumo/n1/storage/pvc-{uid}_default_data")
    );
    assert_eq!(spec.capacity.unwrap()["storage"].0, "2Gi");
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
    let claim_ref = spec.claim_ref.unwrap();
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(claim_ref.uid.as_deref(), Some(uid.as_str()));
    let term = &spec
        .node_affinity
        .unwrap()
        .required
        .unwrap()
        .node_selector_terms[0];
    let expr = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(expr.key, "kubernetes.io/hostname");
    assert_eq!(expr.values.as_deref().unwrap(), ["n1"]);

    // The claim goes: the volume is released and a helper pod on n1 removes the directory.
    pods.delete("consumer", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    let helpers = Api::<Pod>::namespaced(client.clone(), "kube-system");
    let helper_name = format!("helper-pod-delete-{pv_name}");
    let helper = wait_for(TIMEOUT, "the helper pod", || async {
        helpers.get_opt(&helper_name).await.ok().flatten()
    })
    .await;
    assert_eq!(
        phase_of_volume(&volumes.get(&pv_name).await.unwrap()),
        Some("Released")
    );
    let helper_spec = helper.spec.unwrap();
    assert_eq!(helper_spec.node_name.as_deref(), Some("n1"));
    assert_eq!(
        helper_spec.volumes.unwrap()[0]
            .host_path
            .as_ref()
            .unwrap()
            .path,
        "/var/lib/kumo/n1/storage"
    );
    assert_eq!(
        helper_spec.containers[0].command.as_deref().unwrap(),
        ["rm", "-rf", &format!("/data/pvc-{uid}_default_data")]
    );
    // The volume stays until the directory is gone; then both go. (This test has no
    // node agent: it reports the helper's success as n1's agent would.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(volumes.get_opt(&pv_name).await.unwrap().is_some());
    helpers
        .patch_status(
            &helper_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    wait_for(TIMEOUT, "the volume and its helper gone", || async {
        let pv_gone = volumes.get_opt(&pv_name).await.ok()?.is_none();
        let helper_gone = helpers.get_opt(&helper_name).await.ok()?.is_none();
        (pv_gone && helper_gone).then_some(())
    })
    .await;
}

#[tokio::test]
async fn hand_made_volumes_bind_to_matching_claims() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default");
    for (name, size, class) in [
        ("small", "1Gi", ""),
        ("large", "5Gi", ""),
        ("fast", "1Gi", "fast"),
    ] {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": class, "hostPath": {"path": format!("/tmp/{name}")}}
        }))
        .unwrap();
        volumes.create(&PostParams::default(), &pv).await.unwrap();
    }
    wait_for(TIMEOUT, "volumes Available", || async {
        let list = volumes.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .all(|pv| phase_of_volume(pv) == Some("Available"))
            .then_some(())
    })
    .await;
    // No class: the smallest volume without a class that fits.
    create_claim(
        &claims,
        json!({"metadata": {"name": "two"}, "spec": {"storageClassName": "", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}}}}),
    )
    .await;
    // By name.
    create_claim(
        &claims,
        json!({"metadata": {"name": "named"}, "spec": {"storageClassName": "fast", "volumeName": "fast",
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    // Nothing fits: stays Pending with an event.
    create_claim(
        &claims,
        json!({"metadata": {"name": "huge"}, "spec": {"storageClassName": "", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "50Gi"}}}}),
    )
    .await;
    for (claim, volume) in [("two", "large"), ("named", "fast")] {
        wait_for(TIMEOUT, &format!("{claim} bound to {volume}"), || async {
            let pvc = claims.get(claim).await.ok()?;
            let pv = volumes.get(volume).await.ok()?;
            let claim_ref = pv.spec.as_ref()?.claim_ref.as_ref()?;
            (phase_of_claim(&pvc) == Some("Bound")
                && pvc.spec.as_ref()?.volume_name.as_deref() == Some(volume)
                && phase_of_volume(&pv) == Some("Bound")
                && claim_ref.uid == pvc.metadata.uid)
                .then_some(())
        })
        .await;
    }
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), "default");
    let note = wait_for(TIMEOUT, "FailedBinding for huge", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            (e.regarding.as_ref()?.name.as_deref()? == "huge"
                && e.reason.as_deref() == Some("FailedBinding"))
            .then(|| e.note.unwrap_or_default())
        })
    })
    .await;
    assert_eq!(
        note,
        "no persistent volumes available for this claim and no storage class is set"
    );
    assert_eq!(
        phase_of_claim(&claims.get("huge").await.unwrap()),
        Some("Pending")
    );
    assert_eq!(
        phase_of_volume(&volumes.get("small").await.unwrap()),
        Some("Available")
    );

    // Deleting a claim releases its volume (Retain, the default for hand-made ones: kept).
    claims
        .delete("two", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(TIMEOUT, "large Released", || async {
        let pv = volumes.get("large").await.ok()?;
        (phase_of_volume(&pv) == Some("Released")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(volumes.get_opt("large").await.unwrap().is_some());
}
