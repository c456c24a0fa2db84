//! Helpers for API objects held as JSON: metadata access, names, generated names, timestamps.

use serde_json::{Map, Value};

/// Read access to the well-known metadata fields of an object.
pub trait ObjectExt {
    /// `metadata`, if it is an object.
    fn metadata(&self) -> Option<&Map<String, Value>>;
    /// A string field of `metadata`.
    fn meta_str(&self, field: &str) -> Option<&str> {
        self.metadata()
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
    }
    /// `metadata.name`, or "" when absent.
    fn name(&self) -> &str {
        self.meta_str("name").unwrap_or("")
    }
    /// `metadata.namespace`, or "" when absent.
    fn namespace(&self) -> &str {
        self.meta_str("namespace").unwrap_or("")
    }
    /// `metadata.uid`, or "" when absent.
    fn uid(&self) -> &str {
        self.meta_str("uid").unwrap_or("")
    }
    /// `metadata.resourceVersion`, or "" when absent.
    fn resource_version(&self) -> &str {
        self.meta_str("resourceVersion").unwrap_or("")
    }
    /// `metadata.labels` as a map (empty when absent).
    fn labels(&self) -> Map<String, Value> {
        self.metadata()
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }
    /// `metadata.finalizers` (empty when absent).
    fn finalizers(&self) -> Vec<String> {
        self.metadata()
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl ObjectExt for Value {
    fn metadata(&self) -> Option<&Map<String, Value>> {
        self.get("metadata").and_then(Value::as_object)
    }
}

/// Write access to metadata; creates `metadata` when missing.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let root = obj.as_object_mut().expect("just made an object");
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

/// Sets `metadata.<field>` to a string.
pub fn set_meta(obj: &mut Value, field: &str, value: impl Into<String>) {
    metadata_mut(obj).insert(field.to_owned(), Value::String(value.into()));
}

/// Letters upstream uses for generated name suffixes (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Upstream's generated name: the prefix (cut to fit 63 characters) and 5 random characters.
pub fn generate_name(prefix: &str, random: impl FnMut() -> u32) -> String {
    const MAX: usize = 63;
    const SUFFIX: usize = 5;
    let mut random = random;
    let cut = prefix
        .char_indices()
        .nth(MAX - SUFFIX)
        .map_or(prefix.len(), |(i, _)| i);
    let mut name = prefix[..cut].to_owned();
    for _ in 0..SUFFIX {
        let idx = random() as usize % SUFFIX_ALPHABET.len();
        name.push(SUFFIX_ALPHABET[idx] as char);
    }
    name
}

/// The RFC 3339 form (seconds precision, `Z`) Kubernetes uses for `metav1.Time`.
pub fn format_time(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The current time as `metav1.Time`.
pub fn now() -> String {
    format_time(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_accessors() {
        let obj = json!({"metadata": {"name": "a", "namespace": "n", "labels": {"x": "y"}, "finalizers": ["f"]}});
        assert_eq!(obj.name(), "a");
        assert_eq!(obj.namespace(), "n");
        assert_eq!(obj.labels().get("x"), Some(&json!("y")));
        assert_eq!(obj.finalizers(), vec!["f".to_owned()]);
        assert_eq!(json!(3).name(), "");
    }

    #[test]
    fn generated_names_fit_and_use_alphabet() {
        let mut n = 0;
        let name = generate_name(&"a".repeat(80), || {
            n += 1;
            n
        });
        assert_eq!(name.len(), 63);
        assert!(name[58..].bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
        assert!(generate_name("web-", || 0).starts_with("web-b"));
    }

    #[test]
    fn metadata_mut_repairs_non_objects() {
        let mut v = json!({"metadata": 5});
        set_meta(&mut v, "name", "x");
        assert_eq!(v.name(), "x");
    }

    #[test]
    fn time_format() {
        let ts: jiff::Timestamp = "2024-01-02T03:04:05.678Z".parse().expect("valid");
        assert_eq!(format_time(ts), "2024-01-02T03:04:05Z");
    }
}
