//! What the proxy programs, read from Services and EndpointSlices: one entry per service
//! port, with the addresses it answers on and its usable endpoints, chosen as upstream's
//! `CategorizeEndpoints` does (ready endpoints; when none is ready, the serving ones that are
//! terminating, so a rolling update never drops traffic; terminating ones are otherwise
//! drained: they get no new connections).

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// One port of one Service, as the proxy programs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The port's name (may be empty for a single-port Service).
    pub port_name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The Service port.
    pub port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
    /// ClusterIPs (none for headless and ExternalName Services).
    pub cluster_ips: Vec<IpAddr>,
    /// External addresses: `spec.externalIPs` and the LoadBalancer ingress IPs.
    pub external_ips: Vec<IpAddr>,
    /// The ClientIP session affinity timeout, if affinity is on.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// Every endpoint of the port, with its conditions.
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint address for one service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The address.
    pub ip: IpAddr,
    /// The target port.
    pub port: u16,
    /// The node the endpoint runs on.
    pub node: Option<String>,
    /// `conditions.ready` (unset counts as ready).
    pub ready: bool,
    /// `conditions.serving` (unset: as `ready`).
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
}

impl ServicePort {
    /// `ns/name/proto/port-name`, as upstream names service ports in chains.
    pub fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            self.port.to_string()
        } else {
            self.port_name.clone()
        };
        format!("{}/{}/{}/{port}", self.namespace, self.name, self.protocol)
    }

    /// The endpoints that take new connections from anywhere in the cluster.
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter())
    }

    /// The usable endpoints on `node`.
    pub fn local_endpoints(&self, node: &str) -> Vec<&Endpoint> {
        usable(
            self.endpoints
                .iter()
                .filter(|e| e.node.as_deref() == Some(node)),
        )
    }
}

fn usable<'a>(endpoints: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = endpoints.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.filter(|e| e.serving && e.terminating).collect()
}

/// The service ports of `services`, with endpoints from `slices`.
pub fn service_ports(services: &[&Service], slices: &[&EndpointSlice]) -> Vec<ServicePort> {
    let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        if let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.as_deref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name")),
        ) {
            slices_by_service
                .entry((ns, svc.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .fold(Vec::new(), |mut ips, ip| {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
                ips
            });
        // Headless Services are not proxied.
        if cluster_ips.is_empty() {
            continue;
        }
        let mut external_ips: Vec<IpAddr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if spec.type_.as_deref() == Some("LoadBalancer") {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            external_ips.extend(
                ingress
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.ip.as_deref())
                    .filter_map(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10800)
        });
        let service_slices = slices_by_service
            .get(&(ns, name))
            .map_or(&[][..], Vec::as_slice);
        for port in spec.ports.iter().flatten() {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let protocol = port
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .to_ascii_lowercase();
            let port_name = port.name.clone().unwrap_or_default();
            out.push(ServicePort {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                port_name: port_name.clone(),
                protocol: protocol.clone(),
                port: number,
                node_port: port
                    .node_port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0),
                cluster_ips: cluster_ips.clone(),
                external_ips: external_ips.clone(),
                affinity_timeout,
                external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                endpoints: endpoints_for(service_slices, &port_name, &protocol),
            });
        }
    }
    out.sort_by_key(ServicePort::id);
    out
}

/// The endpoints of the slices' port named `port_name` with `protocol`.
fn endpoints_for(slices: &[&EndpointSlice], port_name: &str, protocol: &str) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(protocol)
        }) else {
            continue;
        };
        let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            // One address per endpoint is what the API allows; duplicates across slices
            // (mid-update) are counted once.
            if let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
                && !out.iter().any(|e| e.ip == ip && e.port == number)
            {
                out.push(Endpoint {
                    ip,
                    port: number,
                    node: endpoint.node_name.clone(),
                    ready,
                    serving,
                    terminating,
                });
            }
        }
    }
    out.sort_by_key(|e| (e.ip, e.port));
    out
}
