//! A container's environment, as kubelet builds it: service links, then `envFrom`, then
//! `env` in order, each value expanded with `$(VAR)` against what came before; values
//! from ConfigMaps, Secrets, the pod's own fields (downward API) and its resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Service,
};
use kube::Api;

use super::{Error, PodContext, Result};

/// Resolves every variable of `container`, in kubelet's order.
pub async fn container_env(
    ctx: &PodContext<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>> {
    let pod = ctx.pod;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut set =
        |vars: &mut Vec<(String, String)>, name: String, value: String| match index.get(&name) {
            Some(&i) => vars[i].1 = value,
            None => {
                index.insert(name.clone(), vars.len());
                vars.push((name, value));
            }
        };
    let service_links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    for (name, value) in service_env(ctx, namespace, service_links).await? {
        set(&mut vars, name, value);
    }
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match get_config_map(ctx, namespace, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(Error::config(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &source.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match get_secret(ctx, namespace, &r.name).await? {
                Some(secret) => {
                    for (k, v) in secret.data.unwrap_or_default() {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if optional => {}
                None => return Err(Error::config(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(source) = &var.value_from {
            if let Some(field) = &source.field_ref {
                field_value(ctx, field)?
            } else if let Some(resource) = &source.resource_field_ref {
                resource_value(ctx, Some(&container.name), resource)?
            } else if let Some(key) = &source.config_map_key_ref {
                let optional = key.optional.unwrap_or(false);
                match get_config_map(ctx, namespace, &key.name).await? {
                    Some(cm) => match cm.data.unwrap_or_default().remove(&key.key) {
                        Some(v) => v,
                        None if optional => continue,
                        None => {
                            return Err(Error::config(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                key.key, key.name
                            )));
                        }
                    },
                    None if optional => continue,
                    None => {
                        return Err(Error::config(format!(
                            "configmap \"{}\" not found",
                            key.name
                        )));
                    }
                }
            } else if let Some(key) = &source.secret_key_ref {
                let optional = key.optional.unwrap_or(false);
                match get_secret(ctx, namespace, &key.name).await? {
                    Some(secret) => match secret.data.unwrap_or_default().remove(&key.key) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(Error::config(format!(
                                "couldn't find key {} in Secret {namespace}/{}",
                                key.key, key.name
                            )));
                        }
                    },
                    None if optional => continue,
                    None => {
                        return Err(Error::config(format!("secret \"{}\" not found", key.name)));
                    }
                }
            } else {
                String::new()
            }
        } else {
            let defined: BTreeMap<&str, &str> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            expand(var.value.as_deref().unwrap_or(""), &defined)
        };
        set(&mut vars, var.name.clone(), value);
    }
    Ok(vars)
}

/// Expands `$(VAR)` references with kubelet's rules: `$$` is a literal `$`, and a
/// reference to an undefined variable stays as written.
pub fn expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API field of the pod.
pub fn field_value(ctx: &PodContext<'_>, field: &ObjectFieldSelector) -> Result<String> {
    let pod: &Pod = ctx.pod;
    let meta = &pod.metadata;
    let path = field.field_path.as_str();
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|s| s.strip_suffix("']"))
            .map(str::to_owned)
    };
    let format_map = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(&meta.labels),
        "metadata.annotations" => format_map(&meta.annotations),
        "spec.nodeName" => ctx.node_name.to_owned(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_owned(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_owned(),
        _ => {
            if let Some(key) = map_key("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = map_key("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|l| l.get(&key).cloned())
                    .unwrap_or_default()
            } else {
                return Err(Error::config(format!(
                    "unsupported fieldRef fieldPath {path:?}"
                )));
            }
        }
    })
}

/// The value of a container resource (`limits.memory`, `requests.cpu`), divided by the
/// divisor and rounded up, as kubelet reports it; limits default to the node's
/// allocatable when the container sets none.
pub fn resource_value(
    ctx: &PodContext<'_>,
    default_container: Option<&str>,
    selector: &ResourceFieldSelector,
) -> Result<String> {
    let container_name = selector
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(default_container)
        .unwrap_or_default();
    let spec = ctx.pod.spec.as_ref();
    let container = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == container_name)
        .ok_or_else(|| Error::config(format!("container {container_name:?} not found")))?;
    let resources = container.resources.clone().unwrap_or_default();
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| Error::config(format!("unsupported resource {:?}", selector.resource)))?;
    let table = match kind {
        "limits" => resources.limits.unwrap_or_default(),
        "requests" => resources.requests.unwrap_or_default(),
        _ => {
            return Err(Error::config(format!(
                "unsupported resource {:?}",
                selector.resource
            )));
        }
    };
    let nanos: i128 = match table.get(resource) {
        Some(q) => parse_quantity(&q.0)?,
        None if kind == "limits" => match resource {
            "cpu" => i128::from(ctx.node_cpu_millis) * 1_000_000,
            "memory" => i128::from(ctx.node_memory_bytes) * 1_000_000_000,
            "ephemeral-storage" => i128::from(ctx.node_storage_bytes) * 1_000_000_000,
            _ => 0,
        },
        None => 0,
    };
    let divisor = match selector.divisor.as_ref() {
        Some(d) => parse_quantity(&d.0)?,
        None => 1_000_000_000,
    };
    if divisor <= 0 {
        return Err(Error::config("resourceFieldRef divisor must be positive"));
    }
    let value = (nanos + divisor - 1).div_euclid(divisor);
    // Requests of cpu round up to at least one unit, as kubelet does.
    let value = if resource == "cpu" && nanos > 0 {
        value.max(1)
    } else {
        value
    };
    Ok(value.to_string())
}

fn parse_quantity(s: &str) -> Result<i128> {
    apimachinery::quantity::parse(s)
        .map(|q| q.nanos())
        .map_err(|e| Error::config(format!("quantity {s:?}: {e}")))
}

async fn get_config_map(
    ctx: &PodContext<'_>,
    namespace: &str,
    name: &str,
) -> Result<Option<ConfigMap>> {
    Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::Api)
}

async fn get_secret(ctx: &PodContext<'_>, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::Api)
}

/// The Docker-link style variables of the services in the pod's namespace (when service
/// links are on) and of the `kubernetes` service in `default` (always).
async fn service_env(
    ctx: &PodContext<'_>,
    namespace: &str,
    service_links: bool,
) -> Result<Vec<(String, String)>> {
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    if service_links {
        let list = Api::<Service>::namespaced(ctx.client.clone(), namespace)
            .list(&Default::default())
            .await
            .map_err(Error::Api)?;
        for s in list.items {
            services.insert(s.metadata.name.clone().unwrap_or_default(), s);
        }
    }
    if (namespace != "default" || !service_links)
        && let Some(s) = Api::<Service>::namespaced(ctx.client.clone(), "default")
            .get_opt("kubernetes")
            .await
            .map_err(Error::Api)?
    {
        services.insert("kubernetes".into(), s);
    }
    let mut vars = Vec::new();
    for (name, service) in services {
        let Some(spec) = service.spec else { continue };
        let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") else {
            continue;
        };
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.ports.unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        vars.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        vars.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for port in &ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                vars.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        port_name.to_uppercase().replace('-', "_")
                    ),
                    port.port.to_string(),
                ));
            }
        }
        let protocol = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        vars.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", protocol(first).to_lowercase(), first.port),
        ));
        for port in &ports {
            let proto = protocol(port);
            let base = format!("{prefix}_PORT_{}_{}", port.port, proto.to_uppercase());
            vars.push((
                base.clone(),
                format!("{}://{ip}:{}", proto.to_lowercase(), port.port),
            ));
            vars.push((format!("{base}_PROTO"), proto.to_lowercase()));
            vars.push((format!("{base}_PORT"), port.port.to_string()));
            vars.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubelet() {
        let vars: BTreeMap<&str, &str> = [("A", "1"), ("B", "two")].into_iter().collect();
        let check = |input: &str, expected: &str| assert_eq!(expand(input, &vars), expected);
        check("$(A)", "1");
        check("x$(A)y$(B)z", "x1ytwoz");
        check("$(C)", "$(C)");
        check("$$(A)", "$(A)");
        check("$$", "$");
        check("a$b", "a$b");
        check("$(A", "$(A");
        check("", "");
    }
}
