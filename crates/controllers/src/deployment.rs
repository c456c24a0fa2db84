//! The Deployment loop (upstream `pkg/controller/deployment`): a Deployment owns one
//! ReplicaSet per pod template (named and labelled by the template's hash) and rolls pods
//! from the old ones to the new one, by RollingUpdate (within maxSurge and maxUnavailable)
//! or Recreate. It numbers revisions on the ReplicaSets (so `kubectl rollout history` and
//! `undo` work), scales all of them proportionally when the Deployment is scaled
//! mid-rollout, keeps `revisionHistoryLimit` old ReplicaSets, and reports progress in the
//! Progressing and Available conditions that `kubectl rollout status` reads.

mod sync;
mod util;

use std::sync::Arc;

use futures::stream;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

use crate::Context;
use crate::pods::controller_of;
use crate::replicaset::{
    Backoff, Error, Events, adopt, api_group, can_adopt, drive, informer, release, triggers,
};
use crate::workloads::selector_matches;

/// Reporting component of the loop's events.
const COMPONENT: &str = "deployment-controller";

/// What every sync of the loop reads.
struct Ctrl {
    ctx: Context,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    backoff: Backoff,
    events: Events,
}

/// Runs the Deployment loop.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let (deployments, deployment_events) = informer::<Deployment>(&ctx.client, |_| {}, |_, _| {});
    let (sets, set_events) = informer::<ReplicaSet>(&ctx.client, |_| {}, |_, _| {});
    let (pods, pod_events) = informer::<Pod>(&ctx.client, slim_pod, |_, _| {});

    let deployment_triggers = triggers(deployment_events, |event| match event {
        Event::Apply(d) | Event::InitApply(d) => vec![ObjectRef::from_obj(&d)],
        _ => Vec::new(),
    });
    let deployments_for_sets = deployments.clone();
    let set_triggers = triggers(set_events, move |event| match event {
        Event::Apply(rs) | Event::InitApply(rs) => owners_of_set(&deployments_for_sets, &rs, true),
        Event::Delete(rs) => owners_of_set(&deployments_for_sets, &rs, false),
        _ => Vec::new(),
    });
    // A Recreate rollout waits for the old pods to be gone.
    let (sets_for_pods, deployments_for_pods) = (sets.clone(), deployments.clone());
    let pod_triggers = triggers(pod_events, move |event| match event {
        Event::Delete(pod) => recreate_owner_of_pod(&sets_for_pods, &deployments_for_pods, &pod)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    });

    let ctrl = Arc::new(Ctrl {
        events: Events::new(&ctx, COMPONENT),
        ctx,
        sets,
        pods,
        backoff: Backoff::default(),
    });
    drive(
        COMPONENT,
        deployments,
        stream::select(
            deployment_triggers,
            stream::select(set_triggers, pod_triggers),
        ),
        ctrl,
        reconcile,
        |d: Arc<Deployment>, _error: &Error, ctrl: Arc<Ctrl>| {
            Action::requeue(ctrl.backoff.next(&d.uid().unwrap_or_default()))
        },
    )
    .await
}

/// The Deployment controlling a ReplicaSet, or for an orphan every Deployment in its
/// namespace whose selector matches it.
fn owners_of_set(
    deployments: &Store<Deployment>,
    rs: &ReplicaSet,
    alive: bool,
) -> Vec<ObjectRef<Deployment>> {
    let namespace = rs.namespace().unwrap_or_default();
    match controller_of(&rs.metadata) {
        Some(r) if r.kind == "Deployment" && api_group(&r.api_version) == "apps" => {
            vec![ObjectRef::new(&r.name).within(&namespace)]
        }
        Some(_) => Vec::new(),
        None if alive => deployments
            .state()
            .iter()
            .filter(|d| {
                d.namespace().as_deref() == Some(&namespace)
                    && d.spec.as_ref().is_some_and(|s| {
                        !crate::workloads::selector_is_empty(&s.selector)
                            && selector_matches(&s.selector, Some(rs.labels()))
                    })
            })
            .map(|d| ObjectRef::from_obj(&**d))
            .collect(),
        None => Vec::new(),
    }
}

/// The Recreate Deployment whose ReplicaSet controlled `pod`.
fn recreate_owner_of_pod(
    sets: &Store<ReplicaSet>,
    deployments: &Store<Deployment>,
    pod: &Pod,
) -> Option<ObjectRef<Deployment>> {
    let namespace = pod.namespace()?;
    let rs_ref = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")?;
    let rs = sets.get(&ObjectRef::new(&rs_ref.name).within(&namespace))?;
    let d_ref = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment")?;
    let key = ObjectRef::new(&d_ref.name).within(&namespace);
    let d = deployments.get(&key)?;
    (!util::is_rolling_update(&d)).then_some(key)
}

/// Keeps only what the loop reads from a pod: its identity, owners and phase.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.spec = None;
    let phase = pod.status.take().and_then(|s| s.phase);
    pod.status = Some(PodStatus {
        phase,
        ..Default::default()
    });
}

/// One sync of one Deployment, as upstream's `syncDeployment`.
async fn reconcile(d: Arc<Deployment>, ctrl: Arc<Ctrl>) -> Result<Action, Error> {
    for ready in [
        ctrl.sets.wait_until_ready().await,
        ctrl.pods.wait_until_ready().await,
    ] {
        ready.map_err(|_| Error::CacheClosed)?;
    }
    let mut rollout = sync::Rollout::new(&ctrl, (*d).clone());
    rollout.sync().await?;
    ctrl.backoff.reset(&d.uid().unwrap_or_default());
    Ok(rollout.action())
}

/// The ReplicaSets the Deployment controls after adopting matching orphans and releasing
/// owned ones that stopped matching, as upstream's `getReplicaSetsForDeployment`.
async fn claim_replica_sets(ctrl: &Ctrl, d: &Deployment) -> Result<Vec<ReplicaSet>, Error> {
    let namespace = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(ctrl.ctx.client.clone(), &namespace);
    let selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();
    let mut claimed = Vec::new();
    let mut adoption_checked = false;
    for rs in ctrl.sets.state() {
        if rs.namespace().as_deref() != Some(namespace.as_str()) {
            continue;
        }
        let matches = selector_matches(&selector, Some(rs.labels()));
        match controller_of(&rs.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    claimed.push((*rs).clone());
                } else if !deleting {
                    release(&api, &*rs, &uid).await?;
                }
            }
            Some(_) => {}
            None => {
                if !matches || deleting || rs.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if !adoption_checked {
                    can_adopt(&ctrl.ctx.client, d).await?;
                    adoption_checked = true;
                }
                adopt(&api, &*rs, d).await?;
                let mut adopted = (*rs).clone();
                adopted
                    .metadata
                    .owner_references
                    .get_or_insert_with(Vec::new)
                    .push(crate::pods::controller_ref(d));
                claimed.push(adopted);
            }
        }
    }
    Ok(claimed)
}
