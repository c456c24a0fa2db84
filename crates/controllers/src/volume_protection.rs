//! Storage object in-use protection, upstream's `pvcprotection` and `pvprotection`
//! controllers: the admission plugin gives every claim the [`PVC_PROTECTION`] finalizer
//! and every volume [`PV_PROTECTION`]; these loops take them off a deleted object once
//! nothing depends on it, so the deletion completes.
//!
//! A claim is in use while a pod that is scheduled to a node names it (as a
//! `persistentVolumeClaim` volume, or as the generic ephemeral volume the pod owns),
//! whatever the pod's phase: the pod's node may still have the volume mounted until the
//! pod object is gone. Unscheduled pods do not count, since the scheduler refuses claims
//! being deleted. Before a claim is released, a live list of its namespace's pods
//! confirms what the cache says. A volume is in use while its phase is Bound.
//! Objects created before the admission plugin lacked the finalizer get it here.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::applier;
use kube::runtime::controller::{self, Action, ReconcileRequest, trigger_self, trigger_with};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::endpoints::informer;
use crate::{Context, FIELD_MANAGER};

/// The finalizer that keeps a claim while pods use it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while it is bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

struct ClaimState {
    client: kube::Client,
    pods: Store<Pod>,
}

/// Runs the claim protection loop until it fails.
pub async fn run_claims(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (claims, claim_events) = informer(Api::<PersistentVolumeClaim>::all(client.clone()));
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()));
    let state = Arc::new(ClaimState { client, pods });
    // A pod's change (above all its deletion) concerns the claims it names.
    let queue = futures::stream::select_all([
        trigger_self(claim_events, ()).boxed(),
        trigger_with(pod_events, |pod: Pod| {
            let namespace = pod.namespace().unwrap_or_default();
            claims_named_by(&pod)
                .map(|claim| ReconcileRequest::from(ObjectRef::new(&claim).within(&namespace)))
                .collect::<Vec<_>>()
        })
        .boxed(),
    ]);
    applier(
        |pvc, state: Arc<ClaimState>| Box::pin(async move { sync_claim(&pvc, &state).await }),
        |_, e: &Error, _| {
            tracing::debug!(error = %e, "pvc-protection: sync failed");
            Action::requeue(Duration::from_secs(2))
        },
        state,
        claims,
        queue,
        controller::Config::default(),
    )
    .for_each(|_| async {})
    .await;
    Ok(())
}

/// Runs the volume protection loop until it fails.
pub async fn run_volumes(ctx: Context) -> anyhow::Result<()> {
    let (volumes, volume_events) = informer(Api::<PersistentVolume>::all(ctx.client.clone()));
    applier(
        |pv, client: Arc<kube::Client>| Box::pin(async move { sync_volume(&pv, &client).await }),
        |_, e: &Error, _| {
            tracing::debug!(error = %e, "pv-protection: sync failed");
            Action::requeue(Duration::from_secs(2))
        },
        Arc::new(ctx.client.clone()),
        volumes,
        trigger_self(volume_events, ()),
        controller::Config::default(),
    )
    .for_each(|_| async {})
    .await;
    Ok(())
}

async fn sync_claim(pvc: &PersistentVolumeClaim, state: &ClaimState) -> Result<Action> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(
        state.client.clone(),
        &pvc.namespace().unwrap_or_default(),
    );
    let has_finalizer = pvc.finalizers().iter().any(|f| f == PVC_PROTECTION);
    if pvc.metadata.deletion_timestamp.is_none() {
        if !has_finalizer {
            let mut pvc = pvc.clone();
            pvc.finalizers_mut().push(PVC_PROTECTION.to_owned());
            claims.replace(&pvc.name_any(), &params(), &pvc).await?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        return Ok(Action::await_change());
    }
    let cached = state.pods.state();
    if let Some(pod) = cached.iter().find(|pod| pod_uses_claim(pod, pvc)) {
        tracing::debug!(claim = %pvc.name_any(), pod = %pod.name_any(), "keeping claim: a pod uses it");
        return Ok(Action::await_change());
    }
    // The cache may not have seen a pod created a moment ago: ask the server.
    let live = Api::<Pod>::namespaced(state.client.clone(), &pvc.namespace().unwrap_or_default())
        .list(&ListParams::default())
        .await?;
    if live.items.iter().any(|pod| pod_uses_claim(pod, pvc)) {
        return Ok(Action::await_change());
    }
    let mut released = pvc.clone();
    released.finalizers_mut().retain(|f| f != PVC_PROTECTION);
    claims
        .replace(&released.name_any(), &params(), &released)
        .await?;
    tracing::info!(namespace = %pvc.namespace().unwrap_or_default(), claim = %pvc.name_any(), "claim unused: protection removed");
    Ok(Action::await_change())
}

async fn sync_volume(pv: &PersistentVolume, client: &kube::Client) -> Result<Action> {
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let has_finalizer = pv.finalizers().iter().any(|f| f == PV_PROTECTION);
    if pv.metadata.deletion_timestamp.is_none() {
        if !has_finalizer {
            let mut pv = pv.clone();
            pv.finalizers_mut().push(PV_PROTECTION.to_owned());
            volumes.replace(&pv.name_any(), &params(), &pv).await?;
        }
        return Ok(Action::await_change());
    }
    let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !has_finalizer || bound {
        // A bound volume waits for the binder to release it (a status change).
        return Ok(Action::await_change());
    }
    let mut released = pv.clone();
    released.finalizers_mut().retain(|f| f != PV_PROTECTION);
    volumes
        .replace(&released.name_any(), &params(), &released)
        .await?;
    tracing::info!(volume = %pv.name_any(), "volume unbound: protection removed");
    Ok(Action::await_change())
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

/// The claims a pod's volumes name: `persistentVolumeClaim` sources, and the
/// `<pod>-<volume>` claims of generic ephemeral volumes.
fn claims_named_by(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let pod_name = pod.name_any();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(move |volume| {
            if let Some(source) = &volume.persistent_volume_claim {
                Some(source.claim_name.clone())
            } else {
                volume
                    .ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", volume.name))
            }
        })
}

/// Whether `pod` keeps `pvc` in use (upstream's `podUsesPVC`).
fn pod_uses_claim(pod: &Pod, pvc: &PersistentVolumeClaim) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if !scheduled || pod.namespace() != pvc.namespace() {
        return false;
    }
    let claim_name = pvc.name_any();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|volume| {
            if let Some(source) = &volume.persistent_volume_claim {
                return source.claim_name == claim_name;
            }
            volume.ephemeral.is_some()
                && !is_shut_down(pod)
                && format!("{}-{}", pod.name_any(), volume.name) == claim_name
                && crate::pods::controller_of(&pvc.metadata)
                    .is_some_and(|owner| Some(&owner.uid) == pod.metadata.uid.as_ref())
        })
}

/// A pod its node is done with, or that was force-deleted: marked for deletion with no
/// grace period left.
fn is_shut_down(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod.metadata.deletion_grace_period_seconds == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn claim(name: &str, owner_uid: Option<&str>) -> PersistentVolumeClaim {
        let mut claim = json!({"metadata": {"name": name, "namespace": "ns"}});
        if let Some(uid) = owner_uid {
            claim["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod",
                "name": "p", "uid": uid, "controller": true}]);
        }
        serde_json::from_value(claim).unwrap()
    }

    fn pod(node: Option<&str>, volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "pod-uid"},
            "spec": {"nodeName": node, "containers": [], "volumes": volumes},
            "status": {"phase": "Succeeded"},
        }))
        .unwrap()
    }

    #[test]
    fn scheduled_pods_naming_the_claim_use_it_whatever_their_phase() {
        let volumes = json!([{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}]);
        assert!(pod_uses_claim(
            &pod(Some("n"), volumes.clone()),
            &claim("c", None)
        ));
        assert!(!pod_uses_claim(
            &pod(None, volumes.clone()),
            &claim("c", None)
        ));
        assert!(!pod_uses_claim(
            &pod(Some("n"), volumes),
            &claim("other", None)
        ));
    }

    #[test]
    fn ephemeral_claims_belong_to_their_pod_until_it_shuts_down() {
        let volumes =
            json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]);
        let owned = claim("p-scratch", Some("pod-uid"));
        let user = pod(Some("n"), volumes.clone());
        assert!(pod_uses_claim(&user, &owned));
        assert!(!pod_uses_claim(
            &user,
            &claim("p-scratch", Some("someone-else"))
        ));
        let mut forced = user.clone();
        forced.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        forced.metadata.deletion_grace_period_seconds = Some(0);
        assert!(!pod_uses_claim(&forced, &owned));
        assert_eq!(claims_named_by(&user).collect::<Vec<_>>(), ["p-scratch"]);
    }
}
