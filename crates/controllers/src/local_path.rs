//! The local-path provisioner, as k3s ships it (rancher's local-path-provisioner): a
//! claim of a class whose provisioner is [`PROVISIONER`] gets a volume on the disk of the
//! node the scheduler picked for its first consumer.
//!
//! Provisioning waits for the scheduler's `volume.kubernetes.io/selected-node`
//! annotation, then creates a `local` PersistentVolume at
//! `<storage dir>/pvc-<uid>_<namespace>_<name>` with node affinity to that node and a
//! `claimRef` to the claim; the binder ([`crate::persistent_volume`]) completes the
//! binding. The node publishes its storage directory in the [`STORAGE_DIR_ANNOTATION`]
//! of its Node; the agent creates the directory (mode 0777) when a pod first mounts it.
//!
//! Deletion: once the binder marks a volume of reclaim policy Delete Released, the
//! directory must go, and it lives on the node. As upstream's provisioner does, a helper
//! pod bound to that node removes it through a hostPath mount of the storage directory;
//! once the pod succeeded the volume object is deleted, so a volume never disappears
//! while its data is still on disk, and the node needs no new permissions (it only runs
//! a pod, as for any other).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, HostPathVolumeSource, LocalVolumeSource, Node, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeSpec, Pod, PodSpec, Toleration, Volume, VolumeMount,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{self, Action, ReconcileRequest, trigger_self, trigger_with};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, watcher};
use kube::{Resource, ResourceExt};

use crate::endpoints::informer;
use crate::persistent_volume::{PROVISIONED_BY, SELECTED_NODE, class_of};
use crate::workloads::event;
use crate::{Context, FIELD_MANAGER};

/// The provisioner name of the classes this loop serves.
pub const PROVISIONER: &str = "kumo.dev/local-path";
/// The Node annotation holding the node's storage directory (written by the agent).
pub const STORAGE_DIR_ANNOTATION: &str = "kumo.dev/storage-dir";
/// The image of the helper pods: the busybox every kumo node has built in (the agent's
/// `images::BUSYBOX_IMAGE`).
pub const HELPER_IMAGE: &str = "kumo.local/busybox:1";
/// Where helper pods run.
pub const HELPER_NAMESPACE: &str = "kube-system";
/// The label naming the volume a helper pod works for.
const HELPER_LABEL: &str = "kumo.dev/local-path-volume";
/// The node label that volumes' node affinity uses.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

struct State {
    client: kube::Client,
    classes: Store<StorageClass>,
    volumes: Store<PersistentVolume>,
    helpers: Store<Pod>,
    recorder: Recorder,
}

/// Runs the provisioner until it fails.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (claims, claim_events) = informer(Api::<PersistentVolumeClaim>::all(client.clone()));
    let (volumes, volume_events) = informer(Api::<PersistentVolume>::all(client.clone()));
    let (classes, class_events) = informer(Api::<StorageClass>::all(client.clone()));
    let (helpers, helper_writer) = kube::runtime::reflector::store();
    let helper_events = kube::runtime::reflector::reflector(
        helper_writer,
        watcher(
            Api::<Pod>::namespaced(client.clone(), HELPER_NAMESPACE),
            watcher::Config::default().labels(HELPER_LABEL),
        )
        .default_backoff(),
    )
    .touched_objects();
    let state = Arc::new(State {
        client: client.clone(),
        classes,
        volumes: volumes.clone(),
        helpers,
        recorder: ctx.recorder("local-path-provisioner"),
    });
    let claim_queue = futures::stream::select_all([
        trigger_self(claim_events, ()).boxed(),
        // A class created after its claims lets them be provisioned.
        trigger_with(class_events, {
            let claims = claims.clone();
            move |_: StorageClass| {
                claims
                    .state()
                    .into_iter()
                    .map(|c| ReconcileRequest::from(ObjectRef::from_obj(c.as_ref())))
                    .collect::<Vec<_>>()
            }
        })
        .boxed(),
    ]);
    let volume_queue = futures::stream::select_all([
        trigger_self(volume_events, ()).boxed(),
        trigger_with(helper_events, |pod: Pod| {
            pod.labels()
                .get(HELPER_LABEL)
                .map(|pv| ReconcileRequest::from(ObjectRef::<PersistentVolume>::new(pv)))
        })
        .boxed(),
    ]);
    let provisioning = applier(
        |pvc, state: Arc<State>| Box::pin(async move { provision(&pvc, &state).await }),
        |_, e: &Error, _| {
            tracing::debug!(error = %e, "local-path: provisioning failed");
            Action::requeue(Duration::from_secs(2))
        },
        state.clone(),
        claims,
        claim_queue,
        controller::Config::default(),
    )
    .for_each(|_| async {});
    let deleting = applier(
        |pv, state: Arc<State>| Box::pin(async move { delete_released(&pv, &state).await }),
        |_, e: &Error, _| {
            tracing::debug!(error = %e, "local-path: deleting a volume failed");
            Action::requeue(Duration::from_secs(2))
        },
        state,
        volumes,
        volume_queue,
        controller::Config::default(),
    )
    .for_each(|_| async {});
    futures::join!(provisioning, deleting);
    Ok(())
}

/// The volume's name for a claim, as upstream provisioners name them.
fn volume_name_for(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default())
}

async fn provision(pvc: &PersistentVolumeClaim, state: &State) -> Result<Action> {
    let bound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if pvc.metadata.deletion_timestamp.is_some() || bound {
        return Ok(Action::await_change());
    }
    let Some(class) = state.classes.get(&ObjectRef::new(class_of(pvc))) else {
        return Ok(Action::await_change());
    };
    if class.provisioner != PROVISIONER {
        return Ok(Action::await_change());
    }
    let Some(node_name) = pvc.annotations().get(SELECTED_NODE).cloned() else {
        return Ok(Action::await_change());
    };
    let pv_name = volume_name_for(pvc);
    if state.volumes.get(&ObjectRef::new(&pv_name)).is_some() {
        return Ok(Action::await_change());
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    let access_modes = spec.access_modes.clone().unwrap_or_default();
    if let Some(mode) = access_modes
        .iter()
        .find(|m| !matches!(m.as_str(), "ReadWriteOnce" | "ReadWriteOncePod"))
    {
        event(
            &state.recorder,
            pvc,
            true,
            "ProvisioningFailed",
            format!(
                "failed to provision volume with StorageClass \"{}\": NodePath only supports ReadWriteOnce and ReadWriteOncePod access modes, not {mode}",
                class.name_any()
            ),
        );
        return Ok(Action::await_change());
    }
    if spec
        .volume_mode
        .as_deref()
        .is_some_and(|m| m != "Filesystem")
    {
        event(
            &state.recorder,
            pvc,
            true,
            "ProvisioningFailed",
            "failed to provision volume: only volumeMode Filesystem is supported".into(),
        );
        return Ok(Action::await_change());
    }
    let node = Api::<Node>::all(state.client.clone())
        .get_opt(&node_name)
        .await?;
    let Some(storage_dir) = node
        .as_ref()
        .and_then(|n| n.annotations().get(STORAGE_DIR_ANNOTATION).cloned())
    else {
        event(
            &state.recorder,
            pvc,
            true,
            "ProvisioningFailed",
            format!(
                "failed to provision volume: node \"{node_name}\" does not publish a storage directory ({STORAGE_DIR_ANNOTATION})"
            ),
        );
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let namespace = pvc.namespace().unwrap_or_default();
    let claim_key = format!("{namespace}/{}", pvc.name_any());
    event(
        &state.recorder,
        pvc,
        false,
        "Provisioning",
        format!("External provisioner is provisioning volume for claim \"{claim_key}\""),
    );
    let path = format!(
        "{}/{pv_name}_{namespace}_{}",
        storage_dir.trim_end_matches('/'),
        pvc.name_any()
    );
    let capacity = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .map(|q| BTreeMap::from([("storage".to_owned(), q)]));
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_owned(),
                PROVISIONER.to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(access_modes),
            capacity,
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace.clone()),
                name: pvc.metadata.name.clone(),
                uid: pvc.metadata.uid.clone(),
                resource_version: pvc.metadata.resource_version.clone(),
                ..Default::default()
            }),
            local: Some(LocalVolumeSource {
                path: path.clone(),
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![hostname_of(node.as_ref(), &node_name)]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: Some(class.name_any()),
            mount_options: class.mount_options.clone(),
            volume_mode: Some("Filesystem".into()),
            ..Default::default()
        }),
        status: None,
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match Api::<PersistentVolume>::all(state.client.clone())
        .create(&params, &pv)
        .await
    {
        Ok(_) => {
            tracing::info!(claim = %claim_key, volume = %pv_name, node = %node_name, %path, "provisioned");
            event(
                &state.recorder,
                pvc,
                false,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {pv_name}"),
            );
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            event(
                &state.recorder,
                pvc,
                true,
                "ProvisioningFailed",
                format!(
                    "failed to provision volume with StorageClass \"{}\": {e}",
                    class.name_any()
                ),
            );
            return Err(e.into());
        }
    }
    Ok(Action::await_change())
}

/// The node's `kubernetes.io/hostname` label (its name when unlabelled).
fn hostname_of(node: Option<&Node>, name: &str) -> String {
    node.and_then(|n| n.labels().get(HOSTNAME_LABEL).cloned())
        .unwrap_or_else(|| name.to_owned())
}

/// Where a volume lives: its directory, and the node holding it.
fn location(pv: &PersistentVolume) -> Option<(String, String)> {
    let spec = pv.spec.as_ref()?;
    let path = spec
        .local
        .as_ref()
        .map(|l| l.path.clone())
        .or_else(|| spec.host_path.as_ref().map(|h| h.path.clone()))?;
    let node = spec
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == HOSTNAME_LABEL && e.operator == "In")?
        .values
        .as_ref()?
        .first()?
        .clone();
    Some((path, node))
}

fn helper_name(pv: &PersistentVolume) -> String {
    format!("helper-pod-delete-{}", pv.name_any())
}

/// Deletes a released volume of ours: a helper pod removes its directory, then the
/// volume object goes.
async fn delete_released(pv: &PersistentVolume, state: &State) -> Result<Action> {
    let ours = pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    if !ours || !released || policy != Some("Delete") || pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some((path, node)) = location(pv) else {
        event(
            &state.recorder,
            pv,
            true,
            "VolumeFailedDelete",
            "the volume has no path or node affinity to delete it by".into(),
        );
        return Ok(Action::await_change());
    };
    let path = std::path::Path::new(&path);
    let (Some(parent), Some(dir)) = (path.parent(), path.file_name().and_then(|f| f.to_str()))
    else {
        return Ok(Action::await_change());
    };
    let pods = Api::<Pod>::namespaced(state.client.clone(), HELPER_NAMESPACE);
    let name = helper_name(pv);
    let helper = state
        .helpers
        .get(&ObjectRef::new(&name).within(HELPER_NAMESPACE));
    let phase = helper
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.clone());
    match phase.as_deref() {
        None => {
            let pod = helper_pod(pv, &name, &node, &parent.display().to_string(), dir);
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => {
                    tracing::info!(volume = %pv.name_any(), %node, "removing the volume's directory")
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        Some("Succeeded") => {
            match Api::<PersistentVolume>::all(state.client.clone())
                .delete(&pv.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => tracing::info!(volume = %pv.name_any(), "deleted"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            delete_helper(&pods, &name).await?;
            Ok(Action::await_change())
        }
        Some("Failed") => {
            event(
                &state.recorder,
                pv,
                true,
                "VolumeFailedDelete",
                format!(
                    "helper pod {HELPER_NAMESPACE}/{name} failed to remove {}",
                    path.display()
                ),
            );
            delete_helper(&pods, &name).await?;
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Some(_) => Ok(Action::requeue(Duration::from_secs(30))),
    }
}

async fn delete_helper(pods: &Api<Pod>, name: &str) -> Result<()> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A pod on `node` that removes `dir` under `parent` (mounted at `/data`).
fn helper_pod(pv: &PersistentVolume, name: &str, node: &str, parent: &str, dir: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(HELPER_NAMESPACE.to_owned()),
            labels: Some(BTreeMap::from([(HELPER_LABEL.to_owned(), pv.name_any())])),
            // The volume owns its helper: should the volume go first, the garbage
            // collector removes the pod.
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "PersistentVolume".into(),
                name: pv.name_any(),
                uid: pv.meta().uid.clone().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            containers: vec![Container {
                name: "helper".into(),
                image: Some(HELPER_IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(vec!["rm".into(), "-rf".into(), format!("/data/{dir}")]),
                volume_mounts: Some(vec![VolumeMount {
                    name: "data".into(),
                    mount_path: "/data".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "data".into(),
                host_path: Some(HostPathVolumeSource {
                    path: parent.to_owned(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_volume_is_found_by_its_path_and_node() {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pvc-1"},
            "spec": {"local": {"path": "/var/lib/kumo/storage/pvc-1_default_data"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}
        }))
        .unwrap();
        assert_eq!(
            location(&pv),
            Some((
                "/var/lib/kumo/storage/pvc-1_default_data".into(),
                "n1".into()
            ))
        );
        let pod = helper_pod(
            &pv,
            &helper_name(&pv),
            "n1",
            "/var/lib/kumo/storage",
            "pvc-1_default_data",
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(
            spec.containers[0].command.as_deref().unwrap(),
            ["rm", "-rf", "/data/pvc-1_default_data"]
        );
        assert_eq!(
            spec.volumes.unwrap()[0].host_path.as_ref().unwrap().path,
            "/var/lib/kumo/storage"
        );
    }
}
