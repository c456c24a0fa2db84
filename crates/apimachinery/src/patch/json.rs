//! RFC 6902 JSON patch.

use serde_json::Value;

use super::PatchError;

/// Applies a JSON patch (an array of operations) to a copy of `original`.
pub fn apply(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_array() {
        return Err(PatchError::Invalid(
            "a JSON patch must be an array of operations".into(),
        ));
    }
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::Invalid(e.to_string()))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::Failed(e.to_string()))?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applies_and_fails_cleanly() {
        let doc = json!({"a": {"b": 1}});
        assert_eq!(
            apply(
                &doc,
                &json!([{"op": "replace", "path": "/a/b", "value": 2}])
            ),
            Ok(json!({"a": {"b": 2}}))
        );
        assert!(matches!(
            apply(&doc, &json!([{"op": "test", "path": "/a/b", "value": 9}])),
            Err(PatchError::Failed(_))
        ));
        assert!(matches!(
            apply(&doc, &json!([{"op": "bogus"}])),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(&doc, &json!({"op": "add"})),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(&doc, &json!([{"op": "remove", "path": "/nope"}])),
            Err(PatchError::Failed(_))
        ));
    }
}
