//! Virtual, create-only resources that answer questions instead of storing objects:
//! access reviews, self subject reviews and token reviews.

use apimachinery::kinds::KindInfo;
use apimachinery::status::ApiError;
use serde_json::{Value, json};

use crate::authn::Identity;
use crate::authz::{self, Attributes};

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

/// The review's request attributes.
fn attributes(spec: &Value, namespace: Option<&str>) -> Attributes {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(ra) = spec.get("resourceAttributes") {
        Attributes {
            verb: s(ra, "verb"),
            group: s(ra, "group"),
            resource: s(ra, "resource"),
            subresource: s(ra, "subresource"),
            namespace: namespace
                .map(str::to_owned)
                .unwrap_or_else(|| s(ra, "namespace")),
            name: s(ra, "name"),
            path: String::new(),
        }
    } else if let Some(nra) = spec.get("nonResourceAttributes") {
        Attributes {
            verb: s(nra, "verb"),
            path: s(nra, "path"),
            ..Default::default()
        }
    } else {
        Attributes::default()
    }
}

/// Answers a review posted by `identity`; the reply is the review with its status filled.
pub fn answer(
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
    if review.get("metadata").is_none() {
        review["metadata"] = json!({"creationTimestamp": null});
    }
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match kind.kind.as_str() {
        "SelfSubjectAccessReview" | "LocalSubjectAccessReview" | "SubjectAccessReview" => {
            if spec.get("resourceAttributes").is_none()
                && spec.get("nonResourceAttributes").is_none()
            {
                return Err(ApiError::invalid(
                    &kind.group,
                    &kind.kind,
                    "",
                    vec![apimachinery::status::StatusCause::new(
                        "FieldValueRequired",
                        "spec.resourceAttributes",
                        "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            }
            let subject = if kind.kind == "SelfSubjectAccessReview" {
                identity.clone()
            } else {
                let user = spec
                    .get("user")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let groups = spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|g| {
                        g.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Identity { user, groups }
            };
            let decision = authz::authorize(&subject, &attributes(&spec, namespace));
            let mut status = json!({"allowed": decision.allowed, "reason": decision.reason});
            if !decision.allowed {
                status["denied"] = json!(false);
            }
            status
        }
        "SelfSubjectRulesReview" => {
            let masters = identity.groups.iter().any(|g| g == authz::MASTERS);
            if masters {
                json!({
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    "incomplete": false,
                })
            } else {
                json!({"resourceRules": [], "nonResourceRules": [], "incomplete": false})
            }
        }
        "SelfSubjectReview" => {
            json!({"userInfo": {"username": identity.user, "groups": identity.groups}})
        }
        "TokenReview" => json!({
            "authenticated": false,
            "user": {},
            "error": "token authentication is not enabled on this server yet",
        }),
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "{other} is not a review kind"
            )));
        }
    };
    review["status"] = status;
    Ok(review)
}
