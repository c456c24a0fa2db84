//! What an object charges against a ResourceQuota (upstream's pkg/quota/v1 evaluators),
//! shared by the API server's quota admission and the resource quota controller.
//!
//! Every namespaced kind charges `count/<resource>[.<group>]`; core kinds also charge their
//! legacy names (`pods`, `services`, `configmaps`, …); pods charge compute resources
//! (`requests.cpu`, `limits.memory`, with `cpu`/`memory` meaning requests) while they are
//! not terminal; services charge `services.nodeports` and `services.loadbalancers`;
//! claims charge `requests.storage`. Scopes (`Terminating`, `NotTerminating`, `BestEffort`,
//! `NotBestEffort`, `PriorityClass`) select pods.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::{self, Quantity};

/// Resource name to quantity, sorted by name (upstream prints them in this order).
pub type ResourceList = BTreeMap<String, Quantity>;

/// The resource names upstream requires every container to set when a quota limits them.
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The name `count/<resource>` (core) or `count/<resource>.<group>`.
pub fn object_count_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("count/{resource}")
    } else {
        format!("count/{resource}.{group}")
    }
}

/// The legacy object-count name of a core resource, if it has one.
fn legacy_count_name(group: &str, resource: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    Some(match resource {
        "services" => "services",
        "configmaps" => "configmaps",
        "secrets" => "secrets",
        "persistentvolumeclaims" => "persistentvolumeclaims",
        "replicationcontrollers" => "replicationcontrollers",
        "resourcequotas" => "resourcequotas",
        _ => return None,
    })
}

fn is_pods(group: &str, resource: &str) -> bool {
    group.is_empty() && resource == "pods"
}

/// Parses a ResourceList object (`{"cpu": "1", …}`); malformed quantities are skipped.
pub fn parse_list(v: Option<&Value>) -> ResourceList {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), quantity::parse(v.as_str()?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A ResourceList as JSON, quantities in canonical form.
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

/// `name=value,…` in name order, as upstream's messages print lists.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether the pod is still charged for compute resources: not terminal, and not past the
/// end of a graceful deletion.
pub fn pod_is_charged(pod: &Value, now: jiff::Timestamp) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return false;
    }
    // kumo's deletionTimestamp is already the end of the grace period.
    match pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    {
        Some(deadline) => now < deadline,
        None => true,
    }
}

/// Which of `names` (a quota's hard resources) objects of this resource can charge.
pub fn matching_resources<'a>(
    group: &str,
    resource: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let count = object_count_name(group, resource);
    let legacy = legacy_count_name(group, resource);
    names
        .into_iter()
        .filter(|n| {
            **n == count
                || Some(n.as_str()) == legacy
                || (is_pods(group, resource) && is_pod_resource(n))
                || (group.is_empty()
                    && resource == "services"
                    && matches!(n.as_str(), "services.nodeports" | "services.loadbalancers"))
                || (group.is_empty()
                    && resource == "persistentvolumeclaims"
                    && n.as_str() == "requests.storage")
        })
        .cloned()
        .collect()
}

fn is_pod_resource(name: &str) -> bool {
    matches!(
        name,
        "pods"
            | "cpu"
            | "memory"
            | "ephemeral-storage"
            | "requests.cpu"
            | "requests.memory"
            | "requests.ephemeral-storage"
            | "limits.cpu"
            | "limits.memory"
            | "limits.ephemeral-storage"
    ) || name.starts_with("requests.hugepages-")
        || name.starts_with("hugepages-")
}

/// What one object charges (every resource it can charge, zeros left out).
pub fn usage(group: &str, resource: &str, obj: &Value, now: jiff::Timestamp) -> ResourceList {
    let mut used = ResourceList::new();
    used.insert(object_count_name(group, resource), Quantity::from_count(1));
    if let Some(legacy) = legacy_count_name(group, resource) {
        used.insert(legacy.to_owned(), Quantity::from_count(1));
    }
    if is_pods(group, resource) && pod_is_charged(obj, now) {
        add_all(&mut used, &pod_compute_usage(obj));
    }
    if group.is_empty() && resource == "services" {
        let spec = obj.get("spec");
        let ty = spec
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let ports = spec
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as i64;
        let allocates = spec
            .and_then(|s| s.get("allocateLoadBalancerNodePorts"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        match ty {
            "NodePort" => {
                used.insert("services.nodeports".into(), Quantity::from_count(ports));
            }
            "LoadBalancer" => {
                used.insert("services.loadbalancers".into(), Quantity::from_count(1));
                if allocates {
                    used.insert("services.nodeports".into(), Quantity::from_count(ports));
                }
            }
            _ => {}
        }
    }
    if group.is_empty() && resource == "persistentvolumeclaims" {
        let requests = parse_list(obj.pointer("/spec/resources/requests"));
        if let Some(storage) = requests.get("storage") {
            used.insert("requests.storage".into(), *storage);
        }
    }
    used.retain(|_, q| !q.is_zero());
    used
}

/// A pod's compute usage: the larger of its containers' sum and its largest init container,
/// restartable (sidecar) init containers counted with the containers, plus overhead.
fn pod_compute_usage(pod: &Value) -> ResourceList {
    let spec = pod.get("spec");
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let inits = spec
        .and_then(|s| s.get("initContainers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut usage = ResourceList::new();
    usage.insert("pods".into(), Quantity::from_count(1));
    for which in ["requests", "limits"] {
        let mut sum = ResourceList::new();
        for c in &containers {
            add_all(&mut sum, &container_list(c, which));
        }
        let mut sidecars = ResourceList::new();
        let mut init_max = ResourceList::new();
        for c in &inits {
            let list = container_list(c, which);
            if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
                add_all(&mut sidecars, &list);
                add_all(&mut sum, &list);
            } else {
                // An ordinary init container runs beside the sidecars started before it;
                // counting it beside all of them is an upper bound.
                let mut with_sidecars = sidecars.clone();
                add_all(&mut with_sidecars, &list);
                for (k, v) in with_sidecars {
                    let e = init_max.entry(k).or_insert(Quantity::ZERO);
                    *e = (*e).max(v);
                }
            }
        }
        for (k, v) in init_max {
            let e = sum.entry(k).or_insert(Quantity::ZERO);
            *e = (*e).max(v);
        }
        add_all(&mut sum, &parse_list(spec.and_then(|s| s.get("overhead"))));
        for (name, q) in sum {
            match (which, name.as_str()) {
                ("requests", "cpu" | "memory" | "ephemeral-storage") => {
                    usage.insert(name.clone(), q);
                    usage.insert(format!("requests.{name}"), q);
                }
                ("limits", "cpu" | "memory" | "ephemeral-storage") => {
                    usage.insert(format!("limits.{name}"), q);
                }
                ("requests", n) if n.starts_with("hugepages-") => {
                    usage.insert(name.clone(), q);
                    usage.insert(format!("requests.{name}"), q);
                }
                ("requests", n) if n.contains('/') && !n.starts_with("kubernetes.io/") => {
                    // Extended resources are quota'd as requests.<name> only.
                    usage.insert(format!("requests.{name}"), q);
                }
                _ => {}
            }
        }
    }
    usage
}

/// A container's requests (`which = "requests"`) or limits; requests default to limits,
/// as the API server defaults them.
fn container_list(container: &Value, which: &str) -> ResourceList {
    let resources = container.get("resources");
    let limits = parse_list(resources.and_then(|r| r.get("limits")));
    if which == "limits" {
        return limits;
    }
    let mut requests = parse_list(resources.and_then(|r| r.get("requests")));
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
    requests
}

fn add_all(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_insert(Quantity::ZERO);
        *e = *e + *v;
    }
}

/// Upstream's pod constraint: when a quota limits cpu or memory, every container must state
/// them. `Err` carries `must specify …`.
pub fn pod_constraints(pod: &Value, required: &[String]) -> Result<(), String> {
    let required: Vec<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| MUST_SPECIFY.contains(r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let spec = pod.get("spec");
    for list in ["containers", "initContainers"] {
        for c in spec
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let requests = container_list(c, "requests");
            let limits = container_list(c, "limits");
            for r in &required {
                let present = match *r {
                    "cpu" | "requests.cpu" => requests.contains_key("cpu"),
                    "memory" | "requests.memory" => requests.contains_key("memory"),
                    "limits.cpu" => limits.contains_key("cpu"),
                    _ => limits.contains_key("memory"),
                };
                if !present {
                    let name = c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let names = missing.entry(r).or_default();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// The scope selectors of a quota: `spec.scopes` (each as `Exists`) and
/// `spec.scopeSelector.matchExpressions`.
fn scope_requirements(quota: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for s in quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.push((s.to_owned(), "Exists".to_owned(), Vec::new()));
    }
    for e in quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        out.push((name.to_owned(), op.to_owned(), values));
    }
    out
}

/// Whether `quota` applies to `obj`: it limits something the object charges, and every
/// scope matches (scopes select pods only; other kinds never match a scoped quota).
pub fn quota_matches(quota: &Value, group: &str, resource: &str, obj: &Value) -> bool {
    // As upstream, a quota applies once the controller has published `status.hard`.
    let hard = parse_list(quota.pointer("/status/hard"));
    if matching_resources(group, resource, hard.keys()).is_empty() {
        return false;
    }
    matches_scopes(quota, group, resource, obj)
}

/// Whether `quota` has scopes (which select pods only).
pub fn has_scopes(quota: &Value) -> bool {
    !scope_requirements(quota).is_empty()
}

/// Whether every scope of `quota` selects `obj` (scopes select pods only; other kinds never
/// match a scoped quota).
pub fn matches_scopes(quota: &Value, group: &str, resource: &str, obj: &Value) -> bool {
    let scopes = scope_requirements(quota);
    if scopes.is_empty() {
        return true;
    }
    if !is_pods(group, resource) {
        return false;
    }
    scopes
        .iter()
        .all(|(name, op, values)| pod_matches_scope(obj, name, op, values))
}

fn pod_matches_scope(pod: &Value, scope: &str, op: &str, values: &[String]) -> bool {
    let matched = match scope {
        "Terminating" => is_terminating(pod),
        "NotTerminating" => !is_terminating(pod),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            return match op {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "In" => !class.is_empty() && values.iter().any(|v| v == class),
                "NotIn" => class.is_empty() || !values.iter().any(|v| v == class),
                _ => false,
            };
        }
        _ => false,
    };
    match op {
        "DoesNotExist" => !matched,
        _ => matched,
    }
}

fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|d| d >= 0)
}

/// BestEffort QoS: no container sets any cpu or memory request or limit.
fn is_best_effort(pod: &Value) -> bool {
    let spec = pod.get("spec");
    !["containers", "initContainers"].iter().any(|list| {
        spec.and_then(|s| s.get(*list))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                ["requests", "limits"].iter().any(|w| {
                    let l = parse_list(c.pointer(&format!("/resources/{w}")));
                    l.iter()
                        .any(|(k, v)| (k == "cpu" || k == "memory") && !v.is_zero())
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(list: &ResourceList) -> String {
        pretty(list)
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::UNIX_EPOCH
    }

    #[test]
    fn pod_usage() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "1Gi"}}},
        ], "initContainers": [
            {"name": "i", "resources": {"requests": {"cpu": "2"}}},
        ]}});
        assert_eq!(
            names(&usage("", "pods", &pod, now())),
            "count/pods=1,cpu=2,limits.cpu=1200m,limits.memory=1Gi,memory=2Gi,pods=1,requests.cpu=2,requests.memory=2Gi"
        );
        let done =
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded"}});
        assert_eq!(names(&usage("", "pods", &done, now())), "count/pods=1");
    }

    #[test]
    fn other_kinds() {
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        assert_eq!(
            names(&usage("", "services", &svc, now())),
            "count/services=1,services=1,services.loadbalancers=1,services.nodeports=2"
        );
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        assert_eq!(
            names(&usage("", "persistentvolumeclaims", &pvc, now())),
            "count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=5Gi"
        );
        assert_eq!(
            names(&usage("apps", "deployments", &json!({}), now())),
            "count/deployments.apps=1"
        );
        let hard: Vec<String> = ["pods", "count/deployments.apps", "configmaps", "cpu"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            matching_resources("apps", "deployments", &hard),
            vec!["count/deployments.apps"]
        );
        assert_eq!(matching_resources("", "pods", &hard), vec!["pods", "cpu"]);
        assert_eq!(
            matching_resources("", "configmaps", &hard),
            vec!["configmaps"]
        );
    }

    #[test]
    fn constraints_name_the_containers() {
        let pod = json!({"spec": {"containers": [
            {"name": "b", "resources": {}},
            {"name": "a", "resources": {"requests": {"cpu": "1"}}},
        ]}});
        let required = ["requests.cpu", "limits.memory", "pods"].map(str::to_owned);
        assert_eq!(
            pod_constraints(&pod, &required),
            Err("must specify limits.memory for: a,b; requests.cpu for: b".to_owned())
        );
        assert_eq!(pod_constraints(&pod, &["pods".to_owned()]), Ok(()));
    }

    #[test]
    fn scopes_select_pods() {
        let quota = |scopes: Value| json!({"spec": {"hard": {"pods": "1"}, "scopes": scopes}, "status": {"hard": {"pods": "1"}}});
        let best_effort = json!({"spec": {"containers": [{"name": "a"}]}});
        let burstable = json!({"spec": {"activeDeadlineSeconds": 10, "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        assert!(quota_matches(
            &quota(json!(["BestEffort"])),
            "",
            "pods",
            &best_effort
        ));
        assert!(!quota_matches(
            &quota(json!(["BestEffort"])),
            "",
            "pods",
            &burstable
        ));
        assert!(quota_matches(
            &quota(json!(["NotBestEffort", "Terminating"])),
            "",
            "pods",
            &burstable
        ));
        assert!(!quota_matches(
            &quota(json!(["NotTerminating"])),
            "",
            "pods",
            &burstable
        ));
        assert!(quota_matches(&quota(json!([])), "", "pods", &burstable));
        // A quota that limits nothing the object charges does not apply.
        assert!(!quota_matches(
            &quota(json!([])),
            "",
            "configmaps",
            &json!({})
        ));
    }

    #[test]
    fn deleted_pods_stop_charging_at_their_deadline() {
        let pod = json!({"metadata": {"deletionTimestamp": "1970-01-01T00:00:30Z"}});
        assert!(pod_is_charged(&pod, now()));
        assert!(!pod_is_charged(
            &pod,
            now() + jiff::SignedDuration::from_secs(31)
        ));
    }
}
