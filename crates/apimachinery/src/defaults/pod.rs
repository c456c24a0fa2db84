//! Defaults of pods and pod specs (containers, probes, volumes) and of claims.

use serde_json::{Value, json};

use super::{child, existing, items, set, set_int, set_str, unset};

/// Pod-only defaults on top of [`pod_spec`]: requests copied from limits,
/// `enableServiceLinks`, and host ports under host networking.
pub(super) fn pod(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else {
        return;
    };
    pod_spec(spec);
    for key in ["containers", "initContainers"] {
        for c in items(spec, key) {
            requests_from_limits(c);
        }
    }
    set(spec, "enableServiceLinks", json!(true));
    default_toleration_seconds(spec);
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        for key in ["containers", "initContainers"] {
            for c in items(spec, key) {
                for port in items(c, "ports") {
                    if let Some(cp) = port.get("containerPort").cloned() {
                        set_int_value(port, "hostPort", cp);
                    }
                }
            }
        }
    }
}

/// Taints every pod tolerates for a while, as upstream's DefaultTolerationSeconds
/// admission plugin adds them: a node that is not ready or unreachable evicts its pods after
/// five minutes rather than at once.
const DEFAULT_NO_EXECUTE_TOLERATIONS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// Upstream's DefaultTolerationSeconds admission: a pod that does not tolerate the
/// not-ready or unreachable NoExecute taint (a toleration with that key or no key, and
/// effect NoExecute or none) gets a toleration of it for 300 seconds.
fn default_toleration_seconds(spec: &mut Value) {
    let Some(map) = spec.as_object_mut() else {
        return;
    };
    let tolerations = map.entry("tolerations").or_insert(Value::Null);
    if tolerations.is_null() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in DEFAULT_NO_EXECUTE_TOLERATIONS {
        let tolerated = list.iter().any(|t| {
            let t_key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (t_key == key || t_key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        });
        if !tolerated {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }));
        }
    }
}

/// Sets an integer field to `value` when it is absent, null or zero.
fn set_int_value(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut()
        && super::unset_int(m.get(key))
    {
        m.insert(key.to_owned(), value);
    }
}

fn requests_from_limits(container: &mut Value) {
    let Some(resources) = existing(container, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let Some(requests) = child(resources, "requests").and_then(Value::as_object_mut) else {
        return;
    };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

/// Defaults of a pod spec, wherever it appears (pods and every pod template): policies,
/// scheduler name, grace period, containers, probes and volumes.
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_str(spec, "dnsPolicy", "ClusterFirst");
    set_str(spec, "restartPolicy", "Always");
    set(spec, "securityContext", json!({}));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set_str(spec, "schedulerName", "default-scheduler");
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items(spec, key) {
            container(c);
        }
    }
    for v in items(spec, "volumes") {
        volume(v);
    }
}

/// The tag of an image reference as upstream's parser sees it: `latest` when there is
/// neither tag nor digest, empty when there is only a digest or the reference is empty.
fn image_tag(image: &str) -> &str {
    if image.is_empty() {
        return "";
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag,
        None if digest => "",
        None => "latest",
    }
}

fn container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag(image) == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_str(c, "imagePullPolicy", policy);
    set_str(c, "terminationMessagePath", "/dev/termination-log");
    set_str(c, "terminationMessagePolicy", "File");
    set(c, "resources", json!({}));
    for port in items(c, "ports") {
        set_str(port, "protocol", "TCP");
    }
    for probe_key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(c, probe_key) {
            probe(p);
        }
    }
    if let Some(lifecycle) = existing(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = existing(lifecycle, hook).and_then(|h| existing(h, "httpGet")) {
                http_get(h);
            }
        }
    }
    for env in items(c, "env") {
        if let Some(from) = existing(env, "valueFrom") {
            field_refs(from);
        }
    }
}

fn probe(p: &mut Value) {
    set_int(p, "timeoutSeconds", 1);
    set_int(p, "periodSeconds", 10);
    set_int(p, "successThreshold", 1);
    set_int(p, "failureThreshold", 3);
    if let Some(h) = existing(p, "httpGet") {
        http_get(h);
    }
}

fn http_get(h: &mut Value) {
    set_str(h, "path", "/");
    set_str(h, "scheme", "HTTP");
}

/// Defaults of `fieldRef` (apiVersion v1) and `resourceFieldRef` (divisor "0") under `v`.
fn field_refs(v: &mut Value) {
    if let Some(f) = existing(v, "fieldRef") {
        set_str(f, "apiVersion", "v1");
    }
    if let Some(r) = existing(v, "resourceFieldRef") {
        set(r, "divisor", json!("0"));
    }
}

/// Every volume source a `Volume` can name; exactly one may be set.
pub(crate) const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else {
        return;
    };
    if VOLUME_SOURCES.iter().all(|k| unset(m.get(*k))) {
        m.insert("emptyDir".to_owned(), json!({}));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = existing(v, key) {
            set(src, "defaultMode", json!(420));
        }
    }
    if let Some(src) = existing(v, "hostPath") {
        set(src, "type", json!(""));
    }
    if let Some(src) = existing(v, "downwardAPI") {
        for item in items(src, "items") {
            field_refs(item);
        }
    }
    if let Some(src) = existing(v, "projected") {
        for source in items(src, "sources") {
            if let Some(token) = existing(source, "serviceAccountToken") {
                set(token, "expirationSeconds", json!(3600));
            }
            if let Some(d) = existing(source, "downwardAPI") {
                for item in items(d, "items") {
                    field_refs(item);
                }
            }
        }
    }
    if let Some(spec) = existing(v, "ephemeral")
        .and_then(|e| existing(e, "volumeClaimTemplate"))
        .and_then(|t| existing(t, "spec"))
    {
        pvc_spec(spec);
    }
    if let Some(src) = existing(v, "image") {
        let reference = src.get("reference").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(reference) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        set_str(src, "pullPolicy", policy);
    }
}

/// Defaults of a PersistentVolumeClaim: the spec's, and phase `Pending`.
pub(super) fn pvc(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        pvc_spec(spec);
    }
    if let Some(status) = child(obj, "status") {
        set_str(status, "phase", "Pending");
    }
}

/// Defaults of a claim spec: `volumeMode: Filesystem`.
pub fn pvc_spec(spec: &mut Value) {
    set(spec, "volumeMode", json!("Filesystem"));
}

#[cfg(test)]
mod tests {
    use super::image_tag;

    #[test]
    fn image_tags() {
        let check = |image: &str, expected: &str| assert_eq!(image_tag(image), expected, "{image}");
        check("nginx", "latest");
        check("nginx:1.25", "1.25");
        check("nginx:latest", "latest");
        check("localhost:5000/nginx", "latest");
        check("localhost:5000/nginx:v1", "v1");
        check("nginx@sha256:abc", "");
        check("nginx:1.2@sha256:abc", "1.2");
        check("", "");
    }
}
