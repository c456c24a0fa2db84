//! Authorization. Until RBAC arrives, the only authorizer is the `system:masters` group,
//! which upstream also lets do anything: members may do everything, everyone else nothing.

use crate::authn::Identity;

/// What a request wants to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection.
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

/// An authorization decision with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// True when allowed.
    pub allowed: bool,
    /// Why.
    pub reason: String,
}

/// The group whose members may do anything.
pub const MASTERS: &str = "system:masters";

/// What every authenticated user may do, as upstream's default discovery, public-info and
/// basic-user roles allow: read discovery, OpenAPI, version and health, and ask about
/// themselves.
fn public_to_authenticated(attrs: &Attributes) -> bool {
    if !attrs.path.is_empty() {
        let discovery = [
            "/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz",
        ];
        return attrs.verb == "get"
            && discovery
                .iter()
                .any(|p| attrs.path == *p || attrs.path.starts_with(&format!("{p}/")));
    }
    attrs.verb == "create"
        && matches!(
            (attrs.group.as_str(), attrs.resource.as_str()),
            (
                "authorization.k8s.io",
                "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
            ) | ("authentication.k8s.io", "selfsubjectreviews")
        )
}

/// Decides whether `identity` may do `attrs`.
pub fn authorize(identity: &Identity, attrs: &Attributes) -> Decision {
    if identity.groups.iter().any(|g| g == MASTERS) {
        Decision {
            allowed: true,
            reason: format!("member of {MASTERS}"),
        }
    } else if identity.groups.iter().any(|g| g == "system:authenticated")
        && public_to_authenticated(attrs)
    {
        Decision {
            allowed: true,
            reason: "allowed to every authenticated user".into(),
        }
    } else {
        Decision {
            allowed: false,
            reason: "no authorization policy grants this (RBAC is not enabled yet)".into(),
        }
    }
}

/// Upstream's wording of a denial.
pub fn forbidden_message(identity: &Identity, attrs: &Attributes) -> String {
    if !attrs.path.is_empty() {
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
    let object = if attrs.name.is_empty() {
        String::new()
    } else {
        format!("{} \"{}\" is forbidden: ", qualified(attrs), attrs.name)
    };
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", attrs.namespace)
    };
    let prefix = if object.is_empty() {
        format!("{} is forbidden: ", qualified(attrs))
    } else {
        object
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_masters_are_allowed() {
        let admin = Identity {
            user: "admin".into(),
            groups: vec![MASTERS.into(), "system:authenticated".into()],
        };
        let alice = Identity {
            user: "alice".into(),
            groups: vec!["dev".into(), "system:authenticated".into()],
        };
        let attrs = Attributes {
            verb: "list".into(),
            resource: "pods".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        assert!(authorize(&admin, &attrs).allowed);
        assert!(!authorize(&alice, &attrs).allowed);
        let discovery = Attributes {
            verb: "get".into(),
            path: "/apis/apps/v1".into(),
            ..Default::default()
        };
        assert!(authorize(&alice, &discovery).allowed);
        let sneaky = Attributes {
            verb: "get".into(),
            path: "/apisx".into(),
            ..Default::default()
        };
        assert!(!authorize(&alice, &sneaky).allowed);
        let review = Attributes {
            verb: "create".into(),
            group: "authorization.k8s.io".into(),
            resource: "selfsubjectaccessreviews".into(),
            ..Default::default()
        };
        assert!(authorize(&alice, &review).allowed);
        assert_eq!(
            forbidden_message(&alice, &attrs),
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
    }
}
