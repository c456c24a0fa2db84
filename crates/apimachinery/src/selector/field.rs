//! Field selectors (the `fieldSelector` query parameter): `field=value`, `field==value` and
//! `field!=value` terms joined by commas (AND). In values, `\` escapes `\`, `,` and `=`,
//! as upstream's `k8s.io/apimachinery/pkg/fields` does. Which fields exist is the API
//! server's business: it checks [`FieldSelector::requirements`] and supplies values.

use std::fmt;

/// Why a field selector did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A term without an operator.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    NoOperator {
        /// The whole selector.
        selector: String,
        /// The term.
        term: String,
    },
    /// A term without a field name, such as `=x`.
    #[error("invalid selector: '{selector}'; field name missing in '{term}'")]
    EmptyField {
        /// The whole selector.
        selector: String,
        /// The term.
        term: String,
    },
    /// A backslash followed by anything but `\`, `,` or `=`, or at the end.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// An unescaped `,` or `=` inside a value.
    #[error("invalid field selector: unescaped character in value: {0:?}")]
    UnescapedRune(char),
}

/// A term's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value`.
    Equals,
    /// `field==value`.
    DoubleEquals,
    /// `field!=value`.
    NotEquals,
}

impl FieldOperator {
    fn symbol(self) -> &'static str {
        match self {
            Self::Equals => "=",
            Self::DoubleEquals => "==",
            Self::NotEquals => "!=",
        }
    }
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path, such as `spec.nodeName`.
    pub field: String,
    /// The operator.
    pub operator: FieldOperator,
    /// The value compared against, unescaped.
    pub value: String,
}

impl FieldRequirement {
    /// True if the field's value (an absent field is the empty string, as upstream)
    /// satisfies the term.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let equal = value.unwrap_or_default() == self.value;
        match self.operator {
            FieldOperator::Equals | FieldOperator::DoubleEquals => equal,
            FieldOperator::NotEquals => !equal,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.field,
            self.operator.symbol(),
            escape_value(&self.value)
        )
    }
}

/// A parsed field selector: every term must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the string form. Terms are split on unescaped commas and sorted, as upstream;
    /// a term splits at its first `!=`, `==` or `=`; whitespace is kept (upstream does
    /// not trim either).
    pub fn parse(input: &str) -> Result<Self, FieldSelectorError> {
        let mut terms = split_terms(input);
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let (field, operator, raw_value) =
                split_term(term).ok_or_else(|| FieldSelectorError::NoOperator {
                    selector: input.to_owned(),
                    term: term.to_owned(),
                })?;
            if field.is_empty() {
                return Err(FieldSelectorError::EmptyField {
                    selector: input.to_owned(),
                    term: term.to_owned(),
                });
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                operator,
                value: unescape_value(raw_value)?,
            });
        }
        Ok(Self { requirements })
    }

    /// The terms, for checking that the kind supports every field (a 400 otherwise).
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The fields the selector uses.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// True when the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value a term requires for `field` (`field=v` or `field==v`), if any: lets the
    /// server narrow a list, e.g. by `metadata.name`.
    pub fn requires_exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator != FieldOperator::NotEquals)
            .map(|r| r.value.as_str())
    }

    /// True if every term holds, with `get` supplying the object's field values.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(get(&r.field).as_deref()))
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = FieldSelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Escapes `\`, `,` and `=` in a value.
pub fn escape_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Reverses [`escape_value`]; an unescaped `,` or `=`, or a bad escape, is an error.
pub fn unescape_value(value: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                Some(n) => return Err(FieldSelectorError::InvalidEscape(format!("\\{n}"))),
                None => return Err(FieldSelectorError::InvalidEscape("\\".into())),
            },
            ',' | '=' => return Err(FieldSelectorError::UnescapedRune(c)),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Splits on commas not preceded by a backslash escape; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first operator; the field part has no escaping.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for operator in [
            FieldOperator::NotEquals,
            FieldOperator::DoubleEquals,
            FieldOperator::Equals,
        ] {
            if let Some(value) = rest.strip_prefix(operator.symbol()) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(field: &str) -> Option<String> {
        match field {
            "metadata.name" => Some("web".into()),
            "metadata.namespace" => Some("default".into()),
            "status.phase" => Some("Running".into()),
            "spec.nodeName" => Some(String::new()),
            "involvedObject.name" => Some("a,b=c\\d".into()),
            _ => None,
        }
    }

    /// Parses `selector`, checks its printed form and whether it matches the object above.
    fn check(selector: &str, printed: &str, expected: bool) {
        let parsed = FieldSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(parsed.to_string(), printed, "{selector}");
        assert_eq!(parsed.matches(get), expected, "{selector}");
        assert_eq!(
            FieldSelector::parse(printed).as_ref(),
            Ok(&parsed),
            "{printed} round trip"
        );
    }

    fn check_err(selector: &str, message: &str) {
        match FieldSelector::parse(selector) {
            Ok(s) => panic!("{selector:?} should fail, parsed as {s}"),
            Err(e) => assert_eq!(e.to_string(), message, "{selector:?}"),
        }
    }

    #[test]
    fn matching() {
        check("", "", true);
        check(",", "", true);
        check("metadata.name=web", "metadata.name=web", true);
        check("metadata.name==web", "metadata.name==web", true);
        check("metadata.name!=web", "metadata.name!=web", false);
        check("metadata.name=db", "metadata.name=db", false);
        check(
            "status.phase=Running,metadata.name=web",
            "metadata.name=web,status.phase=Running",
            true,
        );
        check(
            "metadata.name=web,status.phase!=Running",
            "metadata.name=web,status.phase!=Running",
            false,
        );
        check("spec.nodeName=", "spec.nodeName=", true);
        check("spec.nodeName!=", "spec.nodeName!=", false);
        // An absent field is the empty string.
        check("spec.unknown=", "spec.unknown=", true);
        check("spec.unknown!=x", "spec.unknown!=x", true);
        check(
            r"involvedObject.name=a\,b\=c\\d",
            r"involvedObject.name=a\,b\=c\\d",
            true,
        );
        check("metadata.name=w!eb", "metadata.name=w!eb", false);
        check(
            "metadata.namespace==default",
            "metadata.namespace==default",
            true,
        );
    }

    #[test]
    fn requirements() {
        let parsed = FieldSelector::parse("spec.nodeName=n1,metadata.name!=x").expect("valid");
        assert_eq!(
            parsed.fields().collect::<Vec<_>>(),
            ["metadata.name", "spec.nodeName"]
        );
        assert_eq!(parsed.requirements()[0].operator, FieldOperator::NotEquals);
        assert_eq!(parsed.requires_exact("spec.nodeName"), Some("n1"));
        assert_eq!(parsed.requires_exact("metadata.name"), None);
        assert!(FieldSelector::default().is_empty());
        // Whitespace is part of field names and values, as upstream.
        let spaced = FieldSelector::parse("a = b").expect("valid");
        assert_eq!(spaced.requirements()[0].field, "a ");
        assert_eq!(spaced.requirements()[0].value, " b");
    }

    #[test]
    fn errors() {
        check_err(
            "metadata.name",
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
        );
        check_err("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'");
        check_err("=x", "invalid selector: '=x'; field name missing in '=x'");
        check_err(
            r"a=\q",
            r"invalid field selector: invalid escape sequence: \q",
        );
        check_err(
            r"a=b\",
            r"invalid field selector: invalid escape sequence: \",
        );
        check_err(
            "a=b=c",
            "invalid field selector: unescaped character in value: '='",
        );
        check_err(
            "a===b",
            "invalid field selector: unescaped character in value: '='",
        );
    }

    #[test]
    fn escaping() {
        for value in ["", "plain", "a,b", "x=y", r"back\slash", r"\,=", "ünï"] {
            assert_eq!(unescape_value(&escape_value(value)).as_deref(), Ok(value));
        }
    }
}
