//! Role-based access control, as upstream's RBAC authorizer and registry: an in-memory index
//! of one cluster's Roles, ClusterRoles and their bindings (kept current from the watch
//! caches by a background task, so no authorization ever reads the store), the rule
//! resolution that answers "may this user do this" and "what may this user do here", the
//! default policy created at bootstrap, ClusterRole aggregation and escalation prevention.

mod aggregation;
pub mod bootstrap;
pub mod escalation;
mod feed;
pub mod policy;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde_json::Value;
use store::Revision;
use tokio::sync::watch;

pub use rules::PolicyRule;

use crate::authn::Identity;
use crate::authz::Attributes;
use crate::control_plane::ControlPlane;
use crate::server::Body;

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The four RBAC kinds, in the order the index keeps their revisions.
pub(crate) const KINDS: [&str; 4] = ["ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"];

/// How long a request waits for the index to load after a start before it is judged
/// against whatever is loaded, and how long an RBAC write waits for the index to see it.
const CATCH_UP: Duration = Duration::from_secs(5);

/// A Role or ClusterRole, as the authorizer needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Role {
    /// Namespace (empty for a ClusterRole).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The rules it grants.
    pub rules: Vec<PolicyRule>,
    /// Labels (aggregation selects ClusterRoles by them).
    pub labels: BTreeMap<String, String>,
    /// `aggregationRule.clusterRoleSelectors`, for aggregated ClusterRoles.
    pub aggregation: Option<Vec<Value>>,
    /// The stored object's resourceVersion.
    pub resource_version: String,
}

impl Role {
    /// Reads the parts the authorizer needs from a stored Role or ClusterRole.
    pub fn from_object(obj: &Value) -> Self {
        let meta = |k: &str| {
            obj.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            namespace: meta("namespace"),
            name: meta("name"),
            rules: parse_rules(obj.get("rules")),
            labels,
            aggregation: obj
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
                .cloned(),
            resource_version: meta("resourceVersion"),
        }
    }
}

/// Rules from a `rules` array; unreadable entries are skipped (validation keeps them out).
pub fn parse_rules(rules: Option<&Value>) -> Vec<PolicyRule> {
    rules
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| serde_json::from_value(r.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What a binding grants: `kind` Role or ClusterRole, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

/// Who a binding grants to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace (ServiceAccounts).
    pub namespace: String,
}

impl Subject {
    /// True if the subject names this identity. `namespace` is the binding's, which a
    /// ServiceAccount subject without one defaults to.
    pub fn applies_to(&self, identity: &Identity, namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => identity.user == self.name,
            "Group" => identity.groups.contains(&self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    namespace
                } else {
                    &self.namespace
                };
                !ns.is_empty()
                    && identity
                        .user
                        .strip_prefix("system:serviceaccount:")
                        .and_then(|rest| rest.split_once(':'))
                        .is_some_and(|(n, name)| n == ns && name == self.name)
            }
            _ => false,
        }
    }

    fn describe(&self) -> String {
        if self.kind == "ServiceAccount" && !self.namespace.is_empty() {
            format!("{} \"{}/{}\"", self.kind, self.namespace, self.name)
        } else {
            format!("{} {:?}", self.kind, self.name)
        }
    }
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// Namespace (empty for a ClusterRoleBinding).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The granted role.
    pub role_ref: RoleRef,
    /// The grantees.
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// Reads a stored binding.
    pub fn from_object(obj: &Value) -> Self {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
        let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
        Self {
            namespace: s(&meta, "namespace"),
            name: s(&meta, "name"),
            role_ref: RoleRef {
                kind: s(&role_ref, "kind"),
                name: s(&role_ref, "name"),
            },
            subjects: obj
                .get("subjects")
                .and_then(Value::as_array)
                .map(|subjects| {
                    subjects
                        .iter()
                        .map(|v| Subject {
                            kind: s(v, "kind"),
                            name: s(v, "name"),
                            namespace: s(v, "namespace"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn describe(&self, subject: &Subject) -> String {
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {:?} of {} {:?} to {}",
                self.name,
                self.role_ref.kind,
                self.role_ref.name,
                subject.describe()
            )
        } else {
            format!(
                "RoleBinding \"{}/{}\" of {} {:?} to {}",
                self.name,
                self.namespace,
                self.role_ref.kind,
                self.role_ref.name,
                subject.describe()
            )
        }
    }
}

/// One consistent view of a cluster's RBAC objects.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// False until the objects are loaded.
    pub ready: bool,
    cluster_roles: HashMap<String, Arc<Role>>,
    roles: HashMap<(String, String), Arc<Role>>,
    cluster_role_bindings: Vec<Arc<Binding>>,
    role_bindings: HashMap<String, Vec<Arc<Binding>>>,
    /// The store revision each kind (in [`KINDS`] order) is at.
    revisions: [Revision; 4],
}

/// Why a rule applies: the binding and subject that grant it.
type Visit<'a> = dyn FnMut(&dyn Fn() -> String, &PolicyRule) -> bool + 'a;

impl Snapshot {
    /// A snapshot of these objects.
    pub fn new(
        roles: impl IntoIterator<Item = Arc<Role>>,
        bindings: impl IntoIterator<Item = Arc<Binding>>,
        revisions: [Revision; 4],
    ) -> Self {
        let mut snapshot = Self {
            ready: true,
            revisions,
            ..Default::default()
        };
        for role in roles {
            if role.namespace.is_empty() {
                snapshot.cluster_roles.insert(role.name.clone(), role);
            } else {
                snapshot
                    .roles
                    .insert((role.namespace.clone(), role.name.clone()), role);
            }
        }
        for binding in bindings {
            if binding.namespace.is_empty() {
                snapshot.cluster_role_bindings.push(binding);
            } else {
                snapshot
                    .role_bindings
                    .entry(binding.namespace.clone())
                    .or_default()
                    .push(binding);
            }
        }
        snapshot
    }

    /// The ClusterRole `name`.
    pub fn cluster_role(&self, name: &str) -> Option<&Arc<Role>> {
        self.cluster_roles.get(name)
    }

    /// Every ClusterRole.
    pub fn cluster_roles(&self) -> impl Iterator<Item = &Arc<Role>> {
        self.cluster_roles.values()
    }

    /// The rules a role reference grants, for a binding in `namespace` (empty for a
    /// ClusterRoleBinding); upstream's lister wording when the role is missing.
    pub fn role_ref_rules(
        &self,
        role_ref: &RoleRef,
        namespace: &str,
    ) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| format!("clusterrole.{GROUP} {:?} not found", role_ref.name)),
            "Role" if !namespace.is_empty() => self
                .roles
                .get(&(namespace.to_owned(), role_ref.name.clone()))
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| format!("role.{GROUP} {:?} not found", role_ref.name)),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }

    /// Visits every rule that applies to `identity` in `namespace` (cluster-wide ones
    /// only when empty) until `visit` returns false; returns the resolution errors met.
    fn visit_rules(
        &self,
        identity: &Identity,
        namespace: &str,
        visit: &mut Visit<'_>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let namespaced = if namespace.is_empty() {
            None
        } else {
            self.role_bindings.get(namespace)
        };
        let bindings = self
            .cluster_role_bindings
            .iter()
            .chain(namespaced.into_iter().flatten());
        for binding in bindings {
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|s| s.applies_to(identity, &binding.namespace))
            else {
                continue;
            };
            match self.role_ref_rules(&binding.role_ref, &binding.namespace) {
                Ok(rules) => {
                    for rule in rules {
                        if !visit(&|| binding.describe(subject), rule) {
                            return errors;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Decides a request: allowed with the granting binding as reason, or not, with the
    /// resolution errors (if any) as reason, as upstream's RBAC authorizer answers.
    pub fn authorize(&self, identity: &Identity, attrs: &Attributes) -> (bool, String) {
        let mut reason = None;
        let errors = self.visit_rules(identity, &attrs.namespace, &mut |source, rule| {
            if rule.allows(attrs) {
                reason = Some(format!("RBAC: allowed by {}", source()));
                false
            } else {
                true
            }
        });
        match reason {
            Some(reason) => (true, reason),
            None if errors.is_empty() => (false, String::new()),
            // As Go's error aggregate prints: one error alone, several in brackets.
            None if errors.len() == 1 => (false, format!("RBAC: {}", errors[0])),
            None => (false, format!("RBAC: [{}]", errors.join(", "))),
        }
    }

    /// Every rule that applies to `identity` in `namespace`, and the resolution errors.
    pub fn rules_for(
        &self,
        identity: &Identity,
        namespace: &str,
    ) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let errors = self.visit_rules(identity, namespace, &mut |_, rule| {
            rules.push(rule.clone());
            true
        });
        (rules, errors)
    }
}

/// One cluster's RBAC state: the current snapshot and whether policy is enforced.
pub struct Rbac {
    snapshot: watch::Sender<Arc<Snapshot>>,
    started: OnceLock<()>,
    enforcing: AtomicBool,
}

impl Default for Rbac {
    fn default() -> Self {
        Self {
            snapshot: watch::Sender::new(Arc::new(Snapshot::default())),
            started: OnceLock::new(),
            enforcing: AtomicBool::new(false),
        }
    }
}

impl Rbac {
    /// Starts following the cluster's RBAC objects (once).
    pub(crate) fn start(&self, cp: Weak<ControlPlane>) {
        self.started.get_or_init(|| {
            feed::spawn(cp, self.snapshot.clone());
        });
    }

    /// The current snapshot, without waiting.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The snapshot, once loaded (or after a bounded wait, whatever is there).
    pub async fn snapshot(&self) -> Arc<Snapshot> {
        let current = self.current();
        if current.ready {
            return current;
        }
        let mut rx = self.snapshot.subscribe();
        let waited = tokio::time::timeout(CATCH_UP, rx.wait_for(|s| s.ready)).await;
        match waited {
            Ok(Ok(s)) => s.clone(),
            _ => self.current(),
        }
    }

    /// Waits (bounded) until the snapshot has seen revision `revision` of `kind`.
    pub async fn wait_for(&self, kind: &str, revision: Revision) {
        let Some(idx) = KINDS.iter().position(|k| *k == kind) else {
            return;
        };
        let mut rx = self.snapshot.subscribe();
        let _ = tokio::time::timeout(
            CATCH_UP,
            rx.wait_for(|s| s.ready && s.revisions[idx] >= revision),
        )
        .await;
    }

    /// True once the default policy is in place: from then on `system:masters` is
    /// allowed only through its binding to cluster-admin, as every other group.
    pub fn enforcing(&self) -> bool {
        self.enforcing.load(Ordering::Acquire)
    }

    /// Turns enforcement on (bootstrap does, after reconciling the default policy).
    pub fn enforce(&self) {
        self.enforcing.store(true, Ordering::Release);
    }
}

/// True for the RBAC kinds.
pub fn is_rbac(kind: &apimachinery::kinds::KindInfo) -> bool {
    kind.group == GROUP && KINDS.contains(&kind.kind.as_str())
}

/// After a write of an RBAC object, waits until the authorizer sees it, so that a client
/// creating a binding may use it at once (upstream leaves this eventually consistent).
/// Other responses pass unchanged.
pub async fn settle(cp: &ControlPlane, response: http::Response<Body>) -> http::Response<Body> {
    use http_body_util::BodyExt;
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    if let Ok(obj) = serde_json::from_slice::<Value>(&bytes) {
        settle_write(cp, &obj).await;
    }
    http::Response::from_parts(parts, http_body_util::Full::new(bytes).boxed())
}

async fn settle_write(cp: &ControlPlane, body: &Value) {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if !api_version.starts_with(GROUP) {
        return;
    }
    let Some(revision) = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse::<Revision>().ok())
    else {
        return;
    };
    cp.rbac().wait_for(kind, revision).await;
}
