//! The fields each kind supports in field selectors, and their values on an object.

use apimachinery::kinds::KindInfo;
use serde_json::Value;

/// The JSON pointer of a selectable field of `kind`, or `None` if the field is not
/// supported (upstream answers 400 for those).
fn pointer(kind: &KindInfo, field: &str) -> Option<&'static str> {
    let common = match field {
        "metadata.name" => Some("/metadata/name"),
        "metadata.namespace" => Some("/metadata/namespace"),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    Some(match (kind.group.as_str(), kind.kind.as_str(), field) {
        ("", "Pod", "spec.nodeName") => "/spec/nodeName",
        ("", "Pod", "spec.restartPolicy") => "/spec/restartPolicy",
        ("", "Pod", "spec.schedulerName") => "/spec/schedulerName",
        ("", "Pod", "spec.serviceAccountName") => "/spec/serviceAccountName",
        ("", "Pod", "spec.hostNetwork") => "/spec/hostNetwork",
        ("", "Pod", "status.phase") => "/status/phase",
        ("", "Pod", "status.podIP") => "/status/podIP",
        ("", "Pod", "status.nominatedNodeName") => "/status/nominatedNodeName",
        ("", "Event", "involvedObject.kind") => "/involvedObject/kind",
        ("", "Event", "involvedObject.namespace") => "/involvedObject/namespace",
        ("", "Event", "involvedObject.name") => "/involvedObject/name",
        ("", "Event", "involvedObject.uid") => "/involvedObject/uid",
        ("", "Event", "involvedObject.apiVersion") => "/involvedObject/apiVersion",
        ("", "Event", "involvedObject.resourceVersion") => "/involvedObject/resourceVersion",
        ("", "Event", "involvedObject.fieldPath") => "/involvedObject/fieldPath",
        ("", "Event", "reason") => "/reason",
        ("", "Event", "reportingComponent") => "/reportingComponent",
        ("", "Event", "source") => "/source/component",
        ("", "Event", "type") => "/type",
        // events.k8s.io Events are stored as core Events: select on the stored names.
        ("events.k8s.io", "Event", "regarding.kind") => "/involvedObject/kind",
        ("events.k8s.io", "Event", "regarding.namespace") => "/involvedObject/namespace",
        ("events.k8s.io", "Event", "regarding.name") => "/involvedObject/name",
        ("events.k8s.io", "Event", "regarding.uid") => "/involvedObject/uid",
        ("events.k8s.io", "Event", "reason") => "/reason",
        ("events.k8s.io", "Event", "type") => "/type",
        ("events.k8s.io", "Event", "reportingController") => "/reportingComponent",
        ("", "Secret", "type") => "/type",
        ("", "Node", "spec.unschedulable") => "/spec/unschedulable",
        ("", "Namespace", "status.phase") => "/status/phase",
        ("", "ReplicationController", "status.replicas") => "/status/replicas",
        ("apps", "ReplicaSet", "status.replicas") => "/status/replicas",
        ("batch", "Job", "status.successful") => "/status/succeeded",
        ("certificates.k8s.io", "CertificateSigningRequest", "spec.signerName") => {
            "/spec/signerName"
        }
        _ => return None,
    })
}

/// True if `field` can be used in a field selector on `kind`.
pub fn supported(kind: &KindInfo, field: &str) -> bool {
    pointer(kind, field).is_some()
}

/// The value of a selectable field, rendered as a field selector compares it (missing
/// strings are empty; booleans are "true"/"false"; numbers in decimal).
pub fn value(kind: &KindInfo, obj: &Value, field: &str) -> Option<String> {
    let ptr = pointer(kind, field)?;
    Some(match obj.pointer(ptr) {
        None | Some(Value::Null) => match field {
            "spec.hostNetwork" | "spec.unschedulable" => "false".to_owned(),
            "status.replicas" | "status.successful" => "0".to_owned(),
            _ => String::new(),
        },
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimachinery::kinds::builtin;
    use serde_json::json;

    fn kind(g: &str, k: &str) -> KindInfo {
        builtin()
            .into_iter()
            .find(|i| i.group == g && i.kind == k)
            .expect("kind")
    }

    #[test]
    fn values() {
        let pod = kind("", "Pod");
        let obj = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "a"}});
        assert_eq!(value(&pod, &obj, "metadata.name").as_deref(), Some("p"));
        assert_eq!(value(&pod, &obj, "spec.nodeName").as_deref(), Some("a"));
        assert_eq!(value(&pod, &obj, "status.phase").as_deref(), Some(""));
        assert_eq!(
            value(&pod, &obj, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(value(&pod, &obj, "spec.bogus"), None);
        let ev = kind("", "Event");
        let e = json!({"involvedObject": {"kind": "Deployment", "uid": "u"}});
        assert_eq!(
            value(&ev, &e, "involvedObject.kind").as_deref(),
            Some("Deployment")
        );
        assert!(!supported(&kind("", "ConfigMap"), "data.x"));
    }
}
