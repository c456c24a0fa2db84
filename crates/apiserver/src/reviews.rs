//! Virtual, create-only resources that answer questions instead of storing objects:
//! access reviews and rules reviews (answered by the cluster's RBAC policy), self subject
//! reviews and token reviews.

use std::sync::Arc;

use apimachinery::kinds::KindInfo;
use apimachinery::status::{ApiError, StatusCause};
use serde_json::{Value, json};

use crate::authn::Identity;
use crate::authz::{self, Attributes};
use crate::control_plane::ControlPlane;

/// True for kinds served by [`answer`].
pub fn is_review(kind: &KindInfo) -> bool {
    matches!(
        (kind.group.as_str(), kind.kind.as_str()),
        (
            "authorization.k8s.io",
            "SelfSubjectAccessReview"
                | "SelfSubjectRulesReview"
                | "SubjectAccessReview"
                | "LocalSubjectAccessReview"
        ) | ("authentication.k8s.io", "SelfSubjectReview" | "TokenReview")
    )
}

fn text(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// The review's request attributes.
fn attributes(spec: &Value) -> Attributes {
    if let Some(ra) = spec.get("resourceAttributes").filter(|v| !v.is_null()) {
        Attributes {
            verb: text(ra, "verb"),
            group: text(ra, "group"),
            resource: text(ra, "resource"),
            subresource: text(ra, "subresource"),
            namespace: text(ra, "namespace"),
            name: text(ra, "name"),
            path: String::new(),
        }
    } else if let Some(nra) = spec.get("nonResourceAttributes").filter(|v| !v.is_null()) {
        Attributes {
            verb: text(nra, "verb"),
            path: text(nra, "path"),
            ..Default::default()
        }
    } else {
        Attributes::default()
    }
}

/// Answers a review posted by `identity` to cluster `cp` (in `namespace` for namespaced
/// reviews); the reply is the review with its status filled.
pub async fn answer(
    cp: &Arc<ControlPlane>,
    kind: &KindInfo,
    identity: &Identity,
    namespace: Option<&str>,
    mut review: Value,
) -> Result<Value, ApiError> {
    if !review.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    review["apiVersion"] = json!(kind.api_version());
    review["kind"] = json!(kind.kind);
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({"creationTimestamp": null});
    }
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let invalid = |field: &str, message: String| {
        ApiError::invalid(
            &kind.group,
            &kind.kind,
            "",
            vec![StatusCause::new("FieldValueInvalid", field, message)],
        )
    };
    let status = match kind.kind.as_str() {
        "SelfSubjectAccessReview" | "LocalSubjectAccessReview" | "SubjectAccessReview" => {
            let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
            match (has("resourceAttributes"), has("nonResourceAttributes")) {
                (false, false) => {
                    return Err(ApiError::invalid(
                        &kind.group,
                        &kind.kind,
                        "",
                        vec![StatusCause::new(
                            "FieldValueRequired",
                            "spec.resourceAttributes",
                            "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                        )],
                    ));
                }
                (true, true) => {
                    return Err(invalid(
                        "spec.nonResourceAttributes",
                        "Invalid value: cannot be specified in combination with resourceAttributes"
                            .into(),
                    ));
                }
                _ => {}
            }
            let mut attrs = attributes(&spec);
            let subject = if kind.kind == "SelfSubjectAccessReview" {
                identity.clone()
            } else {
                let user = text(&spec, "user");
                let groups: Vec<String> = spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|g| {
                        g.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if user.is_empty() && groups.is_empty() {
                    return Err(invalid(
                        "spec.user",
                        "Invalid value: \"\": at least one of user or group must be specified"
                            .into(),
                    ));
                }
                let extra = spec
                    .get("extra")
                    .and_then(|e| serde_json::from_value(e.clone()).ok())
                    .unwrap_or_default();
                Identity {
                    user,
                    uid: text(&spec, "uid"),
                    groups,
                    extra,
                }
            };
            if kind.kind == "LocalSubjectAccessReview" {
                let ns = namespace.unwrap_or("");
                let declared = review
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(ns)
                    .to_owned();
                if declared != ns {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object does not match the namespace sent on the request: {declared} != {ns}"
                    )));
                }
                review["metadata"]["namespace"] = json!(ns);
                if !attrs.is_resource_request() {
                    return Err(invalid(
                        "spec.nonResourceAttributes",
                        "Invalid value: disallowed on this kind of request".into(),
                    ));
                }
                if attrs.namespace != ns {
                    return Err(invalid(
                        "spec.resourceAttributes.namespace",
                        format!(
                            "Invalid value: {:?}: must match metadata.namespace",
                            attrs.namespace
                        ),
                    ));
                }
                attrs.namespace = ns.to_owned();
            }
            let decision = authz::authorize(cp, &subject, &attrs).await;
            let mut status = json!({"allowed": decision.allowed});
            if !decision.reason.is_empty() {
                status["reason"] = json!(decision.reason);
            }
            status
        }
        "SelfSubjectRulesReview" => {
            let ns = text(&spec, "namespace");
            if ns.is_empty() {
                return Err(ApiError::bad_request("no namespace on request"));
            }
            rules_review(cp, identity, &ns).await
        }
        "SelfSubjectReview" => json!({"userInfo": user_info(identity)}),
        "TokenReview" => token_review(cp, &review).await?,
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "{other} is not a review kind"
            )));
        }
    };
    review["status"] = status;
    Ok(review)
}

/// A user as the authentication API describes it.
fn user_info(identity: &Identity) -> Value {
    let mut info = json!({"username": identity.user, "groups": identity.groups});
    if !identity.uid.is_empty() {
        info["uid"] = json!(identity.uid);
    }
    if !identity.extra.is_empty() {
        info["extra"] = json!(identity.extra);
    }
    info
}

/// The status of a TokenReview: whether the token authenticates to this cluster, as whom,
/// and for which of the requested audiences (the API server's own when none are asked).
async fn token_review(cp: &Arc<ControlPlane>, review: &Value) -> Result<Value, ApiError> {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenReview",
            "",
            vec![StatusCause::new(
                "FieldValueRequired",
                "spec.token",
                "Required value: token must be specified",
            )],
        ));
    }
    let issuer = cp.tokens().issuer();
    let requested: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let identity = crate::authn::authenticate(cp, &headers, None).await;
    let audiences = vec![issuer];
    let matching: Vec<String> = if requested.is_empty() {
        audiences.clone()
    } else {
        requested
            .into_iter()
            .filter(|a| audiences.contains(a))
            .collect()
    };
    Ok(match identity {
        Ok(identity) if !matching.is_empty() => json!({
            "authenticated": true,
            "user": user_info(&identity),
            "audiences": matching,
        }),
        Ok(_) => {
            json!({"authenticated": false, "user": {}, "error": "token audiences do not match the requested audiences"})
        }
        Err(_) => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    })
}

/// The status of a SelfSubjectRulesReview: every rule that applies to `identity` in
/// `namespace`, split into resource and non-resource rules.
async fn rules_review(cp: &Arc<ControlPlane>, identity: &Identity, namespace: &str) -> Value {
    let rbac = cp.rbac();
    rbac.start(Arc::downgrade(cp));
    let (rules, errors) =
        if !rbac.enforcing() && identity.groups.iter().any(|g| g == authz::MASTERS) {
            let everything = vec![
                crate::rbac::PolicyRule::resource(&["*"], &["*"], &["*"]),
                crate::rbac::PolicyRule::urls(&["*"], &["*"]),
            ];
            (everything, Vec::new())
        } else {
            rbac.snapshot().await.rules_for(identity, namespace)
        };
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        if rule.non_resource_urls.is_empty() {
            let mut out = json!({
                "verbs": rule.verbs,
                "apiGroups": rule.api_groups,
                "resources": rule.resources,
            });
            if !rule.resource_names.is_empty() {
                out["resourceNames"] = json!(rule.resource_names);
            }
            resource_rules.push(out);
        } else {
            non_resource_rules.push(json!({
                "verbs": rule.verbs,
                "nonResourceURLs": rule.non_resource_urls,
            }));
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    status
}
