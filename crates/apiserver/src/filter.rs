//! Which objects a LIST or WATCH returns: namespace, label selector and field selector.

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use apimachinery::selector::field::FieldSelector;
use apimachinery::selector::label::LabelSelector;
use apimachinery::status::ApiError;
use serde_json::Value;

use crate::fields;
use crate::query::Query;

/// A compiled LIST/WATCH filter.
pub struct Filter {
    kind: KindInfo,
    namespace: Option<String>,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    /// Builds the filter from `labelSelector` and `fieldSelector`; bad selectors and
    /// unsupported fields are 400s.
    pub fn from_query(
        kind: &KindInfo,
        namespace: Option<&str>,
        query: &Query,
    ) -> Result<Self, ApiError> {
        let labels =
            match query.get("labelSelector").filter(|s| !s.trim().is_empty()) {
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let fields = match query.get("fieldSelector").filter(|s| !s.trim().is_empty()) {
            Some(s) => {
                let sel = FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
                for field in sel.fields() {
                    if !fields::supported(kind, field) {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {field}"
                        )));
                    }
                }
                Some(sel)
            }
            None => None,
        };
        Ok(Self {
            kind: kind.clone(),
            namespace: namespace.map(str::to_owned),
            labels,
            fields,
        })
    }

    /// True if `obj` passes the filter.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && self.kind.namespaced
            && obj.namespace() != ns
        {
            return false;
        }
        if let Some(labels) = &self.labels
            && !labels.matches(&obj.labels())
        {
            return false;
        }
        if let Some(sel) = &self.fields
            && !sel.matches(|field| fields::value(&self.kind, obj, field))
        {
            return false;
        }
        true
    }
}
