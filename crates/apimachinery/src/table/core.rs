//! Printers for core and service-discovery kinds: Services, Endpoints, EndpointSlices, Nodes,
//! Namespaces, ConfigMaps, Secrets, ServiceAccounts, Events (core/v1 and events.k8s.io/v1),
//! PersistentVolumes, PersistentVolumeClaims and ResourceQuotas.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::fields::{
    age, arr, at, format_labels, get, i64_at, len_at, list_with_more, load_balancer_ingress, name,
    obj, opt_i64, opt_str, parse_time, quantity, since, str_at, text,
};
use super::{AGE, NAME, Printer, col, human_signed_duration, wide};

/// The printer for a core kind, if `group`/`kind` is one.
pub(crate) fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("", "Service") => &SERVICE,
        ("", "Endpoints") => &ENDPOINTS,
        ("discovery.k8s.io", "EndpointSlice") => &ENDPOINT_SLICE,
        ("", "Node") => &NODE,
        ("", "Namespace") => &NAMESPACE,
        ("", "ConfigMap") => &CONFIG_MAP,
        ("", "Secret") => &SECRET,
        ("", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("", "Event") => &CORE_EVENT,
        ("events.k8s.io", "Event") => &EVENTS_EVENT,
        ("", "PersistentVolume") => &PERSISTENT_VOLUME,
        ("", "PersistentVolumeClaim") => &PERSISTENT_VOLUME_CLAIM,
        ("", "ResourceQuota") => &RESOURCE_QUOTA,
        _ => return None,
    })
}

static SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Type",
            "string",
            "How the service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName.",
        ),
        col(
            "Cluster-IP",
            "string",
            "The service's virtual IP inside the cluster.",
        ),
        col(
            "External-IP",
            "string",
            "Addresses the service is reachable at from outside the cluster.",
        ),
        col(
            "Port(s)",
            "string",
            "The service's ports, with node ports and protocols.",
        ),
        AGE,
        wide(
            "Selector",
            "string",
            "Label selector of the pods behind the service.",
        ),
    ],
    cells: service_cells,
};

/// Upstream's `getServiceExternalIP` (always in wide form, as servers print).
fn service_external_ip(service: &Value, service_type: &str) -> String {
    let external_ips: Vec<&str> = arr(service, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type {
        "ClusterIP" | "NodePort" if !external_ips.is_empty() => external_ips.join(","),
        "ClusterIP" | "NodePort" => "<none>".to_owned(),
        "LoadBalancer" => {
            let load_balancer = load_balancer_ingress(at(service, &["status", "loadBalancer"]));
            if !external_ips.is_empty() {
                let mut all: Vec<&str> = load_balancer
                    .split(',')
                    .filter(|ip| !ip.is_empty())
                    .collect();
                all.extend(external_ips);
                all.join(",")
            } else if !load_balancer.is_empty() {
                load_balancer
            } else {
                "<pending>".to_owned()
            }
        }
        "ExternalName" => str_at(service, &["spec", "externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

/// Upstream's `makePortString`: `80/TCP,443:30001/TCP`.
fn service_ports(service: &Value) -> String {
    let ports: Vec<String> = arr(service, &["spec", "ports"])
        .iter()
        .map(|port| {
            let number = i64_at(port, &["port"]);
            let protocol = opt_str(port, &["protocol"]).unwrap_or("TCP");
            match i64_at(port, &["nodePort"]) {
                node_port if node_port > 0 => format!("{number}:{node_port}/{protocol}"),
                _ => format!("{number}/{protocol}"),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    }
}

fn service_cells(service: &Value, now: Timestamp) -> Vec<Value> {
    // The v1 API defaults the type to ClusterIP and fills clusterIPs from clusterIP.
    let service_type = opt_str(service, &["spec", "type"]).unwrap_or("ClusterIP");
    let cluster_ip = arr(service, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_str(service, &["spec", "clusterIP"]).filter(|ip| !ip.is_empty()))
        .unwrap_or("<none>");
    vec![
        text(name(service)),
        text(service_type),
        text(cluster_ip),
        text(service_external_ip(service, service_type)),
        text(service_ports(service)),
        age(service, now),
        text(format_labels(obj(service, &["spec", "selector"]))),
    ]
}

static ENDPOINTS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Endpoints",
            "string",
            "Ready addresses with their ports (up to three).",
        ),
        AGE,
    ],
    cells: endpoints_cells,
};

/// Joins a host and port as Go's `net.JoinHostPort` (IPv6 addresses get brackets).
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream's `formatEndpoints` for all ports.
fn format_endpoints(endpoints: &Value) -> String {
    let subsets = arr(endpoints, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0;
    let mut more = false;
    for subset in subsets {
        let addresses = arr(subset, &["addresses"]);
        let ports = arr(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(address, &["ip"]).to_owned());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(
                    str_at(address, &["ip"]),
                    i64_at(port, &["port"]),
                ));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoints_cells(endpoints: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        text(name(endpoints)),
        text(format_endpoints(endpoints)),
        age(endpoints, now),
    ]
}

static ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "AddressType",
            "string",
            "The type of the addresses: IPv4, IPv6 or FQDN.",
        ),
        col(
            "Ports",
            "string",
            "The ports of the endpoints (up to three).",
        ),
        col(
            "Endpoints",
            "string",
            "The addresses of the endpoints (up to three).",
        ),
        AGE,
    ],
    cells: endpoint_slice_cells,
};

fn endpoint_slice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = arr(slice, &["ports"])
        .iter()
        .map(
            |port| match (opt_i64(port, &["port"]), opt_str(port, &["name"])) {
                (Some(number), _) => number.to_string(),
                (None, Some(port_name)) => port_name.to_owned(),
                (None, None) => "*".to_owned(),
            },
        )
        .collect();
    let addresses: Vec<String> = arr(slice, &["endpoints"])
        .iter()
        .flat_map(|endpoint| arr(endpoint, &["addresses"]))
        .map(|address| address.as_str().unwrap_or("").to_owned())
        .collect();
    vec![
        text(name(slice)),
        text(str_at(slice, &["addressType"])),
        text(list_with_more(&ports, 3)),
        text(list_with_more(&addresses, 3)),
        age(slice, now),
    ]
}

static NODE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the node"),
        col("Roles", "string", "The roles of the node"),
        AGE,
        col("Version", "string", "The kubelet version the node reports."),
        wide(
            "Internal-IP",
            "string",
            "The node's first internal IP address.",
        ),
        wide(
            "External-IP",
            "string",
            "The node's first external IP address.",
        ),
        wide(
            "OS-Image",
            "string",
            "The operating system image the node reports.",
        ),
        wide(
            "Kernel-Version",
            "string",
            "The kernel version the node reports.",
        ),
        wide(
            "Container-Runtime",
            "string",
            "The container runtime and version the node reports.",
        ),
    ],
    cells: node_cells,
};

/// Upstream's `findNodeRoles`: `node-role.kubernetes.io/<role>` keys and `kubernetes.io/role`
/// values, sorted and de-duplicated.
fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    for (key, value) in obj(node, &["metadata", "labels"]).into_iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_owned());
            }
        } else if key == "kubernetes.io/role"
            && let Some(role) = value.as_str().filter(|role| !role.is_empty())
        {
            roles.insert(role.to_owned());
        }
    }
    let joined = roles.into_iter().collect::<Vec<_>>().join(",");
    if joined.is_empty() {
        "<none>".to_owned()
    } else {
        joined
    }
}

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    // Upstream keeps the last Ready condition when several are listed.
    let mut status: Vec<&str> = arr(node, &["status", "conditions"])
        .iter()
        .rfind(|condition| str_at(condition, &["type"]) == "Ready")
        .map(|condition| {
            if str_at(condition, &["status"]) == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .into_iter()
        .collect();
    if status.is_empty() {
        status.push("Unknown");
    }
    if get(node, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let address = |type_: &str| {
        arr(node, &["status", "addresses"])
            .iter()
            .find(|address| str_at(address, &["type"]) == type_)
            .map_or_else(
                || "<none>".to_owned(),
                |address| str_at(address, &["address"]).to_owned(),
            )
    };
    let info = |field: &str| {
        let value = str_at(node, &["status", "nodeInfo", field]);
        text(if value.is_empty() { "<unknown>" } else { value })
    };
    vec![
        text(name(node)),
        text(status.join(",")),
        text(node_roles(node)),
        age(node, now),
        text(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        text(address("InternalIP")),
        text(address("ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

static NAMESPACE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the namespace"),
        AGE,
    ],
    cells: namespace_cells,
};

fn namespace_cells(namespace: &Value, now: Timestamp) -> Vec<Value> {
    // The v1 API defaults the phase to Active.
    let phase = opt_str(namespace, &["status", "phase"])
        .filter(|phase| !phase.is_empty())
        .unwrap_or("Active");
    vec![text(name(namespace)), text(phase), age(namespace, now)]
}

static CONFIG_MAP: Printer = Printer {
    columns: &[
        NAME,
        col("Data", "string", "Number of keys in data and binaryData."),
        AGE,
    ],
    cells: config_map_cells,
};

fn config_map_cells(config_map: &Value, now: Timestamp) -> Vec<Value> {
    let keys = len_at(config_map, &["data"]) + len_at(config_map, &["binaryData"]);
    vec![
        text(name(config_map)),
        Value::from(keys as i64),
        age(config_map, now),
    ]
}

static SECRET: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "The type of the secret, such as Opaque."),
        col("Data", "string", "Number of keys in data."),
        AGE,
    ],
    cells: secret_cells,
};

fn secret_cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    // The v1 API defaults the type to Opaque and merges stringData into data.
    let secret_type = opt_str(secret, &["type"])
        .filter(|type_| !type_.is_empty())
        .unwrap_or("Opaque");
    let mut keys: BTreeSet<&str> = obj(secret, &["data"])
        .into_iter()
        .flatten()
        .map(|(key, _)| key.as_str())
        .collect();
    keys.extend(
        obj(secret, &["stringData"])
            .into_iter()
            .flatten()
            .map(|(key, _)| key.as_str()),
    );
    vec![
        text(name(secret)),
        text(secret_type),
        Value::from(keys.len() as i64),
        age(secret, now),
    ]
}

static SERVICE_ACCOUNT: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Secrets",
            "string",
            "Number of secrets listed in the service account.",
        ),
        AGE,
    ],
    cells: service_account_cells,
};

fn service_account_cells(account: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        text(name(account)),
        Value::from(arr(account, &["secrets"]).len() as i64),
        age(account, now),
    ]
}

/// The event columns shared by core/v1 and events.k8s.io/v1.
const EVENT_COLUMNS: &[super::Column] = &[
    col(
        "Last Seen",
        "string",
        "Time since the event was last observed.",
    ),
    col("Type", "string", "Type of the event: Normal or Warning."),
    col(
        "Reason",
        "string",
        "Short, machine-readable reason for the event.",
    ),
    col(
        "Object",
        "string",
        "The object the event is about, as kind/name.",
    ),
    wide(
        "Subobject",
        "string",
        "The part of the object the event is about, such as a container.",
    ),
    wide(
        "Source",
        "string",
        "The component (and host) that reported the event.",
    ),
    col(
        "Message",
        "string",
        "Human-readable description of the event.",
    ),
    wide(
        "First Seen",
        "string",
        "Time since the event was first observed.",
    ),
    wide("Count", "string", "Number of times the event occurred."),
    super::Column {
        priority: 1,
        ..NAME
    },
];

static CORE_EVENT: Printer = Printer {
    columns: EVENT_COLUMNS,
    cells: core_event_cells,
};
static EVENTS_EVENT: Printer = Printer {
    columns: EVENT_COLUMNS,
    cells: events_event_cells,
};

/// Where an Event version keeps the fields the printer reads.
struct EventFields {
    regarding: &'static str,
    message: &'static str,
    source: &'static str,
    first_timestamp: &'static str,
    last_timestamp: &'static str,
    count: &'static str,
}

const CORE_EVENT_FIELDS: EventFields = EventFields {
    regarding: "involvedObject",
    message: "message",
    source: "source",
    first_timestamp: "firstTimestamp",
    last_timestamp: "lastTimestamp",
    count: "count",
};

const EVENTS_EVENT_FIELDS: EventFields = EventFields {
    regarding: "regarding",
    message: "note",
    source: "deprecatedSource",
    first_timestamp: "deprecatedFirstTimestamp",
    last_timestamp: "deprecatedLastTimestamp",
    count: "deprecatedCount",
};

fn core_event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    event_cells(event, &CORE_EVENT_FIELDS, now)
}

fn events_event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    event_cells(event, &EVENTS_EVENT_FIELDS, now)
}

fn event_cells(event: &Value, fields: &EventFields, now: Timestamp) -> Vec<Value> {
    let first_seen = match parse_time(get(event, &[fields.first_timestamp])) {
        Some(first) => human_signed_duration(now.duration_since(first)),
        None => since(get(event, &["eventTime"]), now),
    };
    let mut last_seen = match parse_time(get(event, &[fields.last_timestamp])) {
        Some(last) => human_signed_duration(now.duration_since(last)),
        None => first_seen.clone(),
    };
    let mut count = i64_at(event, &[fields.count]);
    if let Some(series) = obj(event, &["series"]) {
        last_seen = since(series.get("lastObservedTime"), now);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        // Singleton events carry no count in the new API.
        count = 1;
    }
    let regarding = at(event, &[fields.regarding]);
    let kind = str_at(regarding, &["kind"]).to_lowercase();
    let object_name = str_at(regarding, &["name"]);
    let target = if object_name.is_empty() {
        kind
    } else {
        format!("{kind}/{object_name}")
    };

    let first_non_empty = |first: &'static str, second: &'static str| {
        let value = str_at(event, &[fields.source, first]);
        if value.is_empty() {
            str_at(event, &[second])
        } else {
            value
        }
    };
    let component = first_non_empty("component", "reportingController");
    let host = first_non_empty("host", "reportingInstance");
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };

    vec![
        text(last_seen),
        text(str_at(event, &["type"])),
        text(str_at(event, &["reason"])),
        text(target),
        text(str_at(regarding, &["fieldPath"])),
        text(source),
        text(str_at(event, &[fields.message]).trim()),
        text(first_seen),
        Value::from(count),
        text(name(event)),
    ]
}

/// Upstream's `GetAccessModesAsString`: `RWO,ROX,RWX,RWOP` in that order.
fn access_modes(modes: &[Value]) -> String {
    let has = |mode: &str| modes.iter().any(|value| value.as_str() == Some(mode));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class of a volume or claim: the beta annotation wins over `spec.storageClassName`.
fn storage_class_of(object: &Value) -> &str {
    opt_str(
        object,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    )
    .unwrap_or_else(|| str_at(object, &["spec", "storageClassName"]))
}

/// The phase, or `Terminating` while the object is being deleted.
fn phase_or_terminating(object: &Value) -> &str {
    if super::fields::is_deleting(object) {
        "Terminating"
    } else {
        str_at(object, &["status", "phase"])
    }
}

static PERSISTENT_VOLUME: Printer = Printer {
    columns: &[
        NAME,
        col("Capacity", "string", "The volume's storage capacity."),
        col(
            "Access Modes",
            "string",
            "How the volume can be mounted: RWO, ROX, RWX, RWOP.",
        ),
        col(
            "Reclaim Policy",
            "string",
            "What happens to the volume when its claim is released.",
        ),
        col("Status", "string", "The phase of the volume."),
        col(
            "Claim",
            "string",
            "The claim bound to the volume, as namespace/name.",
        ),
        col("StorageClass", "string", "StorageClass of the pv"),
        col(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pv",
        ),
        col(
            "Reason",
            "string",
            "Why the volume is in its phase, if it failed.",
        ),
        AGE,
        wide(
            "VolumeMode",
            "string",
            "Whether the volume is a Filesystem or a Block device.",
        ),
    ],
    cells: persistent_volume_cells,
};

fn persistent_volume_cells(volume: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match obj(volume, &["spec", "claimRef"]) {
        Some(_) => format!(
            "{}/{}",
            str_at(volume, &["spec", "claimRef", "namespace"]),
            str_at(volume, &["spec", "claimRef", "name"])
        ),
        None => String::new(),
    };
    vec![
        text(name(volume)),
        text(quantity(get(volume, &["spec", "capacity", "storage"]))),
        text(access_modes(arr(volume, &["spec", "accessModes"]))),
        text(str_at(volume, &["spec", "persistentVolumeReclaimPolicy"])),
        text(phase_or_terminating(volume)),
        text(claim),
        text(storage_class_of(volume)),
        text(opt_str(volume, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        text(str_at(volume, &["status", "reason"])),
        age(volume, now),
        text(opt_str(volume, &["spec", "volumeMode"]).unwrap_or("<unset>")),
    ]
}

static PERSISTENT_VOLUME_CLAIM: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The phase of the claim."),
        col("Volume", "string", "The volume bound to the claim."),
        col("Capacity", "string", "The bound volume's capacity."),
        col(
            "Access Modes",
            "string",
            "How the bound volume can be mounted: RWO, ROX, RWX, RWOP.",
        ),
        col("StorageClass", "string", "StorageClass of the pvc"),
        col(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pvc",
        ),
        AGE,
        wide(
            "VolumeMode",
            "string",
            "Whether the claim wants a Filesystem or a Block device.",
        ),
    ],
    cells: persistent_volume_claim_cells,
};

fn persistent_volume_claim_cells(claim: &Value, now: Timestamp) -> Vec<Value> {
    let volume_name = str_at(claim, &["spec", "volumeName"]);
    let (capacity, modes) = if volume_name.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(get(claim, &["status", "capacity", "storage"])),
            access_modes(arr(claim, &["status", "accessModes"])),
        )
    };
    vec![
        text(name(claim)),
        text(phase_or_terminating(claim)),
        text(volume_name),
        text(capacity),
        text(modes),
        text(storage_class_of(claim)),
        text(opt_str(claim, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        age(claim, now),
        text(opt_str(claim, &["spec", "volumeMode"]).unwrap_or("<unset>")),
    ]
}

static RESOURCE_QUOTA: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Request",
            "string",
            "Used and hard amounts of the quota's request (non-limits) resources.",
        ),
        col(
            "Limit",
            "string",
            "Used and hard amounts of the quota's limits.* resources.",
        ),
        AGE,
    ],
    cells: resource_quota_cells,
};

fn resource_quota_cells(quota: &Value, now: Timestamp) -> Vec<Value> {
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    let mut resources: Vec<&String> = obj(quota, &["status", "hard"])
        .into_iter()
        .flatten()
        .map(|(key, _)| key)
        .collect();
    resources.sort();
    for resource in resources {
        let used = quantity(get(quota, &["status", "used", resource]));
        let hard = quantity(get(quota, &["status", "hard", resource]));
        let entry = format!("{resource}: {used}/{hard}");
        let is_limit = resource
            .split_once('.')
            .is_some_and(|(prefix, _)| prefix == "limits");
        if is_limit {
            limits.push(entry)
        } else {
            requests.push(entry)
        }
    }
    vec![
        text(name(quota)),
        text(requests.join(", ")),
        text(limits.join(", ")),
        age(quota, now),
    ]
}
