//! The disruption controller, as upstream's `pkg/controller/disruption`: keeps every
//! PodDisruptionBudget's status current, so that the eviction API can tell whether a pod
//! may go.
//!
//! `minAvailable` as a number counts the selected pods; percentages and `maxUnavailable`
//! count the replicas of the pods' controllers (Deployment, ReplicaSet, StatefulSet,
//! ReplicationController), as upstream does. A pod is healthy when it is Ready, not being
//! deleted, and not recorded in `disruptedPods` by an eviction in the last two minutes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::applier;
use kube::runtime::controller::{self, Action, ReconcileRequest, trigger_self, trigger_with};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::endpoints::{Error, ErrorBackoff, informer, key_of};
use crate::workloads::selector_matches;
use crate::{Context, FIELD_MANAGER};

/// How long an eviction's entry in `disruptedPods` keeps the pod out of the healthy count
/// while the pod is not yet deleted (upstream's `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// The condition type this controller maintains.
const CONDITION: &str = "DisruptionAllowed";

/// Runs the loop until it fails.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (pdbs, pdb_events) = informer(Api::<PodDisruptionBudget>::all(client.clone()));
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()));
    let (replica_sets, rs_events) = informer(Api::<ReplicaSet>::all(client.clone()));
    let (deployments, deployment_events) = informer(Api::<Deployment>::all(client.clone()));
    let (stateful_sets, sts_events) = informer(Api::<StatefulSet>::all(client.clone()));
    let (controllers, rc_events) = informer(Api::<ReplicationController>::all(client.clone()));
    let state = Arc::new(State {
        ctx,
        pods: pods.clone(),
        replica_sets,
        deployments,
        stateful_sets,
        controllers,
        counted_in: Arc::default(),
        backoff: ErrorBackoff::default(),
    });
    let pod_mapper = {
        let pdbs = pdbs.clone();
        let counted_in = state.counted_in.clone();
        move |pod: Pod| {
            let mut keys = budgets_selecting(&pdbs, &pod.namespace(), pod.labels());
            // The budgets that counted the pod, in case its labels changed or it is gone.
            let uid = pod.uid().unwrap_or_default();
            let mut counted = counted_in.lock().unwrap();
            if let Some(before) = counted.get(&uid) {
                keys.extend(before.iter().cloned());
            }
            if pods.get(&ObjectRef::from_obj(&pod)).is_none() {
                counted.remove(&uid);
            }
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            keys.dedup();
            keys.into_iter().map(ReconcileRequest::from)
        }
    };
    // A workload's scale counts towards the budgets selecting its pods.
    fn by_template(
        pdbs: &Store<PodDisruptionBudget>,
        namespace: Option<String>,
        template: Option<&PodTemplateSpec>,
    ) -> Vec<ReconcileRequest<PodDisruptionBudget>> {
        let empty = BTreeMap::new();
        let labels = template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .unwrap_or(&empty);
        budgets_selecting(pdbs, &namespace, labels)
            .into_iter()
            .map(ReconcileRequest::from)
            .collect()
    }
    let (p1, p2, p3, p4) = (pdbs.clone(), pdbs.clone(), pdbs.clone(), pdbs.clone());
    let queue = futures::stream::select_all([
        trigger_self(pdb_events, ()).boxed(),
        trigger_with(pod_events, pod_mapper).boxed(),
        trigger_with(rs_events, move |rs: ReplicaSet| {
            by_template(
                &p1,
                rs.namespace(),
                rs.spec.as_ref().and_then(|s| s.template.as_ref()),
            )
        })
        .boxed(),
        trigger_with(deployment_events, move |d: Deployment| {
            by_template(&p2, d.namespace(), d.spec.as_ref().map(|s| &s.template))
        })
        .boxed(),
        trigger_with(sts_events, move |s: StatefulSet| {
            by_template(&p3, s.namespace(), s.spec.as_ref().map(|s| &s.template))
        })
        .boxed(),
        trigger_with(rc_events, move |rc: ReplicationController| {
            by_template(
                &p4,
                rc.namespace(),
                rc.spec.as_ref().and_then(|s| s.template.as_ref()),
            )
        })
        .boxed(),
    ]);
    applier(
        |pdb, state: Arc<State>| Box::pin(reconcile(pdb, state)),
        |pdb, error, state| {
            let key = key_of(pdb.as_ref());
            tracing::debug!(pdb = %key, %error, "disruption budget sync failed");
            Action::requeue(state.backoff.failed(&key))
        },
        state,
        pdbs,
        queue,
        controller::Config::default(),
    )
    .for_each(|_| std::future::ready(()))
    .await;
    Ok(())
}

struct State {
    ctx: Context,
    pods: Store<Pod>,
    replica_sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    controllers: Store<ReplicationController>,
    /// Pod UID → the budgets that last counted it.
    counted_in: Arc<Mutex<HashMap<String, Vec<ObjectRef<PodDisruptionBudget>>>>>,
    backoff: ErrorBackoff,
}

/// The budgets in `namespace` whose selector matches `labels`.
fn budgets_selecting(
    pdbs: &Store<PodDisruptionBudget>,
    namespace: &Option<String>,
    labels: &BTreeMap<String, String>,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    pdbs.state()
        .into_iter()
        .filter(|p| &p.namespace() == namespace)
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| selector_matches(sel, Some(labels)))
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Why the expected pod count could not be worked out.
#[derive(Debug)]
struct CountError(String);

async fn reconcile(pdb: Arc<PodDisruptionBudget>, state: Arc<State>) -> Result<Action, Error> {
    for ready in [
        state.pods.wait_until_ready().await,
        state.replica_sets.wait_until_ready().await,
        state.deployments.wait_until_ready().await,
        state.stateful_sets.wait_until_ready().await,
        state.controllers.wait_until_ready().await,
    ] {
        ready?;
    }
    let key = key_of(pdb.as_ref());
    let namespace = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = match &spec.selector {
        None => Vec::new(),
        Some(selector) => state
            .pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(&namespace))
            .filter(|p| selector_matches(selector, Some(p.labels())))
            .collect(),
    };
    {
        let reference = ObjectRef::from_obj(pdb.as_ref());
        let mut counted = state.counted_in.lock().unwrap();
        for list in counted.values_mut() {
            list.retain(|r| r != &reference);
        }
        for pod in &pods {
            counted
                .entry(pod.uid().unwrap_or_default())
                .or_default()
                .push(reference.clone());
        }
        counted.retain(|_, list| !list.is_empty());
    }
    let now = jiff::Timestamp::now();
    let old_status = pdb.status.clone().unwrap_or_default();
    let (status, recheck) = match expected_and_desired(&state, &spec, &pods) {
        Ok((expected, desired)) => {
            let (disrupted, recheck) = live_disruptions(&old_status, &pods, now);
            let healthy = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| !disrupted.contains_key(&p.name_any()))
                .filter(|p| crate::pods::is_ready(p))
                .count() as i32;
            let mut allowed = healthy - desired;
            if expected <= 0 || allowed <= 0 {
                allowed = 0;
            }
            let mut status = PodDisruptionBudgetStatus {
                current_healthy: healthy,
                desired_healthy: desired,
                expected_pods: expected,
                disruptions_allowed: allowed,
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                observed_generation: pdb.metadata.generation,
                conditions: old_status.conditions.clone(),
            };
            let (reason, value) = if allowed > 0 {
                ("SufficientPods", "True")
            } else {
                ("InsufficientPods", "False")
            };
            set_condition(&mut status, value, reason, "", pdb.metadata.generation, now);
            (status, recheck)
        }
        Err(CountError(message)) => {
            let recorder = state.ctx.recorder("controllermanager");
            let event = Event {
                type_: EventType::Warning,
                reason: "CalculateExpectedPodCountFailed".into(),
                note: Some(format!(
                    "Failed to calculate the number of expected pods: {message}"
                )),
                action: "Sync".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &pdb.object_ref(&())).await {
                tracing::debug!(error = %e, "recording disruption event");
            }
            // Fail safe: no disruptions while the budget cannot be worked out.
            let mut status = old_status.clone();
            status.disruptions_allowed = 0;
            let generation = status.observed_generation;
            set_condition(
                &mut status,
                "False",
                "SyncFailed",
                &message,
                generation,
                now,
            );
            (status, Some(Duration::from_secs(30)))
        }
    };
    if !same_status(&old_status, &status) {
        let mut updated = (*pdb).clone();
        updated.status = Some(status);
        let api = Api::<PodDisruptionBudget>::namespaced(state.ctx.client.clone(), &namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        api.replace_status(&pdb.name_any(), &params, &updated)
            .await?;
    }
    state.backoff.succeeded(&key);
    Ok(match recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Upstream's `getExpectedPodCount`: the expected pods and the desired healthy ones.
fn expected_and_desired(
    state: &State,
    spec: &k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec,
    pods: &[Arc<Pod>],
) -> Result<(i32, i32), CountError> {
    if let Some(max_unavailable) = &spec.max_unavailable {
        let expected = expected_scale(state, pods)?;
        let unavailable = scaled(max_unavailable, expected)?;
        return Ok((expected, (expected - unavailable).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n)),
        Some(min_available @ IntOrString::String(_)) => {
            let expected = expected_scale(state, pods)?;
            Ok((expected, scaled(min_available, expected)?))
        }
        None => Ok((0, 0)),
    }
}

/// A number, or a percentage of `total` rounded up.
fn scaled(value: &IntOrString, total: i32) -> Result<i32, CountError> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    CountError(format!(
                        "invalid value for IntOrString: invalid value {s:?}"
                    ))
                })?;
            Ok(((percent * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// Upstream's `getExpectedScale`: the sum of the replicas of the pods' controllers. Pods
/// without a controller do not count; a controller of another kind is an error.
fn expected_scale(state: &State, pods: &[Arc<Pod>]) -> Result<i32, CountError> {
    // Replicas by the UID of the scaling controller (a Deployment for its ReplicaSets).
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut owners_seen: HashSet<String> = HashSet::new();
    for pod in pods {
        let Some(owner) = crate::pods::controller_of(&pod.metadata) else {
            continue;
        };
        if !owners_seen.insert(owner.uid.clone()) {
            continue;
        }
        let namespace = pod.namespace().unwrap_or_default();
        let (uid, replicas) = controller_scale(state, &namespace, owner).ok_or_else(|| {
            CountError(format!("found no controllers for pod {:?}", pod.name_any()))
        })?;
        scales.insert(uid, replicas);
    }
    Ok(scales.values().sum())
}

/// The (uid, replicas) of the controller that scales the pods of `owner`.
fn controller_scale(
    state: &State,
    namespace: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Option<(String, i32)> {
    let group = owner.api_version.split('/').rev().nth(1).unwrap_or("");
    match (group, owner.kind.as_str()) {
        ("apps", "ReplicaSet") => {
            let rs = state
                .replica_sets
                .get(&ObjectRef::new(&owner.name).within(namespace))
                .filter(|rs| rs.uid().as_deref() == Some(owner.uid.as_str()))?;
            match crate::pods::controller_of(&rs.metadata).filter(|r| r.kind == "Deployment") {
                Some(dep_ref) => {
                    let deployment = state
                        .deployments
                        .get(&ObjectRef::new(&dep_ref.name).within(namespace))
                        .filter(|d| d.uid().as_deref() == Some(dep_ref.uid.as_str()))?;
                    let replicas = deployment
                        .spec
                        .as_ref()
                        .and_then(|s| s.replicas)
                        .unwrap_or(1);
                    Some((dep_ref.uid.clone(), replicas))
                }
                None => Some((
                    owner.uid.clone(),
                    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                )),
            }
        }
        ("apps", "StatefulSet") => {
            let sts = state
                .stateful_sets
                .get(&ObjectRef::new(&owner.name).within(namespace))
                .filter(|s| s.uid().as_deref() == Some(owner.uid.as_str()))?;
            Some((
                owner.uid.clone(),
                sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ))
        }
        ("", "ReplicationController") => {
            let rc = state
                .controllers
                .get(&ObjectRef::new(&owner.name).within(namespace))
                .filter(|s| s.uid().as_deref() == Some(owner.uid.as_str()))?;
            Some((
                owner.uid.clone(),
                rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ))
        }
        _ => None,
    }
}

/// The `disruptedPods` entries still in force: the pod exists, is not being deleted, and
/// the eviction is younger than [`DELETION_TIMEOUT`]; and when the next one expires.
fn live_disruptions(
    status: &PodDisruptionBudgetStatus,
    pods: &[Arc<Pod>],
    now: jiff::Timestamp,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let mut live = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    for (name, at) in status.disrupted_pods.iter().flatten() {
        let Some(pod) = pods.iter().find(|p| &p.name_any() == name) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let expires = at.0 + jiff::SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default();
        if expires <= now {
            tracing::info!(pod = %key_of(pod.as_ref()), "pod was expected to be deleted but it was not");
            continue;
        }
        let left = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
        recheck = Some(recheck.map_or(left, |r| r.min(left)));
        live.insert(name.clone(), at.clone());
    }
    (live, recheck)
}

/// Sets the DisruptionAllowed condition, keeping its transition time when the status
/// does not change.
fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let conditions = status.conditions.get_or_insert_default();
    let transition = conditions
        .iter()
        .find(|c| c.type_ == CONDITION && c.status == value)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != CONDITION);
    conditions.push(Condition {
        type_: CONDITION.into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: transition,
    });
}

fn same_status(a: &PodDisruptionBudgetStatus, b: &PodDisruptionBudgetStatus) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn percentages_round_up() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(&pct("50%"), 3).unwrap(), 2);
        assert_eq!(scaled(&pct("50%"), 4).unwrap(), 2);
        assert_eq!(scaled(&pct("10%"), 1).unwrap(), 1);
        assert_eq!(scaled(&pct("0%"), 5).unwrap(), 0);
        assert_eq!(scaled(&IntOrString::Int(2), 5).unwrap(), 2);
        assert!(scaled(&pct("half"), 5).is_err());
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "a".to_owned()),
        ]
        .into();
        let sel = |labels: &[(&str, &str)], exprs: Vec<(&str, &str, &[&str])>| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                match_expressions: Some(
                    exprs
                        .into_iter()
                        .map(|(k, op, vs)| LabelSelectorRequirement {
                            key: k.into(),
                            operator: op.into(),
                            values: Some(vs.iter().map(|v| (*v).into()).collect()),
                        })
                        .collect(),
                ),
            }
        };
        assert!(selector_matches(
            &sel(&[("app", "web")], vec![]),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &sel(&[("app", "db")], vec![]),
            Some(&labels)
        ));
        assert!(selector_matches(&sel(&[], vec![]), Some(&labels)));
        assert!(selector_matches(
            &sel(&[], vec![("tier", "In", &["a", "b"])]),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &sel(&[], vec![("tier", "NotIn", &["a"])]),
            Some(&labels)
        ));
        assert!(selector_matches(
            &sel(&[], vec![("x", "DoesNotExist", &[])]),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &sel(&[], vec![("x", "Exists", &[])]),
            Some(&labels)
        ));
    }
}
