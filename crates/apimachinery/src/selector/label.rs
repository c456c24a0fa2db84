//! Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
//! `k>n`, `k<n`, joined by commas (AND).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::validation::{label_value, qualified_name};

/// Why a selector did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One requirement's operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `k=v`, `k==v` or `k in (...)`.
    In(Vec<String>),
    /// `k!=v` or `k notin (...)`.
    NotIn(Vec<String>),
    /// `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
    /// `k>n`.
    Gt(i64),
    /// `k<n`.
    Lt(i64),
}

/// One requirement on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator and its values.
    pub op: Op,
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).and_then(Value::as_str);
        match &self.op {
            Op::In(values) => value.is_some_and(|v| values.iter().any(|w| w == v)),
            Op::NotIn(values) => value.is_none_or(|v| !values.iter().any(|w| w == v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Op::Lt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector (all requirements must hold). Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, sorted by key.
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the string form.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut p = Parser {
            s: input.as_bytes(),
            i: 0,
            src: input,
        };
        let mut requirements = Vec::new();
        p.skip_ws();
        if p.done() {
            return Ok(Self::default());
        }
        loop {
            requirements.push(p.requirement()?);
            p.skip_ws();
            if p.done() {
                break;
            }
            p.expect(b',')?;
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` object.
    pub fn from_json(selector: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                let v = v
                    .as_str()
                    .ok_or_else(|| SelectorError(format!("matchLabels[{k}] must be a string")))?;
                check_key(k)?;
                check_value(v)?;
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::In(vec![v.to_owned()]),
                });
            }
        }
        for expr in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| SelectorError("matchExpressions key is required".into()))?;
            check_key(key)?;
            let values: Vec<String> = expr
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let op = match expr.get("operator").and_then(Value::as_str) {
                Some("In") if !values.is_empty() => Op::In(values),
                Some("NotIn") if !values.is_empty() => Op::NotIn(values),
                Some("Exists") if values.is_empty() => Op::Exists,
                Some("DoesNotExist") if values.is_empty() => Op::DoesNotExist,
                Some(op @ ("In" | "NotIn")) => {
                    return Err(SelectorError(format!(
                        "values: for '{op}' operator, values set can't be empty"
                    )));
                }
                Some(op @ ("Exists" | "DoesNotExist")) => {
                    return Err(SelectorError(format!(
                        "values: values set must be empty for {op}"
                    )));
                }
                other => {
                    return Err(SelectorError(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            requirements.push(Requirement {
                key: key.to_owned(),
                op,
            });
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// True if `labels` (a JSON object of strings) satisfies every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for a plain string map.
    pub fn matches_map(&self, labels: &BTreeMap<String, String>) -> bool {
        let map: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.matches(&map)
    }

    /// True when the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match &r.op {
                Op::In(v) if v.len() == 1 => format!("{}={}", r.key, v[0]),
                Op::In(v) => format!("{} in ({})", r.key, sorted(v).join(",")),
                Op::NotIn(v) if v.len() == 1 => format!("{}!={}", r.key, v[0]),
                Op::NotIn(v) => format!("{} notin ({})", r.key, sorted(v).join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::Gt(n) => format!("{}>{n}", r.key),
                Op::Lt(n) => format!("{}<{n}", r.key),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn check_key(k: &str) -> Result<(), SelectorError> {
    match qualified_name(k).first() {
        Some(e) => Err(SelectorError(format!("invalid label key {k:?}: {e}"))),
        None => Ok(()),
    }
}

fn check_value(v: &str) -> Result<(), SelectorError> {
    match label_value(v).first() {
        Some(e) => Err(SelectorError(format!("invalid label value: {v:?}: {e}"))),
        None => Ok(()),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), SelectorError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(SelectorError(format!(
                "found '{}', expected: '{}' in {:?}",
                self.rest_token(),
                c as char,
                self.src
            )))
        }
    }

    fn rest_token(&self) -> String {
        String::from_utf8_lossy(&self.s[self.i.min(self.s.len())..])
            .chars()
            .take(10)
            .collect()
    }

    /// A run of characters that may form a key or value.
    fn word(&mut self) -> String {
        self.skip_ws();
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace()
                || matches!(c, b',' | b'=' | b'!' | b'(' | b')' | b'<' | b'>')
            {
                break;
            }
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_ws();
        if self.peek() == Some(b'!') {
            self.i += 1;
            let key = self.word();
            if key.is_empty() {
                return Err(SelectorError(format!(
                    "missing key after '!' in {:?}",
                    self.src
                )));
            }
            check_key(&key)?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.word();
        if key.is_empty() {
            return Err(SelectorError(format!(
                "found '{}', expected: identifier in {:?}",
                self.rest_token(),
                self.src
            )));
        }
        check_key(&key)?;
        self.skip_ws();
        let op = match self.peek() {
            None | Some(b',') => Op::Exists,
            Some(b'=') => {
                self.i += 1;
                if self.peek() == Some(b'=') {
                    self.i += 1;
                }
                Op::In(vec![self.value()?])
            }
            Some(b'!') => {
                self.i += 1;
                if self.peek() != Some(b'=') {
                    return Err(SelectorError(format!(
                        "found '!', expected: '!=' in {:?}",
                        self.src
                    )));
                }
                self.i += 1;
                Op::NotIn(vec![self.value()?])
            }
            Some(c @ (b'>' | b'<')) => {
                self.i += 1;
                let v = self.word();
                let n = v.parse::<i64>().map_err(|_| {
                    SelectorError(format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer, got {v:?}"
                    ))
                })?;
                if c == b'>' { Op::Gt(n) } else { Op::Lt(n) }
            }
            Some(_) => {
                let op = self.word();
                let values = self.value_set()?;
                match op.as_str() {
                    "in" => Op::In(values),
                    "notin" => Op::NotIn(values),
                    other => {
                        return Err(SelectorError(format!(
                            "found '{other}', expected: in, notin, =, ==, !=, gt, lt"
                        )));
                    }
                }
            }
        };
        Ok(Requirement { key, op })
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        let v = self.word();
        check_value(&v)?;
        Ok(v)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.expect(b'(')?;
        let mut values = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b')') {
                self.i += 1;
                break;
            }
            values.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b')') => {
                    self.i += 1;
                    break;
                }
                _ => {
                    return Err(SelectorError(format!(
                        "found '{}', expected: ',', ')' in {:?}",
                        self.rest_token(),
                        self.src
                    )));
                }
            }
        }
        if values.is_empty() {
            values.push(String::new());
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(selector: &str, labels: Value, expected: bool) {
        let sel = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        let labels = labels.as_object().cloned().unwrap_or_default();
        assert_eq!(sel.matches(&labels), expected, "{selector} on {labels:?}");
    }

    #[test]
    fn matching() {
        check("", json!({}), true);
        check("app=web", json!({"app": "web"}), true);
        check("app==web", json!({"app": "web"}), true);
        check("app=web", json!({"app": "db"}), false);
        check("app!=web", json!({}), true);
        check("app!=web", json!({"app": "web"}), false);
        check("app in (web, db)", json!({"app": "db"}), true);
        check("app notin (web,db)", json!({"app": "db"}), false);
        check("app notin (web,db)", json!({}), true);
        check("app", json!({"app": ""}), true);
        check("!app", json!({"app": "x"}), false);
        check("tier,app=web", json!({"app": "web"}), false);
        check("n>3", json!({"n": "4"}), true);
        check("n<3", json!({"n": "4"}), false);
        check(
            "app.kubernetes.io/name=x , env=prod",
            json!({"app.kubernetes.io/name": "x", "env": "prod"}),
            true,
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "app=",
            "=web",
            "app in web",
            "app in (a",
            "bad key=x",
            "a=b=c",
            "app!web",
            ",",
            "n>x",
            "a=b,",
        ] {
            if bad == "app=" {
                // An empty value is valid: `app=` selects an empty label.
                assert!(LabelSelector::parse(bad).is_ok());
                continue;
            }
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn structured_and_display() {
        let sel = LabelSelector::from_json(&json!({"matchLabels": {"b": "2"}, "matchExpressions": [{"key": "a", "operator": "In", "values": ["y", "x"]}, {"key": "c", "operator": "DoesNotExist"}]}))
            .expect("valid");
        assert_eq!(sel.to_string(), "a in (x,y),b=2,!c");
        assert!(
            LabelSelector::from_json(
                &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
            )
            .is_err()
        );
        assert!(
            LabelSelector::from_json(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
            )
            .is_err()
        );
    }
}
