//! RFC 7386 JSON merge patch.

use serde_json::Value;

use super::PatchError;

/// Applies a merge patch to a copy of `original`; the patch must be an object.
pub fn apply(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Invalid(
            "a merge patch must be a JSON object".into(),
        ));
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_and_deletes() {
        let doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let patched = apply(&doc, &json!({"a": null, "b": {"c": 5}, "l": [3]}));
        assert_eq!(patched, Ok(json!({"b": {"c": 5, "d": 3}, "l": [3]})));
        assert!(apply(&doc, &json!([1])).is_err());
    }
}
