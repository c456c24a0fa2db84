//! Announcing LoadBalancer addresses on the network, as MetalLB's layer-2 mode does: the
//! node that announces an address holds it as a host address on the loopback device
//! (labelled `lo:<name>`, so ours are told apart and flushed together; unlike a dummy
//! link this needs no kernel module), and with Linux's default `arp_ignore=0` the kernel
//! answers ARP (and NDP) for it on the node's links. Traffic for it then reaches the node,
//! where the proxy's rules send it to the Service.
//!
//! Exactly one node announces each address, or neighbours would see it move back and
//! forth. Every node computes the same choice from the same objects: the lowest node name
//! among the Service's ready endpoints (for `externalTrafficPolicy: Local` that is also a
//! node that can serve it locally). An address without ready endpoints is not announced.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The addresses this node should hold: ingress IPs from the pool of the Services whose
/// announcer it is.
pub fn wanted(
    node: &str,
    pool: &[IpNet],
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> BTreeSet<IpAddr> {
    let mut wanted = BTreeSet::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
            continue;
        }
        let (Some(namespace), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            continue;
        };
        let ready_nodes: HashSet<&str> = slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_ref() == Some(namespace)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        == Some(name)
            })
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| e.node_name.as_deref())
            .collect();
        if ready_nodes.iter().min() != Some(&node) {
            continue;
        }
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for ip in ingress
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok())
            .filter(|ip| pool.iter().any(|net| net.contains(ip)))
        {
            wanted.insert(ip);
        }
    }
    wanted
}

/// Keeps the announced addresses on the loopback device in step with [`wanted`].
pub struct Announcer {
    label: String,
    ip_command: Vec<String>,
    /// What the label holds now; `None` until it was flushed of a previous run's addresses.
    held: Option<BTreeSet<IpAddr>>,
}

impl Announcer {
    /// An announcer whose addresses carry `label` (`lo:` and at most 15 characters, e.g.
    /// `lo:kumo`), running `ip_command` (`["ip"]`; tests prefix `ip netns exec NAME`).
    pub fn new(label: &str, ip_command: Vec<String>) -> Self {
        Self {
            label: label.to_owned(),
            ip_command,
            held: None,
        }
    }

    /// Makes the label hold exactly `wanted`.
    pub async fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> anyhow::Result<()> {
        if self.held.is_none() {
            // Addresses a previous run left are not known here: start clean.
            self.flush().await?;
            self.held = Some(BTreeSet::new());
        }
        let held = self.held.clone().unwrap_or_default();
        for ip in held.difference(wanted) {
            self.address("del", ip).await?;
            tracing::info!(%ip, "stopped announcing a LoadBalancer address");
            self.held.get_or_insert_default().remove(ip);
        }
        for ip in wanted.difference(&held) {
            self.address("add", ip).await?;
            tracing::info!(%ip, "announcing a LoadBalancer address");
            self.held.get_or_insert_default().insert(*ip);
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let label = self.label.clone();
        self.ip(&["addr", "flush", "dev", "lo", "label", &label])
            .await
    }

    async fn address(&mut self, verb: &str, ip: &IpAddr) -> anyhow::Result<()> {
        let label = self.label.clone();
        let prefix = host_prefix(ip);
        match ip {
            IpAddr::V4(_) => {
                self.ip(&["addr", verb, &prefix, "dev", "lo", "label", &label])
                    .await
            }
            // IPv6 addresses have no labels; they are told apart by being in the pool.
            IpAddr::V6(_) => self.ip(&["addr", verb, &prefix, "dev", "lo"]).await,
        }
    }

    async fn ip(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let output = tokio::process::Command::new(&self.ip_command[0])
            .args(&self.ip_command[1..])
            .args(args)
            .output()
            .await?;
        if !output.status.success() {
            // A failed step leaves the state unknown: start over on the next sync.
            self.held = None;
            anyhow::bail!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

fn host_prefix(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, ip: &str, class: Option<&str>) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": class},
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
            }))
            .expect("service"),
        )
    }

    fn slice(service: &str, endpoints: &[(&str, bool)]) -> Arc<EndpointSlice> {
        let endpoints: Vec<_> = endpoints
            .iter()
            .enumerate()
            .map(|(i, (node, ready))| {
                json!({"addresses": [format!("10.42.0.{}", i + 2)], "nodeName": node,
                       "conditions": {"ready": ready}})
            })
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{service}-x"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "endpoints": endpoints,
            }))
            .expect("slice"),
        )
    }

    #[test]
    fn one_node_announces_each_address_with_ready_endpoints() {
        let pool = vec!["192.0.2.0/28".parse().expect("pool")];
        let services = vec![
            service("a", "192.0.2.1", None),
            service("b", "192.0.2.2", None),
            service("c", "192.0.2.3", None),
            service("other-class", "192.0.2.4", Some("example.com/lb")),
            service("outside-pool", "198.51.100.1", None),
        ];
        let slices = vec![
            slice("a", &[("node-b", true), ("node-a", true)]),
            // node-a's endpoint is not ready: node-b announces.
            slice("b", &[("node-a", false), ("node-b", true)]),
            // No ready endpoint: nobody.
            slice("c", &[("node-a", false)]),
            slice("other-class", &[("node-a", true)]),
            slice("outside-pool", &[("node-a", true)]),
        ];
        let ips = |node| -> Vec<String> {
            wanted(node, &pool, &services, &slices)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(ips("node-a"), ["192.0.2.1"]);
        assert_eq!(ips("node-b"), ["192.0.2.2"]);
        assert!(ips("node-c").is_empty());
    }
}
