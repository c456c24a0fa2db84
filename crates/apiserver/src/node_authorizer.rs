//! The Node authorizer and NodeRestriction admission, as upstream's: a node's credentials
//! (user `system:node:<name>` in group `system:nodes`) reach the secrets, config maps,
//! volumes and service-account tokens of the pods bound to that node and nothing of other
//! nodes' pods; the node may change only its own Node, its own Lease and the status of its
//! own pods.
//!
//! Upstream keeps a graph of pods and what they reference; kumo asks the pods watch cache
//! for the pods bound to the node when a node reads one of those objects, which is the
//! same answer without a second index.

use std::sync::Arc;

use apimachinery::status::ApiError;
use serde_json::Value;

use crate::authn::Identity;
use crate::authz::Attributes;
use crate::control_plane::ControlPlane;
use crate::rbac::rules::PolicyRule;

/// The group of node credentials.
pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";

/// The node a request comes from, if it is made with node credentials.
pub fn node_name(identity: &Identity) -> Option<&str> {
    let name = identity.user.strip_prefix(NODE_USER_PREFIX)?;
    (identity.groups.iter().any(|g| g == NODES_GROUP) && !name.is_empty()).then_some(name)
}

/// What the Node authorizer says: allow, or no opinion (RBAC decides).
pub async fn allows(cp: &Arc<ControlPlane>, node: &str, attrs: &Attributes) -> bool {
    if !attrs.is_resource_request() {
        return false;
    }
    let core = attrs.group.is_empty();
    match (core, attrs.resource.as_str(), attrs.subresource.as_str()) {
        (true, "secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes", "") => {
            // Only single objects, by name.
            attrs.verb == "get"
                && !attrs.name.is_empty()
                && references(cp, node, attrs).await.unwrap_or(false)
        }
        (true, "serviceaccounts", "token") => {
            attrs.verb == "create" && references(cp, node, attrs).await.unwrap_or(false)
        }
        _ => node_rules().iter().any(|rule| rule.allows(attrs)),
    }
}

/// Whether a pod bound to `node` uses the object `attrs` names.
async fn references(
    cp: &Arc<ControlPlane>,
    node: &str,
    attrs: &Attributes,
) -> Result<bool, ApiError> {
    let pods = pods_on(cp, node, &attrs.namespace).await?;
    let name = attrs.name.as_str();
    Ok(match attrs.resource.as_str() {
        "secrets" => pods.iter().any(|p| secrets_of(p).any(|s| s == name)),
        "configmaps" => pods.iter().any(|p| config_maps_of(p).any(|c| c == name)),
        "persistentvolumeclaims" => pods.iter().any(|p| claims_of(p).any(|c| c == name)),
        "serviceaccounts" => pods.iter().any(|p| {
            p.pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default")
                == name
        }),
        "persistentvolumes" => {
            // A volume bound to a claim that a pod on the node uses.
            let all = pods_on(cp, node, "").await?;
            for pod in &all {
                let ns = pod
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                for claim in claims_of(pod) {
                    let pvc = crate::authn::service_account::core_object(
                        cp,
                        "PersistentVolumeClaim",
                        ns,
                        claim,
                    )
                    .await?;
                    if let Some(pvc) = pvc
                        && pvc.pointer("/spec/volumeName").and_then(Value::as_str) == Some(name)
                    {
                        return Ok(true);
                    }
                }
            }
            false
        }
        _ => false,
    })
}

/// The pods bound to `node` (in `namespace`, or all namespaces when empty).
async fn pods_on(
    cp: &Arc<ControlPlane>,
    node: &str,
    namespace: &str,
) -> Result<Vec<Value>, ApiError> {
    let kind = cp
        .registry()
        .by_kind("", "Pod")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let ns = (!namespace.is_empty()).then_some(namespace);
    let prefix = cp.store.prefix(&kind, ns);
    let on_node = |p: &Value| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
    let cache = cp.cache(&kind);
    if let Some((pods, _, _)) = cache.list(&prefix, 0, 0, on_node).await {
        return Ok(pods.into_iter().map(Arc::unwrap_or_clone).collect());
    }
    let range = cp
        .store
        .backend()
        .range(store::RangeRequest {
            prefix,
            ..Default::default()
        })
        .await
        .map_err(crate::storage::store_error)?;
    Ok(range
        .kvs
        .iter()
        .filter_map(|kv| crate::storage::decode(kv).ok())
        .filter(on_node)
        .collect())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    [
        "/spec/initContainers",
        "/spec/containers",
        "/spec/ephemeralContainers",
    ]
    .into_iter()
    .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
    .flatten()
}

fn volumes(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn projected_sources(pod: &Value) -> impl Iterator<Item = &Value> {
    volumes(pod)
        .filter_map(|v| v.pointer("/projected/sources").and_then(Value::as_array))
        .flatten()
}

/// Every secret a pod uses: volumes, projections, env, envFrom and image pull secrets.
fn secrets_of(pod: &Value) -> impl Iterator<Item = &str> {
    let volumes = volumes(pod).filter_map(|v| str_at(v, "/secret/secretName"));
    let projected = projected_sources(pod).filter_map(|s| str_at(s, "/secret/name"));
    let env = containers(pod)
        .filter_map(|c| c.get("env").and_then(Value::as_array))
        .flatten()
        .filter_map(|e| str_at(e, "/valueFrom/secretKeyRef/name"));
    let env_from = containers(pod)
        .filter_map(|c| c.get("envFrom").and_then(Value::as_array))
        .flatten()
        .filter_map(|e| str_at(e, "/secretRef/name"));
    let pull = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| str_at(s, "/name"));
    volumes
        .chain(projected)
        .chain(env)
        .chain(env_from)
        .chain(pull)
}

/// Every config map a pod uses.
fn config_maps_of(pod: &Value) -> impl Iterator<Item = &str> {
    let volumes = volumes(pod).filter_map(|v| str_at(v, "/configMap/name"));
    let projected = projected_sources(pod).filter_map(|s| str_at(s, "/configMap/name"));
    let env = containers(pod)
        .filter_map(|c| c.get("env").and_then(Value::as_array))
        .flatten()
        .filter_map(|e| str_at(e, "/valueFrom/configMapKeyRef/name"));
    let env_from = containers(pod)
        .filter_map(|c| c.get("envFrom").and_then(Value::as_array))
        .flatten()
        .filter_map(|e| str_at(e, "/configMapRef/name"));
    volumes.chain(projected).chain(env).chain(env_from)
}

fn claims_of(pod: &Value) -> impl Iterator<Item = &str> {
    volumes(pod).filter_map(|v| str_at(v, "/persistentVolumeClaim/claimName"))
}

/// What any node may do besides the referenced objects (upstream's `NodeRules`, without the
/// broad secret and config map reads that the graph check above replaces).
fn node_rules() -> &'static [PolicyRule] {
    static RULES: std::sync::OnceLock<Vec<PolicyRule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        crate::rbac::policy::node_role_rules()
            .into_iter()
            .filter(|r| {
                !r.resources.iter().any(|res| {
                    matches!(
                        res.as_str(),
                        "secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes"
                    )
                })
            })
            .collect()
    })
}

/// NodeRestriction admission: a node writes only its own Node and Lease, and only pods
/// bound to it. `Ok` for requests that are not a node's.
pub fn admit(
    identity: &Identity,
    attrs: &Attributes,
    object: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = node_name(identity) else {
        return Ok(());
    };
    if !attrs.is_resource_request() || matches!(attrs.verb.as_str(), "get" | "list" | "watch") {
        return Ok(());
    }
    let deny = |what: String| {
        Err(ApiError::forbidden(format!(
            "node \"{node}\" is not allowed to {what}"
        )))
    };
    match (
        attrs.group.as_str(),
        attrs.resource.as_str(),
        attrs.subresource.as_str(),
    ) {
        ("", "nodes", _) => {
            let name = if attrs.name.is_empty() {
                object
                    .and_then(|o| str_at(o, "/metadata/name"))
                    .unwrap_or("")
            } else {
                &attrs.name
            };
            if name != node {
                return deny(format!("modify node \"{name}\""));
            }
        }
        ("coordination.k8s.io", "leases", _) => {
            let name = if attrs.name.is_empty() {
                object
                    .and_then(|o| str_at(o, "/metadata/name"))
                    .unwrap_or("")
            } else {
                &attrs.name
            };
            if attrs.namespace != "kube-node-lease" || name != node {
                return deny(format!("modify lease \"{}/{name}\"", attrs.namespace));
            }
        }
        ("", "pods", "status" | "eviction" | "") => {
            // The pod's node must be this one; `object` is the stored pod (updates,
            // deletes) or the new one (creates of mirror pods).
            let bound = object
                .and_then(|o| str_at(o, "/spec/nodeName"))
                .unwrap_or("");
            if bound != node {
                return deny(format!(
                    "{} pod \"{}/{}\" bound to node \"{bound}\"",
                    attrs.verb, attrs.namespace, attrs.name
                ));
            }
            if attrs.verb == "create"
                && attrs.subresource.is_empty()
                && object
                    .and_then(|o| o.pointer("/metadata/annotations/kubernetes.io~1config.mirror"))
                    .is_none()
            {
                return deny("create pods other than mirror pods".into());
            }
        }
        _ => {}
    }
    Ok(())
}
