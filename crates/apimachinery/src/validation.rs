//! Validation of object metadata as upstream does it: names, labels, annotations.

use serde_json::Value;

use crate::status::StatusCause;

/// The form an object's name must take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most kinds.
    Subdomain,
    /// RFC 1123 label: namespaces.
    Label,
    /// RFC 1035 label (starts with a letter): services.
    Label1035,
    /// Any valid path segment: RBAC kinds.
    PathSegment,
}

/// Checks a name; returns the problems as upstream words them.
pub fn name_errors(name: &str, rule: NameRule) -> Vec<String> {
    match rule {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
        NameRule::Label1035 => dns1035_label(name),
        NameRule::PathSegment => {
            let mut errs = Vec::new();
            if name == "." || name == ".." {
                errs.push(format!("may not be '{name}'"));
            }
            for bad in ['/', '%'] {
                if name.contains(bad) {
                    errs.push(format!("may not contain '{bad}'"));
                }
            }
            errs
        }
    }
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: at most 63 lower-case alphanumerics or '-', alphanumeric at both ends.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_alnum(c) || c == '-')
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum);
    if !ok {
        errs.push("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_owned());
    }
    errs
}

/// RFC 1035 label: like a 1123 label but starting with a letter.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_alnum(c) || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(is_alnum);
    if !ok {
        errs.push("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_owned());
    }
    errs
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_owned());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| is_alnum(c) || c == '-')
                && part.starts_with(is_alnum)
                && part.ends_with(is_alnum)
        });
    if !ok {
        errs.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned());
    }
    errs
}

/// A qualified name (label or annotation key): `[prefix/]name`, the name at most 63
/// characters of alphanumerics, '-', '_', '.', alphanumeric at both ends; the prefix a
/// DNS subdomain.
pub fn qualified_name(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_owned());
        } else {
            errs.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
        return errs;
    }
    if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_owned());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if !(name
        .chars()
        .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && name.starts_with(alnum)
        && name.ends_with(alnum))
    {
        errs.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_owned());
    }
    errs
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_', '.', alphanumeric at
/// both ends.
pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let well_formed = s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum);
    if !s.is_empty() && !well_formed {
        errs.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_owned());
    }
    errs
}

/// Total size limit of all annotations of one object.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Validates `metadata` (name per `rule`, labels, annotations); causes carry field paths.
pub fn metadata_causes(obj: &Value, rule: NameRule) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let meta = obj.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    for e in name_errors(name, rule) {
        causes.push(StatusCause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: {e}"),
        ));
    }
    match meta.and_then(|m| m.get("labels")) {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                for e in qualified_name(k) {
                    causes.push(StatusCause::new(
                        "FieldValueInvalid",
                        "metadata.labels",
                        format!("Invalid value: {k:?}: {e}"),
                    ));
                }
                match v.as_str() {
                    Some(s) => {
                        for e in label_value(s) {
                            causes.push(StatusCause::new(
                                "FieldValueInvalid",
                                "metadata.labels",
                                format!("Invalid value: {s:?}: {e}"),
                            ));
                        }
                    }
                    None => causes.push(StatusCause::new(
                        "FieldValueInvalid",
                        "metadata.labels",
                        format!("Invalid value: {v}: label values must be strings"),
                    )),
                }
            }
        }
        Some(_) => causes.push(StatusCause::new(
            "FieldValueInvalid",
            "metadata.labels",
            "labels must be a map of strings",
        )),
    }
    match meta.and_then(|m| m.get("annotations")) {
        None | Some(Value::Null) => {}
        Some(Value::Object(annotations)) => {
            let mut total = 0;
            for (k, v) in annotations {
                for e in qualified_name(&k.to_ascii_lowercase()) {
                    causes.push(StatusCause::new(
                        "FieldValueInvalid",
                        "metadata.annotations",
                        format!("Invalid value: {k:?}: {e}"),
                    ));
                }
                match v.as_str() {
                    Some(s) => total += k.len() + s.len(),
                    None => causes.push(StatusCause::new(
                        "FieldValueInvalid",
                        "metadata.annotations",
                        format!("Invalid value: {v}: annotation values must be strings"),
                    )),
                }
            }
            if total > ANNOTATIONS_MAX_BYTES {
                causes.push(StatusCause::new(
                    "FieldValueTooLong",
                    "metadata.annotations",
                    format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
                ));
            }
        }
        Some(_) => causes.push(StatusCause::new(
            "FieldValueInvalid",
            "metadata.annotations",
            "annotations must be a map of strings",
        )),
    }
    if let Some(f) = meta.and_then(|m| m.get("finalizers")) {
        let ok = f.is_null()
            || f.as_array().is_some_and(|a| {
                a.iter()
                    .all(|v| v.as_str().is_some_and(|s| qualified_name(s).is_empty()))
            });
        if !ok {
            causes.push(StatusCause::new(
                "FieldValueInvalid",
                "metadata.finalizers",
                "finalizers must be qualified names",
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        let ok = |s: &str, r| name_errors(s, r).is_empty();
        assert!(ok("web-1", NameRule::Subdomain));
        assert!(ok("a.b.c", NameRule::Subdomain));
        assert!(!ok("Web", NameRule::Subdomain));
        assert!(!ok("-a", NameRule::Subdomain));
        assert!(!ok("a..b", NameRule::Subdomain));
        assert!(!ok("", NameRule::Subdomain));
        assert!(!ok("a.b", NameRule::Label));
        assert!(!ok(&"a".repeat(64), NameRule::Label));
        assert!(!ok("1abc", NameRule::Label1035));
        assert!(ok("system:node:x", NameRule::PathSegment));
        assert!(!ok("a/b", NameRule::PathSegment));
    }

    #[test]
    fn labels_and_annotations() {
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(!qualified_name("bad key").is_empty());
        assert!(!qualified_name("/x").is_empty());
        assert!(label_value("").is_empty());
        assert!(!label_value("a b").is_empty());
        let obj = json!({"metadata": {"name": "x", "labels": {"ok": "v", "b@d": "v", "k": 5}, "annotations": {"a": "b"}}});
        let causes = metadata_causes(&obj, NameRule::Subdomain);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert!(causes.iter().all(|c| c.field == "metadata.labels"));
    }
}
