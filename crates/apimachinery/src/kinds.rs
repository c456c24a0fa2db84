//! The kinds registry: what the API server needs to know to serve a kind generically.

use std::fmt;

/// A group and version, such as `apps/v1` (core is the empty group).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupVersion {
    /// API group; empty for the core group.
    pub group: String,
    /// Version, such as `v1`.
    pub version: String,
}

impl GroupVersion {
    /// Builds a group version.
    pub fn new(group: &str, version: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
        }
    }

    /// The `apiVersion` string: `v1` for core, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for GroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.api_version())
    }
}

/// Group, version and kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupVersionKind {
    /// API group; empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind, such as `Deployment`.
    pub kind: String,
}

impl GroupVersionKind {
    /// Builds a GVK.
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

/// A subresource served under a resource, such as `status` or `scale`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subresource {
    /// The path segment: `status`, `scale`, `log`, `exec`, ...
    pub name: String,
    /// The kind the subresource answers with.
    pub response_kind: GroupVersionKind,
    /// The verbs it supports.
    pub verbs: Vec<String>,
}

/// Everything needed to serve one kind in one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// API group; empty for core.
    pub group: String,
    /// Version served.
    pub version: String,
    /// Kind, such as `Deployment`.
    pub kind: String,
    /// The list kind, such as `DeploymentList`.
    pub list_kind: String,
    /// Plural resource name used in URLs, such as `deployments`.
    pub plural: String,
    /// Singular resource name, such as `deployment`.
    pub singular: String,
    /// True for namespaced kinds, false for cluster-scoped ones.
    pub namespaced: bool,
    /// Short names, such as `deploy`.
    pub short_names: Vec<String>,
    /// Categories, such as `all`.
    pub categories: Vec<String>,
    /// Verbs on the resource itself.
    pub verbs: Vec<String>,
    /// Subresources.
    pub subresources: Vec<Subresource>,
    /// The OpenAPI definition name of the kind's schema, such as
    /// `io.k8s.api.apps.v1.Deployment`; `None` for kinds without a known schema.
    pub schema_name: Option<String>,
}

impl KindInfo {
    /// The kind's group and version.
    pub fn group_version(&self) -> GroupVersion {
        GroupVersion::new(&self.group, &self.version)
    }

    /// The kind's GVK.
    pub fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::new(&self.group, &self.version, &self.kind)
    }

    /// The `apiVersion` string of the kind's objects.
    pub fn api_version(&self) -> String {
        self.group_version().api_version()
    }

    /// `plural.group` (or just `plural` for core), as used in messages: `deployments.apps`.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The subresource named `name`, if served.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// True when the kind has a `status` subresource: the main resource then ignores
    /// status changes and `/status` changes only status.
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }
}

/// The standard verbs of a fully writable resource.
const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of create-only virtual resources (reviews, bindings).
const CREATE_ONLY: &[&str] = &["create"];

/// One row of the built-in table: group, version, kind, plural, namespaced, short names,
/// categories, subresources, create-only.
struct Row(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static str,
    &'static str,
    &'static str,
    bool,
);

/// The built-in kinds served by every control plane (Kubernetes 1.33 API).
#[rustfmt::skip]
const BUILTIN: &[Row] = &[
    // core/v1
    Row("", "v1", "Binding", "bindings", true, "", "", "", true),
    Row("", "v1", "ConfigMap", "configmaps", true, "cm", "", "", false),
    Row("", "v1", "Endpoints", "endpoints", true, "ep", "", "", false),
    Row("", "v1", "Event", "events", true, "ev", "", "", false),
    Row("", "v1", "LimitRange", "limitranges", true, "limits", "", "", false),
    Row("", "v1", "Namespace", "namespaces", false, "ns", "", "status,finalize", false),
    Row("", "v1", "Node", "nodes", false, "no", "", "status,proxy", false),
    Row("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, "pvc", "", "status", false),
    Row("", "v1", "PersistentVolume", "persistentvolumes", false, "pv", "", "status", false),
    Row("", "v1", "Pod", "pods", true, "po", "all", "status,binding,eviction,log,exec,attach,portforward,proxy,ephemeralcontainers,resize", false),
    Row("", "v1", "PodTemplate", "podtemplates", true, "", "", "", false),
    Row("", "v1", "ReplicationController", "replicationcontrollers", true, "rc", "all", "status,scale", false),
    Row("", "v1", "ResourceQuota", "resourcequotas", true, "quota", "", "status", false),
    Row("", "v1", "Secret", "secrets", true, "", "", "", false),
    Row("", "v1", "ServiceAccount", "serviceaccounts", true, "sa", "", "token", false),
    Row("", "v1", "Service", "services", true, "svc", "all", "status,proxy", false),
    // apps/v1
    Row("apps", "v1", "ControllerRevision", "controllerrevisions", true, "", "", "", false),
    Row("apps", "v1", "DaemonSet", "daemonsets", true, "ds", "all", "status", false),
    Row("apps", "v1", "Deployment", "deployments", true, "deploy", "all", "status,scale", false),
    Row("apps", "v1", "ReplicaSet", "replicasets", true, "rs", "all", "status,scale", false),
    Row("apps", "v1", "StatefulSet", "statefulsets", true, "sts", "all", "status,scale", false),
    // batch/v1
    Row("batch", "v1", "CronJob", "cronjobs", true, "cj", "all", "status", false),
    Row("batch", "v1", "Job", "jobs", true, "", "all", "status", false),
    // rbac.authorization.k8s.io/v1
    Row("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, "", "", "", false),
    Row("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, "", "", "", false),
    Row("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, "", "", "", false),
    Row("rbac.authorization.k8s.io", "v1", "Role", "roles", true, "", "", "", false),
    // coordination.k8s.io/v1
    Row("coordination.k8s.io", "v1", "Lease", "leases", true, "", "", "", false),
    // discovery.k8s.io/v1
    Row("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, "", "", "", false),
    // events.k8s.io/v1
    Row("events.k8s.io", "v1", "Event", "events", true, "ev", "", "", false),
    // policy/v1
    Row("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, "pdb", "", "status", false),
    // networking.k8s.io/v1
    Row("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, "", "", "", false),
    Row("networking.k8s.io", "v1", "Ingress", "ingresses", true, "ing", "", "status", false),
    Row("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, "netpol", "", "", false),
    Row("networking.k8s.io", "v1", "IPAddress", "ipaddresses", false, "ip", "", "", false),
    Row("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", false, "", "", "status", false),
    // storage.k8s.io/v1
    Row("storage.k8s.io", "v1", "CSIDriver", "csidrivers", false, "", "", "", false),
    Row("storage.k8s.io", "v1", "CSINode", "csinodes", false, "", "", "", false),
    Row("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities", true, "", "", "", false),
    Row("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, "sc", "", "", false),
    Row("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", false, "", "", "status", false),
    // scheduling.k8s.io/v1
    Row("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, "pc", "", "", false),
    // autoscaling/v2 (preferred) and v1
    Row("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, "hpa", "all", "status", false),
    Row("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, "hpa", "all", "status", false),
    // node.k8s.io/v1
    Row("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", false, "", "", "", false),
    // certificates.k8s.io/v1
    Row("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", false, "csr", "", "status,approval", false),
    // admissionregistration.k8s.io/v1
    Row("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", false, "", "api-extensions", "", false),
    Row("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", false, "", "api-extensions", "", false),
    Row("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", false, "", "api-extensions", "status", false),
    Row("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", false, "", "api-extensions", "", false),
    // authorization.k8s.io/v1 and authentication.k8s.io/v1: create-only reviews
    Row("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", true, "", "", "", true),
    Row("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", false, "", "", "", true),
    Row("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", false, "", "", "", true),
    Row("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", false, "", "", "", true),
    Row("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", false, "", "", "", true),
    Row("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", false, "", "", "", true),
    // apiextensions.k8s.io/v1
    Row("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false, "crd,crds", "api-extensions", "status", false),
];

/// The OpenAPI definition-name prefix of a built-in group's types.
fn schema_prefix(group: &str, version: &str) -> String {
    match group {
        "" => format!("io.k8s.api.core.{version}"),
        "apiextensions.k8s.io" => {
            format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}")
        }
        g => {
            let short = g.strip_suffix(".k8s.io").unwrap_or(g);
            let short = short
                .strip_suffix(".authorization")
                .map_or(short, |_| "rbac");
            format!("io.k8s.api.{short}.{version}")
        }
    }
}

/// The kind and group/version a subresource answers with.
fn subresource_kind(kind: &str, sub: &str) -> GroupVersionKind {
    match sub {
        "scale" => GroupVersionKind::new("autoscaling", "v1", "Scale"),
        "binding" => GroupVersionKind::new("", "v1", "Binding"),
        "eviction" => GroupVersionKind::new("policy", "v1", "Eviction"),
        "token" => GroupVersionKind::new("authentication.k8s.io", "v1", "TokenRequest"),
        "exec" => GroupVersionKind::new("", "v1", "PodExecOptions"),
        "attach" => GroupVersionKind::new("", "v1", "PodAttachOptions"),
        "portforward" => GroupVersionKind::new("", "v1", "PodPortForwardOptions"),
        "proxy" => GroupVersionKind::new("", "v1", &format!("{kind}ProxyOptions")),
        "log" | "ephemeralcontainers" | "resize" => GroupVersionKind::new("", "v1", "Pod"),
        _ => GroupVersionKind::new("", "", kind),
    }
}

/// The verbs a subresource supports.
fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "status" | "scale" | "ephemeralcontainers" | "resize" | "approval" => {
            &["get", "patch", "update"]
        }
        "binding" | "eviction" | "token" => &["create"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" => &["create", "get"],
        "proxy" => &["create", "delete", "get", "patch", "update"],
        "finalize" => &["update"],
        _ => &["get"],
    }
}

fn split_csv(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every built-in kind, in the order discovery lists them (preferred versions first).
pub fn builtin() -> Vec<KindInfo> {
    BUILTIN
        .iter()
        .map(
            |Row(group, version, kind, plural, namespaced, short, cats, subs, create_only)| {
                let subresources = split_csv(subs)
                    .into_iter()
                    .map(|name| {
                        let mut response_kind = subresource_kind(kind, &name);
                        if response_kind.version.is_empty() {
                            response_kind = GroupVersionKind::new(group, version, kind);
                        }
                        let verbs = subresource_verbs(&name)
                            .iter()
                            .map(|v| (*v).to_owned())
                            .collect();
                        Subresource {
                            name,
                            response_kind,
                            verbs,
                        }
                    })
                    .collect();
                let verbs = if *create_only { CREATE_ONLY } else { CRUD };
                KindInfo {
                    group: (*group).to_owned(),
                    version: (*version).to_owned(),
                    kind: (*kind).to_owned(),
                    list_kind: format!("{kind}List"),
                    plural: (*plural).to_owned(),
                    singular: kind.to_ascii_lowercase(),
                    namespaced: *namespaced,
                    short_names: split_csv(short),
                    categories: split_csv(cats),
                    verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
                    subresources,
                    schema_name: Some(format!("{}.{kind}", schema_prefix(group, version))),
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_follow_upstream_naming() {
        let kinds = builtin();
        let name = |g: &str, k: &str| {
            kinds
                .iter()
                .find(|i| i.group == g && i.kind == k)
                .and_then(|i| i.schema_name.clone())
                .unwrap_or_default()
        };
        assert_eq!(name("", "Pod"), "io.k8s.api.core.v1.Pod");
        assert_eq!(name("apps", "Deployment"), "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            name("rbac.authorization.k8s.io", "Role"),
            "io.k8s.api.rbac.v1.Role"
        );
        assert_eq!(
            name("authorization.k8s.io", "SelfSubjectAccessReview"),
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview"
        );
        assert_eq!(name("events.k8s.io", "Event"), "io.k8s.api.events.v1.Event");
        assert_eq!(
            name("apiextensions.k8s.io", "CustomResourceDefinition"),
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
        );
    }

    #[test]
    fn plurals_are_unique_per_group_version() {
        let kinds = builtin();
        let mut seen = std::collections::BTreeSet::new();
        for k in &kinds {
            assert!(
                seen.insert((k.group.clone(), k.version.clone(), k.plural.clone())),
                "duplicate {}",
                k.plural
            );
        }
    }

    #[test]
    fn scale_answers_autoscaling_v1_scale() {
        let kinds = builtin();
        let deploy = kinds
            .iter()
            .find(|k| k.kind == "Deployment")
            .map(|k| k.subresource("scale").cloned());
        let scale = deploy.flatten().map(|s| s.response_kind);
        assert_eq!(
            scale,
            Some(GroupVersionKind::new("autoscaling", "v1", "Scale"))
        );
    }
}
