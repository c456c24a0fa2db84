//! Field selectors: `field=value`, `field==value`, `field!=value`, joined by commas; `\`
//! escapes `,`, `=`, `!` and `\` in values.

/// Why a field selector did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldSelectorError(pub String);

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path, such as `spec.nodeName`.
    pub field: String,
    /// The value compared against.
    pub value: String,
    /// True for `!=`.
    pub not: bool,
}

/// A parsed field selector (all terms must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The terms.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the string form.
    pub fn parse(input: &str) -> Result<Self, FieldSelectorError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(input, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (field, value, not) = if let Some(i) = find_unescaped(&term, "!=") {
                (&term[..i], &term[i + 2..], true)
            } else if let Some(i) = find_unescaped(&term, "==") {
                (&term[..i], &term[i + 2..], false)
            } else if let Some(i) = find_unescaped(&term, "=") {
                (&term[..i], &term[i + 1..], false)
            } else {
                return Err(FieldSelectorError(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(FieldSelectorError(format!(
                    "invalid selector: '{input}': empty field name"
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                value: unescape(value.trim())?,
                not,
            });
        }
        Ok(Self { requirements })
    }

    /// The fields the selector uses (for checking the kind supports them).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// True if every term holds, with `get` supplying field values.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let value = get(&r.field).unwrap_or_default();
            (value == r.value) != r.not
        })
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=' | '!')) => out.push(n),
                Some(n) => {
                    return Err(FieldSelectorError(format!("invalid escape sequence \\{n}")));
                }
                None => return Err(FieldSelectorError("trailing backslash".into())),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(field: &str) -> Option<String> {
        match field {
            "metadata.name" => Some("web".into()),
            "status.phase" => Some("Running".into()),
            "spec.nodeName" => Some(String::new()),
            _ => None,
        }
    }

    fn check(sel: &str, expected: bool) {
        let s = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
        assert_eq!(s.matches(get), expected, "{sel}");
    }

    #[test]
    fn matching() {
        check("", true);
        check("metadata.name=web", true);
        check("metadata.name==web", true);
        check("metadata.name!=web", false);
        check("metadata.name=web,status.phase=Running", true);
        check("metadata.name=web,status.phase!=Running", false);
        check("spec.nodeName=", true);
        check("spec.nodeName!=", false);
    }

    #[test]
    fn escapes_and_errors() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c").expect("valid");
        assert_eq!(s.requirements[0].value, "a,b=c");
        assert_eq!(s.fields().collect::<Vec<_>>(), ["metadata.name"]);
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("=x").is_err());
        assert!(FieldSelector::parse(r"a=\q").is_err());
    }
}
