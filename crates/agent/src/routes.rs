//! Routes to the other nodes' pods (host-gateway networking, as flannel's `host-gw` and
//! kube-router do): for every other Node with a podCIDR, a route to that CIDR via the
//! node's InternalIP, so pods on different nodes talk directly, without encapsulation.
//! The nodes must share a link (one L2 segment), which is what the next hop requires.
//!
//! Routes carry their own protocol number, so the agent finds and removes the ones it
//! added (for nodes that went away) without touching anyone else's. Several nodes of
//! different clusters on one host (several `kumo up`) share that number: each also keeps
//! a record of its routes under its data directory and removes only those.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

/// The `proto` of kumo's routes in the kernel's table (any value no routing daemon uses).
pub const ROUTE_PROTOCOL: &str = "0x6b";

/// The routes this node wants: each other node's pod CIDRs via its InternalIP.
pub fn wanted(own_node: &str, nodes: &[Node]) -> BTreeMap<IpNet, IpAddr> {
    let mut routes = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(own_node) {
            continue;
        }
        let Some(via) = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .and_then(|a| a.address.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let spec = node.spec.clone().unwrap_or_default();
        let cidrs = spec
            .pod_cidrs
            .unwrap_or_default()
            .into_iter()
            .chain(spec.pod_cidr);
        for cidr in cidrs.filter_map(|c| c.parse::<IpNet>().ok()) {
            // A next hop of the other family cannot carry this CIDR.
            if cidr.addr().is_ipv4() == via.is_ipv4() {
                routes.insert(cidr, via);
            }
        }
    }
    routes
}

/// Installs and removes routes with `ip` (`["ip"]`; tests prefix `ip netns exec NAME`).
pub struct Router {
    ip_command: Vec<String>,
    record: Option<PathBuf>,
}

impl Router {
    /// A router that takes every route with [`ROUTE_PROTOCOL`] for its own.
    pub fn new(ip_command: Vec<String>) -> Self {
        Self {
            ip_command,
            record: None,
        }
    }

    /// Takes for its own only the routes listed in `record` (a JSON file it keeps), so
    /// routers of other instances on the host keep theirs.
    pub fn with_record(mut self, record: PathBuf) -> Self {
        self.record = Some(record);
        self
    }

    fn recorded(&self) -> Option<BTreeSet<IpNet>> {
        let path = self.record.as_ref()?;
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let listed: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
        Some(listed.iter().filter_map(|c| c.parse().ok()).collect())
    }

    fn write_record(&self, routes: &BTreeSet<IpNet>) -> anyhow::Result<()> {
        if let Some(path) = &self.record {
            let listed: Vec<String> = routes.iter().map(ToString::to_string).collect();
            let json = serde_json::to_string(&listed)?;
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, json)
                .and_then(|()| std::fs::rename(&temporary, path))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Makes kumo's routes exactly `wanted`.
    pub async fn sync(&self, wanted: &BTreeMap<IpNet, IpAddr>) -> anyhow::Result<()> {
        let mut installed = BTreeMap::new();
        for family in ["-4", "-6"] {
            let listing = self
                .ip(&[family, "route", "show", "proto", ROUTE_PROTOCOL])
                .await?;
            for line in listing.lines() {
                // "10.42.1.0/24 via 192.168.1.12 dev eth0 "
                let mut words = line.split_whitespace();
                let (Some(dst), Some("via"), Some(via)) =
                    (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                if let (Ok(dst), Ok(via)) = (dst.parse::<IpNet>(), via.parse::<IpAddr>()) {
                    installed.insert(dst, via);
                }
            }
        }
        if let Some(recorded) = self.recorded() {
            installed.retain(|dst, _| recorded.contains(dst) || wanted.contains_key(dst));
            // Recorded before they exist, so a crash in between leaves none unowned.
            self.write_record(&recorded.into_iter().chain(wanted.keys().copied()).collect())?;
        }
        for (dst, via) in wanted {
            if installed.get(dst) != Some(via) {
                self.ip(&[
                    "route",
                    "replace",
                    &dst.to_string(),
                    "via",
                    &via.to_string(),
                    "proto",
                    ROUTE_PROTOCOL,
                ])
                .await?;
                tracing::info!(%dst, %via, "route to another node's pods");
            }
        }
        for dst in installed.keys().filter(|d| !wanted.contains_key(d)) {
            self.ip(&["route", "del", &dst.to_string(), "proto", ROUTE_PROTOCOL])
                .await?;
            tracing::info!(%dst, "removed the route to a node's pods");
        }
        self.write_record(&wanted.keys().copied().collect())?;
        Ok(())
    }

    async fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(&self.ip_command[0])
            .args(&self.ip_command[1..])
            .args(args)
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Keeps the routes in step with the Nodes until the future is dropped.
pub async fn run(client: kube::Client, own_node: String, router: Router) -> anyhow::Result<()> {
    let (store, writer) = reflector::store::<Node>();
    let mut events = reflector::reflector(writer, watcher(Api::all(client), Default::default()))
        .default_backoff()
        .boxed();
    let mut listed = false;
    let mut applied = None;
    loop {
        // Resync every 30 s too, so a route someone removed comes back.
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), events.next()).await;
        match next {
            Ok(None) => anyhow::bail!("the Node watch ended"),
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "watching Nodes");
                continue;
            }
            // The store is complete once the initial list is.
            Ok(Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_)))) => continue,
            Ok(Some(Ok(watcher::Event::InitDone))) => listed = true,
            Ok(Some(Ok(_))) | Err(_) => {}
        }
        if !listed {
            continue;
        }
        let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
        let wanted = wanted(&own_node, &nodes);
        if next.is_ok() && applied.as_ref() == Some(&wanted) {
            continue;
        }
        match router.sync(&wanted).await {
            Ok(()) => applied = Some(wanted),
            Err(e) => {
                tracing::warn!(error = %e, "installing routes to other nodes' pods");
                applied = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_go_to_other_nodes_of_the_same_family() {
        let node = |name: &str, ip: &str, cidrs: &[&str]| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs},
                "status": {"addresses": [{"type": "Hostname", "address": name},
                                         {"type": "InternalIP", "address": ip}]},
            }))
            .expect("node")
        };
        let nodes = vec![
            node("a", "192.168.1.11", &["10.42.0.0/24"]),
            node("b", "192.168.1.12", &["10.42.1.0/24", "fd00:42:1::/64"]),
            node("c", "192.168.1.13", &[]),
        ];
        let routes = wanted("a", &nodes);
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            [(
                "10.42.1.0/24".parse().expect("net"),
                "192.168.1.12".parse().expect("ip")
            )]
        );
    }
}
