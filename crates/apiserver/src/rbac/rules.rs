//! Policy rules: how one rule matches a request, whether one set of rules covers another
//! (escalation checks), and upstream's compact text form of a rule for messages.

use serde::{Deserialize, Serialize};

use crate::authz::Attributes;

/// One `PolicyRule` of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs, or `*`.
    #[serde(default, deserialize_with = "nullable")]
    pub verbs: Vec<String>,
    /// API groups (`""` is core), or `*`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*` or `*/subresource`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<String>,
    /// Object names the rule is limited to; empty means all.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resource_names: Vec<String>,
    /// Non-resource paths; a trailing `*` matches any suffix.
    #[serde(
        default,
        rename = "nonResourceURLs",
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl PolicyRule {
    /// A resource rule: `verbs` on `resources` in `groups`.
    pub fn resource(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        Self {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            ..Default::default()
        }
    }

    /// A non-resource rule: `verbs` on `urls`.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Self {
        Self {
            verbs: strings(verbs),
            non_resource_urls: strings(urls),
            ..Default::default()
        }
    }

    /// The same rule limited to `names`.
    pub fn names(mut self, names: &[&str]) -> Self {
        self.resource_names = strings(names);
        self
    }

    /// True if this rule allows the request.
    pub fn allows(&self, attrs: &Attributes) -> bool {
        if !verb_matches(&self.verbs, &attrs.verb) {
            return false;
        }
        if !attrs.is_resource_request() {
            return self
                .non_resource_urls
                .iter()
                .any(|rule| url_matches(rule, &attrs.path));
        }
        let combined = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        self.api_groups
            .iter()
            .any(|g| g == "*" || *g == attrs.group)
            && self
                .resources
                .iter()
                .any(|r| resource_matches(r, &combined, &attrs.subresource))
            && (self.resource_names.is_empty() || self.resource_names.contains(&attrs.name))
    }
}

fn verb_matches(verbs: &[String], verb: &str) -> bool {
    verbs.iter().any(|v| v == "*" || v == verb)
}

/// A rule's resource against `resource[/subresource]`: `*`, an exact match, or
/// `*/subresource`.
fn resource_matches(rule: &str, combined: &str, subresource: &str) -> bool {
    rule == "*"
        || rule == combined
        || (!subresource.is_empty()
            && rule
                .strip_prefix("*/")
                .is_some_and(|sub| sub == subresource))
}

/// A rule's non-resource URL against a path: `*`, an exact match, or a prefix ending in `*`.
fn url_matches(rule: &str, path: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => rule == path,
    }
}

/// The rules of `servant` no rule of `owner` covers, broken down to one verb, group,
/// resource and name (or URL) each; empty when `owner` covers everything.
pub fn uncovered(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for rule in servant {
        for atom in breakdown(rule) {
            if !owner.iter().any(|o| covers(o, &atom)) && !missing.contains(&atom) {
                missing.push(atom);
            }
        }
    }
    missing
}

/// One rule per verb, group, resource and name (or per verb and URL).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let one = |s: &String| vec![s.clone()];
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                if rule.resource_names.is_empty() {
                    out.push(PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..Default::default()
                    });
                }
                for name in &rule.resource_names {
                    out.push(PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: one(name),
                        ..Default::default()
                    });
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..Default::default()
            });
        }
    }
    out
}

fn has_all(owner: &[String], wanted: &[String]) -> bool {
    owner.iter().any(|o| o == "*") || wanted.iter().all(|w| owner.contains(w))
}

/// True if `owner` grants everything the (broken down) rule `sub` grants.
fn covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let resources = owner.resources.iter().any(|o| o == "*")
        || sub.resources.iter().all(|wanted| {
            owner.resources.iter().any(|o| {
                o == wanted
                    || match (o.strip_prefix("*/"), wanted.split_once('/')) {
                        (Some(sub_owned), Some((_, sub_wanted))) => sub_owned == sub_wanted,
                        _ => false,
                    }
            })
        });
    let urls = sub.non_resource_urls.iter().all(|wanted| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| url_matches(o, wanted))
    });
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    has_all(&owner.verbs, &sub.verbs)
        && (sub.api_groups.is_empty() || has_all(&owner.api_groups, &sub.api_groups))
        && (sub.resources.is_empty() || resources)
        && urls
        && names
}

/// Merges simple rules (one group, one resource, no names) that differ only in their verbs,
/// as upstream compacts the missing rules of an escalation error.
pub fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for rule in rules {
        let simple = rule.api_groups.len() == 1
            && rule.resources.len() == 1
            && rule.resource_names.is_empty()
            && rule.non_resource_urls.is_empty();
        if simple
            && let Some(existing) = out.iter_mut().find(|o| {
                o.api_groups == rule.api_groups
                    && o.resources == rule.resources
                    && o.resource_names.is_empty()
                    && o.non_resource_urls.is_empty()
            })
        {
            for verb in rule.verbs {
                if !existing.verbs.contains(&verb) {
                    existing.verbs.push(verb);
                }
            }
            existing.verbs.sort();
            continue;
        }
        out.push(rule);
    }
    out
}

/// Upstream's compact text form: `{APIGroups:["apps"], Resources:["deployments"],
/// Verbs:["create" "delete"]}`.
pub fn compact_string(rule: &PolicyRule) -> String {
    let quoted = |items: &[String]| {
        let inner: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", inner.join(" "))
    };
    let mut parts = Vec::new();
    for (label, items) in [
        ("APIGroups", &rule.api_groups),
        ("Resources", &rule.resources),
        ("NonResourceURLs", &rule.non_resource_urls),
        ("ResourceNames", &rule.resource_names),
        ("Verbs", &rule.verbs),
    ] {
        if !items.is_empty() {
            parts.push(format!("{label}:{}", quoted(items)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            name: name.into(),
            path: String::new(),
        }
    }

    fn path(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn resource_rules_match_verbs_groups_resources_and_names() {
        let rule = PolicyRule::resource(&["get", "list"], &["", "apps"], &["pods", "deployments"]);
        assert!(rule.allows(&request("get", "", "pods", "", "x")));
        assert!(rule.allows(&request("list", "apps", "deployments", "", "")));
        assert!(!rule.allows(&request("delete", "", "pods", "", "x")));
        assert!(!rule.allows(&request("get", "batch", "pods", "", "x")));
        assert!(!rule.allows(&request("get", "", "pods", "log", "x")));
        let star = PolicyRule::resource(&["*"], &["*"], &["*"]);
        assert!(star.allows(&request(
            "escalate",
            "rbac.authorization.k8s.io",
            "roles",
            "",
            ""
        )));
        assert!(star.allows(&request("get", "", "pods", "log", "x")));
        assert!(!star.allows(&path("get", "/healthz")));
        let named = PolicyRule::resource(&["get"], &[""], &["configmaps"]).names(&["a"]);
        assert!(named.allows(&request("get", "", "configmaps", "", "a")));
        assert!(!named.allows(&request("get", "", "configmaps", "", "b")));
        assert!(!named.allows(&request("list", "", "configmaps", "", "")));
    }

    #[test]
    fn subresources_match_exactly_or_by_star() {
        let logs = PolicyRule::resource(&["get"], &[""], &["pods/log"]);
        assert!(logs.allows(&request("get", "", "pods", "log", "p")));
        assert!(!logs.allows(&request("get", "", "pods", "", "p")));
        assert!(!logs.allows(&request("get", "", "pods", "exec", "p")));
        let scale = PolicyRule::resource(&["get"], &["*"], &["*/scale"]);
        assert!(scale.allows(&request("get", "apps", "deployments", "scale", "d")));
        assert!(!scale.allows(&request("get", "apps", "deployments", "", "d")));
        assert!(!scale.allows(&request("get", "apps", "deployments", "status", "d")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let rule = PolicyRule::urls(&["get"], &["/api", "/apis/*", "/healthz"]);
        assert!(rule.allows(&path("get", "/api")));
        assert!(!rule.allows(&path("get", "/api/v1")));
        assert!(rule.allows(&path("get", "/apis/apps/v1")));
        assert!(rule.allows(&path("get", "/apis/")));
        assert!(!rule.allows(&path("get", "/apis")));
        assert!(!rule.allows(&path("post", "/healthz")));
        assert!(!rule.allows(&request("get", "", "pods", "", "")));
        assert!(PolicyRule::urls(&["*"], &["*"]).allows(&path("delete", "/anything")));
    }

    #[test]
    fn coverage_breaks_rules_down() {
        let owner = vec![
            PolicyRule::resource(&["get", "list"], &[""], &["pods", "configmaps"]),
            PolicyRule::resource(&["get"], &["*"], &["*/scale"]),
            PolicyRule::resource(&["update"], &[""], &["secrets"]).names(&["a", "b"]),
            PolicyRule::urls(&["get"], &["/apis/*"]),
        ];
        let ok = vec![
            PolicyRule::resource(&["get"], &[""], &["pods"]),
            PolicyRule::resource(&["get"], &["apps"], &["deployments/scale"]),
            PolicyRule::resource(&["update"], &[""], &["secrets"]).names(&["a"]),
            PolicyRule::urls(&["get"], &["/apis/apps", "/apis/*"]),
        ];
        assert!(uncovered(&owner, &ok).is_empty());
        let too_much = vec![
            PolicyRule::resource(&["get", "delete"], &[""], &["pods"]),
            PolicyRule::resource(&["update"], &[""], &["secrets"]),
            PolicyRule::urls(&["get"], &["*"]),
        ];
        let missing = uncovered(&owner, &too_much);
        let text: Vec<String> = compact(missing).iter().map(compact_string).collect();
        assert_eq!(
            text,
            vec![
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["update"]}"#,
                r#"{NonResourceURLs:["*"], Verbs:["get"]}"#,
            ]
        );
        let admin = vec![
            PolicyRule::resource(&["*"], &["*"], &["*"]),
            PolicyRule::urls(&["*"], &["*"]),
        ];
        assert!(uncovered(&admin, &too_much).is_empty());
    }

    #[test]
    fn compaction_merges_verbs() {
        let rules = vec![
            PolicyRule::resource(&["get"], &["apps"], &["deployments"]),
            PolicyRule::resource(&["create"], &["apps"], &["deployments"]),
            PolicyRule::resource(&["get"], &[""], &["pods"]).names(&["x"]),
        ];
        let text: Vec<String> = compact(rules).iter().map(compact_string).collect();
        assert_eq!(
            text,
            vec![
                r#"{APIGroups:["apps"], Resources:["deployments"], Verbs:["create" "get"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["x"], Verbs:["get"]}"#,
            ]
        );
    }
}
