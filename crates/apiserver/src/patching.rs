//! PATCH bodies applied to the current object: JSON patch, merge patch and strategic
//! merge patch (driven by the kind's schema and its patch extensions).

use apimachinery::kinds::KindInfo;
use apimachinery::patch;
use apimachinery::status::ApiError;
use serde_json::Value;

use crate::negotiate::BodyFormat;

/// Applies `patch_doc` to `current` (an object of `kind`) as `format` says.
pub fn apply(
    kind: &KindInfo,
    format: BodyFormat,
    current: &Value,
    patch_doc: &Value,
) -> Result<Value, ApiError> {
    apply_with_schema(
        kind.schema_name.as_deref(),
        &kind.qualified_resource(),
        format,
        current,
        patch_doc,
    )
}

/// Applies `patch_doc` to `current`, whose schema is the definition `schema_name`
/// (`what` names the resource in messages).
pub fn apply_with_schema(
    schema_name: Option<&str>,
    what: &str,
    format: BodyFormat,
    current: &Value,
    patch_doc: &Value,
) -> Result<Value, ApiError> {
    let result = match format {
        BodyFormat::JsonPatch => patch::json::apply(current, patch_doc),
        BodyFormat::MergePatch => patch::merge::apply(current, patch_doc),
        BodyFormat::StrategicMergePatch => {
            let schema = schema_name.and_then(|name| apimachinery::schema::builtin().node(name));
            let Some(schema) = schema else {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - strategic merge patch is not supported for {what}"
                    ),
                ));
            };
            patch::strategic::apply(current, patch_doc, Some(schema))
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported patch type {other:?}"
            )));
        }
    };
    result.map_err(|e| match e.http_status() {
        400 => ApiError::bad_request(e.to_string()),
        415 => ApiError::new(415, "UnsupportedMediaType", e.to_string()),
        _ => ApiError::new(422, "Invalid", e.to_string()),
    })
}
