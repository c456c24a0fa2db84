//! Defaults of workload kinds: ReplicationController, apps/v1 and batch/v1.

use serde_json::{Value, json};

use super::pod::{pod_spec, pvc};
use super::{child, existing, items, set, set_str};

/// Defaults the pod spec at `spec.template.spec`, if there is one.
fn template(spec: &mut Value) {
    if let Some(pod) = existing(spec, "template").and_then(|t| existing(t, "spec")) {
        pod_spec(pod);
    }
}

/// The template's labels as a non-empty object, if any.
fn template_labels(spec: &Value) -> Option<Value> {
    spec.pointer("/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned()
}

/// True when `metadata.labels` is absent, null or empty.
fn no_labels(obj: &Value) -> bool {
    match obj.pointer("/metadata/labels") {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(_) => false,
    }
}

fn copy_labels(obj: &mut Value, labels: Value) {
    if no_labels(obj)
        && let Some(meta) = child(obj, "metadata")
        && let Some(m) = meta.as_object_mut()
    {
        m.insert("labels".to_owned(), labels);
    }
}

pub(super) fn replication_controller(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set(spec, "replicas", json!(1));
    template(spec);
    if let Some(labels) = template_labels(spec) {
        let empty_selector = match spec.get("selector") {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(_) => false,
        };
        if empty_selector && let Some(m) = spec.as_object_mut() {
            m.insert("selector".to_owned(), labels.clone());
        }
        copy_labels(obj, labels);
    }
}

pub(super) fn deployment(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set(spec, "replicas", json!(1));
    if let Some(strategy) = child(spec, "strategy") {
        set_str(strategy, "type", "RollingUpdate");
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(ru) = child(strategy, "rollingUpdate")
        {
            set(ru, "maxUnavailable", json!("25%"));
            set(ru, "maxSurge", json!("25%"));
        }
    }
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    template(spec);
}

pub(super) fn replica_set(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set(spec, "replicas", json!(1));
    template(spec);
}

pub(super) fn stateful_set(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = child(spec, "updateStrategy") {
        let untyped = super::unset_str(strategy.get("type"));
        if untyped {
            set_str(strategy, "type", "RollingUpdate");
            child(strategy, "rollingUpdate");
        }
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(ru) = existing(strategy, "rollingUpdate")
        {
            set(ru, "partition", json!(0));
        }
    }
    if let Some(policy) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        set_str(policy, "whenDeleted", "Retain");
        set_str(policy, "whenScaled", "Retain");
    }
    set(spec, "replicas", json!(1));
    set(spec, "revisionHistoryLimit", json!(10));
    template(spec);
    for claim in items(spec, "volumeClaimTemplates") {
        pvc(claim);
    }
}

pub(super) fn daemon_set(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    if let Some(strategy) = child(spec, "updateStrategy") {
        set_str(strategy, "type", "RollingUpdate");
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(ru) = child(strategy, "rollingUpdate")
        {
            set(ru, "maxUnavailable", json!(1));
            set(ru, "maxSurge", json!(0));
        }
    }
    set(spec, "revisionHistoryLimit", json!(10));
    template(spec);
}

pub(super) fn job(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    job_spec(spec);
    if let Some(labels) = template_labels(spec) {
        copy_labels(obj, labels);
    }
}

/// Defaults of a Job's spec (top-level Jobs only: a CronJob's job template gets only its
/// pod template defaulted, as upstream does).
fn job_spec(spec: &mut Value) {
    let unset = |spec: &Value, key: &str| super::unset(spec.get(key));
    if unset(spec, "completions") && unset(spec, "parallelism") {
        set(spec, "completions", json!(1));
    }
    set(spec, "parallelism", json!(1));
    let backoff = if unset(spec, "backoffLimitPerIndex") {
        json!(6)
    } else {
        json!(i32::MAX)
    };
    set(spec, "backoffLimit", backoff);
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    let replacement = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set(spec, "podReplacementPolicy", json!(replacement));
    template(spec);
}

pub(super) fn cron_job(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_str(spec, "concurrencyPolicy", "Allow");
    set(spec, "suspend", json!(false));
    set(spec, "successfulJobsHistoryLimit", json!(3));
    set(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job) = existing(spec, "jobTemplate").and_then(|t| existing(t, "spec")) {
        template(job);
    }
}
