//! Writing the default policy at every start, as upstream's RBAC post-start hook reconciles
//! it: missing roles and bindings are created; existing ones are brought up to date (missing
//! rules, labels, annotations, aggregation selectors and subjects added; nothing removed)
//! unless an administrator protected them with `rbac.authorization.kubernetes.io/autoupdate:
//! "false"`; a binding whose role reference changed is recreated.

use apimachinery::status::ApiError;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};

use super::policy::{self, AUTOUPDATE};
use super::{parse_rules, rules};
use crate::authn::Identity;
use crate::server::ApiServer;

/// Attempts per object when another writer races the update.
const ATTEMPTS: usize = 5;

/// Reconciles the default ClusterRoles and ClusterRoleBindings of the cluster served at
/// URL prefix `prefix`, through the request pipeline as the server's loopback identity.
pub async fn reconcile(server: &ApiServer, prefix: &str) -> Result<(), ApiError> {
    let base = format!("{prefix}/apis/rbac.authorization.k8s.io/v1");
    for role in policy::cluster_roles() {
        reconcile_one(
            server,
            &format!("{base}/clusterroles"),
            role,
            reconcile_role,
        )
        .await?;
    }
    for binding in policy::cluster_role_bindings() {
        reconcile_one(
            server,
            &format!("{base}/clusterrolebindings"),
            binding,
            reconcile_binding,
        )
        .await?;
    }
    Ok(())
}

/// What to do with an existing object.
enum Plan {
    Keep,
    Update(Value),
    Recreate,
}

async fn reconcile_one(
    server: &ApiServer,
    collection: &str,
    expected: Value,
    plan: fn(&Value, &Value) -> Plan,
) -> Result<(), ApiError> {
    let name = expected["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let item = format!("{collection}/{name}");
    for _ in 0..ATTEMPTS {
        let (code, existing) = call(server, Method::GET, &item, None).await?;
        let (code, body) = match code {
            404 => call(server, Method::POST, collection, Some(&expected)).await?,
            200 => match plan(&expected, &existing) {
                Plan::Keep => return Ok(()),
                Plan::Update(updated) => call(server, Method::PUT, &item, Some(&updated)).await?,
                Plan::Recreate => {
                    let (code, body) = call(server, Method::DELETE, &item, None).await?;
                    if code >= 300 && code != 404 {
                        (code, body)
                    } else {
                        continue;
                    }
                }
            },
            _ => (code, existing),
        };
        match code {
            200 | 201 => return Ok(()),
            // Raced with another writer: look again.
            409 => continue,
            _ => {
                return Err(ApiError::internal(format!(
                    "reconciling {item}: {code} {}",
                    body.get("message").and_then(Value::as_str).unwrap_or("")
                )));
            }
        }
    }
    Err(ApiError::internal(format!(
        "reconciling {item}: too many concurrent writes"
    )))
}

fn protected(existing: &Value) -> bool {
    existing
        .pointer(&format!(
            "/metadata/annotations/{}",
            AUTOUPDATE.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some("false")
}

/// Adds the expected labels and annotations an object lacks; true if any was added.
fn merge_metadata(expected: &Value, updated: &mut Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let Some(wanted) = expected["metadata"][field].as_object() else {
            continue;
        };
        let meta = &mut updated["metadata"];
        if !meta[field].is_object() {
            meta[field] = Value::Object(Map::new());
        }
        for (k, v) in wanted {
            if meta[field].get(k).is_none() {
                meta[field][k] = v.clone();
                changed = true;
            }
        }
    }
    changed
}

fn reconcile_role(expected: &Value, existing: &Value) -> Plan {
    if protected(existing) {
        return Plan::Keep;
    }
    let mut updated = existing.clone();
    let mut changed = merge_metadata(expected, &mut updated);
    let held = parse_rules(existing.get("rules"));
    let mut all = held.clone();
    for rule in parse_rules(expected.get("rules")) {
        if !rules::uncovered(&held, std::slice::from_ref(&rule)).is_empty() {
            all.push(rule);
            changed = true;
        }
    }
    if changed {
        updated["rules"] = json!(all);
    }
    if let Some(wanted) = expected
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    {
        let mut selectors = existing
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for selector in wanted {
            if !selectors.contains(selector) {
                selectors.push(selector.clone());
                changed = true;
            }
        }
        updated["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
    }
    if changed {
        Plan::Update(updated)
    } else {
        Plan::Keep
    }
}

fn reconcile_binding(expected: &Value, existing: &Value) -> Plan {
    if protected(existing) {
        return Plan::Keep;
    }
    if existing.get("roleRef") != expected.get("roleRef") {
        return Plan::Recreate;
    }
    let mut updated = existing.clone();
    let mut changed = merge_metadata(expected, &mut updated);
    let mut subjects = existing
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let same = |a: &Value, b: &Value| {
        ["kind", "name", "namespace"].iter().all(|k| {
            a.get(*k).and_then(Value::as_str).unwrap_or("")
                == b.get(*k).and_then(Value::as_str).unwrap_or("")
        })
    };
    for subject in expected["subjects"].as_array().into_iter().flatten() {
        if !subjects.iter().any(|s| same(s, subject)) {
            subjects.push(subject.clone());
            changed = true;
        }
    }
    updated["subjects"] = json!(subjects);
    if changed {
        Plan::Update(updated)
    } else {
        Plan::Keep
    }
}

/// One request through the pipeline as the loopback identity: the code and JSON body.
async fn call(
    server: &ApiServer,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), ApiError> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = server.handle(req, Some(Identity::loopback())).await;
    let code = resp.status().as_u16();
    let body = BodyExt::collect(resp.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((code, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}
