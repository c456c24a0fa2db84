//! Per-kind rules applied on every write: what create and update reset, when
//! `metadata.generation` moves, and how the status subresource splits an object.

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use serde_json::{Value, json};

/// Kinds whose `metadata.generation` tracks spec changes. Custom resources always do.
fn tracks_generation(kind: &KindInfo) -> bool {
    let builtin_untracked = matches!(
        (kind.group.as_str(), kind.kind.as_str()),
        (
            "",
            "Pod"
                | "Namespace"
                | "Node"
                | "ConfigMap"
                | "Secret"
                | "Service"
                | "Endpoints"
                | "Event"
                | "ServiceAccount"
        ) | (
            "",
            "PersistentVolume"
                | "PersistentVolumeClaim"
                | "LimitRange"
                | "ResourceQuota"
                | "PodTemplate"
        ) | ("coordination.k8s.io", _)
            | ("events.k8s.io", _)
            | ("discovery.k8s.io", _)
            | ("apps", "ControllerRevision")
            | ("storage.k8s.io", _)
            | ("rbac.authorization.k8s.io", _)
            | ("certificates.k8s.io", _)
            | ("scheduling.k8s.io", _)
            | ("node.k8s.io", _)
    );
    !builtin_untracked
}

/// Prepares a new object: status starts empty for kinds with a status subresource
/// (pods start Pending), generation starts at 1.
pub fn prepare_for_create(kind: &KindInfo, obj: &mut Value) {
    // Nodes are the exception upstream: a registering node sets its status on create.
    let keeps_status = kind.group.is_empty() && kind.kind == "Node";
    if kind.has_status() && !keeps_status {
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
        }
        match (kind.group.as_str(), kind.kind.as_str()) {
            ("", "Pod") => obj["status"] = json!({"phase": "Pending"}),
            ("", "Namespace") => {
                obj["status"] = json!({"phase": "Active"});
                obj["spec"]["finalizers"] = json!([crate::namespaces::FINALIZER]);
            }
            ("", "PersistentVolumeClaim") => obj["status"] = json!({"phase": "Pending"}),
            ("", "PersistentVolume") => obj["status"] = json!({"phase": "Pending"}),
            // Upstream's ServiceStatus is a struct, so a new Service shows an empty one.
            ("", "Service") => obj["status"] = json!({"loadBalancer": {}}),
            _ => {}
        }
    }
    if kind.kind == "Namespace" && kind.group.is_empty() && obj.get("status").is_none() {
        obj["status"] = json!({"phase": "Active"});
    }
    if kind.group == "batch" && kind.kind == "Job" {
        generate_job_selector(obj);
    }
    if tracks_generation(kind) {
        obj["metadata"]["generation"] = json!(1);
    }
}

/// A Job without `manualSelector: true` selects its pods by its own uid, as upstream's
/// Job strategy arranges: the selector and the template's labels are generated.
fn generate_job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if uid.is_empty() || !obj.get("spec").is_some_and(Value::is_object) {
        return;
    }
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/job-name", name.as_str()),
        ("job-name", name.as_str()),
    ] {
        labels[k] = json!(v);
    }
}

/// Everything but metadata and status: what a generation bump compares. Nulls are
/// dropped: upstream compares decoded objects, where `null` and an absent field are the
/// same (typed clients omit what kubectl sends as null, e.g. a template's
/// `creationTimestamp`).
fn spec_part(obj: &Value) -> Value {
    fn without_nulls(v: &Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), without_nulls(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
            other => other.clone(),
        }
    }
    let mut v = without_nulls(obj);
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("apiVersion");
        map.remove("kind");
    }
    v
}

/// Prepares an update of the main resource: status changes are ignored for kinds with a
/// status subresource, and the generation moves when anything outside metadata and status
/// changed.
pub fn prepare_for_update(kind: &KindInfo, new: &mut Value, old: &Value) {
    if kind.has_status() {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    let old_generation = old.pointer("/metadata/generation").and_then(Value::as_i64);
    if tracks_generation(kind) {
        let generation = old_generation.unwrap_or(1);
        let bumped = if spec_part(new) != spec_part(old) {
            generation + 1
        } else {
            generation
        };
        new["metadata"]["generation"] = json!(bumped);
    } else if let Some(g) = old_generation {
        new["metadata"]["generation"] = json!(g);
    }
}

/// Prepares an update through `/status`: only the status changes (and metadata the
/// caller is allowed to touch there: none but resourceVersion).
pub fn prepare_for_status_update(new: &Value, old: &Value) -> Value {
    let mut merged = old.clone();
    match new.get("status") {
        Some(status) => merged["status"] = status.clone(),
        None => {
            if let Some(map) = merged.as_object_mut() {
                map.remove("status");
            }
        }
    }
    merged
}

/// What a DELETE does to an object's graceful-deletion state, as upstream's
/// `rest.BeforeDelete` decides it.
#[derive(Debug, PartialEq, Eq)]
pub enum GracefulDelete {
    /// No grace period applies (the kind has none, or the one under way is used up):
    /// the object goes now, or, held by finalizers, is marked with grace 0.
    Immediate,
    /// Already being deleted, and the request does not shorten the grace period: nothing
    /// changes, not even the finalizers the delete options would set.
    Pending,
    /// Mark the object (again): `deletionTimestamp` and `deletionGracePeriodSeconds`.
    /// A grace of 0 without finalizers means the object goes now.
    Graceful {
        /// The new `metadata.deletionTimestamp`.
        deletion_timestamp: jiff::Timestamp,
        /// The new `metadata.deletionGracePeriodSeconds`.
        grace_period_seconds: i64,
    },
}

/// Decides a DELETE's graceful part for `obj` given the request's `gracePeriodSeconds`.
/// Only pods are deleted gracefully. A later delete may only shorten the grace period:
/// the deletion timestamp then moves to the first deletion's time plus the new period.
pub fn before_delete(
    kind: &KindInfo,
    obj: &Value,
    requested: Option<i64>,
    now: jiff::Timestamp,
) -> GracefulDelete {
    // Negative periods mean one second on the delete path, in requests and stored alike.
    let at_least_one = |g: i64| if g < 0 { 1 } else { g };
    let requested = requested.map(at_least_one);
    if !(kind.group.is_empty() && kind.kind == "Pod") {
        return GracefulDelete::Immediate;
    }
    if let Some(timestamp) = obj.meta_str("deletionTimestamp") {
        let existing = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .map(at_least_one);
        // Marked without a grace period left (an earlier update that was meant to be
        // followed by the removal): finish now.
        let Some(existing) = existing.filter(|g| *g > 0) else {
            return GracefulDelete::Immediate;
        };
        let Some(requested) = requested.filter(|g| *g < existing) else {
            return GracefulDelete::Pending;
        };
        let marked = timestamp
            .parse::<jiff::Timestamp>()
            .unwrap_or(now + jiff::SignedDuration::from_secs(existing));
        return GracefulDelete::Graceful {
            deletion_timestamp: marked - jiff::SignedDuration::from_secs(existing)
                + jiff::SignedDuration::from_secs(requested),
            grace_period_seconds: requested,
        };
    }
    let grace = pod_grace_period(obj, requested);
    GracefulDelete::Graceful {
        deletion_timestamp: now + jiff::SignedDuration::from_secs(grace),
        grace_period_seconds: grace,
    }
}

/// A pod's grace period on its first deletion (upstream's `CheckGracefulDelete`): the
/// request's, else the pod's `terminationGracePeriodSeconds`; 0 for a pod on no node or
/// one that already finished, since no node has anything to stop.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !scheduled || matches!(phase, "Succeeded" | "Failed") {
        return 0;
    }
    requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

/// Prepares an update through a CSR's `/approval`: only the status conditions change.
pub fn prepare_for_approval(new: &Value, old: &Value) -> Value {
    let mut merged = old.clone();
    let conditions = new
        .pointer("/status/conditions")
        .cloned()
        .unwrap_or(Value::Null);
    if !merged.get("status").is_some_and(Value::is_object) {
        merged["status"] = json!({});
    }
    merged["status"]["conditions"] = conditions;
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimachinery::kinds::builtin;

    fn kind(k: &str) -> KindInfo {
        builtin().into_iter().find(|i| i.kind == k).expect("kind")
    }

    #[test]
    fn generation_ignores_null_versus_absent() {
        let kind = kind("Deployment");
        let old = json!({"metadata": {"name": "d", "generation": 4}, "spec": {"template": {"metadata": {"creationTimestamp": null}}}});
        let mut new = json!({"metadata": {"name": "d"}, "spec": {"template": {"metadata": {}}}});
        prepare_for_update(&kind, &mut new, &old);
        assert_eq!(new["metadata"]["generation"], 4);
    }

    #[test]
    fn generation_bumps_on_spec_change_only() {
        let deploy = kind("Deployment");
        let mut obj =
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}, "status": {"replicas": 9}});
        prepare_for_create(&deploy, &mut obj);
        assert_eq!(obj["metadata"]["generation"], 1);
        assert!(obj.get("status").is_none());
        let old = obj.clone();
        let mut same = old.clone();
        same["metadata"]["labels"] = json!({"x": "y"});
        same["status"] = json!({"replicas": 3});
        prepare_for_update(&deploy, &mut same, &old);
        assert_eq!(same["metadata"]["generation"], 1);
        assert!(
            same.get("status").is_none(),
            "status changes are ignored on the main resource"
        );
        let mut changed = old.clone();
        changed["spec"]["replicas"] = json!(2);
        prepare_for_update(&deploy, &mut changed, &old);
        assert_eq!(changed["metadata"]["generation"], 2);
    }

    #[test]
    fn configmaps_have_no_generation_and_pods_start_pending() {
        let mut cm = json!({"metadata": {"name": "a"}, "data": {}});
        prepare_for_create(&kind("ConfigMap"), &mut cm);
        assert!(cm["metadata"].get("generation").is_none());
        let mut pod =
            json!({"metadata": {"name": "a"}, "spec": {}, "status": {"phase": "Running"}});
        prepare_for_create(&kind("Pod"), &mut pod);
        assert_eq!(pod["status"]["phase"], "Pending");
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn graceful(timestamp: &str, grace: i64) -> GracefulDelete {
        GracefulDelete::Graceful {
            deletion_timestamp: at(timestamp),
            grace_period_seconds: grace,
        }
    }

    #[test]
    fn only_scheduled_running_pods_get_a_grace_period() {
        let now = at("2026-01-01T00:00:00Z");
        let pod = kind("Pod");
        let running = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n"},
            "status": {"phase": "Running"}});
        assert_eq!(
            before_delete(&pod, &running, None, now),
            graceful("2026-01-01T00:00:30Z", 30)
        );
        assert_eq!(
            before_delete(&pod, &running, Some(-5), now),
            graceful("2026-01-01T00:00:01Z", 1),
            "negative periods mean one second"
        );
        assert_eq!(
            before_delete(&pod, &running, Some(0), now),
            graceful("2026-01-01T00:00:00Z", 0)
        );
        let mut pending = running.clone();
        pending["spec"] = json!({"terminationGracePeriodSeconds": 60});
        assert_eq!(
            before_delete(&pod, &pending, Some(10), now),
            graceful("2026-01-01T00:00:00Z", 0)
        );
        let mut finished = running.clone();
        finished["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            before_delete(&pod, &finished, None, now),
            graceful("2026-01-01T00:00:00Z", 0)
        );
        assert_eq!(
            before_delete(&kind("ConfigMap"), &running, Some(30), now),
            GracefulDelete::Immediate
        );
    }

    #[test]
    fn a_second_delete_may_only_shorten_the_grace_period() {
        let now = at("2026-01-01T00:01:00Z");
        let pod = kind("Pod");
        // Deleted at 00:00:00 with 300 s.
        let terminating = json!({"metadata": {"name": "p",
            "deletionTimestamp": "2026-01-01T00:05:00Z", "deletionGracePeriodSeconds": 300},
            "spec": {"nodeName": "n"}, "status": {"phase": "Running"}});
        assert_eq!(
            before_delete(&pod, &terminating, Some(2), now),
            graceful("2026-01-01T00:00:02Z", 2),
            "the first deletion's time plus the new period"
        );
        assert_eq!(
            before_delete(&pod, &terminating, Some(0), now),
            graceful("2026-01-01T00:00:00Z", 0)
        );
        for longer_or_equal in [Some(300), Some(600), None] {
            assert_eq!(
                before_delete(&pod, &terminating, longer_or_equal, now),
                GracefulDelete::Pending
            );
        }
        let mut used_up = terminating.clone();
        used_up["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        assert_eq!(
            before_delete(&pod, &used_up, Some(30), now),
            GracefulDelete::Immediate
        );
    }

    #[test]
    fn status_update_keeps_spec() {
        let old = json!({"spec": {"replicas": 1}, "status": {"replicas": 0}});
        let new = json!({"spec": {"replicas": 5}, "status": {"replicas": 1}});
        assert_eq!(
            prepare_for_status_update(&new, &old),
            json!({"spec": {"replicas": 1}, "status": {"replicas": 1}})
        );
    }
}
