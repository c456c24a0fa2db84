//! Discovery documents: legacy (`APIVersions`, `APIGroupList`, `APIGroup`,
//! `APIResourceList`) and aggregated (`apidiscovery.k8s.io/v2`).

use apimachinery::kinds::KindInfo;
use serde_json::{Value, json};

use crate::control_plane::Registry;

/// The Content-Type of aggregated discovery answers; clients parse by it.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-kumo",
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `/api` in legacy form.
pub fn legacy_api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis` in legacy form.
pub fn legacy_group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| group_entry(&g, &versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn legacy_group(registry: &Registry, group: &str) -> Option<Value> {
    let (g, versions) = registry
        .groups()
        .into_iter()
        .find(|(g, _)| g == group && !g.is_empty())?;
    let mut entry = group_entry(&g, &versions);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

/// `/api/v1` or `/apis/<group>/<version>`: an `APIResourceList`.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let kinds = registry.group_version(group, version);
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in &kinds {
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": k.verbs,
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for sub in &k.subresources {
            let mut s = json!({
                "name": format!("{}/{}", k.plural, sub.name),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": sub.response_kind.kind,
                "verbs": sub.verbs,
            });
            if sub.response_kind.group != k.group || sub.response_kind.version != k.version {
                s["group"] = json!(sub.response_kind.group);
                s["version"] = json!(sub.response_kind.version);
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn aggregated_resource(k: &KindInfo) -> Value {
    let mut r = json!({
        "resource": k.plural,
        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": k.singular,
        "verbs": k.verbs,
    });
    if !k.short_names.is_empty() {
        r["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        r["categories"] = json!(k.categories);
    }
    if !k.subresources.is_empty() {
        let subs: Vec<Value> = k
            .subresources
            .iter()
            .map(|s| {
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": s.response_kind.group, "version": s.response_kind.version, "kind": s.response_kind.kind},
                    "verbs": s.verbs,
                })
            })
            .collect();
        r["subresources"] = json!(subs);
    }
    r
}

/// Aggregated discovery for `/api` (`core = true`: only the core group) or `/apis`.
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let items: Vec<Value> = registry
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry
                        .group_version(&g, v)
                        .iter()
                        .map(|k| aggregated_resource(k))
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_core_and_groups() {
        let registry = Registry::builtin();
        let core = aggregated(&registry, true);
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let apis = aggregated(&registry, false);
        let apps = apis["items"]
            .as_array()
            .and_then(|i| i.iter().find(|g| g["metadata"]["name"] == "apps"))
            .cloned();
        let apps = apps.expect("apps group");
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == "deployments"))
            .cloned()
            .expect("deployments");
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        let scale = deploy["subresources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["subresource"] == "scale"))
            .cloned();
        assert_eq!(
            scale.map(|s| s["responseKind"]["kind"].clone()),
            Some(json!("Scale"))
        );
        let autoscaling = apis["items"]
            .as_array()
            .and_then(|i| i.iter().find(|g| g["metadata"]["name"] == "autoscaling"))
            .cloned();
        assert_eq!(
            autoscaling.map(|a| a["versions"][0]["version"].clone()),
            Some(json!("v2"))
        );
    }

    #[test]
    fn legacy_lists() {
        let registry = Registry::builtin();
        let v1 = resource_list(&registry, "", "v1").expect("core v1");
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/log")
                && names.contains(&"namespaces/status")
        );
        assert!(resource_list(&registry, "nope", "v1").is_none());
        let groups = legacy_group_list(&registry);
        assert!(
            groups["groups"]
                .as_array()
                .is_some_and(|g| g.iter().all(|g| g["name"] != ""))
        );
    }
}
