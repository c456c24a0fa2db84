//! Authorization: every request is judged by the cluster's RBAC policy (see `rbac`), after
//! impersonation headers have been checked and applied, as upstream's filter chain does.
//!
//! `system:masters` is allowed through the default binding of cluster-admin to it, like any
//! other group; only while a cluster's default policy is being written (before bootstrap has
//! put that binding in place) are its members allowed without looking.

use std::future::Future;
use std::sync::Arc;

use apimachinery::status::ApiError;
use http::HeaderMap;

use crate::authn::Identity;
use crate::control_plane::ControlPlane;

/// What a request wants to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection, or a
    /// special verb (impersonate, bind, escalate, approve, ...).
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Namespace, if any.
    pub namespace: String,
    /// Object name, if any.
    pub name: String,
    /// Non-resource path (`/version`, `/healthz`), when not a resource request.
    pub path: String,
}

impl Attributes {
    /// True for requests about resources, false for non-resource paths.
    pub fn is_resource_request(&self) -> bool {
        self.path.is_empty()
    }
}

/// An authorization decision with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// True when allowed.
    pub allowed: bool,
    /// Why (upstream's RBAC gives a reason for allowing, and for denying only when some
    /// binding could not be resolved).
    pub reason: String,
}

/// The privileged group: its members may do anything.
pub const MASTERS: &str = "system:masters";

/// Decides whether `identity` may do `attrs` in cluster `cp`.
pub async fn authorize(
    cp: &Arc<ControlPlane>,
    identity: &Identity,
    attrs: &Attributes,
) -> Decision {
    let rbac = cp.rbac();
    rbac.start(Arc::downgrade(cp));
    // As upstream's privileged-group authorizer, which runs before RBAC: members of
    // system:masters are never locked out, even by deleting the cluster-admin binding.
    if identity.groups.iter().any(|g| g == MASTERS) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    // The Node authorizer, before RBAC as upstream orders them.
    if let Some(node) = crate::node_authorizer::node_name(identity)
        && crate::node_authorizer::allows(cp, node, attrs).await
    {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let (allowed, reason) = rbac.snapshot().await.authorize(identity, attrs);
    if !allowed {
        tracing::debug!(
            cluster = %cp.id,
            user = %identity.user,
            verb = %attrs.verb,
            group = %attrs.group,
            resource = %attrs.resource,
            subresource = %attrs.subresource,
            namespace = %attrs.namespace,
            name = %attrs.name,
            path = %attrs.path,
            "RBAC: no rule allows the request"
        );
    }
    Decision { allowed, reason }
}

/// The 403 for a denied request: upstream's wording, then the authorizer's reason if any.
pub fn forbidden(identity: &Identity, attrs: &Attributes, decision: &Decision) -> ApiError {
    let message = forbidden_message(identity, attrs);
    if decision.reason.is_empty() {
        ApiError::forbidden(message)
    } else {
        ApiError::forbidden(format!("{message}: {}", decision.reason))
    }
}

/// Upstream's wording of a denial.
pub fn forbidden_message(identity: &Identity, attrs: &Attributes) -> String {
    if !attrs.is_resource_request() {
        return format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            identity.user, attrs.verb, attrs.path
        );
    }
    let resource = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", attrs.namespace)
    };
    let prefix = if attrs.name.is_empty() {
        format!("{} is forbidden: ", qualified(attrs))
    } else {
        format!("{} \"{}\" is forbidden: ", qualified(attrs), attrs.name)
    };
    format!(
        "{prefix}User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        identity.user, attrs.verb, attrs.group
    )
}

fn qualified(attrs: &Attributes) -> String {
    if attrs.group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.group)
    }
}

tokio::task_local! {
    /// The identity a request is served for, so that write rules deep in the generic verbs
    /// (RBAC escalation checks) can judge it without threading it through every call.
    static REQUESTER: Identity;
}

/// Runs `work` (the serving of one request) on behalf of `identity`.
pub async fn acting_as<F: Future>(identity: Identity, work: F) -> F::Output {
    REQUESTER.scope(identity, work).await
}

/// The identity of the request being served; `None` for the server's own work.
pub fn requester() -> Option<Identity> {
    REQUESTER.try_with(Identity::clone).ok()
}

/// The impersonation headers.
const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_UID: &str = "impersonate-uid";
const IMPERSONATE_EXTRA: &str = "impersonate-extra-";

/// Applies `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` and
/// `Impersonate-Extra-*` as upstream's impersonation filter: the requester needs the
/// `impersonate` verb on each (users, groups, serviceaccounts, uids, userextras); the
/// request then proceeds as the impersonated user (with `system:authenticated`). The headers
/// are removed. `None` when the request impersonates no one.
pub async fn impersonate(
    cp: &Arc<ControlPlane>,
    identity: &Identity,
    headers: &mut HeaderMap,
) -> Result<Option<Identity>, ApiError> {
    let values = |headers: &HeaderMap, name: &str| -> Result<Vec<String>, ApiError> {
        headers
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::bad_request(format!("invalid {name} header: not visible ASCII"))
                })
            })
            .collect()
    };
    let users = values(headers, IMPERSONATE_USER)?;
    let groups = values(headers, IMPERSONATE_GROUP)?;
    let uids = values(headers, IMPERSONATE_UID)?;
    let extra_names: Vec<String> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(IMPERSONATE_EXTRA))
        .map(|k| k.as_str().to_owned())
        .collect();
    if users.is_empty() && groups.is_empty() && uids.is_empty() && extra_names.is_empty() {
        return Ok(None);
    }
    let Some(user) = users.first().cloned() else {
        return Err(ApiError::bad_request(
            "requested impersonation of groups, a uid or extra fields without impersonating a user",
        ));
    };
    if users.len() > 1 || uids.len() > 1 {
        return Err(ApiError::bad_request(
            "only one user and one uid may be impersonated",
        ));
    }
    let mut checks = Vec::new();
    let service_account = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    checks.push(match service_account {
        Some((namespace, name)) => Attributes {
            verb: "impersonate".into(),
            resource: "serviceaccounts".into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        },
        None => Attributes {
            verb: "impersonate".into(),
            resource: "users".into(),
            name: user.clone(),
            ..Default::default()
        },
    });
    for group in &groups {
        checks.push(Attributes {
            verb: "impersonate".into(),
            resource: "groups".into(),
            name: group.clone(),
            ..Default::default()
        });
    }
    for uid in &uids {
        checks.push(Attributes {
            verb: "impersonate".into(),
            group: "authentication.k8s.io".into(),
            resource: "uids".into(),
            name: uid.clone(),
            ..Default::default()
        });
    }
    let mut extra: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for header in &extra_names {
        let key = header.trim_start_matches(IMPERSONATE_EXTRA);
        let key = percent_decode(key);
        for value in values(headers, header)? {
            extra.entry(key.clone()).or_default().push(value.clone());
            checks.push(Attributes {
                verb: "impersonate".into(),
                group: "authentication.k8s.io".into(),
                resource: "userextras".into(),
                subresource: key.clone(),
                name: value,
                ..Default::default()
            });
        }
    }
    for attrs in &checks {
        let decision = authorize(cp, identity, attrs).await;
        if !decision.allowed {
            return Err(forbidden(identity, attrs, &decision));
        }
    }
    for name in [IMPERSONATE_USER, IMPERSONATE_GROUP, IMPERSONATE_UID]
        .into_iter()
        .map(str::to_owned)
        .chain(extra_names)
    {
        headers.remove(name.as_str());
    }
    let mut impersonated_groups = groups;
    if let Some((namespace, _)) = service_account
        && impersonated_groups.is_empty()
    {
        impersonated_groups = vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
        ];
    }
    let everyone = if user == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !impersonated_groups.iter().any(|g| g == everyone) {
        impersonated_groups.push(everyone.to_owned());
    }
    Ok(Some(Identity {
        user,
        uid: uids.into_iter().next().unwrap_or_default(),
        groups: impersonated_groups,
        extra,
    }))
}

/// Decodes `%XX` escapes in an `Impersonate-Extra-` key, as upstream does.
fn percent_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_use_upstream_wording() {
        let alice = Identity {
            user: "alice".into(),
            groups: vec!["dev".into(), "system:authenticated".into()],
            ..Default::default()
        };
        let attrs = Attributes {
            verb: "list".into(),
            resource: "pods".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&alice, &attrs),
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let named = Attributes {
            verb: "get".into(),
            group: "apps".into(),
            resource: "deployments".into(),
            subresource: "scale".into(),
            name: "web".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&alice, &named),
            "deployments.apps \"web\" is forbidden: User \"alice\" cannot get resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
        );
        let path = Attributes {
            verb: "get".into(),
            path: "/metrics".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&alice, &path),
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
        assert_eq!(percent_decode("example.com%2Fscope"), "example.com/scope");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
