//! Pure rules of the Deployment loop, as upstream's `pkg/controller/deployment/util`: the
//! pod-template hash, rolling-update fenceposts, revision and replica annotations,
//! conditions, and the status a set of ReplicaSets adds up to.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetCondition,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::replicaset::nonzero;
use crate::workloads::{fnv32a, safe_encode};

/// Label that ties a ReplicaSet and its pods to one template.
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision of a ReplicaSet (and the Deployment's current one).
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a reused ReplicaSet had.
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus max surge when the ReplicaSet was last scaled.
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations never copied onto ReplicaSets.
const ANNOTATIONS_TO_SKIP: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Longest revision-history annotation kept, as upstream's default.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Condition reasons, as upstream's.
pub(crate) mod reason {
    pub(crate) const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    pub(crate) const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    pub(crate) const RS_UPDATED: &str = "ReplicaSetUpdated";
    pub(crate) const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    pub(crate) const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    pub(crate) const PAUSED: &str = "DeploymentPaused";
    pub(crate) const RESUMED: &str = "DeploymentResumed";
    pub(crate) const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    pub(crate) const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    pub(crate) const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// `spec.replicas` (default 1).
pub(crate) fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.replicas` of a ReplicaSet (default 1).
pub(crate) fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.availableReplicas` of a ReplicaSet.
pub(crate) fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Whether the strategy is RollingUpdate (the default).
pub(crate) fn is_rolling_update(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// `spec.paused`.
pub(crate) fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// `spec.progressDeadlineSeconds`, when a deadline is set (the maximum means none).
pub(crate) fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// `spec.minReadySeconds`.
pub(crate) fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// An int-or-percent scaled against `total`, as upstream's `GetScaledValueFromIntOrPercent`.
pub(crate) fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = percent * i64::from(total);
            let value = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}

/// Max surge and max unavailable as absolute numbers, as upstream's `ResolveFenceposts`:
/// surge rounds up, unavailable rounds down, and both zero means one unavailable.
pub(crate) fn resolve_fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = replicas(d);
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge_value = rolling
        .and_then(|r| r.max_surge.clone())
        .unwrap_or_else(|| quarter.clone());
    let unavailable_value = rolling
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(quarter);
    let surge = scaled_value(&surge_value, desired, true).unwrap_or(0);
    let unavailable = scaled_value(&unavailable_value, desired, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

/// Pods above `spec.replicas` a rollout may run.
pub(crate) fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    resolve_fenceposts(d).0
}

/// Pods below `spec.replicas` a rollout may leave unavailable.
pub(crate) fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas(d);
    if !is_rolling_update(d) || desired == 0 {
        return 0;
    }
    resolve_fenceposts(d).1.min(desired)
}

/// The pod-template hash: FNV-32a over the template's canonical JSON and the collision
/// count, printed in upstream's vowel-free alphabet. (Upstream hashes Go's printout of the
/// struct, so the values differ from upstream's; the shape is the same.)
pub(crate) fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&(count as u32).to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// Whether two templates are equal once the pod-template-hash label is ignored (and empty
/// collections treated as absent, as upstream's semantic equality).
pub(crate) fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let canonical = |t: &PodTemplateSpec| {
        let mut value = serde_json::to_value(t).unwrap_or(Value::Null);
        if let Some(labels) = value
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(POD_TEMPLATE_HASH);
        }
        prune_empty(&mut value);
        value
    };
    canonical(a) == canonical(b)
}

fn prune_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(prune_empty);
            map.retain(|_, v| !is_empty_value(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// The revision annotation of an object's metadata (0 when absent or not a number).
pub(crate) fn revision(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The highest revision among `sets`.
pub(crate) fn max_revision(sets: &[ReplicaSet]) -> i64 {
    sets.iter()
        .map(|rs| revision(rs.metadata.annotations.as_ref()))
        .max()
        .unwrap_or(0)
}

/// Copies the Deployment's annotations (all but the controller's own) onto the ReplicaSet.
fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if ANNOTATIONS_TO_SKIP.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Brings the new ReplicaSet's annotations up to date, as upstream's
/// `SetNewReplicaSetAnnotations`: the Deployment's annotations, the revision (raised to
/// `new_revision`, the old one kept in the revision history) and, for a ReplicaSet about to
/// be created, the replica annotations. Returns whether anything changed.
pub(crate) fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(r) => match r.parse::<i64>() {
            Ok(r) => r,
            Err(_) => return false,
        },
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = match annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old,
            };
            let mut history = history.as_str();
            while history.len() > MAX_REVISION_HISTORY_CHARS {
                match history.split_once(',') {
                    Some((_, rest)) => history = rest,
                    None => break,
                }
            }
            annotations.insert(REVISION_HISTORY.into(), history.to_owned());
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// Sets the desired and max replicas annotations; returns whether they changed.
pub(crate) fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.into(), value);
            changed = true;
        }
    }
    changed
}

/// Whether the replica annotations differ from `desired` and `max`.
pub(crate) fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.as_ref();
    let get = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
    get(DESIRED_REPLICAS) != Some(desired.to_string()) || get(MAX_REPLICAS) != Some(max.to_string())
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// The desired-replicas annotation.
pub(crate) fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, DESIRED_REPLICAS)
}

/// Whether the ReplicaSet runs all the Deployment wants, as upstream's `IsSaturated`.
pub(crate) fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let desired = replicas(d);
    desired_replicas_annotation(rs) == Some(desired)
        && rs_replicas(rs) == desired
        && rs_available(rs) == desired
}

/// Sorts oldest first, by creation time then name.
pub(crate) fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Sorts by revision, then creation time.
pub(crate) fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a.metadata.annotations.as_ref())
        .cmp(&revision(b.metadata.annotations.as_ref()))
        .then_with(|| by_creation(a, b))
}

/// Larger first; among equals newer first (`newer`) or older first.
pub(crate) fn by_size(a: &ReplicaSet, b: &ReplicaSet, newer: bool) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
        if newer {
            by_creation(b, a)
        } else {
            by_creation(a, b)
        }
    })
}

/// The sum of `spec.replicas`.
pub(crate) fn spec_replica_count<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    sets.into_iter().map(rs_replicas).sum()
}

/// The replicas a new ReplicaSet should have now, as upstream's `NewRSNewReplicas`.
pub(crate) fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    let desired = replicas(d);
    if !is_rolling_update(d) {
        return desired;
    }
    let current = spec_replica_count(all.iter().copied());
    let max_total = desired + max_surge(d);
    let current_new = rs_replicas(new_rs);
    if current >= max_total {
        return current_new;
    }
    let scale_up = (max_total - current).min(desired - current_new);
    current_new + scale_up
}

/// How many replicas a ReplicaSet gains or loses when the Deployment is scaled by
/// `to_add` of which `added` are handed out already, as upstream's `GetProportion`.
pub(crate) fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn rs_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let current = rs_replicas(rs);
    if replicas(d) == 0 {
        return -current;
    }
    let max_now = replicas(d) + max_surge(d);
    let max_before = match int_annotation(rs, MAX_REPLICAS) {
        Some(m) if m != 0 => m,
        _ => d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
    };
    if max_before == 0 {
        return 0;
    }
    let size = f64::from(current) * f64::from(max_now) / f64::from(max_before);
    size.round() as i32 - current
}

/// A new condition with both times set to `now`.
pub(crate) fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Time,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// The condition of `type_`.
pub(crate) fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Sets a condition, as upstream's `SetDeploymentCondition`: same status and reason is no
/// change; same status keeps the transition time.
pub(crate) fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(current) = get_condition(status, &cond.type_) {
        if current.status == cond.status && current.reason == cond.reason {
            return;
        }
        if current.status == cond.status {
            cond.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_.clone());
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

/// Removes the condition of `type_`.
pub(crate) fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// A ReplicaSet's ReplicaFailure condition as a Deployment condition.
pub(crate) fn rs_condition_to_deployment(c: &ReplicaSetCondition) -> DeploymentCondition {
    DeploymentCondition {
        type_: c.type_.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_update_time: c.last_transition_time.clone(),
        last_transition_time: c.last_transition_time.clone(),
    }
}

/// The status the ReplicaSets add up to, as upstream's `calculateStatus`.
pub(crate) fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Time,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let total = spec_replica_count(all.iter().copied());
    let unavailable = (total - available).max(0);
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: nonzero(d.metadata.generation.unwrap_or(0)),
        replicas: nonzero(all.iter().map(|rs| rs_status_replicas(rs)).sum()),
        updated_replicas: nonzero(new_rs.map_or(0, rs_status_replicas)),
        ready_replicas: nonzero(all.iter().map(|rs| rs_ready(rs)).sum()),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero(unavailable),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

/// Every replica updated and available, and the status is of the current generation.
pub(crate) fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = replicas(d);
    status.updated_replicas.unwrap_or(0) == desired
        && status.replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the Deployment's current status.
pub(crate) fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// Whether the Progressing condition of `status` is older than the progress deadline.
pub(crate) fn deployment_timed_out(
    d: &Deployment,
    status: &DeploymentStatus,
    now: jiff::Timestamp,
) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(cond) = get_condition(status, "Progressing") else {
        return false;
    };
    match cond.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => cond
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        // 25% of 10: surge rounds up to 3, unavailable down to 2.
        assert_eq!(
            resolve_fenceposts(&deployment(10, pct("25%"), pct("25%"))),
            (3, 2)
        );
        // 25% of 1: surge 1, unavailable 0.
        assert_eq!(
            resolve_fenceposts(&deployment(1, pct("25%"), pct("25%"))),
            (1, 0)
        );
        // Both zero after rounding: one unavailable.
        assert_eq!(
            resolve_fenceposts(&deployment(3, pct("0%"), pct("10%"))),
            (0, 1)
        );
        assert_eq!(
            resolve_fenceposts(&deployment(5, IntOrString::Int(2), IntOrString::Int(0))),
            (2, 0)
        );
        assert_eq!(
            max_unavailable(&deployment(2, IntOrString::Int(0), IntOrString::Int(5))),
            2
        );
        assert!(scaled_value(&pct("abc"), 10, true).is_err());
    }

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn hash_and_equality_ignore_the_hash_label() {
        let a = template("nginx:1.25");
        let h = compute_hash(&a, None);
        assert!(!h.is_empty());
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_eq!(h, compute_hash(&a, None));
        assert_ne!(h, compute_hash(&a, Some(1)));
        assert_ne!(h, compute_hash(&template("nginx:1.26"), None));
        let mut hashed = a.clone();
        hashed
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), h);
        hashed.metadata.as_mut().unwrap().annotations = Some(BTreeMap::new());
        assert!(equal_ignore_hash(&a, &hashed));
        assert!(!equal_ignore_hash(&a, &template("nginx:1.26")));
    }

    #[test]
    fn revisions_move_forward_and_keep_history() {
        let mut d = deployment(3, pct("25%"), pct("25%"));
        d.metadata.annotations = Some(BTreeMap::from([
            (
                "kubernetes.io/change-cause".to_owned(),
                "set image".to_owned(),
            ),
            (REVISION.to_owned(), "9".to_owned()),
        ]));
        let mut rs = ReplicaSet::default();
        assert!(set_new_rs_annotations(&d, &mut rs, 1, false));
        let a = rs.metadata.annotations.clone().unwrap();
        assert_eq!(a[REVISION], "1");
        assert_eq!(a["kubernetes.io/change-cause"], "set image");
        assert_eq!(a[DESIRED_REPLICAS], "3");
        assert_eq!(a[MAX_REPLICAS], "4");
        assert!(!set_new_rs_annotations(&d, &mut rs, 1, true));
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
        let a = rs.metadata.annotations.clone().unwrap();
        assert_eq!(a[REVISION], "3");
        assert_eq!(a[REVISION_HISTORY], "1");
    }

    fn rs(replicas: i32, max: Option<i32>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                annotations: max
                    .map(|m| BTreeMap::from([(MAX_REPLICAS.to_owned(), m.to_string())])),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn proportions_follow_the_previous_size() {
        // A 10-replica deployment (max 13) scaled to 20 (max 25) mid-rollout: an RS with 6 of
        // the 13 grows to round(6 * 25 / 13) = 12.
        let d = deployment(20, pct("25%"), pct("25%"));
        assert_eq!(proportion(&rs(6, Some(13)), &d, 10, 0), 6);
        // Never more than what is left to hand out.
        assert_eq!(proportion(&rs(6, Some(13)), &d, 10, 8), 2);
        let down = deployment(0, pct("25%"), pct("25%"));
        assert_eq!(proportion(&rs(4, Some(13)), &down, -13, 0), -4);
    }

    #[test]
    fn new_replica_set_grows_within_surge() {
        let d = deployment(4, IntOrString::Int(1), IntOrString::Int(0));
        let old = rs(4, None);
        let new = rs(0, None);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
        let new = rs(1, None);
        assert_eq!(new_rs_new_replicas(&d, &[&rs(3, None), &new], &new), 2);
    }
}
