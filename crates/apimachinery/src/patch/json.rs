//! RFC 6902 JSON patch (`application/json-patch+json`): a list of operations applied in
//! order, all or nothing.

use serde_json::Value;

use super::PatchError;

/// Applies a JSON patch (an array of operations) to a copy of `original`. A malformed
/// document is [`PatchError::Invalid`]; a failed `test` is [`PatchError::TestFailed`]; any
/// other operation that does not fit the object is [`PatchError::Failed`].
pub fn apply(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_array() {
        return Err(PatchError::Invalid(
            "a JSON patch must be an array of operations".into(),
        ));
    }
    let operations = <json_patch::Patch as serde::Deserialize>::deserialize(patch)
        .map_err(|e| PatchError::Invalid(format!("malformed JSON patch operation: {e}")))?;
    let mut document = original.clone();
    json_patch::patch(&mut document, &operations).map_err(|e| match e.kind {
        json_patch::PatchErrorKind::TestFailed => PatchError::TestFailed {
            path: e.path.to_string(),
        },
        _ => PatchError::Failed(e.to_string()),
    })?;
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `expected` is the patched document, or the error's display form prefixed with `!`.
    fn check(original: Value, patch: Value, expected: Result<Value, &str>) {
        let got = apply(&original, &patch);
        match expected {
            Ok(want) => assert_eq!(got, Ok(want), "patch {patch}"),
            Err(prefix) => {
                let err = got.expect_err("patch should fail").to_string();
                assert!(err.starts_with(prefix), "patch {patch}: got {err:?}");
            }
        }
    }

    #[test]
    fn operations() {
        let doc = json!({"a": {"b": 1}, "l": [1, 2]});
        check(doc.clone(), json!([]), Ok(doc.clone()));
        check(
            doc.clone(),
            json!([{"op": "replace", "path": "/a/b", "value": 2}]),
            Ok(json!({"a": {"b": 2}, "l": [1, 2]})),
        );
        check(
            doc.clone(),
            json!([{"op": "add", "path": "/a/c", "value": "x"}]),
            Ok(json!({"a": {"b": 1, "c": "x"}, "l": [1, 2]})),
        );
        check(
            doc.clone(),
            json!([{"op": "add", "path": "/l/-", "value": 3}]),
            Ok(json!({"a": {"b": 1}, "l": [1, 2, 3]})),
        );
        check(
            doc.clone(),
            json!([{"op": "remove", "path": "/l/0"}]),
            Ok(json!({"a": {"b": 1}, "l": [2]})),
        );
        check(
            doc.clone(),
            json!([{"op": "move", "from": "/a/b", "path": "/z"}]),
            Ok(json!({"a": {}, "l": [1, 2], "z": 1})),
        );
        check(
            doc.clone(),
            json!([{"op": "copy", "from": "/a", "path": "/c"}]),
            Ok(json!({"a": {"b": 1}, "l": [1, 2], "c": {"b": 1}})),
        );
        check(
            doc.clone(),
            json!([{"op": "test", "path": "/a/b", "value": 1}, {"op": "remove", "path": "/a"}]),
            Ok(json!({"l": [1, 2]})),
        );
        // Escaped pointer segments (`~1` is `/`), as kubectl sends for annotation keys.
        check(
            json!({"m": {"a/b": 1}}),
            json!([{"op": "remove", "path": "/m/a~1b"}]),
            Ok(json!({"m": {}})),
        );
    }

    #[test]
    fn errors() {
        let doc = json!({"a": {"b": 1}});
        check(
            doc.clone(),
            json!([{"op": "test", "path": "/a/b", "value": 9}]),
            Err("the patch could not be applied: test operation at \"/a/b\" failed"),
        );
        check(
            doc.clone(),
            json!([{"op": "remove", "path": "/nope"}]),
            Err("the patch could not be applied: operation '/0' failed"),
        );
        check(
            doc.clone(),
            json!([{"op": "replace", "path": "/a/b/c/d", "value": 1}]),
            Err("the patch could not be applied"),
        );
        check(
            doc.clone(),
            json!([{"op": "bogus", "path": "/a"}]),
            Err("invalid patch: malformed JSON patch operation"),
        );
        check(
            doc.clone(),
            json!([{"op": "add", "value": 1}]),
            Err("invalid patch: malformed JSON patch operation"),
        );
        check(
            doc.clone(),
            json!([{"op": "add", "path": "no-slash", "value": 1}]),
            Err("invalid patch"),
        );
        check(doc.clone(), json!([1]), Err("invalid patch"));
        check(
            doc.clone(),
            json!({"op": "add"}),
            Err("invalid patch: a JSON patch must be an array"),
        );
        check(doc.clone(), json!(null), Err("invalid patch"));
    }

    #[test]
    fn failure_is_all_or_nothing() {
        // The first operation applied to a copy; the original is never touched.
        let doc = json!({"a": 1});
        let got = apply(
            &doc,
            &json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 5}]),
        );
        assert!(matches!(got, Err(PatchError::TestFailed { .. })));
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn status_codes() {
        assert_eq!(
            apply(&json!({}), &json!({})).map_err(|e| e.http_status()),
            Err(400)
        );
        assert_eq!(
            apply(&json!({}), &json!([{"op": "remove", "path": "/x"}]))
                .map_err(|e| e.http_status()),
            Err(422)
        );
    }
}
