//! Defaulting of built-in kinds, as upstream's `SetDefaults_*` functions do it on create and
//! update, so that `kubectl get -o yaml` shows the same fields as a real cluster.
//!
//! Objects are the v1 JSON form (`serde_json::Value`). Defaulting never fails: fields of an
//! unexpected type are left alone for validation to report. Defaults that need cluster state
//! (service IP families, service account names, priority from a PriorityClass) belong to the
//! allocators and admission plugins, not here.

mod pod;
mod workloads;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value, json};

pub(crate) use pod::VOLUME_SOURCES;
pub use pod::{pod_spec, pvc_spec};

/// Fills in upstream's defaults for an object of `group`/`kind` (group `""` is the core
/// group). Kinds without defaults are left unchanged.
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => pod::pod(obj),
        ("", "PodTemplate") => {
            if let Some(spec) = obj.pointer_mut("/template/spec") {
                pod_spec(spec);
            }
        }
        ("", "ReplicationController") => workloads::replication_controller(obj),
        ("", "Service") => service(obj),
        ("", "Secret") => set_str(obj, "type", "Opaque"),
        ("", "PersistentVolumeClaim") => pod::pvc(obj),
        ("", "PersistentVolume") => persistent_volume(obj),
        ("", "Namespace") => namespace(obj),
        ("", "Endpoints") => endpoints(obj),
        ("", "LimitRange") => limit_range(obj),
        ("apps", "Deployment") => workloads::deployment(obj),
        ("apps", "ReplicaSet") => workloads::replica_set(obj),
        ("apps", "StatefulSet") => workloads::stateful_set(obj),
        ("apps", "DaemonSet") => workloads::daemon_set(obj),
        ("batch", "Job") => workloads::job(obj),
        ("batch", "CronJob") => workloads::cron_job(obj),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(obj),
        _ => {}
    }
}

/// True when `v` counts as unset for a pointer field: absent or `null`.
fn unset(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// True when `v` counts as unset for a plain string field: absent, `null` or `""`.
fn unset_str(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

/// True when `v` counts as unset for a plain integer field: absent, `null` or `0`.
fn unset_int(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Sets `obj[key] = value` when `obj` is an object and `obj[key]` is absent or null.
fn set(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut()
        && unset(m.get(key))
    {
        m.insert(key.to_owned(), value);
    }
}

/// Sets a string field when it is absent, null or empty.
fn set_str(obj: &mut Value, key: &str, value: &str) {
    if let Some(m) = obj.as_object_mut()
        && unset_str(m.get(key))
    {
        m.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// Sets an integer field when it is absent, null or zero.
fn set_int(obj: &mut Value, key: &str, value: i64) {
    if let Some(m) = obj.as_object_mut()
        && unset_int(m.get(key))
    {
        m.insert(key.to_owned(), json!(value));
    }
}

/// The object at `obj[key]`, created empty when absent or null; `None` when `obj` is not an
/// object or `obj[key]` has another type.
fn child<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let m = obj.as_object_mut()?;
    if unset(m.get(key)) {
        m.insert(key.to_owned(), Value::Object(Map::new()));
    }
    m.get_mut(key).filter(|v| v.is_object())
}

/// The existing object at `obj[key]`, if any.
fn existing<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    obj.get_mut(key).filter(|v| v.is_object())
}

/// The elements of the array at `obj[key]` (none when absent or not an array).
fn items<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn service(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    set_str(spec, "sessionAffinity", "None");
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("sessionAffinityConfig");
            }
        }
        Some("ClientIP") => {
            let has_timeout = spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .is_some_and(|v| !v.is_null());
            if !has_timeout && let Some(m) = spec.as_object_mut() {
                m.insert(
                    "sessionAffinityConfig".to_owned(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    set_str(spec, "type", "ClusterIP");
    for port in items(spec, "ports") {
        set_str(port, "protocol", "TCP");
        let target_unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(_) => false,
        };
        if target_unset
            && let Some(p) = port.get("port").filter(|p| p.is_number()).cloned()
            && let Some(m) = port.as_object_mut()
        {
            m.insert("targetPort".to_owned(), p);
        }
    }
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible =
        ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

fn persistent_volume(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        set_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        set(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(obj, "status") {
        set_str(status, "phase", "Pending");
    }
}

fn namespace(obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if let Some(name) = name
        && let Some(labels) = child(obj, "metadata").and_then(|m| child(m, "labels"))
        && let Some(m) = labels.as_object_mut()
    {
        m.insert(
            "kubernetes.io/metadata.name".to_owned(),
            Value::String(name),
        );
    }
    if let Some(status) = child(obj, "status") {
        set_str(status, "phase", "Active");
    }
}

fn endpoints(obj: &mut Value) {
    for subset in items(obj, "subsets") {
        for port in items(subset, "ports") {
            set_str(port, "protocol", "TCP");
        }
    }
}

fn endpoint_slice(obj: &mut Value) {
    for port in items(obj, "ports") {
        set(port, "name", json!(""));
        set(port, "protocol", json!("TCP"));
    }
}

fn limit_range(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    for item in items(spec, "limits") {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let list = |key: &str| {
            item.get(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let (max, min) = (list("max"), list("min"));
        let (mut default, mut request) = (list("default"), list("defaultRequest"));
        for (k, v) in &max {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in default.iter().chain(&min) {
            request.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let Some(m) = item.as_object_mut() else {
            continue;
        };
        for (key, list) in [("default", default), ("defaultRequest", request)] {
            let wrong_type = m.get(key).is_some_and(|v| !v.is_null() && !v.is_object());
            if !list.is_empty() && !wrong_type {
                m.insert(key.to_owned(), Value::Object(list));
            }
        }
    }
}

fn network_policy(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    for rule in items(spec, "ingress") {
        for port in items(rule, "ports") {
            set(port, "protocol", json!("TCP"));
        }
    }
    for rule in items(spec, "egress") {
        for port in items(rule, "ports") {
            set(port, "protocol", json!("TCP"));
        }
    }
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let mut types = vec![json!("Ingress")];
        if has_egress {
            types.push(json!("Egress"));
        }
        if let Some(m) = spec.as_object_mut() {
            m.insert("policyTypes".to_owned(), Value::Array(types));
        }
    }
}
