//! Objects in the store: key layout, and the JSON encoding that keeps `resourceVersion`
//! out of the stored bytes (it is the key's mod revision, injected on every read).

use std::sync::Arc;

use apimachinery::kinds::KindInfo;
use apimachinery::object::set_meta;
use apimachinery::status::ApiError;
use bytes::Bytes;
use serde_json::Value;
use store::{Backend, KeyValue, Revision};

/// The store a control plane writes through, scoped to one cluster's keys.
#[derive(Clone)]
pub struct ObjectStore {
    backend: Arc<dyn Backend>,
    cluster: String,
}

/// Where a kind's objects live: `/<cluster>/<group or core>/<plural>/[<namespace>/]<name>`.
pub fn collection_prefix(cluster: &str, kind: &KindInfo, namespace: Option<&str>) -> String {
    let group = match crate::conversion::storage_group(kind) {
        "" => "core",
        g => g,
    };
    match namespace {
        Some(ns) if kind.namespaced => format!("/{cluster}/{group}/{}/{ns}/", kind.plural),
        _ => format!("/{cluster}/{group}/{}/", kind.plural),
    }
}

impl ObjectStore {
    /// A store for `cluster`'s objects.
    pub fn new(backend: Arc<dyn Backend>, cluster: &str) -> Self {
        Self {
            backend,
            cluster: cluster.to_owned(),
        }
    }

    /// The backend (for watches and revisions).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The key of one object.
    pub fn key(&self, kind: &KindInfo, namespace: &str, name: &str) -> String {
        let ns = if kind.namespaced {
            Some(namespace)
        } else {
            None
        };
        format!("{}{name}", collection_prefix(&self.cluster, kind, ns))
    }

    /// The key prefix of a collection (one namespace, or all of them with `None`).
    pub fn prefix(&self, kind: &KindInfo, namespace: Option<&str>) -> String {
        collection_prefix(&self.cluster, kind, namespace)
    }

    /// Reads one object, with its resourceVersion set.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, ApiError> {
        let kv = self.backend.get(key).await.map_err(store_error)?;
        kv.map(|kv| decode(&kv)).transpose()
    }

    /// Creates an object; returns it as stored.
    pub async fn create(&self, key: &str, obj: &Value) -> Result<Value, store::Error> {
        let rev = self.backend.create(key, encode(obj)).await?;
        Ok(with_rv(obj.clone(), rev))
    }

    /// Replaces an object if it is still at `expected`; returns it as stored.
    pub async fn update(
        &self,
        key: &str,
        obj: &Value,
        expected: Revision,
    ) -> Result<Value, store::Error> {
        let rev = self.backend.update(key, encode(obj), expected).await?;
        Ok(with_rv(obj.clone(), rev))
    }

    /// Deletes an object if it is still at `expected`; returns its last state.
    pub async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<Value, store::Error> {
        let (rev, kv) = self.backend.delete(key, expected).await?;
        let obj = decode(&kv).map_err(|e| store::Error::Backend(e.message))?;
        Ok(with_rv(obj, rev))
    }
}

/// The stored bytes of an object: its JSON without `metadata.resourceVersion`.
pub fn encode(obj: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&WithoutResourceVersion(obj)).unwrap_or_default())
}

/// Serializes an object leaving out `metadata.resourceVersion`, without copying it first
/// (a deep copy per write was a visible share of a create's cost).
struct WithoutResourceVersion<'a>(&'a Value);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(top) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(top.len()))?;
        for (key, value) in top {
            match value {
                Value::Object(meta) if key == "metadata" => {
                    map.serialize_entry(key, &Metadata(meta))?;
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

struct Metadata<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for Metadata<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.iter().filter(|(k, _)| *k != "resourceVersion") {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// An object read from the store, with `resourceVersion` set from the key's mod revision.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("stored object {} is not valid JSON: {e}", kv.key))
    })?;
    Ok(with_rv(obj, kv.mod_revision))
}

/// Sets `metadata.resourceVersion`.
pub fn with_rv(mut obj: Value, rev: Revision) -> Value {
    set_meta(&mut obj, "resourceVersion", rev.to_string());
    obj
}

/// Maps store failures that are not part of a verb's own logic to API errors.
pub fn store_error(e: store::Error) -> ApiError {
    match e {
        store::Error::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        store::Error::FutureRevision { requested, current } => ApiError::timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        other => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn stored_bytes_leave_out_the_resource_version_only() {
        let obj = json!({
            "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "7", "labels": {"resourceVersion": "x"}},
            "data": {"resourceVersion": "y"},
        });
        let stored: serde_json::Value = serde_json::from_slice(&super::encode(&obj)).unwrap();
        assert_eq!(
            stored,
            json!({
                "kind": "ConfigMap",
                "metadata": {"name": "a", "labels": {"resourceVersion": "x"}},
                "data": {"resourceVersion": "y"},
            })
        );
    }
}
