//! Printers for networking, storage, RBAC and cluster-policy kinds: Ingresses, IngressClasses,
//! NetworkPolicies, StorageClasses, RoleBindings, ClusterRoleBindings, Leases, PriorityClasses,
//! CertificateSigningRequests and RuntimeClasses.
//!
//! Roles and ClusterRoles have no printer upstream; they use the default Name / Created At table.

use jiff::Timestamp;
use serde_json::Value;

use super::fields::{
    age, arr, at, format_label_selector, get, i64_at, load_balancer_ingress, name, obj, opt_bool,
    opt_i64, opt_str, str_at, text,
};
use super::{AGE, NAME, Printer, col, human_duration, wide};

/// The printer for a networking, storage, RBAC or policy kind, if `group`/`kind` is one.
pub(crate) fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("networking.k8s.io", "Ingress") => &INGRESS,
        ("networking.k8s.io", "IngressClass") => &INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => &NETWORK_POLICY,
        ("storage.k8s.io", "StorageClass") => &STORAGE_CLASS,
        ("rbac.authorization.k8s.io", "RoleBinding") => &ROLE_BINDING,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => &CLUSTER_ROLE_BINDING,
        ("coordination.k8s.io", "Lease") => &LEASE,
        ("scheduling.k8s.io", "PriorityClass") => &PRIORITY_CLASS,
        ("certificates.k8s.io", "CertificateSigningRequest") => &CERTIFICATE_SIGNING_REQUEST,
        ("node.k8s.io", "RuntimeClass") => &RUNTIME_CLASS,
        _ => return None,
    })
}

static INGRESS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Class",
            "string",
            "The name of the IngressClass resource that should be used for additional configuration",
        ),
        col(
            "Hosts",
            "string",
            "Hosts that incoming requests are matched against before the ingress rule",
        ),
        col(
            "Address",
            "string",
            "Address is a list containing ingress points for the load-balancer",
        ),
        col("Ports", "string", "Ports of TLS configurations that open"),
        AGE,
    ],
    cells: ingress_cells,
};

/// Upstream's `formatHosts`: up to three rule hosts, `*` when none.
fn ingress_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut hosts = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".to_owned();
    }
    let joined = hosts.join(",");
    if more {
        format!("{joined} + {} more...", rules.len() - MAX)
    } else {
        joined
    }
}

fn ingress_cells(ingress: &Value, now: Timestamp) -> Vec<Value> {
    let class = opt_str(ingress, &["spec", "ingressClassName"]).unwrap_or("<none>");
    let ports = if arr(ingress, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        text(name(ingress)),
        text(class),
        text(ingress_hosts(arr(ingress, &["spec", "rules"]))),
        text(load_balancer_ingress(at(
            ingress,
            &["status", "loadBalancer"],
        ))),
        text(ports),
        age(ingress, now),
    ]
}

static INGRESS_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Controller",
            "string",
            "Controller that is responsible for handling this class",
        ),
        col(
            "Parameters",
            "string",
            "A reference to a resource with additional parameters",
        ),
        AGE,
    ],
    cells: ingress_class_cells,
};

fn ingress_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    let parameters = match obj(class, &["spec", "parameters"]) {
        Some(_) => {
            let mut kind = str_at(class, &["spec", "parameters", "kind"]).to_owned();
            if let Some(group) = opt_str(class, &["spec", "parameters", "apiGroup"]) {
                kind = format!("{kind}.{group}");
            }
            format!("{kind}/{}", str_at(class, &["spec", "parameters", "name"]))
        }
        None => "<none>".to_owned(),
    };
    vec![
        text(name(class)),
        text(str_at(class, &["spec", "controller"])),
        text(parameters),
        age(class, now),
    ]
}

static NETWORK_POLICY: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Pod-Selector",
            "string",
            "Label selector of the pods the policy applies to.",
        ),
        AGE,
    ],
    cells: network_policy_cells,
};

fn network_policy_cells(policy: &Value, now: Timestamp) -> Vec<Value> {
    // A missing podSelector is the empty selector (all pods in the namespace).
    let selector = get(policy, &["spec", "podSelector"])
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    vec![
        text(name(policy)),
        text(format_label_selector(Some(&selector))),
        age(policy, now),
    ]
}

static STORAGE_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Provisioner",
            "string",
            "The volume plugin or CSI driver that provisions volumes.",
        ),
        col(
            "ReclaimPolicy",
            "string",
            "Reclaim policy of the volumes this class provisions.",
        ),
        col(
            "VolumeBindingMode",
            "string",
            "When volumes are bound: Immediate or WaitForFirstConsumer.",
        ),
        col(
            "AllowVolumeExpansion",
            "string",
            "Whether claims of this class may be expanded.",
        ),
        AGE,
    ],
    cells: storage_class_cells,
};

fn storage_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    let annotation = |key: &str| str_at(class, &["metadata", "annotations", key]) == "true";
    let is_default = annotation("storageclass.kubernetes.io/is-default-class")
        || annotation("storageclass.beta.kubernetes.io/is-default-class");
    let display_name = if is_default {
        format!("{} (default)", name(class))
    } else {
        name(class).to_owned()
    };
    vec![
        text(display_name),
        text(str_at(class, &["provisioner"])),
        text(opt_str(class, &["reclaimPolicy"]).unwrap_or("Delete")),
        text(opt_str(class, &["volumeBindingMode"]).unwrap_or("Immediate")),
        Value::Bool(opt_bool(class, &["allowVolumeExpansion"]).unwrap_or(false)),
        age(class, now),
    ]
}

static ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        col("Role", "string", "The role granted, as kind/name."),
        AGE,
        wide("Users", "string", "Users in the roleBinding"),
        wide("Groups", "string", "Groups in the roleBinding"),
        wide(
            "ServiceAccounts",
            "string",
            "ServiceAccounts in the roleBinding",
        ),
    ],
    cells: binding_cells,
};

static CLUSTER_ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        col("Role", "string", "The cluster role granted, as kind/name."),
        AGE,
        wide("Users", "string", "Users in the clusterRoleBinding"),
        wide("Groups", "string", "Groups in the clusterRoleBinding"),
        wide(
            "ServiceAccounts",
            "string",
            "ServiceAccounts in the clusterRoleBinding",
        ),
    ],
    cells: binding_cells,
};

fn binding_cells(binding: &Value, now: Timestamp) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_at(binding, &["roleRef", "kind"]),
        str_at(binding, &["roleRef", "name"])
    );
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in arr(binding, &["subjects"]) {
        let subject_name = str_at(subject, &["name"]);
        match str_at(subject, &["kind"]) {
            "User" => users.push(subject_name.to_owned()),
            "Group" => groups.push(subject_name.to_owned()),
            "ServiceAccount" => {
                service_accounts.push(format!(
                    "{}/{subject_name}",
                    str_at(subject, &["namespace"])
                ));
            }
            _ => {}
        }
    }
    vec![
        text(name(binding)),
        text(role),
        age(binding, now),
        text(users.join(", ")),
        text(groups.join(", ")),
        text(service_accounts.join(", ")),
    ]
}

static LEASE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Holder",
            "string",
            "The identity of the lease's current holder.",
        ),
        AGE,
    ],
    cells: lease_cells,
};

fn lease_cells(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        text(name(lease)),
        text(str_at(lease, &["spec", "holderIdentity"])),
        age(lease, now),
    ]
}

static PRIORITY_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Value", "integer", "The priority pods of this class get."),
        col(
            "Global-Default",
            "boolean",
            "Whether pods without a class get this one.",
        ),
        AGE,
        col(
            "PreemptionPolicy",
            "string",
            "Whether pods of this class may preempt lower-priority pods.",
        ),
    ],
    cells: priority_class_cells,
};

fn priority_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        text(name(class)),
        Value::from(i64_at(class, &["value"])),
        Value::Bool(opt_bool(class, &["globalDefault"]).unwrap_or(false)),
        age(class, now),
        // The v1 API defaults the policy to PreemptLowerPriority.
        text(opt_str(class, &["preemptionPolicy"]).unwrap_or("PreemptLowerPriority")),
    ]
}

static CERTIFICATE_SIGNING_REQUEST: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        col(
            "SignerName",
            "string",
            "The signer the request is addressed to.",
        ),
        col("Requestor", "string", "The user that created the request."),
        col(
            "RequestedDuration",
            "string",
            "The validity the requester asked for.",
        ),
        col(
            "Condition",
            "string",
            "Approval and issuance state of the request.",
        ),
    ],
    cells: certificate_signing_request_cells,
};

/// Upstream's `extractCSRStatus`: Denied, Approved or Pending, plus `,Failed` and `,Issued`.
fn csr_condition(request: &Value) -> String {
    let conditions = arr(request, &["status", "conditions"]);
    let has = |type_: &str| {
        conditions
            .iter()
            .any(|condition| str_at(condition, &["type"]) == type_)
    };
    let mut status = if has("Denied") {
        "Denied"
    } else if has("Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_owned();
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(request, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn certificate_signing_request_cells(request: &Value, now: Timestamp) -> Vec<Value> {
    let signer = opt_str(request, &["spec", "signerName"])
        .filter(|signer| !signer.is_empty())
        .unwrap_or("<none>");
    let duration = match opt_i64(request, &["spec", "expirationSeconds"]) {
        Some(seconds) => human_duration(std::time::Duration::from_secs(
            seconds.max(0).unsigned_abs(),
        )),
        None => "<none>".to_owned(),
    };
    vec![
        text(name(request)),
        age(request, now),
        text(signer),
        text(str_at(request, &["spec", "username"])),
        text(duration),
        text(csr_condition(request)),
    ]
}

static RUNTIME_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Handler",
            "string",
            "The container runtime handler that runs pods of this class.",
        ),
        AGE,
    ],
    cells: runtime_class_cells,
};

fn runtime_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        text(name(class)),
        text(str_at(class, &["handler"])),
        age(class, now),
    ]
}
