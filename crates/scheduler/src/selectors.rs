//! Matching rules shared by the filters and scores: label selectors, node selector terms
//! (node affinity), and taints against tolerations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object (empty when it has none).
pub type Labels = BTreeMap<String, String>;

/// A parsed `metav1.LabelSelector`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Matches no object: a null selector, or one that does not parse.
    Nothing,
    /// Matches objects that meet every requirement (none: everything).
    Requirements(Vec<Requirement>),
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Parses a label selector as upstream's `LabelSelectorAsSelector`: `None` selects
    /// nothing, an empty selector everything, a malformed one nothing.
    pub fn parse(selector: Option<&LabelSelector>) -> Self {
        let Some(selector) = selector else {
            return Self::Nothing;
        };
        let mut reqs = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In(vec![v.clone()]),
            });
        }
        for e in selector.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" if !values.is_empty() => Op::In(values),
                "NotIn" if !values.is_empty() => Op::NotIn(values),
                "Exists" if values.is_empty() => Op::Exists,
                "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
                _ => return Self::Nothing,
            };
            reqs.push(Requirement {
                key: e.key.clone(),
                op,
            });
        }
        Self::Requirements(reqs)
    }

    /// A selector requiring each of `labels` exactly.
    pub fn from_labels(labels: &Labels) -> Self {
        Self::Requirements(
            labels
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::In(vec![v.clone()]),
                })
                .collect(),
        )
    }

    /// Adds the requirement `key` in (`value`) (for `matchLabelKeys`).
    pub fn require(&mut self, key: &str, value: &str) {
        if let Self::Requirements(reqs) = self {
            reqs.push(Requirement {
                key: key.to_owned(),
                op: Op::In(vec![value.to_owned()]),
            });
        }
    }

    /// Adds every requirement of `other` (upstream's `Selector.Add`); a selector that
    /// matches nothing adds nothing, as its requirements are not defined.
    pub fn extend(&mut self, other: &Selector) {
        if let (Self::Requirements(reqs), Self::Requirements(more)) = (self, other) {
            reqs.extend(more.iter().cloned());
        }
    }

    /// Whether the selector has no requirements (upstream's `Selector.Empty`): it then
    /// selects everything, or nothing when it is [`Selector::Nothing`].
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Nothing => true,
            Self::Requirements(reqs) => reqs.is_empty(),
        }
    }

    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::Nothing => false,
            Self::Requirements(reqs) => reqs.iter().all(|r| {
                let value = labels.get(&r.key);
                match &r.op {
                    Op::In(values) => value.is_some_and(|v| values.contains(v)),
                    Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                    Op::Exists => value.is_some(),
                    Op::DoesNotExist => value.is_none(),
                }
            }),
        }
    }
}

/// The labels of a node.
pub fn node_labels(node: &Node) -> &Labels {
    static EMPTY: Labels = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether `node` matches at least one of `terms` (upstream's `NodeSelector`): terms are
/// ORed, the requirements of one term ANDed, and a term without requirements matches
/// nothing.
pub fn node_matches_terms(node: &Node, terms: &[NodeSelectorTerm]) -> bool {
    terms.iter().any(|term| node_matches_term(node, term))
}

/// Whether `node` matches one node selector term.
pub fn node_matches_term(node: &Node, term: &NodeSelectorTerm) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node_labels(node);
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // metadata.name is the only field node affinity supports.
            r.key == "metadata.name"
                && requirement_matches(r, Some(node.metadata.name.as_deref().unwrap_or("")))
        })
}

/// One node selector requirement against the node's value for its key.
fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(|v| v.parse::<i64>().ok()), values) else {
                return false;
            };
            let Ok(bound) = bound.parse::<i64>() else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether `toleration` tolerates `taint` (upstream's `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels}})).unwrap()
    }

    fn term(v: serde_json::Value) -> NodeSelectorTerm {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn node_selector_terms() {
        let n = node(json!({"zone": "a", "cores": "8"}));
        let check = |t: serde_json::Value, expected: bool| {
            assert_eq!(node_matches_term(&n, &term(t.clone())), expected, "{t}");
        };
        check(
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}),
            true,
        );
        check(
            json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
            false,
        );
        check(
            json!({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["a"]}]}),
            true,
        );
        check(
            json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
            true,
        );
        check(
            json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}),
            false,
        );
        check(
            json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}),
            true,
        );
        check(
            json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}),
            false,
        );
        check(
            json!({"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["4"]}]}),
            false,
        );
        check(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
            true,
        );
        check(
            json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}),
            false,
        );
        check(json!({}), false);
    }

    #[test]
    fn label_selectors() {
        let sel = |v: serde_json::Value| Selector::parse(Some(&serde_json::from_value(v).unwrap()));
        let labels: Labels = [("app".to_owned(), "web".to_owned())].into();
        assert!(sel(json!({})).matches(&labels));
        assert!(sel(json!({"matchLabels": {"app": "web"}})).matches(&labels));
        assert!(!sel(json!({"matchLabels": {"app": "db"}})).matches(&labels));
        assert!(
            sel(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}))
                .matches(&labels)
        );
        assert!(
            !sel(json!({"matchExpressions": [{"key": "app", "operator": "In"}]})).matches(&labels)
        );
        assert!(!Selector::parse(None).matches(&labels));
    }

    #[test]
    fn tolerations() {
        let taint: Taint =
            serde_json::from_value(json!({"key": "k", "value": "v", "effect": "NoSchedule"}))
                .unwrap();
        let t = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert!(tolerates(&t(json!({"key": "k", "value": "v"})), &taint));
        assert!(tolerates(
            &t(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})),
            &taint
        ));
        assert!(tolerates(&t(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(
            &t(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
    }
}
