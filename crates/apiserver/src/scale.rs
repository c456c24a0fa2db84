//! The `/scale` subresource: an `autoscaling/v1` `Scale` view of a workload's replicas.

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use apimachinery::status::ApiError;

use serde_json::{Value, json};

use crate::control_plane::CustomKind;

/// Where a kind keeps its replica count, status count and selector (JSON pointers).
struct ScalePaths {
    spec_replicas: String,
    status_replicas: String,
    selector: Option<String>,
}

/// A CRD's `.spec.replicas`-style path as a JSON pointer.
fn pointer(path: &str) -> Option<String> {
    let trimmed = path.strip_prefix('.')?;
    (!trimmed.is_empty()).then(|| format!("/{}", trimmed.replace('.', "/")))
}

fn paths(kind: &KindInfo, custom: Option<&CustomKind>) -> Option<ScalePaths> {
    if let Some(scale) = custom.and_then(|c| c.scale.as_ref()) {
        let get = |k: &str| scale.get(k).and_then(Value::as_str).and_then(pointer);
        return Some(ScalePaths {
            spec_replicas: get("specReplicasPath")?,
            status_replicas: get("statusReplicasPath")?,
            selector: get("labelSelectorPath"),
        });
    }
    match (kind.group.as_str(), kind.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") | ("", "ReplicationController") => {
            Some(ScalePaths {
                spec_replicas: "/spec/replicas".into(),
                status_replicas: "/status/replicas".into(),
                selector: Some("/spec/selector".into()),
            })
        }
        _ => None,
    }
}

/// The `Scale` of `obj`.
pub fn to_scale(
    kind: &KindInfo,
    custom: Option<&CustomKind>,
    obj: &Value,
) -> Result<Value, ApiError> {
    let p = paths(kind, custom).ok_or_else(ApiError::no_route)?;
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
    let selector = match p.selector.as_deref().and_then(|s| obj.pointer(s)) {
        // CRDs keep the selector as a string already.
        Some(Value::String(s)) => s.clone(),
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
        "spec": {"replicas": obj.pointer(&p.spec_replicas).and_then(Value::as_i64).unwrap_or(if custom.is_some() { 0 } else { 1 })},
        "status": {"replicas": obj.pointer(&p.status_replicas).and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    }))
}

/// Applies a `Scale`'s `spec.replicas` to `obj`.
pub fn apply_scale(
    kind: &KindInfo,
    custom: Option<&CustomKind>,
    obj: &mut Value,
    scale: &Value,
) -> Result<(), ApiError> {
    let p = paths(kind, custom).ok_or_else(ApiError::no_route)?;
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
    set_pointer(obj, &p.spec_replicas, json!(replicas));
    Ok(())
}

/// Sets the value at a JSON pointer, creating objects along the way.
fn set_pointer(obj: &mut Value, pointer: &str, value: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i == parts.len() - 1 {
            cur[*part] = value;
            return;
        }
        cur = &mut cur[*part];
    }
}

/// A `metav1.LabelSelector` in string form (`app=web,tier in (a,b)`), as `Scale` reports
/// it; an invalid selector reports as empty.
pub fn selector_string(selector: &Value) -> String {
    apimachinery::selector::label::LabelSelector::from_json(selector)
        .map(|s| s.to_string())
        .unwrap_or_default()
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
        let s = to_scale(&kind, None, &d).expect("scale");
        assert_eq!(s["spec"]["replicas"], 2);
        assert_eq!(s["status"], json!({"replicas": 1, "selector": "app=w"}));
        assert_eq!(s["metadata"]["resourceVersion"], "5");
        apply_scale(&kind, None, &mut d, &json!({"spec": {"replicas": 4}})).expect("apply");
        assert_eq!(d["spec"]["replicas"], 4);
        assert!(apply_scale(&kind, None, &mut d, &json!({"spec": {"replicas": -1}})).is_err());
    }
}
