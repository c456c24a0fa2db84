//! Byte-exact key ranges: turns a prefix (and a pagination cursor) into a half-open
//! interval `[low, high)` of keys, compared bytewise as SQLite's BINARY collation does.

/// A half-open interval of keys, `low <= key < high`, in bytewise order.
///
/// The bounds are raw bytes rather than strings because the successor of a UTF-8 prefix
/// is not always valid UTF-8 (for example the successor of `"a\u{7f}"` ends in `0x80`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    /// Smallest key in the range.
    pub low: Vec<u8>,
    /// First key past the range.
    pub high: Vec<u8>,
}

/// A bound greater than every valid UTF-8 string: `0xFF` never occurs in UTF-8.
const ABOVE_ALL: u8 = 0xFF;

impl KeyRange {
    /// Keys starting with `prefix` and, if given, strictly after `start_after`.
    pub fn new(prefix: &str, start_after: Option<&str>) -> Self {
        let mut low = prefix.as_bytes().to_vec();
        if let Some(after) = start_after {
            // The smallest key greater than `after` is `after` followed by a NUL byte.
            let mut next = after.as_bytes().to_vec();
            next.push(0);
            if next > low {
                low = next;
            }
        }
        KeyRange {
            low,
            high: prefix_end(prefix.as_bytes()),
        }
    }

    /// Whether `key` lies in the range.
    #[cfg(test)]
    pub fn contains(&self, key: &str) -> bool {
        let k = key.as_bytes();
        k >= self.low.as_slice() && k < self.high.as_slice()
    }
}

/// The first byte string that does not start with `prefix` and sorts after it.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < ABOVE_ALL {
            end.push(last + 1);
            return end;
        }
    }
    // Empty prefix (or, impossible in UTF-8, all 0xFF bytes): everything matches.
    vec![ABOVE_ALL]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_end(prefix: &[u8], expected: &[u8]) {
        assert_eq!(prefix_end(prefix), expected, "prefix {prefix:?}");
    }

    #[test]
    fn prefix_ends() {
        check_end(b"", b"\xff");
        check_end(b"a", b"b");
        check_end(b"/c/x/", b"/c/x0");
        check_end(b"a\x7f", b"a\x80");
        check_end(b"a\xff", b"b");
        check_end(b"\xff\xff", b"\xff");
    }

    fn check_contains(prefix: &str, after: Option<&str>, key: &str, expected: bool) {
        let r = KeyRange::new(prefix, after);
        assert_eq!(
            r.contains(key),
            expected,
            "prefix {prefix:?} after {after:?} key {key:?}"
        );
    }

    #[test]
    fn membership() {
        check_contains("/a/", None, "/a/", true);
        check_contains("/a/", None, "/a/x", true);
        check_contains("/a/", None, "/a0", false);
        check_contains("/a/", None, "/a", false);
        check_contains("/a/", None, "/b/", false);
        check_contains("", None, "anything", true);
        check_contains("", None, "\u{10FFFF}", true);
        check_contains("/a/", Some("/a/m"), "/a/m", false);
        check_contains("/a/", Some("/a/m"), "/a/m\0", true);
        check_contains("/a/", Some("/a/m"), "/a/ma", true);
        check_contains("/a/", Some("/a/m"), "/a/n", true);
        check_contains("/a/", Some("/a/m"), "/a/l", false);
        // A cursor before the prefix does not widen the range.
        check_contains("/b/", Some("/a/z"), "/a/zz", false);
        check_contains("/b/", Some("/a/z"), "/b/a", true);
        // A cursor past the prefix empties it.
        check_contains("/a/", Some("/b"), "/a/z", false);
        check_contains("é", None, "éa", true);
        check_contains("é", None, "ê", false);
    }
}
