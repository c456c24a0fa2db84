//! RFC 7386 JSON merge patch (`application/merge-patch+json`): objects merge recursively,
//! `null` deletes a key, every other value (lists included) replaces.

use serde_json::Value;

use super::PatchError;

/// Applies a merge patch to a copy of `original`. The patch must be a JSON object, since
/// the result must stay a Kubernetes object.
pub fn apply(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Invalid(format!(
            "a merge patch must be a JSON object, not {}",
            kind_of(patch)
        )));
    }
    let mut document = original.clone();
    json_patch::merge(&mut document, patch);
    Ok(document)
}

/// The JSON type of `value`, for messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(original: Value, patch: Value, expected: Value) {
        assert_eq!(apply(&original, &patch), Ok(expected), "patch {patch}");
    }

    #[test]
    fn merges() {
        check(json!({"a": 1}), json!({}), json!({"a": 1}));
        check(json!({"a": 1}), json!({"a": 2}), json!({"a": 2}));
        check(json!({"a": 1}), json!({"a": null}), json!({}));
        check(json!({"a": 1}), json!({"b": null}), json!({"a": 1}));
        check(
            json!({"m": {"x": 1, "y": 2}}),
            json!({"m": {"x": null, "z": 3}}),
            json!({"m": {"y": 2, "z": 3}}),
        );
        check(json!({"l": [1, 2]}), json!({"l": [3]}), json!({"l": [3]}));
        check(json!({"m": {"x": 1}}), json!({"m": 5}), json!({"m": 5}));
        check(
            json!({"m": 5}),
            json!({"m": {"x": 1, "n": null}}),
            json!({"m": {"x": 1}}),
        );
        // kubectl label / annotate / scale bodies.
        check(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"b": null}}}),
            json!({"metadata": {"labels": {"a": "1"}}}),
        );
        check(
            json!({"spec": {"replicas": 1}}),
            json!({"spec": {"replicas": 3}}),
            json!({"spec": {"replicas": 3}}),
        );
        // Strategic merge directives mean nothing here: they are plain keys.
        check(
            json!({}),
            json!({"m": {"$patch": "delete"}}),
            json!({"m": {"$patch": "delete"}}),
        );
    }

    #[test]
    fn non_object_patches_fail() {
        for patch in [json!([1]), json!(null), json!("x"), json!(3)] {
            let err = apply(&json!({}), &patch).expect_err("must fail");
            assert!(matches!(err, PatchError::Invalid(_)), "{patch}");
            assert_eq!(err.http_status(), 400);
        }
    }
}
