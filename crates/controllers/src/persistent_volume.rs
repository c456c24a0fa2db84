//! The PersistentVolume binder, upstream's `pkg/controller/volume/persistentvolume`
//! simplified: it binds claims to volumes and keeps both phases current.
//!
//! A claim binds to the volume whose `claimRef` already names it (pre-bound by a user or
//! by a provisioner such as [`crate::local_path`]), to the volume its `volumeName` names,
//! or else to the smallest Available volume that matches it (class, access modes, size,
//! volume mode, selector, and for `WaitForFirstConsumer` classes the node the scheduler
//! chose). Binding writes in upstream's order: the volume's `claimRef`, the volume's
//! phase, the claim's `volumeName`, the claim's phase. A volume whose claim is gone is
//! Released; deleting a released volume of reclaim policy Delete is its provisioner's job.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action, ReconcileRequest, trigger_self, trigger_with};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, watcher};

use crate::endpoints::informer;
use crate::workloads::event;
use crate::{Context, FIELD_MANAGER};

/// The annotation by which the scheduler tells the binder and provisioners where the
/// first consumer of a `WaitForFirstConsumer` claim runs.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set on a volume by its provisioner.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Set on a claim once its binding is complete.
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a volume (or claim) whose binding this controller made.
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The provisioner of classes whose volumes are all created by hand.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// How often each object is looked at again without a change (upstream's resync).
const RESYNC: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

struct State {
    client: kube::Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    recorder: Recorder,
}

/// Runs the binder until it fails.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (claims, claim_events) = informer(Api::<PersistentVolumeClaim>::all(client.clone()));
    let (volumes, volume_events) = informer(Api::<PersistentVolume>::all(client.clone()));
    let (classes, class_events) = informer(Api::<StorageClass>::all(client.clone()));
    let state = Arc::new(State {
        client,
        claims: claims.clone(),
        volumes: volumes.clone(),
        classes,
        recorder: ctx.recorder("persistentvolume-controller"),
    });
    // Each loop has its own watch streams; the stores above are shared.
    let watch = |api| {
        watcher(api, watcher::Config::default())
            .default_backoff()
            .touched_objects()
    };

    // Claims: a volume change concerns the claim it names; a new class may let a
    // waiting claim proceed.
    let claim_queue = futures::stream::select_all([
        trigger_self(claim_events, ()).boxed(),
        trigger_with(
            watch(Api::<PersistentVolume>::all(state.client.clone())),
            |pv: PersistentVolume| claim_of(&pv).map(ReconcileRequest::from),
        )
        .boxed(),
        trigger_with(class_events, {
            let claims = claims.clone();
            move |_: StorageClass| {
                claims
                    .state()
                    .into_iter()
                    .filter(|c| volume_name(c).is_none())
                    .map(|c| ReconcileRequest::from(ObjectRef::from_obj(c.as_ref())))
                    .collect::<Vec<_>>()
            }
        })
        .boxed(),
    ]);
    // Volumes: a claim change (above all its deletion) concerns the volumes naming it.
    let volume_queue = futures::stream::select_all([
        trigger_self(volume_events, ()).boxed(),
        trigger_with(watch_claims(state.client.clone()), {
            let volumes = volumes.clone();
            move |pvc: PersistentVolumeClaim| {
                let (ns, name) = (pvc.namespace().unwrap_or_default(), pvc.name_any());
                volumes
                    .state()
                    .into_iter()
                    .filter(|pv| {
                        pv.spec
                            .as_ref()
                            .and_then(|s| s.claim_ref.as_ref())
                            .is_some_and(|r| {
                                r.namespace.as_deref() == Some(&ns)
                                    && r.name.as_deref() == Some(&name)
                            })
                    })
                    .map(|pv| ReconcileRequest::from(ObjectRef::from_obj(pv.as_ref())))
                    .collect::<Vec<_>>()
            }
        })
        .boxed(),
    ]);
    let claims_loop = applier(
        |pvc, state: Arc<State>| Box::pin(async move { sync_claim(&pvc, &state).await }),
        |_, e, _| error_policy(e),
        state.clone(),
        claims,
        claim_queue,
        controller::Config::default(),
    )
    .for_each(|_| async {});
    let volumes_loop = applier(
        |pv, state: Arc<State>| Box::pin(async move { sync_volume(&pv, &state).await }),
        |_, e, _| error_policy(e),
        state.clone(),
        volumes,
        volume_queue,
        controller::Config::default(),
    )
    .for_each(|_| async {});
    futures::join!(claims_loop, volumes_loop);
    Ok(())
}

fn error_policy(e: &Error) -> Action {
    tracing::debug!(error = %e, "persistentvolume: sync failed");
    Action::requeue(Duration::from_secs(2))
}

/// Claim changes, deletions included (as the last state seen).
fn watch_claims(
    client: kube::Client,
) -> impl futures::Stream<Item = Result<PersistentVolumeClaim, watcher::Error>> + Send {
    watcher(
        Api::<PersistentVolumeClaim>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
}

/// The claim a volume's `claimRef` names.
fn claim_of(pv: &PersistentVolume) -> Option<ObjectRef<PersistentVolumeClaim>> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some(ObjectRef::new(r.name.as_deref()?).within(r.namespace.as_deref()?))
}

fn volume_name(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The claim's class name (`""`: no class).
pub(crate) fn class_of(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

fn phase_of_claim(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn phase_of_volume(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether `r` points at `pvc` (a reference without uid is a pre-binding by name).
fn refers_to(r: &ObjectReference, pvc: &PersistentVolumeClaim) -> bool {
    r.namespace == pvc.metadata.namespace
        && r.name == pvc.metadata.name
        && r.uid
            .as_deref()
            .is_none_or(|uid| uid.is_empty() || Some(uid) == pvc.metadata.uid.as_deref())
}

async fn sync_claim(pvc: &PersistentVolumeClaim, state: &State) -> Result<Action> {
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if let Some(name) = volume_name(pvc) {
        return sync_bound_claim(pvc, name, state).await;
    }
    // A volume that names this claim (pre-bound, or provisioned for it) wins.
    let claimed = state.volumes.state().into_iter().find(|pv| {
        pv.spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| refers_to(r, pvc))
    });
    if let Some(pv) = claimed {
        return bind(pvc, &pv, state).await;
    }
    let class_name = class_of(pvc);
    let class = (!class_name.is_empty())
        .then(|| state.classes.get(&ObjectRef::new(class_name)))
        .flatten();
    let waits_for_consumer = class
        .as_ref()
        .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
    let selected_node = pvc.annotations().get(SELECTED_NODE).cloned();
    if waits_for_consumer && selected_node.is_none() {
        event(
            &state.recorder,
            pvc,
            false,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        );
        return Ok(Action::await_change());
    }
    let node = match &selected_node {
        Some(name) if waits_for_consumer => {
            Api::<Node>::all(state.client.clone()).get_opt(name).await?
        }
        _ => None,
    };
    if let Some(pv) = best_match(pvc, &state.volumes.state(), node.as_ref()) {
        return bind(pvc, &pv, state).await;
    }
    match class.as_ref().map(|c| c.provisioner.as_str()) {
        Some(provisioner) if provisioner != NO_PROVISIONER => {
            event(
                &state.recorder,
                pvc,
                false,
                "ExternalProvisioning",
                format!(
                    "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
                ),
            );
            Ok(Action::await_change())
        }
        _ => {
            let note = if class_name.is_empty() {
                "no persistent volumes available for this claim and no storage class is set"
                    .to_owned()
            } else if class.is_none() {
                format!("storageclass.storage.k8s.io \"{class_name}\" not found")
            } else {
                "no persistent volumes available for this claim".to_owned()
            };
            event(&state.recorder, pvc, false, "FailedBinding", note);
            Ok(Action::requeue(RESYNC))
        }
    }
}

/// A claim that names its volume: finish the binding, or report it lost.
async fn sync_bound_claim(
    pvc: &PersistentVolumeClaim,
    name: &str,
    state: &State,
) -> Result<Action> {
    let pv = match state.volumes.get(&ObjectRef::new(name)) {
        Some(pv) => Some(pv),
        None => Api::<PersistentVolume>::all(state.client.clone())
            .get_opt(name)
            .await?
            .map(Arc::new),
    };
    let Some(pv) = pv else {
        if phase_of_claim(pvc) == "Bound" {
            event(
                &state.recorder,
                pvc,
                true,
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
                    .into(),
            );
            set_claim_phase(pvc, "Lost", None, state).await?;
        }
        return Ok(Action::requeue(RESYNC));
    };
    match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
        Some(r) if refers_to(r, pvc) => bind(pvc, &pv, state).await,
        None => {
            if let Some(reason) = mismatch(pvc, &pv, None) {
                event(&state.recorder, pvc, true, "VolumeMismatch", reason);
                return Ok(Action::requeue(RESYNC));
            }
            bind(pvc, &pv, state).await
        }
        Some(_) => {
            if phase_of_claim(pvc) == "Bound" {
                event(
                    &state.recorder,
                    pvc,
                    true,
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly".into(),
                );
                set_claim_phase(pvc, "Lost", None, state).await?;
            } else {
                event(
                    &state.recorder,
                    pvc,
                    true,
                    "FailedBinding",
                    "volume already bound to a different claim.".into(),
                );
            }
            Ok(Action::requeue(RESYNC))
        }
    }
}

/// Binds claim and volume in upstream's order; every step is skipped when already done,
/// so a binding interrupted halfway is finished by the next sync.
async fn bind(pvc: &PersistentVolumeClaim, pv: &PersistentVolume, state: &State) -> Result<Action> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    let pv_name = pv.name_any();
    let volumes = Api::<PersistentVolume>::all(state.client.clone());
    let mut pv = pv.clone();
    let want_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: pvc.metadata.namespace.clone(),
        name: pvc.metadata.name.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        ..Default::default()
    };
    let current_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if current_ref.is_none_or(|r| r.uid.as_deref().is_none_or(str::is_empty)) {
        if current_ref.is_none() {
            pv.annotations_mut()
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        pv.spec.get_or_insert_default().claim_ref = Some(want_ref);
        pv = volumes.replace(&pv_name, &params, &pv).await?;
    }
    if phase_of_volume(&pv) != "Bound" {
        let status = pv.status.get_or_insert_default();
        status.phase = Some("Bound".into());
        status.message = None;
        status.reason = None;
        volumes.replace_status(&pv_name, &params, &pv).await?;
    }
    let namespace = pvc.namespace().unwrap_or_default();
    let claims = Api::<PersistentVolumeClaim>::namespaced(state.client.clone(), &namespace);
    let mut pvc = pvc.clone();
    if volume_name(&pvc) != Some(pv_name.as_str())
        || !pvc.annotations().contains_key(BIND_COMPLETED)
    {
        if volume_name(&pvc).is_none() {
            pvc.annotations_mut()
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        pvc.annotations_mut()
            .insert(BIND_COMPLETED.into(), "yes".into());
        pvc.spec.get_or_insert_default().volume_name = Some(pv_name.clone());
        pvc = claims.replace(&pvc.name_any(), &params, &pvc).await?;
    }
    let pv_spec = pv.spec.clone().unwrap_or_default();
    let status = pvc.status.clone().unwrap_or_default();
    if status.phase.as_deref() != Some("Bound")
        || status.capacity != pv_spec.capacity
        || status.access_modes != pv_spec.access_modes
    {
        set_claim_phase(&pvc, "Bound", Some(&pv), state).await?;
        tracing::info!(claim = %format!("{namespace}/{}", pvc.name_any()), volume = %pv_name, "bound");
    }
    Ok(Action::requeue(RESYNC))
}

async fn set_claim_phase(
    pvc: &PersistentVolumeClaim,
    phase: &str,
    pv: Option<&PersistentVolume>,
    state: &State,
) -> Result<()> {
    let mut pvc = pvc.clone();
    let old = pvc.status.take().unwrap_or_default();
    let pv_spec = pv.and_then(|pv| pv.spec.clone());
    pvc.status = Some(PersistentVolumeClaimStatus {
        phase: Some(phase.into()),
        access_modes: pv_spec
            .as_ref()
            .map_or(old.access_modes.clone(), |s| s.access_modes.clone()),
        capacity: pv_spec
            .as_ref()
            .map_or(old.capacity.clone(), |s| s.capacity.clone()),
        ..old
    });
    let api = Api::<PersistentVolumeClaim>::namespaced(
        state.client.clone(),
        &pvc.namespace().unwrap_or_default(),
    );
    api.replace_status(
        &pvc.name_any(),
        &PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        },
        &pvc,
    )
    .await?;
    Ok(())
}

/// The smallest Available volume that `pvc` may bind to.
fn best_match(
    pvc: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
    node: Option<&Node>,
) -> Option<Arc<PersistentVolume>> {
    volumes
        .iter()
        .filter(|pv| {
            pv.metadata.deletion_timestamp.is_none()
                && pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_none())
                && phase_of_volume(pv) == "Available"
                && mismatch(pvc, pv, node).is_none()
        })
        .min_by_key(|pv| storage_of(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())))
        .cloned()
}

/// Why `pv` cannot serve `pvc` (`None`: it can). With `node`, the volume must also be
/// reachable from that node.
pub(crate) fn mismatch(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    node: Option<&Node>,
) -> Option<String> {
    let claim = pvc.spec.clone().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    if spec.storage_class_name.as_deref().unwrap_or("") != class_of(pvc) {
        return Some("storageClassName does not match".into());
    }
    let wanted_modes = claim.access_modes.unwrap_or_default();
    let modes = spec.access_modes.unwrap_or_default();
    if !wanted_modes.iter().all(|m| modes.contains(m)) {
        return Some("Cannot bind to requested volume: incompatible accessMode".into());
    }
    let requested = storage_of(claim.resources.as_ref().and_then(|r| r.requests.as_ref()));
    if storage_of(spec.capacity.as_ref()) < requested {
        return Some(
            "Cannot bind to requested volume: requested storage size is larger than the volume"
                .into(),
        );
    }
    let claim_mode = claim.volume_mode.as_deref().unwrap_or("Filesystem");
    if spec.volume_mode.as_deref().unwrap_or("Filesystem") != claim_mode {
        return Some(
            "Cannot bind PersistentVolume to requested PersistentVolumeClaim due to incompatible volumeMode.".into(),
        );
    }
    if let Some(selector) = &claim.selector {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        let matches = serde_json::to_value(selector)
            .ok()
            .and_then(|s| apimachinery::selector::label::LabelSelector::from_json(&s).ok())
            .is_some_and(|s| s.matches_with(|key| labels.get(key).map(String::as_str)));
        if !matches {
            return Some("Cannot bind to requested volume: selector does not match".into());
        }
    }
    if let Some(node) = node
        && !volume_reachable_from(pv, node)
    {
        return Some("volume node affinity does not match the selected node".into());
    }
    None
}

/// Whether the volume's required node affinity admits `node`.
pub(crate) fn volume_reachable_from(pv: &PersistentVolume, node: &Node) -> bool {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    required.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.iter().flatten();
        let fields = term.match_fields.iter().flatten();
        let mut any = false;
        let ok = exprs.clone().all(|e| {
            any = true;
            expression_matches(
                &e.operator,
                labels.get(&e.key),
                e.values.as_deref().unwrap_or_default(),
            )
        }) && fields.clone().all(|f| {
            any = true;
            let value = (f.key == "metadata.name").then(|| node.name_any());
            expression_matches(
                &f.operator,
                value.as_ref(),
                f.values.as_deref().unwrap_or_default(),
            )
        });
        any && ok
    })
}

fn expression_matches(operator: &str, value: Option<&String>, values: &[String]) -> bool {
    let number = |s: &str| s.parse::<i64>().ok();
    match operator {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| number(v)),
                values.first().and_then(|b| number(b)),
            ) else {
                return false;
            };
            if operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// The `storage` quantity of a resource list, in bytes (0 when absent or malformed).
pub(crate) fn storage_of(
    list: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
) -> i128 {
    list.and_then(|l| l.get("storage"))
        .and_then(|q| apimachinery::quantity::parse(&q.0).ok())
        .map_or(0, |q| q.nanos() / 1_000_000_000)
}

async fn sync_volume(pv: &PersistentVolume, state: &State) -> Result<Action> {
    // Volumes being deleted are synced too: the `kubernetes.io/pv-protection` finalizer
    // holds a bound one until its claim is gone and this loop marks it Released.
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    let volumes = Api::<PersistentVolume>::all(state.client.clone());
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        if phase_of_volume(pv) != "Available" {
            let mut pv = pv.clone();
            pv.status.get_or_insert_default().phase = Some("Available".into());
            volumes.replace_status(&pv.name_any(), &params, &pv).await?;
        }
        return Ok(Action::requeue(RESYNC));
    };
    let (Some(ns), Some(name)) = (claim_ref.namespace.clone(), claim_ref.name.clone()) else {
        return Ok(Action::await_change());
    };
    let uid = claim_ref.uid.clone().filter(|u| !u.is_empty());
    let key = ObjectRef::new(&name).within(&ns);
    let cached = state.claims.get(&key);
    let claim_alive = match &cached {
        Some(c)
            if (uid.is_none() || c.metadata.uid == uid)
                && c.metadata.deletion_timestamp.is_none() =>
        {
            true
        }
        // The cache may lag behind a claim created a moment ago, or still hold one being
        // deleted (its protection finalizer just gone): ask the server before releasing
        // anything, or keeping it.
        _ => Api::<PersistentVolumeClaim>::namespaced(state.client.clone(), &ns)
            .get_opt(&name)
            .await?
            .is_some_and(|c| uid.is_none() || c.metadata.uid == uid),
    };
    if claim_alive {
        if uid.is_none() && phase_of_volume(pv) != "Available" {
            // Pre-bound by name to a claim not yet bound: still available to it.
            let mut pv = pv.clone();
            pv.status.get_or_insert_default().phase = Some("Available".into());
            volumes.replace_status(&pv.name_any(), &params, &pv).await?;
        }
        return Ok(Action::requeue(RESYNC));
    }
    if uid.is_none() {
        // Pre-bound to a claim that does not exist yet: it stays available for it.
        if phase_of_volume(pv) != "Available" {
            let mut pv = pv.clone();
            pv.status.get_or_insert_default().phase = Some("Available".into());
            volumes.replace_status(&pv.name_any(), &params, &pv).await?;
        }
        return Ok(Action::requeue(RESYNC));
    }
    if phase_of_volume(pv) != "Released" {
        let mut pv = pv.clone();
        pv.status.get_or_insert_default().phase = Some("Released".into());
        volumes.replace_status(&pv.name_any(), &params, &pv).await?;
        tracing::info!(volume = %pv.name_any(), claim = %format!("{ns}/{name}"), "released");
    }
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let provisioner = pv.annotations().get(PROVISIONED_BY).map(String::as_str);
    match policy {
        // The volume's provisioner deletes it (and what it holds).
        "Delete" if provisioner == Some(crate::local_path::PROVISIONER) => {}
        "Delete" => event(
            &state.recorder,
            pv,
            true,
            "VolumeFailedDelete",
            format!(
                "error getting deleter volume plugin for volume \"{}\": no deletable volume plugin matched",
                pv.name_any()
            ),
        ),
        "Recycle" => event(
            &state.recorder,
            pv,
            true,
            "VolumeFailedRecycle",
            "No recycler plugin found for the volume!".into(),
        ),
        _ => {}
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pvc(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "c", "namespace": "default", "uid": "u1"}, "spec": spec}),
        )
        .unwrap()
    }

    fn pv(name: &str, spec: serde_json::Value, labels: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec, "status": {"phase": "Available"}})).unwrap()
    }

    #[test]
    fn matching_picks_the_smallest_fitting_volume() {
        let claim = pvc(
            json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
            "resources": {"requests": {"storage": "1Gi"}}, "selector": {"matchLabels": {"tier": "db"}}}),
        );
        let spec = |size: &str, class: &str, modes: serde_json::Value| json!({"capacity": {"storage": size}, "accessModes": modes, "storageClassName": class, "hostPath": {"path": "/x"}});
        let db = json!({"tier": "db"});
        let volumes: Vec<Arc<PersistentVolume>> = [
            pv(
                "big",
                spec("10Gi", "manual", json!(["ReadWriteOnce"])),
                db.clone(),
            ),
            pv(
                "small",
                spec("2Gi", "manual", json!(["ReadWriteOnce", "ReadOnlyMany"])),
                db.clone(),
            ),
            pv(
                "tiny",
                spec("512Mi", "manual", json!(["ReadWriteOnce"])),
                db.clone(),
            ),
            pv(
                "other-class",
                spec("1Gi", "fast", json!(["ReadWriteOnce"])),
                db.clone(),
            ),
            pv(
                "wrong-mode",
                spec("1Gi", "manual", json!(["ReadOnlyMany"])),
                db.clone(),
            ),
            pv(
                "unlabelled",
                spec("1Gi", "manual", json!(["ReadWriteOnce"])),
                json!({}),
            ),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        assert_eq!(
            best_match(&claim, &volumes, None).unwrap().name_any(),
            "small"
        );
        assert!(
            mismatch(&claim, &volumes[2], None)
                .unwrap()
                .contains("size")
        );
        assert!(
            mismatch(&claim, &volumes[5], None)
                .unwrap()
                .contains("selector")
        );
    }

    #[test]
    fn node_affinity_limits_volumes_to_their_nodes() {
        let spec = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "local": {"path": "/data"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}});
        let volume = pv("local", spec, json!({}));
        let node = |name: &str| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
            )
            .unwrap()
        };
        assert!(volume_reachable_from(&volume, &node("n1")));
        assert!(!volume_reachable_from(&volume, &node("n2")));
        let claim = pvc(
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
        );
        assert!(mismatch(&claim, &volume, Some(&node("n2"))).is_some());
        assert!(mismatch(&claim, &volume, Some(&node("n1"))).is_none());
    }
}
