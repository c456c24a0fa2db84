//! Turns a request path into what it addresses: the cluster, then a discovery document, an
//! OpenAPI document or a resource (group, version, namespace, resource, name, subresource).

/// The default cluster: the one served at the root of the URL space.
pub const DEFAULT_CLUSTER: &str = "default";

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/livez`, `/readyz` (and their sub-checks).
    Health,
    /// `/api`
    LegacyApi,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`
    GroupVersion(String, String),
    /// `/openapi/v2`
    OpenApiV2,
    /// `/openapi/v3`
    OpenApiV3,
    /// `/openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`
    OpenApiV3Doc(String, String),
    /// `/.well-known/openid-configuration`: the service-account issuer's OIDC discovery.
    OidcConfiguration,
    /// `/openid/v1/jwks`: the service-account verification keys.
    Jwks,
    /// `/kumo/v1/serviceaccount-keys[/<kid>]`: list (GET), rotate (POST) and retire
    /// (DELETE) the service-account signing keys.
    SigningKeys(Option<String>),
    /// `/kumo/v1/node-tunnel`: a node agent's tunnel (an upgraded connection).
    NodeTunnel,
    /// A resource or a subresource.
    Resource(ResourcePath),
}

/// The resource part of a path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group; empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Plural resource name.
    pub resource: String,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource, if any.
    pub subresource: Option<String>,
}

/// A parsed path: which cluster, and what in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The cluster id (`default` unless the path starts with `/clusters/<id>`).
    pub cluster: String,
    /// The URL prefix that addressed the cluster (empty for the default cluster).
    pub prefix: String,
    /// What the rest of the path addresses.
    pub route: Route,
}

/// Namespace subresources: `/namespaces/<ns>/<these>` addresses the namespace itself.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses a request path (without the query). `None` means no such route.
pub fn parse(path: &str) -> Option<Target> {
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut cluster = DEFAULT_CLUSTER.to_owned();
    let mut prefix = String::new();
    if parts.first() == Some(&"clusters") {
        let id = *parts.get(1)?;
        if !valid_segment(id) {
            return None;
        }
        cluster = id.to_owned();
        prefix = format!("/clusters/{id}");
        parts.drain(..2);
    }
    let route = route(&parts)?;
    Some(Target {
        cluster,
        prefix,
        route,
    })
}

fn route(parts: &[&str]) -> Option<Route> {
    Some(match parts {
        ["version"] => Route::Version,
        [h, ..] if matches!(*h, "healthz" | "livez" | "readyz") => Route::Health,
        ["api"] => Route::LegacyApi,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group((*g).to_owned()),
        ["api", v] => Route::GroupVersion(String::new(), (*v).to_owned()),
        ["apis", g, v] => Route::GroupVersion((*g).to_owned(), (*v).to_owned()),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3,
        ["openapi", "v3", "api", v] => Route::OpenApiV3Doc(String::new(), (*v).to_owned()),
        ["openapi", "v3", "apis", g, v] => Route::OpenApiV3Doc((*g).to_owned(), (*v).to_owned()),
        [".well-known", "openid-configuration"] => Route::OidcConfiguration,
        ["openid", "v1", "jwks"] => Route::Jwks,
        ["kumo", "v1", "serviceaccount-keys"] => Route::SigningKeys(None),
        ["kumo", "v1", "serviceaccount-keys", kid] if valid_segment(kid) => {
            Route::SigningKeys(Some((*kid).to_owned()))
        }
        ["kumo", "v1", "node-tunnel"] => Route::NodeTunnel,
        ["api", v, rest @ ..] => Route::Resource(resource(String::new(), v, rest)?),
        ["apis", g, v, rest @ ..] => Route::Resource(resource((*g).to_owned(), v, rest)?),
        _ => return None,
    })
}

fn resource(group: String, version: &str, rest: &[&str]) -> Option<ResourcePath> {
    let mut rest = rest;
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        // `/namespaces/<ns>/<resource>...` addresses a resource in <ns>, except for the
        // namespace's own subresources.
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            namespace = Some(rest[1].to_owned());
            rest = &rest[2..];
        }
    }
    if rest.iter().any(|p| !valid_segment(p))
        || namespace.as_deref().is_some_and(|n| !valid_segment(n))
    {
        return None;
    }
    let (resource, name, subresource) = match rest {
        [r] => (r, None, None),
        [r, n] => (r, Some(n), None),
        [r, n, s] => (r, Some(n), Some(s)),
        _ => return None,
    };
    Some(ResourcePath {
        group,
        version: version.to_owned(),
        namespace,
        resource: (*resource).to_owned(),
        name: name.map(|n| (*n).to_owned()),
        subresource: subresource.map(|s| (*s).to_owned()),
    })
}

/// Path segments never contain traversal or control characters.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.chars().any(|c| c.is_control() || c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(
        path: &str,
    ) -> (
        String,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
    ) {
        match parse(path).map(|t| t.route) {
            Some(Route::Resource(r)) => (r.group, r.namespace, r.resource, r.name, r.subresource),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resources() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            res("/api/v1/pods"),
            ("".into(), None, "pods".into(), None, None)
        );
        assert_eq!(
            res("/api/v1/namespaces/default/pods"),
            ("".into(), s("default"), "pods".into(), None, None)
        );
        assert_eq!(
            res("/api/v1/namespaces/d/pods/p/log"),
            ("".into(), s("d"), "pods".into(), s("p"), s("log"))
        );
        assert_eq!(
            res("/api/v1/namespaces/foo"),
            ("".into(), None, "namespaces".into(), s("foo"), None)
        );
        assert_eq!(
            res("/api/v1/namespaces/foo/status"),
            ("".into(), None, "namespaces".into(), s("foo"), s("status"))
        );
        assert_eq!(
            res("/api/v1/namespaces"),
            ("".into(), None, "namespaces".into(), None, None)
        );
        assert_eq!(
            res("/apis/apps/v1/namespaces/d/deployments/x/scale"),
            (
                "apps".into(),
                s("d"),
                "deployments".into(),
                s("x"),
                s("scale")
            )
        );
        assert_eq!(
            res("/clusters/t1/api/v1/nodes/n1"),
            ("".into(), None, "nodes".into(), s("n1"), None)
        );
    }

    #[test]
    fn non_resources_and_clusters() {
        let t = parse("/clusters/team-a/apis").expect("route");
        assert_eq!(
            (t.cluster.as_str(), t.prefix.as_str(), t.route),
            ("team-a", "/clusters/team-a", Route::Groups)
        );
        assert_eq!(parse("/version").map(|t| t.route), Some(Route::Version));
        assert_eq!(
            parse("/openapi/v3/apis/apps/v1").map(|t| t.route),
            Some(Route::OpenApiV3Doc("apps".into(), "v1".into()))
        );
        assert_eq!(parse("/api/v1/namespaces/a/pods/b/c/d"), None);
        assert_eq!(parse("/api/v1/namespaces/../pods"), None);
        assert_eq!(parse("/nonsense"), None);
        assert_eq!(parse("/clusters"), None);
    }
}
