//! Validation of replicated workloads: Deployment, ReplicaSet, StatefulSet, DaemonSet and
//! ReplicationController.

use serde_json::{Map, Value};

use super::pod::{RestartPolicies, labels, template};
use super::{Errs, at, field, is_empty, non_negative};
use crate::selector::label::LabelSelector;

/// Checks `spec.selector` (a `metav1.LabelSelector`): required, well-formed, non-empty, and
/// matching `spec.template.metadata.labels`. `kind` names the kind in the empty-selector
/// message as upstream words it.
pub(crate) fn selector(spec: &Value, kind: &str, e: &mut Errs) {
    let sel_v = field(spec, "selector");
    if sel_v.is_null() {
        e.required("spec.selector", "");
        return;
    }
    if let Some(sel) = parse_selector(sel_v, "spec.selector", e) {
        if sel.is_empty() {
            e.invalid(
                "spec.selector",
                sel_v,
                &format!("empty selector is invalid for {kind}"),
            );
            return;
        }
        template_matches(spec, "spec", &sel, e);
    }
}

/// Parses a `metav1.LabelSelector` found at `path`, reporting it when malformed.
pub(crate) fn parse_selector(v: &Value, path: &str, e: &mut Errs) -> Option<LabelSelector> {
    if !v.is_object() {
        e.invalid(path, v, "must be a label selector object");
        return None;
    }
    match LabelSelector::from_json(v) {
        Ok(s) => Some(s),
        Err(err) => {
            e.invalid(path, v, &err.to_string());
            None
        }
    }
}

/// Reports template labels the selector does not match; `prefix` is the spec's path.
pub(crate) fn template_matches(spec: &Value, prefix: &str, sel: &LabelSelector, e: &mut Errs) {
    let empty = Map::new();
    let labels_v = at(spec, "template.metadata.labels");
    let labels = labels_v.as_object().unwrap_or(&empty);
    if !sel.matches(labels) {
        e.invalid(
            &format!("{prefix}.template.metadata.labels"),
            labels_v,
            "`selector` does not match template `labels`",
        );
    }
}

/// `replicas`, `minReadySeconds` and `revisionHistoryLimit`, when present, are >= 0.
fn counts(spec: &Value, e: &mut Errs) {
    for key in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        non_negative(spec, key, &format!("spec.{key}"), e);
    }
}

/// Checks a required enum-like string field at `path`.
pub(crate) fn one_of(v: &Value, path: &str, allowed: &[&str], e: &mut Errs) {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => {}
        _ if is_empty(v) => e.required(path, ""),
        _ => e.not_supported(path, v, allowed),
    }
}

/// Checks an int-or-percent value (`maxSurge`, `maxUnavailable`); returns it as a
/// percentage-or-count pair `(value, is_percent)` when valid.
fn int_or_percent(v: &Value, path: &str, e: &mut Errs) -> Option<(i64, bool)> {
    match v {
        Value::Null => None,
        Value::Number(n) => match n.as_i64() {
            Some(x) if x >= 0 => Some((x, false)),
            _ => {
                e.invalid(path, v, "must be greater than or equal to 0");
                None
            }
        },
        Value::String(s) => {
            let digits = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            match digits.and_then(|d| d.parse::<i64>().ok()) {
                Some(x) => Some((x, true)),
                None => {
                    e.invalid(path, v, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')");
                    None
                }
            }
        }
        _ => {
            e.invalid(path, v, "must be an integer or a percentage");
            None
        }
    }
}

/// Checks a rolling update's `maxUnavailable` and `maxSurge` under `path`.
fn rolling_update(ru: &Value, path: &str, e: &mut Errs) {
    let unavailable_path = format!("{path}.maxUnavailable");
    let unavailable_v = field(ru, "maxUnavailable");
    let unavailable = int_or_percent(unavailable_v, &unavailable_path, e);
    let surge = int_or_percent(field(ru, "maxSurge"), &format!("{path}.maxSurge"), e);
    if let Some((x, true)) = unavailable
        && x > 100
    {
        e.invalid(
            &unavailable_path,
            unavailable_v,
            "must not be greater than 100%",
        );
    }
    if unavailable.is_some_and(|(x, _)| x == 0) && surge.is_some_and(|(x, _)| x == 0) {
        e.invalid(
            &unavailable_path,
            unavailable_v,
            "may not be 0 when `maxSurge` is 0",
        );
    }
}

pub(crate) fn deployment(obj: &Value, e: &mut Errs) {
    let spec = field(obj, "spec");
    counts(spec, e);
    selector(spec, "deployment", e);
    template(
        field(spec, "template"),
        "spec.template",
        RestartPolicies::Always,
        e,
    );
    let strategy = field(spec, "strategy");
    let ty = field(strategy, "type");
    one_of(ty, "spec.strategy.type", &["Recreate", "RollingUpdate"], e);
    let ru = field(strategy, "rollingUpdate");
    match ty.as_str() {
        Some("Recreate") if !ru.is_null() => e.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        ),
        Some("RollingUpdate") => rolling_update(ru, "spec.strategy.rollingUpdate", e),
        _ => {}
    }
    non_negative(
        spec,
        "progressDeadlineSeconds",
        "spec.progressDeadlineSeconds",
        e,
    );
    let deadline = field(spec, "progressDeadlineSeconds");
    if let (Some(d), Some(min)) = (deadline.as_i64(), field(spec, "minReadySeconds").as_i64())
        && d <= min
    {
        e.invalid(
            "spec.progressDeadlineSeconds",
            deadline,
            "must be greater than minReadySeconds",
        );
    }
}

pub(crate) fn replica_set(obj: &Value, e: &mut Errs) {
    let spec = field(obj, "spec");
    counts(spec, e);
    selector(spec, "deployment", e);
    template(
        field(spec, "template"),
        "spec.template",
        RestartPolicies::Always,
        e,
    );
}

pub(crate) fn stateful_set(obj: &Value, e: &mut Errs) {
    let spec = field(obj, "spec");
    counts(spec, e);
    one_of(
        field(spec, "podManagementPolicy"),
        "spec.podManagementPolicy",
        &["OrderedReady", "Parallel"],
        e,
    );
    let strategy = field(spec, "updateStrategy");
    let ty = field(strategy, "type");
    one_of(
        ty,
        "spec.updateStrategy.type",
        &["RollingUpdate", "OnDelete"],
        e,
    );
    let ru = field(strategy, "rollingUpdate");
    if ty == "OnDelete" && !ru.is_null() {
        e.invalid(
            "spec.updateStrategy.rollingUpdate",
            ru,
            "only allowed for updateStrategy 'RollingUpdate'",
        );
    }
    if ty == "RollingUpdate" {
        non_negative(
            ru,
            "partition",
            "spec.updateStrategy.rollingUpdate.partition",
            e,
        );
    }
    let policy = field(spec, "persistentVolumeClaimRetentionPolicy");
    if !policy.is_null() {
        for key in ["whenDeleted", "whenScaled"] {
            one_of(
                field(policy, key),
                &format!("spec.persistentVolumeClaimRetentionPolicy.{key}"),
                &["Retain", "Delete"],
                e,
            );
        }
    }
    non_negative(field(spec, "ordinals"), "start", "spec.ordinals.start", e);
    selector(spec, "statefulset", e);
    template(
        field(spec, "template"),
        "spec.template",
        RestartPolicies::Always,
        e,
    );
}

/// The StatefulSet spec fields an update may change.
const STATEFUL_SET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

pub(crate) fn stateful_set_update(new: &Value, old: &Value, e: &mut Errs) {
    let strip = |obj: &Value| {
        let mut spec = field(obj, "spec").as_object().cloned().unwrap_or_default();
        spec.retain(|k, v| !STATEFUL_SET_MUTABLE.contains(&k.as_str()) && !v.is_null());
        spec
    };
    if strip(new) != strip(old) {
        e.forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        );
    }
}

pub(crate) fn daemon_set(obj: &Value, e: &mut Errs) {
    let spec = field(obj, "spec");
    for key in ["minReadySeconds", "revisionHistoryLimit"] {
        non_negative(spec, key, &format!("spec.{key}"), e);
    }
    selector(spec, "daemonset", e);
    template(
        field(spec, "template"),
        "spec.template",
        RestartPolicies::Always,
        e,
    );
    let strategy = field(spec, "updateStrategy");
    let ty = field(strategy, "type");
    one_of(
        ty,
        "spec.updateStrategy.type",
        &["OnDelete", "RollingUpdate"],
        e,
    );
    if ty == "RollingUpdate" {
        let ru = field(strategy, "rollingUpdate");
        if ru.is_null() {
            e.required("spec.updateStrategy.rollingUpdate", "");
        } else {
            rolling_update(ru, "spec.updateStrategy.rollingUpdate", e);
        }
    }
}

pub(crate) fn replication_controller(obj: &Value, e: &mut Errs) {
    let spec = field(obj, "spec");
    for key in ["replicas", "minReadySeconds"] {
        non_negative(spec, key, &format!("spec.{key}"), e);
    }
    let sel_v = field(spec, "selector");
    labels(sel_v, "spec.selector", e);
    let sel: Option<Vec<(&String, &str)>> = sel_v.as_object().map(|m| {
        m.iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or("")))
            .collect()
    });
    if sel.as_ref().is_none_or(Vec::is_empty) {
        e.required("spec.selector", "");
    }
    let t = field(spec, "template");
    if t.is_null() {
        e.required("spec.template", "");
        return;
    }
    let tl = at(t, "metadata.labels");
    let matches = sel
        .iter()
        .flatten()
        .all(|(k, v)| tl.get(k.as_str()).and_then(Value::as_str) == Some(*v));
    if !matches {
        e.invalid(
            "spec.template.metadata.labels",
            tl,
            "`selector` does not match template `labels`",
        );
    }
    template(t, "spec.template", RestartPolicies::Always, e);
}
