//! Validation of core/v1 kinds other than pods: Service, ConfigMap, Secret and
//! PersistentVolumeClaim.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::apps::one_of;
use super::pod::{labels, protocol};
use super::{Errs, at, field, is_empty, list, port_num_errors, port_ref, str_of};
use crate::validation::{dns1123_label, dns1123_subdomain};

/// The NodePort range of a default cluster.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

pub(crate) fn service(obj: &Value, e: &mut Errs) {
    let spec = field(obj, "spec");
    let ty_v = field(spec, "type");
    one_of(ty_v, "spec.type", SERVICE_TYPES, e);
    let ty = ty_v.as_str().unwrap_or("");
    let cluster_ip_v = field(spec, "clusterIP");
    let cluster_ip = cluster_ip_v.as_str().unwrap_or("");
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        e.invalid(
            "spec.clusterIPs[0]",
            cluster_ip_v,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        );
    }
    if headless && matches!(ty, "NodePort" | "LoadBalancer") {
        e.invalid(
            "spec.clusterIP",
            cluster_ip_v,
            &format!("may not be set to 'None' for {ty} services"),
        );
    }
    if ty == "ExternalName" {
        let name_v = field(spec, "externalName");
        match name_v.as_str().unwrap_or("") {
            "" => e.required("spec.externalName", ""),
            name => e.invalid_all(
                "spec.externalName",
                name_v,
                dns1123_subdomain(name.trim_end_matches('.')),
            ),
        }
    }
    let ports = list(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        e.required("spec.ports", "");
    }
    let mut names = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name_v = field(port, "name");
        let name = name_v.as_str().unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                e.required(&format!("{pp}.name"), "");
            }
        } else {
            let errs = dns1123_label(name);
            if errs.is_empty() && !names.insert(name.to_owned()) {
                e.duplicate(&format!("{pp}.name"), name_v);
            }
            e.invalid_all(&format!("{pp}.name"), name_v, errs);
        }
        let port_v = field(port, "port");
        match port_v.as_i64() {
            Some(n) => e.invalid_all(&format!("{pp}.port"), port_v, port_num_errors(n)),
            None => e.invalid(
                &format!("{pp}.port"),
                port_v,
                "must be between 1 and 65535, inclusive",
            ),
        }
        protocol(port, &pp, e);
        if let Some(t) = port.get("targetPort").filter(|t| !t.is_null()) {
            port_ref(t, &format!("{pp}.targetPort"), e);
        }
        let node_port_v = field(port, "nodePort");
        let node_port = node_port_v.as_i64().unwrap_or(0);
        if node_port != 0 {
            let np = format!("{pp}.nodePort");
            if ty == "ClusterIP" {
                e.forbidden(&np, "may not be used when `type` is 'ClusterIP'");
            } else if ty == "ExternalName" {
                e.forbidden(&np, "may not be used when `type` is 'ExternalName'");
            } else if !NODE_PORT_RANGE.contains(&node_port) {
                e.invalid(
                    &np,
                    node_port_v,
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                );
            } else if !node_ports.insert((node_port, str_of(port, "protocol").to_owned())) {
                e.duplicate(&np, node_port_v);
            }
        }
    }
    let affinity = field(spec, "sessionAffinity");
    if !affinity.is_null() {
        one_of(affinity, "spec.sessionAffinity", &["ClientIP", "None"], e);
    }
    for key in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        let v = field(spec, key);
        if !is_empty(v) {
            one_of(v, &format!("spec.{key}"), &["Cluster", "Local"], e);
        }
    }
    labels(field(spec, "selector"), "spec.selector", e);
}

pub(crate) fn service_update(new: &Value, old: &Value, e: &mut Errs) {
    let new_ip = at(new, "spec.clusterIP");
    let old_ip = at(old, "spec.clusterIP");
    let to_external_name = at(new, "spec.type") == "ExternalName";
    if !is_empty(old_ip) && !is_empty(new_ip) && new_ip != old_ip && !to_external_name {
        e.invalid("spec.clusterIPs[0]", new_ip, "may not change once set");
    }
}

/// Checks a ConfigMap or Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters, not
/// `.` or `..`, not starting with `..`.
pub(crate) fn config_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_owned());
    }
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_owned());
    }
    if key == "." {
        errs.push("must not be '.'".to_owned());
    } else if key == ".." {
        errs.push("must not be '..'".to_owned());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_owned());
    }
    errs
}

/// Total size limit of a ConfigMap's or Secret's data.
pub const DATA_MAX_BYTES: usize = 1024 * 1024;

/// Checks the keys of the maps `fields` of `obj`; returns the total size of the values.
fn data_keys(obj: &Value, fields: &[&str], e: &mut Errs) -> usize {
    let mut total = 0;
    let mut seen = HashSet::new();
    for key in fields {
        let m = match field(obj, key) {
            Value::Null => continue,
            Value::Object(m) => m,
            other => {
                e.invalid(key, other, "must be a map of strings");
                continue;
            }
        };
        for (k, v) in m {
            let path = format!("{key}[{k}]");
            e.invalid_all(&path, &json!(k), config_key_errors(k));
            if !seen.insert(k.clone()) {
                let other = if *key == "binaryData" {
                    "data"
                } else {
                    "binaryData"
                };
                e.invalid(
                    &path,
                    &json!(k),
                    &format!("duplicate of key present in {other}"),
                );
            }
            match v.as_str() {
                Some(s) => total += s.len(),
                None if v.is_null() => {}
                None => e.invalid(&path, v, "must be a string"),
            }
        }
    }
    total
}

pub(crate) fn config_map(obj: &Value, e: &mut Errs) {
    if data_keys(obj, &["data", "binaryData"], e) > DATA_MAX_BYTES {
        e.too_long("", DATA_MAX_BYTES);
    }
}

pub(crate) fn secret(obj: &Value, e: &mut Errs) {
    // Secret values are base64 in JSON: their decoded size is about three quarters.
    if data_keys(obj, &["data"], e) / 4 * 3 > DATA_MAX_BYTES {
        e.too_long("data", DATA_MAX_BYTES);
    }
    let data = field(obj, "data");
    let has = |k: &str| data.get(k).is_some_and(|v| !v.is_null());
    let required: &[&str] = match str_of(obj, "type") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for k in required {
        if !has(k) {
            e.required(&format!("data[{k}]"), "");
        }
    }
    if str_of(obj, "type") == "kubernetes.io/service-account-token"
        && at(obj, "metadata.annotations")
            .get("kubernetes.io/service-account.name")
            .is_none_or(is_empty)
    {
        e.required(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "",
        );
    }
}

/// The rule of `immutable: true` ConfigMaps and Secrets: `fields` and `immutable` itself
/// may no longer change.
pub(crate) fn immutable_data(new: &Value, old: &Value, fields: &[&str], e: &mut Errs) {
    if field(old, "immutable") != &Value::Bool(true) {
        return;
    }
    if field(new, "immutable") != &Value::Bool(true) {
        e.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    for key in fields {
        let (n, o) = (field(new, key), field(old, key));
        if n != o && !(is_empty(n) && is_empty(o)) {
            e.forbidden(key, "field is immutable when `immutable` is set");
        }
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

pub(crate) fn pvc(obj: &Value, e: &mut Errs) {
    let spec = field(obj, "spec");
    let modes = list(spec, "accessModes");
    if modes.is_empty() {
        e.required("spec.accessModes", "at least 1 access mode is required");
    }
    for m in modes {
        if !m.as_str().is_some_and(|s| ACCESS_MODES.contains(&s)) {
            e.not_supported("spec.accessModes", m, ACCESS_MODES);
        }
    }
    let has_source = ["dataSource", "dataSourceRef"]
        .iter()
        .any(|k| !field(spec, k).is_null());
    let storage = at(spec, "resources.requests").get("storage");
    if storage.is_none_or(Value::is_null) && !has_source {
        e.required("spec.resources[storage]", "");
    }
    let mode = field(spec, "volumeMode");
    if !mode.is_null() {
        one_of(mode, "spec.volumeMode", &["Block", "Filesystem"], e);
    }
}

pub(crate) fn pvc_update(new: &Value, old: &Value, e: &mut Errs) {
    let strip = |obj: &Value, volume_name: Option<&Value>| {
        let mut spec = field(obj, "spec").clone();
        if let Some(m) = spec.as_object_mut() {
            m.remove("volumeAttributesClassName");
            if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                r.remove("requests");
            }
            if let Some(name) = volume_name {
                m.insert("volumeName".to_owned(), name.clone());
            }
            m.retain(|_, v| !v.is_null());
        }
        spec
    };
    // Binding may set `volumeName` once.
    let old_name = at(old, "spec.volumeName");
    let binding = is_empty(old_name).then(|| at(new, "spec.volumeName"));
    if strip(new, None) != strip(old, binding) {
        e.forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        );
    }
}
