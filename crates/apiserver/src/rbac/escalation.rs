//! The RBAC kinds' write rules, as upstream's rbac registry: defaulting and validation of
//! roles and bindings, and escalation prevention. Nobody grants what they do not hold: a
//! Role or ClusterRole may only be written by someone holding every permission it grants
//! (or allowed to `escalate` roles), and a binding only by someone holding the referenced
//! role's permissions (or allowed to `bind` it).

use apimachinery::kinds::KindInfo;
use apimachinery::object::ObjectExt;
use apimachinery::status::{ApiError, StatusCause};
use serde_json::{Value, json};

use super::{Binding, GROUP, PolicyRule, Snapshot, is_rbac, parse_rules, rules};
use crate::authn::Identity;
use crate::authz::{self, Attributes, MASTERS};
use crate::control_plane::ControlPlane;

/// Checks a Role, ClusterRole, RoleBinding or ClusterRoleBinding about to be stored (`old`
/// is the current object on update), for the requester of the request being served.
/// Other kinds pass untouched.
pub fn admit(
    cp: &ControlPlane,
    kind: &KindInfo,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !is_rbac(kind) {
        return Ok(());
    }
    set_defaults(obj);
    validate(kind, obj, old)?;
    // Writes the server makes on its own behalf (aggregation) have no requester.
    let Some(requester) = authz::requester() else {
        return Ok(());
    };
    if old.is_some_and(|old| only_gc_fields_changed(obj, old)) {
        return Ok(());
    }
    // As upstream: members of system:masters (the server's loopback identity among them)
    // hold every permission by definition, also while the default policy is written.
    if requester.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    check_escalation(&cp.rbac().current(), &requester, kind, obj, old)
}

/// The escalation rules proper, against one snapshot of the policy.
pub fn check_escalation(
    snapshot: &Snapshot,
    requester: &Identity,
    kind: &KindInfo,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let namespace = obj.namespace().to_owned();
    let name = obj.name().to_owned();
    let forbidden = |message: String| {
        ApiError::forbidden(format!(
            "{}.{GROUP} {name:?} is forbidden: {message}",
            kind.plural
        ))
    };
    match kind.kind.as_str() {
        "Role" | "ClusterRole" => {
            let escalate = Attributes {
                verb: "escalate".into(),
                group: GROUP.into(),
                resource: kind.plural.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                ..Default::default()
            };
            if snapshot.authorize(requester, &escalate).0 {
                return Ok(());
            }
            let granted = parse_rules(obj.get("rules"));
            confirm_no_escalation(snapshot, requester, &namespace, &granted).map_err(forbidden)?;
            let aggregates = |o: &Value| o.get("aggregationRule").is_some_and(|a| !a.is_null());
            if kind.kind == "ClusterRole" && (aggregates(obj) || old.is_some_and(aggregates)) {
                let everything = [
                    PolicyRule::resource(&["*"], &["*"], &["*"]),
                    PolicyRule::urls(&["*"], &["*"]),
                ];
                confirm_no_escalation(snapshot, requester, &namespace, &everything).map_err(
                    |_| {
                        forbidden(
                            "must have cluster-admin privileges to use the aggregationRule".into(),
                        )
                    },
                )?;
            }
            Ok(())
        }
        _ => {
            let binding = Binding::from_object(obj);
            let role_resource = if binding.role_ref.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            let bind = Attributes {
                verb: "bind".into(),
                group: GROUP.into(),
                resource: role_resource.into(),
                namespace: namespace.clone(),
                name: binding.role_ref.name.clone(),
                ..Default::default()
            };
            if snapshot.authorize(requester, &bind).0 {
                return Ok(());
            }
            let granted = snapshot
                .role_ref_rules(&binding.role_ref, &namespace)
                .map_err(forbidden)?;
            confirm_no_escalation(snapshot, requester, &namespace, granted).map_err(forbidden)
        }
    }
}

/// Upstream's ConfirmNoEscalation: `Ok` if the requester's own rules in `namespace` cover
/// `granted`, else the message listing what they lack.
pub fn confirm_no_escalation(
    snapshot: &Snapshot,
    requester: &Identity,
    namespace: &str,
    granted: &[PolicyRule],
) -> Result<(), String> {
    let (held, errors) = snapshot.rules_for(requester, namespace);
    let missing = rules::uncovered(&held, granted);
    if missing.is_empty() {
        return Ok(());
    }
    let mut lines: Vec<String> = rules::compact(missing)
        .iter()
        .map(rules::compact_string)
        .collect();
    lines.sort();
    lines.dedup();
    let groups: Vec<String> = requester.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut message = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        requester.user,
        groups.join(" "),
        lines.join("\n")
    );
    if !errors.is_empty() {
        message.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(message)
}

/// True if an update changes nothing but what the garbage collector needs to delete the
/// object eventually (owner references and finalizers).
fn only_gc_fields_changed(new: &Value, old: &Value) -> bool {
    let strip = |obj: &Value| {
        let mut obj = obj.clone();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "ownerReferences",
                "finalizers",
                "managedFields",
                "resourceVersion",
            ] {
                meta.remove(field);
            }
        }
        obj
    };
    strip(new) == strip(old)
}

/// Upstream's defaults: subjects and role references name their API group.
fn set_defaults(obj: &mut Value) {
    if let Some(role_ref) = obj.get_mut("roleRef").and_then(Value::as_object_mut)
        && role_ref
            .get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        role_ref.insert("apiGroup".into(), json!(GROUP));
    }
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for subject in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
            let has_group = subject.get("apiGroup").and_then(Value::as_str).is_some();
            if !has_group && matches!(kind, "User" | "Group") {
                subject.insert("apiGroup".into(), json!(GROUP));
            } else if !has_group && kind == "ServiceAccount" {
                subject.insert("apiGroup".into(), json!(""));
            }
        }
    }
}

/// Upstream's validation of roles and bindings.
fn validate(kind: &KindInfo, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let required = |field: String, message: &str| {
        let message = if message.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {message}")
        };
        StatusCause::new("FieldValueRequired", &field, message)
    };
    let unsupported = |field: String, value: &str, supported: &[&str]| {
        let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        StatusCause::new(
            "FieldValueNotSupported",
            &field,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                supported.join(", ")
            ),
        )
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match kind.kind.as_str() {
        "Role" | "ClusterRole" => {
            let namespaced = kind.kind == "Role";
            let rules = obj.get("rules").and_then(Value::as_array).cloned();
            for (i, rule) in rules.unwrap_or_default().iter().enumerate() {
                let path = format!("rules[{i}]");
                let list = |k: &str| rule.get(k).and_then(Value::as_array).map_or(0, |a| a.len());
                if !rule.is_object() {
                    causes.push(StatusCause::new(
                        "FieldValueInvalid",
                        &path,
                        "Invalid value: a rule must be an object",
                    ));
                    continue;
                }
                if list("verbs") == 0 {
                    causes.push(required(
                        format!("{path}.verbs"),
                        "verbs must contain at least one value",
                    ));
                }
                if list("nonResourceURLs") > 0 {
                    let urls = rule.get("nonResourceURLs").cloned().unwrap_or_default();
                    if namespaced {
                        causes.push(StatusCause::new(
                            "FieldValueInvalid",
                            &format!("{path}.nonResourceURLs"),
                            format!(
                                "Invalid value: {urls}: namespaced rules cannot apply to non-resource URLs"
                            ),
                        ));
                    }
                    if list("apiGroups") > 0 || list("resources") > 0 || list("resourceNames") > 0 {
                        causes.push(StatusCause::new(
                            "FieldValueInvalid",
                            &format!("{path}.nonResourceURLs"),
                            format!(
                                "Invalid value: {urls}: rules cannot apply to both regular resources and non-resource URLs"
                            ),
                        ));
                    }
                    continue;
                }
                if list("apiGroups") == 0 {
                    causes.push(required(
                        format!("{path}.apiGroups"),
                        "resource rules must supply at least one api group",
                    ));
                }
                if list("resources") == 0 {
                    causes.push(required(
                        format!("{path}.resources"),
                        "resource rules must supply at least one resource",
                    ));
                }
            }
        }
        _ => {
            let namespaced = kind.kind == "RoleBinding";
            let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
            let api_group = s(&role_ref, "apiGroup");
            if api_group != GROUP {
                causes.push(unsupported("roleRef.apiGroup".into(), &api_group, &[GROUP]));
            }
            let ref_kind = s(&role_ref, "kind");
            let kinds: &[&str] = if namespaced {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            if !kinds.contains(&ref_kind.as_str()) {
                causes.push(unsupported("roleRef.kind".into(), &ref_kind, kinds));
            }
            if s(&role_ref, "name").is_empty() {
                causes.push(required("roleRef.name".into(), ""));
            }
            if let Some(old) = old
                && old.get("roleRef") != obj.get("roleRef")
            {
                causes.push(StatusCause::new(
                    "FieldValueInvalid",
                    "roleRef",
                    format!("Invalid value: {role_ref}: cannot change roleRef"),
                ));
            }
            let subjects = obj.get("subjects").and_then(Value::as_array).cloned();
            for (i, subject) in subjects.unwrap_or_default().iter().enumerate() {
                let path = format!("subjects[{i}]");
                if s(subject, "name").is_empty() {
                    causes.push(required(format!("{path}.name"), ""));
                }
                let group = s(subject, "apiGroup");
                match s(subject, "kind").as_str() {
                    "ServiceAccount" => {
                        if !group.is_empty() {
                            causes.push(unsupported(format!("{path}.apiGroup"), &group, &[""]));
                        }
                        if !namespaced && s(subject, "namespace").is_empty() {
                            causes.push(required(format!("{path}.namespace"), ""));
                        }
                    }
                    "User" | "Group" => {
                        if group != GROUP {
                            causes.push(unsupported(format!("{path}.apiGroup"), &group, &[GROUP]));
                        }
                    }
                    other => causes.push(unsupported(
                        format!("{path}.kind"),
                        other,
                        &["ServiceAccount", "User", "Group"],
                    )),
                }
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &kind.group,
            &kind.kind,
            obj.name(),
            causes,
        ))
    }
}
