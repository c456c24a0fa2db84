//! The `/scale` subresource: an `autoscaling/v1` `Scale` view of a workload's replicas.

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use apimachinery::status::ApiError;
use serde_json::{Value, json};

/// Where a kind keeps its replica count, status count and selector.
struct ScalePaths {
    spec_replicas: &'static str,
    status_replicas: &'static str,
    selector: &'static str,
}

fn paths(kind: &KindInfo) -> Option<ScalePaths> {
    match (kind.group.as_str(), kind.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") | ("", "ReplicationController") => {
            Some(ScalePaths {
                spec_replicas: "/spec/replicas",
                status_replicas: "/status/replicas",
                selector: "/spec/selector",
            })
        }
        _ => None,
    }
}

/// The `Scale` of `obj`.
pub fn to_scale(kind: &KindInfo, obj: &Value) -> Result<Value, ApiError> {
    let p = paths(kind).ok_or_else(ApiError::no_route)?;
    let meta = obj.metadata().cloned().unwrap_or_default();
    let mut scale_meta = serde_json::Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field) {
            scale_meta.insert(field.to_owned(), v.clone());
        }
    }
    let selector = match obj.pointer(p.selector) {
        // ReplicationControllers select with a plain map; the others with a LabelSelector.
        Some(Value::Object(m)) if kind.kind == "ReplicationController" => {
            selector_string(&json!({"matchLabels": Value::Object(m.clone())}))
        }
        Some(sel) => selector_string(sel),
        None => String::new(),
    };
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": obj.pointer(p.spec_replicas).and_then(Value::as_i64).unwrap_or(1)},
        "status": {"replicas": obj.pointer(p.status_replicas).and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    }))
}

/// Applies a `Scale`'s `spec.replicas` to `obj`.
pub fn apply_scale(kind: &KindInfo, obj: &mut Value, scale: &Value) -> Result<(), ApiError> {
    let p = paths(kind).ok_or_else(ApiError::no_route)?;
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            obj.name(),
            vec![apimachinery::status::StatusCause::new(
                "FieldValueInvalid",
                "spec.replicas",
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    if let Some(slot) = obj.pointer_mut(p.spec_replicas) {
        *slot = json!(replicas);
    } else {
        obj["spec"]["replicas"] = json!(replicas);
    }
    Ok(())
}

/// A `metav1.LabelSelector` in string form, requirements sorted by key as upstream prints
/// them (`app=web,tier in (a,b)`).
pub fn selector_string(selector: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let mut values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match expr
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key.to_owned(), text));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_strings() {
        assert_eq!(
            selector_string(&json!({"matchLabels": {"b": "2", "a": "1"}})),
            "a=1,b=2"
        );
        assert_eq!(
            selector_string(
                &json!({"matchExpressions": [{"key": "t", "operator": "In", "values": ["y", "x"]}, {"key": "g", "operator": "DoesNotExist"}]})
            ),
            "!g,t in (x,y)"
        );
        assert_eq!(selector_string(&json!({})), "");
    }

    #[test]
    fn scale_round_trip() {
        let kind = apimachinery::kinds::builtin()
            .into_iter()
            .find(|k| k.kind == "Deployment")
            .expect("kind");
        let mut d = json!({"metadata": {"name": "w", "namespace": "n", "resourceVersion": "5"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "w"}}}, "status": {"replicas": 1}});
        let s = to_scale(&kind, &d).expect("scale");
        assert_eq!(s["spec"]["replicas"], 2);
        assert_eq!(s["status"], json!({"replicas": 1, "selector": "app=w"}));
        assert_eq!(s["metadata"]["resourceVersion"], "5");
        apply_scale(&kind, &mut d, &json!({"spec": {"replicas": 4}})).expect("apply");
        assert_eq!(d["spec"]["replicas"], 4);
        assert!(apply_scale(&kind, &mut d, &json!({"spec": {"replicas": -1}})).is_err());
    }
}
