//! Label selectors: the query-string form (`k=v`, `k==v`, `k!=v`, `k in (a,b)`,
//! `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`, joined by commas meaning AND) and the
//! structured `metav1.LabelSelector` (`matchLabels` plus `matchExpressions`), parsed,
//! matched and printed as upstream's `k8s.io/apimachinery/pkg/labels` does.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::validation::{label_value, qualified_name};

/// Why a label selector is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The string form does not follow the grammar.
    #[error("found '{found}', expected: {expected}")]
    Syntax {
        /// The token found (empty at the end of the input).
        found: String,
        /// What the grammar allows there.
        expected: &'static str,
    },
    /// A key that is not a qualified name.
    #[error("key: Invalid value: {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value that is not a valid label value.
    #[error("values[{key}]: Invalid value: {value:?}: {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An operator with the wrong number or kind of values.
    #[error("values: Invalid value for key {key:?}: {reason}")]
    BadValues {
        /// The key of the requirement.
        key: String,
        /// The rule broken.
        reason: &'static str,
    },
    /// A `matchExpressions` entry without values for In or NotIn, or with values for
    /// Exists or DoesNotExist.
    #[error("values: {}", expression_values_rule(operator, *values_required))]
    ExpressionValues {
        /// The operator as the API spells it (`In`, `Exists`, ...).
        operator: String,
        /// True when the operator needs values, false when it forbids them.
        values_required: bool,
    },
    /// A `matchExpressions` operator other than In, NotIn, Exists and DoesNotExist.
    #[error("{0:?} is not a valid label selector operator")]
    UnknownOperator(String),
    /// A structured selector whose JSON has the wrong shape.
    #[error("{field}: {expected}")]
    Malformed {
        /// The offending field, such as `matchExpressions[0].key`.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
}

/// A requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `k=v` (and `matchLabels`).
    Equals,
    /// `k==v`.
    DoubleEquals,
    /// `k!=v`.
    NotEquals,
    /// `k in (a,b)`.
    In,
    /// `k notin (a,b)`.
    NotIn,
    /// `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
    /// `k>n`.
    GreaterThan,
    /// `k<n`.
    LessThan,
}

/// One requirement on one label key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and their number as upstream's
    /// `NewRequirement` does. Values are kept sorted and without duplicates.
    pub fn new(
        key: &str,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Self, SelectorError> {
        check_key(key)?;
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        let bad = |reason| SelectorError::BadValues {
            key: key.to_owned(),
            reason,
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(bad(
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                return Err(bad("exact-match compatibility requires one single value"));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(bad(
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(bad(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(bad(
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
            _ => {}
        }
        for value in &values {
            if let Some(reason) = label_value(value).into_iter().next() {
                return Err(SelectorError::InvalidValue {
                    key: key.to_owned(),
                    value: value.clone(),
                    reason,
                });
            }
        }
        Ok(Self {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted (empty for Exists and DoesNotExist).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// True if the label value `value` (None when the label is absent) satisfies this.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let has = |v: &str| self.values.iter().any(|w| w == v);
        let number = |v: Option<&str>| v.and_then(|v| v.parse::<i64>().ok());
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => value.is_some_and(has),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                match (
                    number(value),
                    number(self.values.first().map(String::as_str)),
                ) {
                    (Some(have), Some(bound)) if self.operator == Operator::GreaterThan => {
                        have > bound
                    }
                    (Some(have), Some(bound)) => have < bound,
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={values}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={values}", self.key),
            Operator::NotEquals => write!(f, "{}!={values}", self.key),
            Operator::In => write!(f, "{} in ({values})", self.key),
            Operator::NotIn => write!(f, "{} notin ({values})", self.key),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{values}", self.key),
            Operator::LessThan => write!(f, "{}<{values}", self.key),
        }
    }
}

/// A label selector: every requirement must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the string form (the `labelSelector` query parameter).
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = lex(input)?;
        let mut parser = Parser {
            tokens: &tokens,
            position: 0,
        };
        Ok(Self::from_requirements(parser.selector()?))
    }

    /// Builds a selector from a `metav1.LabelSelector` object. A missing (null) selector
    /// means "nothing" upstream; that choice is the caller's, so null is an error here.
    pub fn from_json(selector: &Value) -> Result<Self, SelectorError> {
        let malformed = |field: String, expected| SelectorError::Malformed { field, expected };
        let Value::Object(selector) = selector else {
            return Err(malformed("selector".into(), "must be an object"));
        };
        let mut requirements = Vec::new();
        match selector.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let value = value.as_str().ok_or_else(|| {
                        malformed(format!("matchLabels[{key}]"), "must be a string")
                    })?;
                    requirements.push(Requirement::new(key, Operator::Equals, [value.to_owned()])?);
                }
            }
            Some(_) => return Err(malformed("matchLabels".into(), "must be an object")),
        }
        let expressions = match selector.get("matchExpressions") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(list)) => list.as_slice(),
            Some(_) => return Err(malformed("matchExpressions".into(), "must be a list")),
        };
        for (index, expression) in expressions.iter().enumerate() {
            let field = |name: &str| format!("matchExpressions[{index}].{name}");
            let key = expression
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(field("key"), "is required and must be a string"))?;
            let operator = match expression.get("operator").and_then(Value::as_str) {
                Some("In") => Operator::In,
                Some("NotIn") => Operator::NotIn,
                Some("Exists") => Operator::Exists,
                Some("DoesNotExist") => Operator::DoesNotExist,
                Some(other) => return Err(SelectorError::UnknownOperator(other.to_owned())),
                None => {
                    return Err(malformed(
                        field("operator"),
                        "is required and must be a string",
                    ));
                }
            };
            let values = match expression.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(values)) => values
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| malformed(field("values"), "must be a list of strings"))?,
                Some(_) => return Err(malformed(field("values"), "must be a list of strings")),
            };
            let values_required = matches!(operator, Operator::In | Operator::NotIn);
            if values.is_empty() == values_required {
                return Err(SelectorError::ExpressionValues {
                    operator: expression
                        .get("operator")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    values_required,
                });
            }
            requirements.push(Requirement::new(key, operator, values)?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// A selector matching exactly the given labels (upstream's `SelectorFromSet`), as
    /// ReplicationControllers and Services select. Keys and values are validated.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::new(k, Operator::Equals, [v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_requirements(requirements))
    }

    /// A selector from requirements, sorted by key (stable, so equal keys keep their order).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when the selector has no requirements (it matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True if every requirement holds, with `get` giving a label's value.
    pub fn matches_with<'v>(&self, get: impl Fn(&str) -> Option<&'v str>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches_value(get(&r.key)))
    }

    /// True if a JSON labels object satisfies every requirement; non-string values count
    /// as absent.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.matches_with(|k| labels.get(k).and_then(Value::as_str))
    }

    /// True if a plain label map satisfies every requirement.
    pub fn matches_map(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }
}

impl fmt::Display for LabelSelector {
    /// The string form upstream prints: requirements sorted by key, joined by commas.
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

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn expression_values_rule(operator: &str, values_required: bool) -> String {
    if values_required {
        format!("for '{operator}' operator, values set can't be empty")
    } else {
        format!("values set must be empty for {operator}")
    }
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    match qualified_name(key).into_iter().next() {
        Some(reason) => Err(SelectorError::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A token of the string form. `in` and `notin` are words; the parser decides whether
/// they are operators or values.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    Open,
    Close,
    Comma,
    End,
}

impl Token<'_> {
    fn text(&self) -> &str {
        match self {
            Token::Word(w) => w,
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::End => "",
        }
    }
}

fn is_special(byte: u8) -> bool {
    matches!(byte, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn lex(input: &str) -> Result<Vec<Token<'_>>, SelectorError> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if is_space(byte) {
            i += 1;
            continue;
        }
        if is_special(byte) {
            let next = bytes.get(i + 1).copied();
            let (token, width) = match (byte, next) {
                (b'!', Some(b'=')) => (Token::NotEquals, 2),
                (b'=', Some(b'=')) => (Token::DoubleEquals, 2),
                (b'!', _) => (Token::Bang, 1),
                (b'=', _) => (Token::Equals, 1),
                (b'>', _) => (Token::GreaterThan, 1),
                (b'<', _) => (Token::LessThan, 1),
                (b'(', _) => (Token::Open, 1),
                (b')', _) => (Token::Close, 1),
                _ => (Token::Comma, 1),
            };
            tokens.push(token);
            i += width;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_special(bytes[i]) && !is_space(bytes[i]) {
            i += 1;
        }
        // Special and space bytes are ASCII, so `start..i` falls on char boundaries.
        let word = input.get(start..i).ok_or(SelectorError::Syntax {
            found: String::new(),
            expected: "valid UTF-8",
        })?;
        tokens.push(Token::Word(word));
    }
    tokens.push(Token::End);
    Ok(tokens)
}

struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    position: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> &Token<'a> {
        self.tokens.get(self.position).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek().clone();
        self.position += 1;
        token
    }

    fn syntax(token: &Token<'_>, expected: &'static str) -> SelectorError {
        SelectorError::Syntax {
            found: token.text().to_owned(),
            expected,
        }
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        if *self.peek() == Token::End {
            return Ok(requirements);
        }
        loop {
            match self.peek() {
                Token::Word(_) | Token::Bang => requirements.push(self.requirement()?),
                other => return Err(Self::syntax(other, "!, identifier, or 'end of string'")),
            }
            match self.next() {
                Token::End => return Ok(requirements),
                Token::Comma => {
                    if !matches!(self.peek(), Token::Word(_) | Token::Bang) {
                        return Err(Self::syntax(self.peek(), "identifier after ','"));
                    }
                }
                other => return Err(Self::syntax(&other, "',' or 'end of string'")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = *self.peek() == Token::Bang;
        if negated {
            self.next();
        }
        let key = match self.next() {
            Token::Word(word) => word,
            other => return Err(Self::syntax(&other, "identifier")),
        };
        check_key(key)?;
        if negated {
            return Requirement::new(key, Operator::DoesNotExist, []);
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Requirement::new(key, Operator::Exists, []);
        }
        let operator = match self.next() {
            Token::Word("in") => Operator::In,
            Token::Word("notin") => Operator::NotIn,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            other => return Err(Self::syntax(&other, "in, notin, =, ==, !=, gt, lt")),
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, operator, values)
    }

    /// `(a,b)`; empty entries (`(a,)`, `()`) are the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            other => return Err(Self::syntax(&other, "'('")),
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Token::Word(word) if expect_value => {
                    values.push(word.to_owned());
                    expect_value = false;
                }
                Token::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Token::Close => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                other if expect_value => {
                    return Err(Self::syntax(&other, "',', ')' or identifier"));
                }
                other => return Err(Self::syntax(&other, "',' or ')'")),
            }
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing there is the empty value.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Token::End | Token::Comma => Ok(String::new()),
            Token::Word(word) => {
                let word = (*word).to_owned();
                self.next();
                Ok(word)
            }
            other => Err(Self::syntax(other, "identifier")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses `selector`, checks its printed form and whether it matches `labels`.
    fn check(selector: &str, printed: &str, labels: Value, expected: bool) {
        let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(parsed.to_string(), printed, "{selector}");
        let labels = labels.as_object().cloned().unwrap_or_default();
        assert_eq!(
            parsed.matches(&labels),
            expected,
            "{selector} on {labels:?}"
        );
        let map: BTreeMap<String, String> = labels
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        assert_eq!(
            parsed.matches_map(&map),
            expected,
            "{selector} on map {map:?}"
        );
    }

    /// `selector` must fail with a message containing `message`.
    fn check_err(selector: &str, message: &str) {
        match LabelSelector::parse(selector) {
            Ok(s) => panic!("{selector:?} should fail, parsed as {s}"),
            Err(e) => assert!(e.to_string().contains(message), "{selector:?}: got {e}"),
        }
    }

    #[test]
    fn matching_and_printing() {
        check("", "", json!({}), true);
        check("   ", "", json!({"a": "b"}), true);
        check("app=web", "app=web", json!({"app": "web"}), true);
        check("app==web", "app==web", json!({"app": "web"}), true);
        check("app=web", "app=web", json!({"app": "db"}), false);
        check("app=web", "app=web", json!({}), false);
        check("app=", "app=", json!({"app": ""}), true);
        check("app=,b", "app=,b", json!({"app": "", "b": "x"}), true);
        check("app!=web", "app!=web", json!({}), true);
        check("app!=web", "app!=web", json!({"app": "web"}), false);
        check(
            "app in (web, db)",
            "app in (db,web)",
            json!({"app": "db"}),
            true,
        );
        check("app in (web,db)", "app in (db,web)", json!({}), false);
        check(
            "app in (web,web)",
            "app in (web)",
            json!({"app": "web"}),
            true,
        );
        check("app in (a,)", "app in (,a)", json!({"app": ""}), true);
        check("app in ()", "app in ()", json!({"app": ""}), true);
        check(
            "app notin (web,db)",
            "app notin (db,web)",
            json!({"app": "db"}),
            false,
        );
        check("app notin (web,db)", "app notin (db,web)", json!({}), true);
        check("app", "app", json!({"app": ""}), true);
        check("app", "app", json!({}), false);
        check("!app", "!app", json!({"app": "x"}), false);
        check(" ! app ", "!app", json!({}), true);
        check("tier,app=web", "app=web,tier", json!({"app": "web"}), false);
        check("n>3", "n>3", json!({"n": "4"}), true);
        check("n<3", "n<3", json!({"n": "4"}), false);
        check("n>3", "n>3", json!({"n": "x"}), false);
        check("n<10", "n<10", json!({"n": "-5"}), true);
        // `in` and `notin` are values inside a set and after `=`.
        check(
            "x in (in,notin)",
            "x in (in,notin)",
            json!({"x": "notin"}),
            true,
        );
        check("x=in", "x=in", json!({"x": "in"}), true);
        check(
            "app.kubernetes.io/name=x , env=prod",
            "app.kubernetes.io/name=x,env=prod",
            json!({"app.kubernetes.io/name": "x", "env": "prod"}),
            true,
        );
        check("\tb=1,\na=2", "a=2,b=1", json!({"a": "2", "b": "1"}), true);
        // Non-string JSON label values count as absent.
        check("a", "a", json!({"a": 1}), false);
    }

    #[test]
    fn errors() {
        check_err(
            "=web",
            "found '=', expected: !, identifier, or 'end of string'",
        );
        check_err("app in web", "found 'web', expected: '('");
        check_err("app in (a", "found '', expected: ',' or ')'");
        check_err("app in (a b)", "found 'b', expected: ',' or ')'");
        check_err("app in (=)", "found '=', expected: ',', ')' or identifier");
        check_err("bad key=x", "found 'key', expected: in, notin");
        check_err("a=b=c", "found '=', expected: ',' or 'end of string'");
        check_err("a=(b)", "found '(', expected: identifier");
        check_err("app!web", "found '!', expected: in, notin");
        check_err(",", "found ',', expected: !, identifier");
        check_err("a=b,", "found '', expected: identifier after ','");
        check_err("a,,b", "found ',', expected: identifier after ','");
        check_err("!a=b", "found '=', expected: ',' or 'end of string'");
        check_err("!", "found '', expected: identifier");
        check_err("n>x", "the value must be an integer");
        check_err("n>", "the value must be an integer");
        // A bound is also a label value, so it cannot be negative (as upstream).
        check_err("n<-1", "values[n]: Invalid value: \"-1\"");
        check_err("-a=b", "key: Invalid value: \"-a\"");
        check_err("a/b/c=d", "key: Invalid value");
        check_err("a=-x-", "values[a]: Invalid value: \"-x-\"");
        check_err(
            &format!("a={}", "x".repeat(64)),
            "must be no more than 63 characters",
        );
        check_err("a in (ok,b@d)", "Invalid value: \"b@d\"");
        check_err("ключ=1", "key: Invalid value");
    }

    #[test]
    fn structured() {
        let check_json = |selector: Value, printed: &str| {
            let parsed =
                LabelSelector::from_json(&selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(parsed.to_string(), printed, "{selector}");
        };
        check_json(json!({}), "");
        check_json(json!({"matchLabels": null, "matchExpressions": null}), "");
        check_json(json!({"matchLabels": {"b": "2", "a": "1"}}), "a=1,b=2");
        check_json(
            json!({"matchLabels": {"b": "2"}, "matchExpressions": [
                {"key": "a", "operator": "In", "values": ["y", "x"]},
                {"key": "c", "operator": "DoesNotExist"},
                {"key": "d", "operator": "Exists", "values": []},
                {"key": "e", "operator": "NotIn", "values": ["z"]},
                {"key": "f", "operator": "In", "values": ["v"]}]}),
            "a in (x,y),b=2,!c,d,e notin (z),f in (v)",
        );
        let check_json_err =
            |selector: Value, message: &str| match LabelSelector::from_json(&selector) {
                Ok(s) => panic!("{selector} should fail, got {s}"),
                Err(e) => assert!(e.to_string().contains(message), "{selector}: got {e}"),
            };
        check_json_err(json!(null), "selector: must be an object");
        check_json_err(json!({"matchLabels": []}), "matchLabels: must be an object");
        check_json_err(
            json!({"matchLabels": {"a": 1}}),
            "matchLabels[a]: must be a string",
        );
        check_json_err(json!({"matchLabels": {"a": "-"}}), "Invalid value: \"-\"");
        check_json_err(
            json!({"matchExpressions": {}}),
            "matchExpressions: must be a list",
        );
        check_json_err(
            json!({"matchExpressions": [{"operator": "Exists"}]}),
            "matchExpressions[0].key: is required",
        );
        check_json_err(
            json!({"matchExpressions": [{"key": "a"}]}),
            "matchExpressions[0].operator: is required",
        );
        check_json_err(
            json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
            "\"Bogus\" is not a valid label selector operator",
        );
        check_json_err(
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            "values: for 'In' operator, values set can't be empty",
        );
        check_json_err(
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
            "matchExpressions[0].values: must be a list of strings",
        );
        check_json_err(
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            "values: values set must be empty for Exists",
        );
    }

    #[test]
    fn round_trips_and_sets() {
        for input in ["a in (x,y),b=2,!c,d,e notin (z)", "a==1,b!=2,n>1,n<9", "a="] {
            let parsed = LabelSelector::parse(input).expect("valid");
            assert_eq!(
                LabelSelector::parse(&parsed.to_string()),
                Ok(parsed),
                "{input}"
            );
        }
        let set = BTreeMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]);
        let selector = LabelSelector::from_labels(&set).expect("valid");
        assert_eq!(selector.to_string(), "a=1,b=2");
        assert!(selector.matches_map(&set));
        assert_eq!(selector.requirements()[0].operator(), Operator::Equals);
        assert_eq!(selector.requirements()[0].values(), ["1"]);
        assert!(LabelSelector::default().is_empty());
        assert!("a in (b)".parse::<LabelSelector>().is_ok());
    }
}
