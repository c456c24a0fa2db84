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

/// Converts a request body in `kind`'s version to the storage version.
pub fn to_storage(kind: &KindInfo, mut obj: Value) -> Value {
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
    if let Some(spec) = obj.get("spec").and_then(Value::as_object) {
        let mut v2 = Map::new();
        for field in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
            if let Some(v) = spec.get(field) {
                v2.insert(field.into(), v.clone());
            }
        }
        let mut metrics = Vec::new();
        if let Some(cpu) = spec
            .get("targetCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}));
        }
        v2.insert("metrics".into(), json!(metrics));
        out["spec"] = Value::Object(v2);
    }
    if let Some(status) = obj.get("status").and_then(Value::as_object) {
        let mut v2 = Map::new();
        for field in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if let Some(v) = status.get(field) {
                v2.insert(field.into(), v.clone());
            }
        }
        if let Some(cpu) = status
            .get("currentCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            v2.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]),
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
    let cpu_target = |metrics: &Value| {
        metrics.as_array().into_iter().flatten().find_map(|m| {
            (m.pointer("/resource/name") == Some(&json!("cpu")))
                .then(|| m.pointer("/resource/target/averageUtilization").cloned())
                .flatten()
        })
    };
    if let Some(spec) = obj.get("spec").and_then(Value::as_object) {
        let mut v1 = Map::new();
        for field in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
            if let Some(v) = spec.get(field) {
                v1.insert(field.into(), v.clone());
            }
        }
        let metrics = spec.get("metrics").cloned().unwrap_or(Value::Null);
        if let Some(cpu) = cpu_target(&metrics) {
            v1.insert("targetCPUUtilizationPercentage".into(), cpu);
        }
        let others: Vec<&Value> = metrics
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m.pointer("/resource/name") != Some(&json!("cpu")))
            .collect();
        if !others.is_empty() {
            out["metadata"]["annotations"][HPA_METRICS_ANNOTATION] =
                json!(serde_json::to_string(&others).unwrap_or_default());
        }
        out["spec"] = Value::Object(v1);
    }
    if let Some(status) = obj.get("status").and_then(Value::as_object) {
        let mut v1 = Map::new();
        for field in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if let Some(v) = status.get(field) {
                v1.insert(field.into(), v.clone());
            }
        }
        let current = status
            .get("currentMetrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|m| {
                (m.pointer("/resource/name") == Some(&json!("cpu")))
                    .then(|| m.pointer("/resource/current/averageUtilization").cloned())
                    .flatten()
            });
        if let Some(cpu) = current {
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
