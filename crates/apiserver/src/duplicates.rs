//! Finds duplicate object keys in a JSON body (serde_json keeps the last one silently;
//! `fieldValidation=Strict` must reject them and `Warn` must report them).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The paths of duplicated keys (`metadata.name`, `spec.containers[0].image`), in order.
/// Invalid JSON yields no duplicates (the real decode reports the syntax error).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = Walk {
        path: String::new(),
        found: &mut found,
        depth: 0,
    }
    .deserialize(&mut de);
    found
}

/// Deepest nesting walked; deeper documents are rejected by the JSON decoder anyway.
const MAX_DEPTH: usize = 100;

struct Walk<'a> {
    path: String,
    found: &'a mut Vec<String>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > MAX_DEPTH {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let mut i = 0;
        loop {
            let path = format!("{}[{i}]", self.path);
            let walk = Walk {
                path,
                found: &mut *self.found,
                depth: self.depth + 1,
            };
            if seq.next_element_seed(walk)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.found.push(path.clone());
            }
            if self.depth > MAX_DEPTH {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(Walk {
                    path,
                    found: &mut *self.found,
                    depth: self.depth + 1,
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_duplicates_with_paths() {
        assert_eq!(
            duplicate_fields(br#"{"a": 1, "b": 2}"#),
            Vec::<String>::new()
        );
        assert_eq!(duplicate_fields(br#"{"a": 1, "a": 2}"#), ["a"]);
        assert_eq!(
            duplicate_fields(br#"{"spec": {"containers": [{"name": "x", "image": "a", "image": "b"}]}, "spec": {}}"#),
            ["spec.containers[0].image", "spec"]
        );
        assert_eq!(duplicate_fields(b"not json"), Vec::<String>::new());
    }
}
