//! Service addresses, as upstream's legacy allocators hand them out: ClusterIPs from the
//! service CIDR and NodePorts from the NodePort range.
//!
//! The write path calls in at three points: [`allocate`] before a Service is committed
//! (create and update; the returned [`Allocation`] is finished with the commit's outcome,
//! so a failed write gives its addresses back and a successful update frees the ones the
//! Service no longer holds), [`drop_type_dependent_fields`] before an update is validated,
//! and [`release`] after a Service is deleted. Allocations live in the store next to the
//! cluster's objects (`/<cluster>/ranges/…`), changed only by compare-and-swap, and
//! [`repair`] rebuilds them from the Services so a crash between allocation and commit
//! never leaks an address for long. [`kubernetes_service`] keeps the `default/kubernetes`
//! Service pointing at the API server.

pub mod kubernetes_service;
pub mod range;
pub mod repair;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use apimachinery::kinds::KindInfo;
use apimachinery::status::{ApiError, StatusCause};
use ipnet::IpNet;
use serde_json::{Value, json};
use store::Backend;

use self::range::{AllocError, PersistedRange, Range};
use crate::control_plane::ControlPlane;

/// The addresses a cluster's Services get.
#[derive(Clone, Debug)]
pub struct ServiceNetwork {
    /// Where ClusterIPs come from (upstream's `--service-cluster-ip-range`).
    pub cidr: IpNet,
    /// Where NodePorts come from, inclusive (`--service-node-port-range`).
    pub node_ports: (u16, u16),
    /// The address the `kubernetes` Service's endpoints point at; none leaves them out.
    pub advertise: Option<SocketAddr>,
    /// How often leaked allocations are looked for (upstream: every 3 minutes).
    pub repair_interval: Duration,
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        Self {
            cidr: "10.43.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
            node_ports: (30000, 32767),
            advertise: None,
            repair_interval: Duration::from_secs(180),
        }
    }
}

impl ServiceNetwork {
    /// Checks the CIDR as upstream checks `--service-cluster-ip-range`: at most 20 host
    /// bits (a /12 for IPv4, a /108 for IPv6) and room for more than the `kubernetes`
    /// Service.
    pub fn validate(&self) -> Result<(), String> {
        let host_bits = self.cidr.max_prefix_len() - self.cidr.prefix_len();
        if host_bits > 20 {
            return Err(format!(
                "service CIDR {} is too large: at most 20 host bits (/{} here)",
                self.cidr,
                self.cidr.max_prefix_len() - 20
            ));
        }
        if Range::Ips(self.cidr).size() < 2 {
            return Err(format!("service CIDR {} is too small", self.cidr));
        }
        if self.cidr.network() != self.cidr.addr() {
            return Err(format!(
                "service CIDR {} has host bits set (network {})",
                self.cidr,
                self.cidr.trunc()
            ));
        }
        if self.node_ports.0 > self.node_ports.1 || self.node_ports.0 == 0 {
            return Err(format!(
                "invalid NodePort range {}-{}",
                self.node_ports.0, self.node_ports.1
            ));
        }
        Ok(())
    }

    /// `IPv4` or `IPv6`: the family of the service CIDR.
    pub fn family(&self) -> &'static str {
        family_of(&self.cidr.addr())
    }

    /// The ClusterIP of the `kubernetes` Service: the first address of the CIDR.
    pub fn kubernetes_ip(&self) -> Option<IpAddr> {
        Range::Ips(self.cidr).ip_at(0)
    }
}

/// One cluster's allocators.
pub struct Allocators {
    /// The configuration.
    pub network: ServiceNetwork,
    ips: PersistedRange,
    ports: PersistedRange,
    leaks: std::sync::Mutex<repair::Leaks>,
    loop_started: std::sync::atomic::AtomicBool,
}

impl Allocators {
    /// Allocators of cluster `cluster` over `backend`.
    pub fn new(backend: Arc<dyn Backend>, cluster: &str, network: ServiceNetwork) -> Self {
        Self {
            ips: PersistedRange::new(
                backend.clone(),
                format!("/{cluster}/ranges/serviceips"),
                Range::Ips(network.cidr),
            ),
            ports: PersistedRange::new(
                backend,
                format!("/{cluster}/ranges/servicenodeports"),
                Range::Ports(network.node_ports.0, network.node_ports.1),
            ),
            network,
            leaks: Default::default(),
            loop_started: Default::default(),
        }
    }
}

/// What one write allocated, to be finished with the write's outcome.
#[must_use = "finish the allocation with the commit's outcome"]
#[derive(Default)]
pub struct Allocation<'a> {
    allocators: Option<&'a Allocators>,
    taken_ips: Vec<usize>,
    taken_ports: Vec<usize>,
    stale_ips: Vec<usize>,
    stale_ports: Vec<usize>,
}

impl Allocation<'_> {
    /// After the write: a committed write frees what the Service no longer holds; a failed
    /// one gives back what was taken for it. A store failure here only leaks addresses
    /// until the repair loop finds them.
    pub async fn finish(self, committed: bool) {
        let Some(allocators) = self.allocators else {
            return;
        };
        let (ips, ports) = if committed {
            (self.stale_ips, self.stale_ports)
        } else {
            (self.taken_ips, self.taken_ports)
        };
        if let Err(e) = allocators.ips.release(&ips).await {
            tracing::warn!(error = %e, "releasing service IPs failed; the repair loop will");
        }
        if let Err(e) = allocators.ports.release(&ports).await {
            tracing::warn!(error = %e, "releasing node ports failed; the repair loop will");
        }
    }
}

/// Whether `kind` is core/v1 Service.
pub fn is_service(kind: &KindInfo) -> bool {
    kind.group.is_empty() && kind.kind == "Service"
}

/// Allocates what a Service being created (`old` is `None`) or updated needs: honours
/// requested addresses (422 when taken or out of range), allocates the missing ones, sets
/// `clusterIPs`, `ipFamilies` and `ipFamilyPolicy`. A dry run checks without allocating.
pub async fn allocate<'a>(
    allocators: &'a Allocators,
    kind: &KindInfo,
    old: Option<&Value>,
    svc: &mut Value,
    dry_run: bool,
) -> Result<Allocation<'a>, ApiError> {
    if !is_service(kind) {
        return Ok(Allocation::default());
    }
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let invalid = |field: &str, message: String| {
        ApiError::invalid(
            "",
            "Service",
            &name,
            vec![StatusCause::new("FieldValueInvalid", field, message)],
        )
    };
    normalize_cluster_ips(svc, old);
    if let Some(old) = old {
        patch_allocated_values(svc, old);
    }
    ip_families(&allocators.network, svc).map_err(|(field, message)| invalid(&field, message))?;
    let mut op = Op::new(allocators, dry_run).await?;
    let result = op.allocate_for(old, svc).await;
    match result {
        Ok(()) => Ok(op.into_allocation(old, svc)),
        Err((field, message)) => {
            op.into_allocation(None, svc).finish(false).await;
            Err(match field {
                Some(field) => invalid(&field, message),
                None => ApiError::internal(message),
            })
        }
    }
}

/// Frees the addresses of a deleted Service.
pub async fn release(allocators: &Allocators, kind: &KindInfo, svc: &Value) {
    if !is_service(kind) {
        return;
    }
    let held = Held::of(allocators, svc);
    Allocation {
        allocators: Some(allocators),
        stale_ips: held.ips.into_iter().collect(),
        stale_ports: held.ports.into_iter().collect(),
        ..Default::default()
    }
    .finish(true)
    .await;
}

/// Upstream's `dropTypeDependentFields`: on an update that changes the type, fields the
/// new type does not use and the user left unchanged are cleared (so switching NodePort →
/// ClusterIP needs no manual removal of the node ports).
pub fn drop_type_dependent_fields(kind: &KindInfo, svc: &mut Value, old: &Value) {
    if !is_service(kind) {
        return;
    }
    let spec_of = |v: &Value, key: &str| v.pointer(&format!("/spec/{key}")).cloned();
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let new_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    let old_type = type_of(old).to_owned();
    let same = |spec: &serde_json::Map<String, Value>, key: &str| {
        spec.get(key).cloned().filter(|v| !v.is_null())
            == spec_of(old, key).filter(|v| !v.is_null())
    };
    if needs_cluster_ip(&old_type) && !needs_cluster_ip(&new_type) {
        if same(spec, "clusterIP") && same(spec, "clusterIPs") {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        if same(spec, "ipFamilies") {
            spec.remove("ipFamilies");
        }
        if same(spec, "ipFamilyPolicy") {
            spec.remove("ipFamilyPolicy");
        }
    }
    if needs_node_port(&old_type) && !needs_node_port(&new_type) {
        let old_ports: Vec<i64> = node_ports_of(old);
        let new_ports: Vec<i64> = spec
            .get("ports")
            .and_then(Value::as_array)
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| p["nodePort"].as_i64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        if old_ports == new_ports
            && let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut)
        {
            for port in ports {
                if let Some(p) = port.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
    let old_hc = old.pointer("/spec/healthCheckNodePort").cloned();
    if needs_health_check_port_in(old)
        && !needs_health_check_port(&new_type, spec)
        && spec.get("healthCheckNodePort").cloned() == old_hc
    {
        spec.remove("healthCheckNodePort");
    }
    if new_type != "LoadBalancer" {
        if same(spec, "allocateLoadBalancerNodePorts") {
            spec.remove("allocateLoadBalancerNodePorts");
        }
        if same(spec, "loadBalancerClass") {
            spec.remove("loadBalancerClass");
        }
    }
    let external = new_type == "NodePort"
        || new_type == "LoadBalancer"
        || spec
            .get("externalIPs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if !external && same(spec, "externalTrafficPolicy") {
        spec.remove("externalTrafficPolicy");
    }
    if new_type != "LoadBalancer"
        && let Some(status) = svc.get_mut("status").and_then(Value::as_object_mut)
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}

fn type_of(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn needs_cluster_ip(ty: &str) -> bool {
    ty != "ExternalName"
}

fn needs_node_port(ty: &str) -> bool {
    ty == "NodePort" || ty == "LoadBalancer"
}

/// Whether new node ports are allocated automatically (for LoadBalancer, unless
/// `allocateLoadBalancerNodePorts: false`).
fn allocates_node_ports(svc: &Value) -> bool {
    match type_of(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

fn needs_health_check_port(ty: &str, spec: &serde_json::Map<String, Value>) -> bool {
    ty == "LoadBalancer"
        && spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
}

fn needs_health_check_port_in(svc: &Value) -> bool {
    svc.get("spec")
        .and_then(Value::as_object)
        .is_some_and(|spec| needs_health_check_port(type_of(svc), spec))
}

fn node_ports_of(svc: &Value) -> Vec<i64> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| p["nodePort"].as_i64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

fn family_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Keeps `clusterIP` and `clusterIPs` in step, as upstream's `normalizeClusterIPs`.
fn normalize_cluster_ips(svc: &mut Value, old: Option<&Value>) {
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let ips: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    match old {
        None => {
            if !ip.is_empty() && ips.is_empty() {
                spec.insert("clusterIPs".into(), json!([ip]));
            } else if ip.is_empty() && !ips.is_empty() {
                spec.insert("clusterIP".into(), json!(ips[0]));
            }
        }
        Some(old) => {
            let old_ip = old
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("");
            let old_ips = old
                .pointer("/spec/clusterIPs")
                .cloned()
                .unwrap_or(json!([]));
            let same_ips = spec.get("clusterIPs").cloned().unwrap_or(json!([])) == old_ips;
            if ips.is_empty() && old_ips.as_array().is_some_and(|a| !a.is_empty()) && old_ip == ip {
                spec.insert("clusterIPs".into(), old_ips.clone());
            }
            if old_ip != ip {
                if !old_ip.is_empty() && ip.is_empty() && same_ips {
                    spec.remove("clusterIPs");
                } else if same_ips {
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
            }
        }
    }
}

/// Upstream's `patchAllocatedValues`: an update that leaves out allocated values (a
/// client replacing the object from a manifest) keeps the ones the Service holds.
fn patch_allocated_values(svc: &mut Value, old: &Value) {
    let new_type = type_of(svc).to_owned();
    let old_type = type_of(old);
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if needs_cluster_ip(old_type) && needs_cluster_ip(&new_type) {
        let empty = |v: Option<&Value>| match v {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        };
        for key in ["clusterIP", "clusterIPs"] {
            if empty(spec.get(key))
                && let Some(v) = old
                    .pointer(&format!("/spec/{key}"))
                    .filter(|v| !empty(Some(v)))
            {
                spec.insert(key.into(), v.clone());
            }
        }
    }
    if needs_node_port(old_type) && needs_node_port(&new_type) {
        let old_ports = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let new_numbers: BTreeSet<i64> = spec
            .get("ports")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(|p| p["nodePort"].as_i64()).collect())
            .unwrap_or_default();
        let old_numbers: BTreeSet<i64> = old_ports
            .iter()
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        let used: BTreeSet<i64> = old_numbers.intersection(&new_numbers).copied().collect();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports {
                if port["nodePort"].as_i64().unwrap_or(0) != 0 {
                    continue;
                }
                let name = port["name"].as_str().unwrap_or("");
                if let Some(old_value) = old_ports
                    .iter()
                    .find(|p| p["name"].as_str().unwrap_or("") == name)
                    .and_then(|p| p["nodePort"].as_i64())
                    .filter(|v| *v != 0 && !used.contains(v))
                {
                    port["nodePort"] = json!(old_value);
                }
            }
        }
    }
    let hc_needed_both =
        needs_health_check_port_in(old) && needs_health_check_port(&new_type, spec);
    if hc_needed_both
        && spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
        && let Some(v) = old.pointer("/spec/healthCheckNodePort").cloned()
    {
        spec.insert("healthCheckNodePort".into(), v);
    }
}

/// Sets `ipFamilies` and `ipFamilyPolicy` on a single-stack cluster, rejecting what the
/// cluster cannot give, as upstream's `initIPFamilyFields` does.
fn ip_families(network: &ServiceNetwork, svc: &mut Value) -> Result<(), (String, String)> {
    let family = network.family();
    let ty = type_of(svc).to_owned();
    let headless_selectorless = svc.pointer("/spec/clusterIP").and_then(Value::as_str)
        == Some("None")
        && svc
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_none_or(|s| s.is_empty());
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if !needs_cluster_ip(&ty) {
        spec.remove("ipFamilies");
        spec.remove("ipFamilyPolicy");
        return Ok(());
    }
    let policy = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match policy.as_str() {
        "" | "SingleStack" | "PreferDualStack" => {}
        "RequireDualStack" if headless_selectorless => {}
        "RequireDualStack" => {
            return Err((
                "spec.ipFamilyPolicy".into(),
                "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services".into(),
            ));
        }
        // Validation reports unknown values.
        _ => {}
    }
    let requested: Vec<String> = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for (i, f) in requested.iter().enumerate() {
        if f != family {
            return Err((
                format!("spec.ipFamilies[{i}]"),
                format!("Invalid value: {f:?}: not configured on this cluster"),
            ));
        }
    }
    let ips: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            continue;
        }
        if i > 0 {
            return Err((
                format!("spec.clusterIPs[{i}]"),
                format!(
                    "Invalid value: {ip:?}: this cluster is not configured for dual-stack services"
                ),
            ));
        }
        if let Ok(parsed) = ip.parse::<IpAddr>()
            && family_of(&parsed) != family
        {
            return Err((
                format!("spec.clusterIPs[{i}]"),
                format!(
                    "Invalid value: {ip:?}: expected an {family} value as indicated by `ipFamilies`"
                ),
            ));
        }
    }
    if policy.is_empty() {
        let default = if headless_selectorless {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        spec.insert("ipFamilyPolicy".into(), json!(default));
    }
    spec.insert("ipFamilies".into(), json!([family]));
    Ok(())
}

/// The offsets a Service holds in the two ranges.
#[derive(Default)]
struct Held {
    ips: BTreeSet<usize>,
    ports: BTreeSet<usize>,
}

impl Held {
    fn of(allocators: &Allocators, svc: &Value) -> Self {
        let mut held = Held::default();
        if needs_cluster_ip(type_of(svc)) {
            for ip in svc
                .pointer("/spec/clusterIPs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .chain(svc.pointer("/spec/clusterIP"))
                .filter_map(Value::as_str)
            {
                if let Some(o) = ip
                    .parse()
                    .ok()
                    .and_then(|ip| allocators.ips.range.ip_offset(ip))
                {
                    held.ips.insert(o);
                }
            }
        }
        let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
        for port in ports
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_i64())
            .chain(
                svc.pointer("/spec/healthCheckNodePort")
                    .and_then(Value::as_i64),
            )
        {
            if let Some(o) = allocators.ports.range.port_offset(port) {
                held.ports.insert(o);
            }
        }
        held
    }
}

/// One write's allocations in progress: real ones, or checks against a snapshot for a dry
/// run.
struct Op<'a> {
    allocators: &'a Allocators,
    dry: Option<(range::Bitmap, range::Bitmap)>,
    taken_ips: Vec<usize>,
    taken_ports: Vec<usize>,
}

type OpError = (Option<String>, String);

impl<'a> Op<'a> {
    async fn new(allocators: &'a Allocators, dry_run: bool) -> Result<Self, ApiError> {
        let dry = if dry_run {
            let ips = allocators
                .ips
                .read()
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let ports = allocators
                .ports
                .read()
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Some((ips.bitmap, ports.bitmap))
        } else {
            None
        };
        Ok(Self {
            allocators,
            dry,
            taken_ips: Vec::new(),
            taken_ports: Vec::new(),
        })
    }

    async fn take(&mut self, ports: bool, offset: usize) -> Result<(), AllocError> {
        let (range, dry, taken) = if ports {
            (
                &self.allocators.ports,
                self.dry.as_mut().map(|d| &mut d.1),
                &mut self.taken_ports,
            )
        } else {
            (
                &self.allocators.ips,
                self.dry.as_mut().map(|d| &mut d.0),
                &mut self.taken_ips,
            )
        };
        match dry {
            Some(bitmap) => bitmap
                .set(offset)
                .then_some(())
                .ok_or(AllocError::Allocated(range.what())),
            None => {
                range.allocate(offset).await?;
                taken.push(offset);
                Ok(())
            }
        }
    }

    async fn take_next(&mut self, ports: bool) -> Result<usize, AllocError> {
        let (range, dry, taken) = if ports {
            (
                &self.allocators.ports,
                self.dry.as_mut().map(|d| &mut d.1),
                &mut self.taken_ports,
            )
        } else {
            (
                &self.allocators.ips,
                self.dry.as_mut().map(|d| &mut d.0),
                &mut self.taken_ips,
            )
        };
        match dry {
            Some(bitmap) => {
                let o = bitmap
                    .next_free(range.range.dynamic_start(), random_u64())
                    .ok_or(AllocError::Full)?;
                bitmap.set(o);
                Ok(o)
            }
            None => {
                let o = range.allocate_next().await?;
                taken.push(o);
                Ok(o)
            }
        }
    }

    /// Allocates the Service's ClusterIP and node ports, writing allocated values into it.
    async fn allocate_for(&mut self, old: Option<&Value>, svc: &mut Value) -> Result<(), OpError> {
        let held = old
            .map(|o| Held::of(self.allocators, o))
            .unwrap_or_default();
        self.allocate_cluster_ip(&held, svc).await?;
        self.allocate_node_ports(old.is_none(), &held, svc).await
    }

    async fn allocate_cluster_ip(&mut self, held: &Held, svc: &mut Value) -> Result<(), OpError> {
        if !needs_cluster_ip(type_of(svc)) {
            return Ok(());
        }
        let requested = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let spec = &mut svc["spec"];
        if requested == "None" {
            spec["clusterIPs"] = json!(["None"]);
            return Ok(());
        }
        let ips_field = |ip: &str| format!("[]string{{{ip:?}}}");
        if requested.is_empty() {
            let offset = self
                .take_next(false)
                .await
                .map_err(|e| (None, format!("failed to allocate a serviceIP: {e}")))?;
            let ip = self
                .allocators
                .ips
                .range
                .ip_at(offset)
                .map(|ip| ip.to_string())
                .unwrap_or_default();
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
            return Ok(());
        }
        // Validation has already rejected what does not parse.
        let Ok(ip) = requested.parse::<IpAddr>() else {
            return Err((
                Some("spec.clusterIPs".into()),
                format!(
                    "Invalid value: {}: failed to parse IP",
                    ips_field(&requested)
                ),
            ));
        };
        let range = &self.allocators.ips.range;
        let Some(offset) = range.ip_offset(ip) else {
            return Err((
                Some("spec.clusterIPs".into()),
                format!(
                    "Invalid value: {}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                    ips_field(&requested),
                    range.describe()
                ),
            ));
        };
        if held.ips.contains(&offset) {
            return Ok(());
        }
        self.take(false, offset).await.map_err(|e| {
            (
                Some("spec.clusterIPs".into()),
                format!(
                    "Invalid value: {}: failed to allocate IP {ip}: {e}",
                    ips_field(&requested)
                ),
            )
        })?;
        spec["clusterIPs"] = json!([requested]);
        Ok(())
    }

    async fn allocate_node_ports(
        &mut self,
        creating: bool,
        held: &Held,
        svc: &mut Value,
    ) -> Result<(), OpError> {
        let ty = type_of(svc).to_owned();
        if !needs_node_port(&ty) {
            return Ok(());
        }
        let automatic = allocates_node_ports(svc);
        let mut done: BTreeSet<usize> = BTreeSet::new();
        // On create, ports with the same number share a node port (TCP and UDP of DNS).
        let mut by_port_number: std::collections::HashMap<i64, i64> = Default::default();
        let n_ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..n_ports {
            let port = &svc["spec"]["ports"][i];
            let number = port["port"].as_i64().unwrap_or(0);
            let mut node_port = port["nodePort"].as_i64().unwrap_or(0);
            if node_port == 0 && !automatic {
                continue;
            }
            if node_port == 0 && creating {
                node_port = by_port_number
                    .get(&number)
                    .copied()
                    .or_else(|| {
                        svc["spec"]["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .skip(i + 1)
                            .find(|p| p["port"].as_i64() == Some(number))
                            .and_then(|p| p["nodePort"].as_i64())
                            .filter(|n| *n != 0)
                    })
                    .unwrap_or(0);
            }
            let field = format!("spec.ports[{i}].nodePort");
            let node_port = self.node_port(node_port, held, &mut done, &field).await?;
            svc["spec"]["ports"][i]["nodePort"] = json!(node_port);
            by_port_number.entry(number).or_insert(node_port);
        }
        let needs_hc = svc
            .get("spec")
            .and_then(Value::as_object)
            .is_some_and(|spec| needs_health_check_port(&ty, spec));
        if needs_hc {
            let requested = svc
                .pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let port = self
                .node_port(requested, held, &mut done, "spec.healthCheckNodePort")
                .await?;
            svc["spec"]["healthCheckNodePort"] = json!(port);
        }
        Ok(())
    }

    /// Allocates `requested` (or any port when 0) unless this Service already holds it.
    async fn node_port(
        &mut self,
        requested: i64,
        held: &Held,
        done: &mut BTreeSet<usize>,
        field: &str,
    ) -> Result<i64, OpError> {
        let range = self.allocators.ports.range.clone();
        if requested == 0 {
            let offset = self
                .take_next(true)
                .await
                .map_err(|e| (None, format!("failed to allocate a nodePort: {e}")))?;
            done.insert(offset);
            return Ok(range.port_at(offset).unwrap_or(0));
        }
        let Some(offset) = range.port_offset(requested) else {
            return Err((
                Some(field.to_owned()),
                format!(
                    "Invalid value: {requested}: provided port is not in the valid range. The range of valid ports is {}",
                    range.describe()
                ),
            ));
        };
        if held.ports.contains(&offset) || done.contains(&offset) {
            return Ok(requested);
        }
        self.take(true, offset).await.map_err(|e| {
            (
                Some(field.to_owned()),
                format!("Invalid value: {requested}: {e}"),
            )
        })?;
        done.insert(offset);
        Ok(requested)
    }

    /// The finished operation: what to give back on failure, and (for an update) what
    /// the Service held before and holds no more, to free on success.
    fn into_allocation(self, old: Option<&Value>, svc: &Value) -> Allocation<'a> {
        let (stale_ips, stale_ports) = match old {
            Some(old) if self.dry.is_none() => {
                let before = Held::of(self.allocators, old);
                let after = Held::of(self.allocators, svc);
                (
                    before.ips.difference(&after.ips).copied().collect(),
                    before.ports.difference(&after.ports).copied().collect(),
                )
            }
            _ => (Vec::new(), Vec::new()),
        };
        Allocation {
            allocators: Some(self.allocators),
            taken_ips: self.taken_ips,
            taken_ports: self.taken_ports,
            stale_ips,
            stale_ports,
        }
    }
}

/// What a cluster's bootstrap does for Services: a repair run (so a restart on a datastore
/// whose bitmaps are stale or of another CIDR starts from the Services that exist), the
/// `kubernetes` Service, and the loop that repeats both.
pub async fn bootstrap(cp: &Arc<ControlPlane>) -> Result<(), ApiError> {
    repair::run_once(cp)
        .await
        .map_err(|e| ApiError::internal(format!("repairing service allocations: {e}")))?;
    kubernetes_service::ensure(cp).await?;
    spawn_loop(cp);
    Ok(())
}

/// Runs repair and the `kubernetes` Service check every `repair_interval`, until the
/// control plane is dropped.
fn spawn_loop(cp: &Arc<ControlPlane>) {
    let allocators = cp.services();
    if allocators
        .loop_started
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    let interval = allocators
        .network
        .repair_interval
        .max(Duration::from_millis(100));
    let weak = Arc::downgrade(cp);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(cp) = weak.upgrade() else { break };
            if let Err(e) = repair::run_once(&cp).await {
                tracing::warn!(cluster = %cp.id, error = %e, "service allocation repair failed");
            }
            if let Err(e) = kubernetes_service::ensure(&cp).await {
                tracing::warn!(cluster = %cp.id, error = %e.message, "reconciling the kubernetes Service failed");
            }
        }
    });
}

/// A random number for where allocation scans start (no cryptographic need).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests;
