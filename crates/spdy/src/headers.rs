//! Stream headers: lower-cased names, possibly several values per name.

/// The name/value header block carried by SYN_STREAM, SYN_REPLY and HEADERS frames.
///
/// Names are lower-cased on the way in, as SPDY requires.
/// A name may carry several values; on the wire they are joined by NUL bytes under one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// An empty header block.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Sets `name` to the single `value`, replacing earlier values.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        let name = name.to_ascii_lowercase();
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, value.into()));
    }

    /// Adds another value for `name`.
    pub fn append(&mut self, name: &str, value: impl Into<String>) {
        self.entries.push((name.to_ascii_lowercase(), value.into()));
    }

    /// The first value of `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (compared case-insensitively), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All `(name, value)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of `(name, value)` pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Groups values by name in order of first appearance, as the wire format needs.
    pub(crate) fn grouped(&self) -> Vec<(&str, Vec<&str>)> {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for (name, value) in &self.entries {
            match groups.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(value),
                None => groups.push((name, vec![value])),
            }
        }
        groups
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.append(name.as_ref(), value);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_values_grouped() {
        let mut headers: Headers = [("StreamType", "data"), ("Port", "80")]
            .into_iter()
            .collect();
        headers.append("port", "81");
        assert_eq!(headers.get("streamtype"), Some("data"));
        assert_eq!(headers.get("PORT"), Some("80"));
        assert_eq!(headers.get_all("port").collect::<Vec<_>>(), ["80", "81"]);
        assert_eq!(
            headers.grouped(),
            vec![("streamtype", vec!["data"]), ("port", vec!["80", "81"])]
        );
        headers.insert("Port", "82");
        assert_eq!(headers.get_all("port").collect::<Vec<_>>(), ["82"]);
        assert_eq!(headers.len(), 2);
    }
}
