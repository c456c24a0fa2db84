//! Conversion between served versions of one stored kind. Objects are stored in the
//! storage version; requests in another version are converted on the way in and out.
//! Built-ins: autoscaling/v1 HorizontalPodAutoscaler ⇄ autoscaling/v2 (storage), and
//! events.k8s.io/v1 Event ⇄ core/v1 Event (storage), so `kubectl describe` shows events
//! however they were written.

use apimachinery::kinds::KindInfo;
use serde_json::{Map, Value, json};

/// Annotation upstream uses to keep v2 metrics a v1 object cannot express.
const HPA_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";

/// True when objects of `kind` are stored in another version.
fn is_hpa_v1(kind: &KindInfo) -> bool {
    kind.group == "autoscaling" && kind.version == "v1" && kind.kind == "HorizontalPodAutoscaler"
}

fn is_events_v1(kind: &KindInfo) -> bool {
    kind.group == "events.k8s.io" && kind.kind == "Event"
}

/// Whether objects of `kind` are served as they are stored, so [`from_storage`] leaves
/// them alone.
pub fn served_as_stored(kind: &KindInfo) -> bool {
    !is_hpa_v1(kind) && !is_events_v1(kind)
}

/// (events.k8s.io field, core/v1 field) pairs that only differ in name.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename_fields(obj: &mut Value, api_version: &str, from_events: bool) {
    if let Some(map) = obj.as_object_mut() {
        for (events_name, core_name) in EVENT_FIELDS {
            let (from, to) = if from_events {
                (events_name, core_name)
            } else {
                (core_name, events_name)
            };
            if let Some(v) = map.remove(*from) {
                map.insert((*to).to_owned(), v);
            }
        }
        map.insert("apiVersion".into(), json!(api_version));
    }
}

/// The store collection a kind's objects live in, when it shares another kind's:
/// events.k8s.io Events are stored as core Events.
pub fn storage_group(kind: &KindInfo) -> &str {
    if is_events_v1(kind) {
        ""
    } else {
        kind.group.as_str()
    }
}

/// Fields autoscaling/v1 and v2 share unchanged.
const HPA_SPEC_FIELDS: &[&str] = &["scaleTargetRef", "minReplicas", "maxReplicas"];
const HPA_STATUS_FIELDS: &[&str] = &[
    "observedGeneration",
    "lastScaleTime",
    "currentReplicas",
    "desiredReplicas",
];

/// The named fields of `from` that are present.
fn copy_fields(from: &Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|f| from.get(*f).map(|v| ((*f).to_owned(), v.clone())))
        .collect()
}

fn is_cpu(metric: &Value) -> bool {
    metric.pointer("/resource/name") == Some(&json!("cpu"))
}

/// The CPU utilization at `pointer` in a v2 metrics list.
fn cpu_utilization(metrics: Option<&Value>, pointer: &str) -> Option<Value> {
    metrics?
        .as_array()?
        .iter()
        .filter(|m| is_cpu(m))
        .find_map(|m| m.pointer(pointer).cloned())
}

/// A v2 CPU metric: `{"type": "Resource", "resource": {"name": "cpu", <field>: {...}}}`.
fn cpu_metric(field: &str, value: Value) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu", field: value}})
}

/// Converts a request body in `kind`'s version to the storage version.
/// A Secret's `stringData` is write-only: its entries are merged into `data` (base64),
/// winning over `data`'s, and the field is dropped, as upstream's v1 conversion does.
fn merge_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    if strings.is_empty() {
        return;
    }
    if !map.get("data").is_some_and(Value::is_object) {
        map.insert("data".into(), json!({}));
    }
    if let Some(Value::Object(data)) = map.get_mut("data") {
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            data.insert(
                key,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

pub fn to_storage(kind: &KindInfo, mut obj: Value) -> Value {
    if kind.group.is_empty() && kind.kind == "Secret" {
        merge_string_data(&mut obj);
    }
    if is_events_v1(kind)
        && obj.get("apiVersion").and_then(Value::as_str) == Some("events.k8s.io/v1")
    {
        rename_fields(&mut obj, "v1", true);
        return obj;
    }
    if !is_hpa_v1(kind) || obj.get("apiVersion").and_then(Value::as_str) != Some("autoscaling/v1") {
        return obj;
    }
    let mut out = obj.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    // Metrics a v1 object cannot express travel in an annotation; restore them.
    let parked = out
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .and_then(|a| a.remove(HPA_METRICS_ANNOTATION));
    let mut metrics: Vec<Value> = parked
        .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok()))
        .unwrap_or_default();
    if let Some(spec) = obj.get("spec").and_then(Value::as_object) {
        let mut v2 = copy_fields(spec, HPA_SPEC_FIELDS);
        if let Some(cpu) = spec
            .get("targetCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            metrics.insert(
                0,
                cpu_metric(
                    "target",
                    json!({"type": "Utilization", "averageUtilization": cpu}),
                ),
            );
        }
        v2.insert("metrics".into(), json!(metrics));
        out["spec"] = Value::Object(v2);
    }
    if let Some(status) = obj.get("status").and_then(Value::as_object) {
        let mut v2 = copy_fields(status, HPA_STATUS_FIELDS);
        if let Some(cpu) = status
            .get("currentCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            v2.insert(
                "currentMetrics".into(),
                json!([cpu_metric("current", json!({"averageUtilization": cpu}))]),
            );
        }
        out["status"] = Value::Object(v2);
    }
    out
}

/// Converts a stored object to `kind`'s version.
pub fn from_storage(kind: &KindInfo, mut obj: Value) -> Value {
    if is_events_v1(kind) && obj.get("apiVersion").and_then(Value::as_str) == Some("v1") {
        rename_fields(&mut obj, "events.k8s.io/v1", false);
        return obj;
    }
    if !is_hpa_v1(kind) || obj.get("apiVersion").and_then(Value::as_str) != Some("autoscaling/v2") {
        return obj;
    }
    let mut out = obj.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = obj.get("spec").and_then(Value::as_object) {
        let mut v1 = copy_fields(spec, HPA_SPEC_FIELDS);
        let metrics = spec.get("metrics");
        if let Some(cpu) = cpu_utilization(metrics, "/resource/target/averageUtilization") {
            v1.insert("targetCPUUtilizationPercentage".into(), cpu);
        }
        let others: Vec<&Value> = metrics
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| !is_cpu(m))
            .collect();
        if !others.is_empty() {
            out["metadata"]["annotations"][HPA_METRICS_ANNOTATION] =
                json!(serde_json::to_string(&others).unwrap_or_default());
        }
        out["spec"] = Value::Object(v1);
    }
    if let Some(status) = obj.get("status").and_then(Value::as_object) {
        let mut v1 = copy_fields(status, HPA_STATUS_FIELDS);
        if let Some(cpu) = cpu_utilization(
            status.get("currentMetrics"),
            "/resource/current/averageUtilization",
        ) {
            v1.insert("currentCPUUtilizationPercentage".into(), cpu);
        }
        out["status"] = Value::Object(v1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa_v1() -> KindInfo {
        apimachinery::kinds::builtin()
            .into_iter()
            .find(|k| k.group == "autoscaling" && k.version == "v1")
            .expect("hpa v1")
    }

    #[test]
    fn events_round_trip() {
        let kind = apimachinery::kinds::builtin()
            .into_iter()
            .find(|k| k.group == "events.k8s.io")
            .expect("events");
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started", "reportingController": "kumo"});
        let stored = to_storage(&kind, ev.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "hello");
        assert_eq!(from_storage(&kind, stored), ev);
    }

    #[test]
    fn hpa_v1_round_trip_keeps_metrics_it_cannot_express() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"maxReplicas": 3, "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}}]}});
        let v1 = from_storage(&hpa_v1(), v2.clone());
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(v1["metadata"]["annotations"][HPA_METRICS_ANNOTATION].is_string());
        let back = to_storage(&hpa_v1(), v1);
        assert_eq!(back["spec"], v2["spec"]);
        assert_eq!(back["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn hpa_round_trip() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}});
        let stored = to_storage(&hpa_v1(), v1.clone());
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        let back = from_storage(&hpa_v1(), stored);
        assert_eq!(back["spec"], v1["spec"]);
        assert_eq!(back["apiVersion"], "autoscaling/v1");
    }
}
