//! Validation of pod specs (pods and every pod template) and of pod updates.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value, json};

use super::{
    Errs, field, is_empty, list, non_negative, parse_quantity, port_name_errors, port_num_errors,
    port_ref, str_of,
};
use crate::defaults::VOLUME_SOURCES;
use crate::validation::{dns1123_label, label_value, qualified_name};

/// Which `restartPolicy` values a pod spec may use where it appears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RestartPolicies {
    /// Pods and PodTemplates: `Always`, `OnFailure` or `Never`.
    Any,
    /// Templates of Deployments, ReplicaSets, StatefulSets, DaemonSets and
    /// ReplicationControllers: only `Always`.
    Always,
    /// Templates of Jobs: `OnFailure` or `Never`.
    Job,
}

/// Validates a pod template (`metadata.labels` and `spec`) found at `path`.
pub(crate) fn template(t: &Value, path: &str, policies: RestartPolicies, e: &mut Errs) {
    labels(
        t.pointer("/metadata/labels").unwrap_or(&Value::Null),
        &format!("{path}.metadata.labels"),
        e,
    );
    let spec_path = format!("{path}.spec");
    let spec = field(t, "spec");
    pod_spec(spec, &spec_path, policies, e);
    if policies == RestartPolicies::Always
        && spec
            .get("activeDeadlineSeconds")
            .is_some_and(|v| !v.is_null())
    {
        e.forbidden(
            &format!("{spec_path}.activeDeadlineSeconds"),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        );
    }
}

/// Checks a label map's keys and values.
pub(crate) fn labels(l: &Value, path: &str, e: &mut Errs) {
    match l {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                e.invalid_all(path, &json!(k), qualified_name(k));
                match v.as_str() {
                    Some(s) => e.invalid_all(path, v, label_value(s)),
                    None => e.invalid(path, v, "label values must be strings"),
                }
            }
        }
        other => e.invalid(path, other, "must be a map of strings"),
    }
}

const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const PROBE_HANDLERS: &[&str] = &["exec", "httpGet", "tcpSocket", "grpc"];

/// Validates a pod spec found at `path` (`spec`, `spec.template.spec`, ...).
pub(crate) fn pod_spec(spec: &Value, path: &str, policies: RestartPolicies, e: &mut Errs) {
    if !spec.is_object() {
        if spec.is_null() {
            e.required(&format!("{path}.containers"), "");
        } else {
            e.invalid(path, spec, "must be an object");
        }
        return;
    }
    let volumes = volumes(spec, path, e);
    let containers = list(spec, "containers");
    if containers.is_empty() {
        e.required(&format!("{path}.containers"), "");
    }
    let mut names = HashSet::new();
    for (key, init) in [("initContainers", true), ("containers", false)] {
        for (i, c) in list(spec, key).iter().enumerate() {
            container(
                c,
                &format!("{path}.{key}[{i}]"),
                init,
                &volumes,
                &mut names,
                e,
            );
        }
    }
    restart_policy(spec, path, policies, e);
    let dns = field(spec, "dnsPolicy");
    if let Some(s) = dns.as_str()
        && !DNS_POLICIES.contains(&s)
    {
        e.not_supported(&format!("{path}.dnsPolicy"), dns, DNS_POLICIES);
    }
    if let Some(v) = spec.get("activeDeadlineSeconds").filter(|v| !v.is_null())
        && !v
            .as_i64()
            .is_some_and(|n| (1..=i64::from(i32::MAX)).contains(&n))
    {
        e.invalid(
            &format!("{path}.activeDeadlineSeconds"),
            v,
            "must be between 1 and 2147483647, inclusive",
        );
    }
    labels(
        field(spec, "nodeSelector"),
        &format!("{path}.nodeSelector"),
        e,
    );
}

fn restart_policy(spec: &Value, path: &str, policies: RestartPolicies, e: &mut Errs) {
    let p = &format!("{path}.restartPolicy");
    let v = field(spec, "restartPolicy");
    let s = v.as_str().unwrap_or("");
    let allowed: &[&str] = match policies {
        RestartPolicies::Any => &["Always", "OnFailure", "Never"],
        RestartPolicies::Always => &["Always"],
        RestartPolicies::Job => &["OnFailure", "Never"],
    };
    if s.is_empty() && policies != RestartPolicies::Job {
        e.required(p, "");
    } else if !allowed.contains(&s) {
        e.not_supported(p, v, allowed);
    }
}

/// Checks the volumes; returns the names of the valid ones.
fn volumes(spec: &Value, path: &str, e: &mut Errs) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in list(spec, "volumes").iter().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        let name_v = field(v, "name");
        let name = name_v.as_str().unwrap_or("");
        if name.is_empty() {
            e.required(&format!("{vp}.name"), "");
        } else {
            let errs = dns1123_label(name);
            if errs.is_empty() && !names.insert(name.to_owned()) {
                e.duplicate(&format!("{vp}.name"), name_v);
            }
            e.invalid_all(&format!("{vp}.name"), name_v, errs);
        }
        let sources: Vec<&str> = VOLUME_SOURCES
            .iter()
            .copied()
            .filter(|k| v.get(*k).is_some_and(|s| !s.is_null()))
            .collect();
        match sources.as_slice() {
            [] => e.required(&vp, "must specify a volume type"),
            [_] => {}
            [_, second, ..] => e.forbidden(
                &format!("{vp}.{second}"),
                "may not specify more than 1 volume type",
            ),
        }
        for key in ["secret", "configMap", "downwardAPI", "projected"] {
            if let Some(mode) = v.get(key).and_then(|s| s.get("defaultMode"))
                && !mode.is_null()
                && !mode.as_i64().is_some_and(|m| (0..=0o777).contains(&m))
            {
                e.invalid(
                    &format!("{vp}.{key}.defaultMode"),
                    mode,
                    "must be a number between 0 and 0777 (octal), both inclusive",
                );
            }
        }
        if let Some(claim) = v.get("persistentVolumeClaim").filter(|c| !c.is_null())
            && str_of(claim, "claimName").is_empty()
        {
            e.required(&format!("{vp}.persistentVolumeClaim.claimName"), "");
        }
        if let Some(host) = v.get("hostPath").filter(|h| !h.is_null())
            && str_of(host, "path").is_empty()
        {
            e.required(&format!("{vp}.hostPath.path"), "");
        }
    }
    names
}

fn container(
    c: &Value,
    path: &str,
    init: bool,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    e: &mut Errs,
) {
    if !c.is_object() {
        e.invalid(path, c, "must be an object");
        return;
    }
    let name_v = field(c, "name");
    let name = name_v.as_str().unwrap_or("");
    let name_path = format!("{path}.name");
    if name.is_empty() {
        e.required(&name_path, "");
    } else {
        let errs = dns1123_label(name);
        if errs.is_empty() && !names.insert(name.to_owned()) {
            e.duplicate(&name_path, name_v);
        }
        e.invalid_all(&name_path, name_v, errs);
    }
    if str_of(c, "image").trim().is_empty() {
        e.required(&format!("{path}.image"), "");
    }
    for (key, allowed) in [
        ("imagePullPolicy", PULL_POLICIES),
        ("terminationMessagePolicy", MESSAGE_POLICIES),
    ] {
        let v = field(c, key);
        match v.as_str() {
            Some(s) if allowed.contains(&s) => {}
            Some("") | None if v.is_null() || v == "" => e.required(&format!("{path}.{key}"), ""),
            _ => e.not_supported(&format!("{path}.{key}"), v, allowed),
        }
    }
    ports(c, path, e);
    env(c, path, e);
    mounts(c, path, volumes, e);
    resources(c, path, e);
    let sidecar = init && str_of(c, "restartPolicy") == "Always";
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = c.get(key).filter(|p| !p.is_null()) else {
            continue;
        };
        let pp = format!("{path}.{key}");
        if init && !sidecar {
            e.forbidden(
                &pp,
                "may not be set for init containers without restartPolicy=Always",
            );
            continue;
        }
        probe(p, &pp, key != "readinessProbe", e);
    }
}

fn ports(c: &Value, path: &str, e: &mut Errs) {
    let mut names = HashSet::new();
    for (i, port) in list(c, "ports").iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        let name_v = field(port, "name");
        if let Some(name) = name_v.as_str().filter(|n| !n.is_empty()) {
            let errs = port_name_errors(name);
            if errs.is_empty() && !names.insert(name.to_owned()) {
                e.duplicate(&format!("{pp}.name"), name_v);
            }
            e.invalid_all(&format!("{pp}.name"), name_v, errs);
        }
        let cp = field(port, "containerPort");
        match cp.as_i64() {
            None | Some(0) if cp.is_null() || cp == 0 => {
                e.required(&format!("{pp}.containerPort"), "");
            }
            Some(n) => e.invalid_all(&format!("{pp}.containerPort"), cp, port_num_errors(n)),
            None => e.invalid(&format!("{pp}.containerPort"), cp, "must be an integer"),
        }
        let hp = field(port, "hostPort");
        if let Some(n) = hp.as_i64().filter(|n| *n != 0) {
            e.invalid_all(&format!("{pp}.hostPort"), hp, port_num_errors(n));
        }
        protocol(port, &pp, e);
    }
}

/// Checks `protocol` of a port at `path`: required, one of SCTP, TCP, UDP.
pub(crate) fn protocol(port: &Value, path: &str, e: &mut Errs) {
    let v = field(port, "protocol");
    match v.as_str() {
        Some(s) if PROTOCOLS.contains(&s) => {}
        None | Some("") if is_empty(v) => e.required(&format!("{path}.protocol"), ""),
        _ => e.not_supported(&format!("{path}.protocol"), v, PROTOCOLS),
    }
}

const ENV_SOURCES: &[&str] = &[
    "fieldRef",
    "resourceFieldRef",
    "configMapKeyRef",
    "secretKeyRef",
    "fileKeyRef",
];

fn env(c: &Value, path: &str, e: &mut Errs) {
    for (i, var) in list(c, "env").iter().enumerate() {
        let vp = format!("{path}.env[{i}]");
        let name_v = field(var, "name");
        let name = name_v.as_str().unwrap_or("");
        if name.is_empty() {
            e.required(&format!("{vp}.name"), "");
        } else if !name
            .chars()
            .all(|ch| (' '..='~').contains(&ch) && ch != '=')
        {
            e.invalid(
                &format!("{vp}.name"),
                name_v,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
        let Some(from) = var.get("valueFrom").filter(|f| !f.is_null()) else {
            continue;
        };
        let fp = format!("{vp}.valueFrom");
        let n = ENV_SOURCES
            .iter()
            .filter(|k| from.get(**k).is_some_and(|s| !s.is_null()))
            .count();
        if !str_of(var, "value").is_empty() {
            e.invalid(
                &fp,
                &json!(""),
                "may not be specified when `value` is not empty",
            );
        }
        if n == 0 {
            e.invalid(
                &fp,
                &json!(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            );
        } else if n > 1 {
            e.invalid(
                &fp,
                &json!(""),
                "may not have more than one field specified at a time",
            );
        }
        for (key, needs) in [("configMapKeyRef", "key"), ("secretKeyRef", "key")] {
            if let Some(r) = from.get(key).filter(|r| !r.is_null())
                && str_of(r, needs).is_empty()
            {
                e.required(&format!("{fp}.{key}.{needs}"), "");
            }
        }
        if let Some(r) = from.get("fieldRef").filter(|r| !r.is_null())
            && str_of(r, "fieldPath").is_empty()
        {
            e.required(&format!("{fp}.fieldRef.fieldPath"), "");
        }
    }
}

fn mounts(c: &Value, path: &str, volumes: &HashSet<String>, e: &mut Errs) {
    let mut paths = HashSet::new();
    for (i, m) in list(c, "volumeMounts").iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        let name_v = field(m, "name");
        match name_v.as_str().unwrap_or("") {
            "" => e.required(&format!("{mp}.name"), ""),
            name if !volumes.contains(name) => e.not_found(&format!("{mp}.name"), name_v),
            _ => {}
        }
        let mount_v = field(m, "mountPath");
        match mount_v.as_str().unwrap_or("") {
            "" => e.required(&format!("{mp}.mountPath"), ""),
            mount if !paths.insert(mount.to_owned()) => {
                e.invalid(&format!("{mp}.mountPath"), mount_v, "must be unique");
            }
            _ => {}
        }
    }
}

/// A quantity in a resource list: a string or a bare number.
fn quantity(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn resources(c: &Value, path: &str, e: &mut Errs) {
    let r = field(c, "resources");
    let rp = format!("{path}.resources");
    let empty = Map::new();
    let mut lists: Vec<&Map<String, Value>> = Vec::new();
    for key in ["limits", "requests"] {
        let l = field(r, key);
        let lp = format!("{rp}.{key}");
        let m = match l {
            Value::Null => &empty,
            Value::Object(m) => m,
            other => {
                e.invalid(&lp, other, "must be a map of quantities");
                &empty
            }
        };
        for (name, q) in m {
            let qp = format!("{lp}[{name}]");
            e.invalid_all(&qp, &json!(name), qualified_name(name));
            match quantity(q) {
                None => e.invalid(
                    &qp,
                    q,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                ),
                Some(x) if x < 0.0 => e.invalid(&qp, q, "must be greater than or equal to 0"),
                Some(_) => {}
            }
        }
        lists.push(m);
    }
    let (limits, requests) = (lists[0], lists[1]);
    for (name, req) in requests {
        if let (Some(lim_v), Some(rq)) = (limits.get(name), quantity(req))
            && let Some(lim) = quantity(lim_v)
            && rq > lim
        {
            let lim_s = lim_v
                .as_str()
                .map_or_else(|| lim_v.to_string(), str::to_owned);
            let req_s = req.as_str().map_or_else(|| req.to_string(), str::to_owned);
            e.invalid(
                &format!("{rp}.requests"),
                &json!(req_s),
                &format!("must be less than or equal to {name} limit of {lim_s}"),
            );
        }
    }
}

fn probe(p: &Value, path: &str, success_must_be_one: bool, e: &mut Errs) {
    if !p.is_object() {
        e.invalid(path, p, "must be an object");
        return;
    }
    let handlers: Vec<&str> = PROBE_HANDLERS
        .iter()
        .copied()
        .filter(|k| p.get(*k).is_some_and(|h| !h.is_null()))
        .collect();
    match handlers.as_slice() {
        [] => e.required(path, "must specify a handler type"),
        [_] => {}
        [_, second, ..] => e.forbidden(
            &format!("{path}.{second}"),
            "may not specify more than 1 handler type",
        ),
    }
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(p, key, &format!("{path}.{key}"), e);
    }
    let success = field(p, "successThreshold");
    if success_must_be_one && success.as_i64().is_some_and(|n| n != 1) {
        e.invalid(&format!("{path}.successThreshold"), success, "must be 1");
    }
    for key in ["httpGet", "tcpSocket", "grpc"] {
        if let Some(h) = p.get(key).filter(|h| !h.is_null()) {
            let port = field(h, "port");
            let pp = format!("{path}.{key}.port");
            if key == "grpc" {
                match port.as_i64() {
                    Some(n) => e.invalid_all(&pp, port, port_num_errors(n)),
                    None => e.required(&pp, ""),
                }
            } else {
                port_ref(port, &pp, e);
            }
        }
    }
    if let Some(h) = p.get("exec").filter(|h| !h.is_null())
        && list(h, "command").is_empty()
    {
        e.required(&format!("{path}.exec.command"), "");
    }
}

/// The pod-update rule: only images, `activeDeadlineSeconds`, additions to tolerations and
/// a few scheduling fields may change.
pub(crate) fn pod_update(new: &Value, old: &Value, e: &mut Errs) {
    let (ns, os) = (field(new, "spec"), field(old, "spec"));
    if !ns.is_object() || !os.is_object() {
        return;
    }
    let mut n = ns.clone();
    let mut o = os.clone();
    for key in ["containers", "initContainers"] {
        for (i, c) in list(ns, key).iter().enumerate() {
            if str_of(c, "image").is_empty() {
                e.required(&format!("spec.{key}[{i}].image"), "");
            }
        }
        // Images may change: compare everything else.
        for spec in [&mut n, &mut o] {
            if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
    }
    let new_deadline = field(ns, "activeDeadlineSeconds");
    let old_deadline = field(os, "activeDeadlineSeconds");
    if let Some(old_d) = old_deadline.as_i64() {
        match new_deadline.as_i64() {
            None => e.invalid(
                "spec.activeDeadlineSeconds",
                new_deadline,
                "must not update from a positive integer to nil value",
            ),
            Some(new_d) if new_d > old_d => e.invalid(
                "spec.activeDeadlineSeconds",
                new_deadline,
                "must be less than or equal to previous value",
            ),
            Some(_) => {}
        }
    }
    let old_tolerations = list(os, "tolerations");
    let new_tolerations = list(ns, "tolerations");
    for t in old_tolerations {
        if !new_tolerations.contains(t) {
            e.forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            );
            break;
        }
    }
    let old_gates: BTreeSet<String> = list(os, "schedulingGates")
        .iter()
        .map(Value::to_string)
        .collect();
    let gates_only_removed = list(ns, "schedulingGates")
        .iter()
        .all(|g| old_gates.contains(&g.to_string()));
    if !gates_only_removed {
        e.forbidden(
            "spec.schedulingGates",
            "only deletion is allowed, but found new scheduling gate",
        );
    }
    let mutable = [
        "activeDeadlineSeconds",
        "tolerations",
        "schedulingGates",
        "terminationGracePeriodSeconds",
    ];
    for spec in [&mut n, &mut o] {
        if let Some(m) = spec.as_object_mut() {
            for key in mutable {
                m.remove(key);
            }
        }
    }
    if n != o {
        e.forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        );
    }
}
