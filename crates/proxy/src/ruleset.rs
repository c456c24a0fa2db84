//! The nftables ruleset of kube-proxy's nftables mode, for one address family: tables
//! `ip NAME` and `ip6 NAME` (`kumo0` for `kumo up`'s default bridge), verdict maps from service addresses to per-service chains,
//! `numgen` load balancing over per-endpoint DNAT chains, ClientIP affinity in timed sets,
//! traffic policies, masquerading marks and rejects for Services without endpoints.
//!
//! [`build`] is a pure function of the service ports and the node; [`Ruleset::transaction`]
//! turns a ruleset into one `nft -f` transaction, from scratch or as the difference from
//! the ruleset applied before (so the affinity sets keep their entries).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Endpoint, ServicePort};

/// The table name in both families when nothing else is asked for.
pub const DEFAULT_TABLE: &str = "kumo";

/// The packet mark bit that asks for masquerading (upstream's 0x4000).
const MASQ_MARK: &str = "0x4000";

/// An address family: one table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `ip NAME`.
    V4,
    /// `ip6 NAME`.
    V6,
}

impl Family {
    /// The nft family keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    fn has(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }

    fn saddr(self) -> String {
        format!("{} saddr", self.keyword())
    }

    fn daddr(self) -> String {
        format!("{} daddr", self.keyword())
    }
}

/// The node the rules are for.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// The node's name (endpoints on it are local).
    pub name: String,
    /// The addresses NodePorts answer on.
    pub ips: Vec<IpAddr>,
    /// The pod CIDRs: traffic from elsewhere to a ClusterIP is masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
}

/// A chain: base chains carry their hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// `type nat hook prerouting priority -100` for base chains.
    pub hook: Option<&'static str>,
    /// The rules, in order.
    pub rules: Vec<String>,
}

/// A named set or map with its elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// `map` or `set`.
    pub kind: &'static str,
    /// The body of its definition (`type ... ;`).
    pub spec: String,
    /// Elements, in order.
    pub elements: Vec<String>,
}

/// One family's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The family.
    pub family: Family,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name, rewritten whenever their elements change.
    pub sets: BTreeMap<String, Set>,
    /// ClientIP affinity sets by name (`type ...; flags dynamic,timeout; timeout Ns;`):
    /// created once and never flushed, so established affinities survive updates.
    pub affinity: BTreeMap<String, String>,
}

/// Builds the ruleset of `family` for `ports` on `node`.
pub fn build(family: Family, node: &Node, ports: &[ServicePort]) -> Ruleset {
    let mut rs = Ruleset {
        family,
        chains: BTreeMap::new(),
        sets: BTreeMap::new(),
        affinity: BTreeMap::new(),
    };
    rs.base(node);
    let cidrs: Vec<&IpNet> = node
        .cluster_cidrs
        .iter()
        .filter(|c| family.has(&c.addr()))
        .collect();
    for port in ports {
        rs.service_port(node, &cidrs, port);
    }
    for set in rs.sets.values_mut() {
        set.elements.sort();
        set.elements.dedup();
    }
    rs
}

impl Ruleset {
    fn chain(&mut self, name: &str, hook: Option<&'static str>, rules: Vec<String>) {
        self.chains.insert(name.to_owned(), Chain { hook, rules });
    }

    fn element(&mut self, set: &str, element: String) {
        if let Some(s) = self.sets.get_mut(set) {
            s.elements.push(element);
        }
    }

    /// The chains, maps and sets every table has.
    fn base(&mut self, node: &Node) {
        let f = self.family;
        let (daddr, addr) = (f.daddr(), f.addr_type());
        let service_key = format!("{addr} . inet_proto . inet_service");
        for (name, kind, spec) in [
            (
                "service-ips",
                "map",
                format!("type {service_key} : verdict ;"),
            ),
            (
                "service-nodeports",
                "map",
                "type inet_proto . inet_service : verdict ;".to_owned(),
            ),
            (
                "no-endpoint-services",
                "map",
                format!("type {service_key} : verdict ;"),
            ),
            (
                "no-endpoint-nodeports",
                "map",
                "type inet_proto . inet_service : verdict ;".to_owned(),
            ),
            ("cluster-ips", "set", format!("type {addr} ;")),
            ("nodeport-ips", "set", format!("type {addr} ;")),
        ] {
            self.sets.insert(
                name.to_owned(),
                Set {
                    kind,
                    spec,
                    elements: Vec::new(),
                },
            );
        }
        for ip in node.ips.iter().filter(|ip| f.has(ip)) {
            self.element("nodeport-ips", ip.to_string());
        }
        let check = vec!["ct state new jump service-endpoints-check".to_owned()];
        self.chain(
            "filter-input",
            Some("type filter hook input priority -110 ;"),
            check.clone(),
        );
        let mut forward = check.clone();
        forward.push("ct state new jump cluster-ips-check".into());
        self.chain(
            "filter-forward",
            Some("type filter hook forward priority -110 ;"),
            forward,
        );
        self.chain(
            "filter-output",
            Some("type filter hook output priority -110 ;"),
            check,
        );
        // After DNAT (priority -100): what is still addressed to a ClusterIP had no port.
        self.chain(
            "filter-output-post-dnat",
            Some("type filter hook output priority -90 ;"),
            vec!["ct state new jump cluster-ips-check".into()],
        );
        let services = vec!["jump services".to_owned()];
        self.chain(
            "nat-prerouting",
            Some("type nat hook prerouting priority -100 ;"),
            services.clone(),
        );
        self.chain(
            "nat-output",
            Some("type nat hook output priority -100 ;"),
            services,
        );
        self.chain(
            "nat-postrouting",
            Some("type nat hook postrouting priority 100 ;"),
            vec!["jump masquerading".into()],
        );
        self.chain(
            "services",
            None,
            vec![
                format!("{daddr} . meta l4proto . th dport vmap @service-ips"),
                format!("{daddr} @nodeport-ips meta l4proto . th dport vmap @service-nodeports"),
            ],
        );
        self.chain(
            "service-endpoints-check",
            None,
            vec![
                format!("{daddr} . meta l4proto . th dport vmap @no-endpoint-services"),
                format!(
                    "{daddr} @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"
                ),
            ],
        );
        self.chain(
            "cluster-ips-check",
            None,
            vec![format!(
                "{daddr} @cluster-ips goto reject-chain comment \"no such port on this ClusterIP\""
            )],
        );
        self.chain(
            "masquerading",
            None,
            vec![
                format!("meta mark & {MASQ_MARK} == 0 return"),
                format!("meta mark set meta mark ^ {MASQ_MARK}"),
                "masquerade fully-random".into(),
            ],
        );
        self.chain(
            "mark-for-masquerade",
            None,
            vec![format!("meta mark set meta mark | {MASQ_MARK}")],
        );
        self.chain(
            "reject-chain",
            None,
            vec![
                "meta l4proto tcp reject with tcp reset".into(),
                "reject".into(),
            ],
        );
    }

    fn service_port(&mut self, node: &Node, cidrs: &[&IpNet], port: &ServicePort) {
        let f = self.family;
        let cluster_ips: Vec<&IpAddr> = port.cluster_ips.iter().filter(|ip| f.has(ip)).collect();
        if cluster_ips.is_empty() {
            return;
        }
        let id = port.id();
        let hash = short_hash(&format!("{}/{id}", f.keyword()));
        let cluster_chain = format!("service-{hash}-{id}");
        let local_chain = format!("local-{hash}-{id}");
        let external_chain = format!("external-{hash}-{id}");
        let in_family = |eps: Vec<&Endpoint>| -> Vec<Endpoint> {
            eps.into_iter().filter(|e| f.has(&e.ip)).cloned().collect()
        };
        let cluster_eps = in_family(port.cluster_endpoints());
        let local_eps = in_family(port.local_endpoints(&node.name));
        let proto = port.protocol.as_str();
        let saddr = f.saddr();

        // One DNAT chain per endpoint (hairpin traffic is masqueraded).
        let mut endpoint_chains: BTreeMap<(IpAddr, u16), (String, Option<String>)> =
            BTreeMap::new();
        for ep in cluster_eps.iter().chain(local_eps.iter()) {
            let ep_id = format!("{id}__{}/{}", ip_label(&ep.ip), ep.port);
            let chain = format!(
                "endpoint-{}-{ep_id}",
                short_hash(&format!("{}/{ep_id}", f.keyword()))
            );
            let affinity = port.affinity_timeout.map(|timeout| {
                let set = format!(
                    "affinity-{}-{ep_id}",
                    short_hash(&format!("{}/{ep_id}/{timeout}", f.keyword()))
                );
                self.affinity.insert(
                    set.clone(),
                    format!(
                        "type {} ; flags dynamic,timeout ; timeout {timeout}s ;",
                        f.addr_type()
                    ),
                );
                set
            });
            let mut rules = vec![format!("{saddr} {} jump mark-for-masquerade", ep.ip)];
            if let Some(set) = &affinity {
                rules.push(format!("update @{set} {{ {saddr} }}"));
            }
            rules.push(format!(
                "meta l4proto {proto} dnat to {}",
                socket(&ep.ip, ep.port)
            ));
            self.chain(&chain, None, rules);
            endpoint_chains.insert((ep.ip, ep.port), (chain, affinity));
        }
        let balance = |eps: &[Endpoint]| -> Vec<String> {
            let mut rules = Vec::new();
            for ep in eps {
                if let Some((chain, Some(set))) = endpoint_chains.get(&(ep.ip, ep.port)) {
                    rules.push(format!("{saddr} @{set} goto {chain}"));
                }
            }
            let targets: Vec<String> = eps
                .iter()
                .enumerate()
                .filter_map(|(i, ep)| {
                    endpoint_chains
                        .get(&(ep.ip, ep.port))
                        .map(|(chain, _)| format!("{i} : goto {chain}"))
                })
                .collect();
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                eps.len(),
                targets.join(" , ")
            ));
            rules
        };
        if !cluster_eps.is_empty() {
            let mut rules = Vec::new();
            if !cidrs.is_empty() {
                let list: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
                // Traffic from outside the pod network is masqueraded, so replies return
                // through this node.
                rules.push(format!(
                    "{saddr} != {{ {} }} jump mark-for-masquerade",
                    list.join(", ")
                ));
            }
            rules.extend(balance(&cluster_eps));
            self.chain(&cluster_chain, None, rules);
        }
        let needs_local = port.internal_local || port.external_local;
        if needs_local && !local_eps.is_empty() {
            self.chain(&local_chain, None, balance(&local_eps));
        }

        // ClusterIPs.
        for ip in &cluster_ips {
            self.element("cluster-ips", ip.to_string());
            let key = format!("{ip} . {proto} . {}", port.port);
            let target = if port.internal_local {
                if !local_eps.is_empty() {
                    Ok(format!("goto {local_chain}"))
                } else if !cluster_eps.is_empty() {
                    Err("drop".to_owned())
                } else {
                    Err("goto reject-chain".to_owned())
                }
            } else if !cluster_eps.is_empty() {
                Ok(format!("goto {cluster_chain}"))
            } else {
                Err("goto reject-chain".to_owned())
            };
            match target {
                Ok(verdict) => self.element("service-ips", format!("{key} : {verdict}")),
                Err(verdict) => self.element("no-endpoint-services", format!("{key} : {verdict}")),
            }
        }

        // NodePorts, external IPs and LoadBalancer IPs.
        let external_ips: Vec<&IpAddr> = port.external_ips.iter().filter(|ip| f.has(ip)).collect();
        if port.node_port.is_none() && external_ips.is_empty() {
            return;
        }
        if cluster_eps.is_empty() {
            for ip in &external_ips {
                self.element(
                    "no-endpoint-services",
                    format!("{ip} . {proto} . {} : goto reject-chain", port.port),
                );
            }
            if let Some(np) = port.node_port {
                self.element(
                    "no-endpoint-nodeports",
                    format!("{proto} . {np} : goto reject-chain"),
                );
            }
            return;
        }
        let mut rules = Vec::new();
        if port.external_local {
            if !cidrs.is_empty() {
                let list: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
                // Pods reaching a NodePort are cluster traffic: any endpoint will do.
                rules.push(format!(
                    "{saddr} {{ {} }} goto {cluster_chain}",
                    list.join(", ")
                ));
            }
            rules.push("fib saddr type local jump mark-for-masquerade".into());
            rules.push(format!("fib saddr type local goto {cluster_chain}"));
            if local_eps.is_empty() {
                rules.push("drop comment \"no local endpoints\"".into());
            } else {
                rules.push(format!("goto {local_chain}"));
            }
        } else {
            rules.push("jump mark-for-masquerade".into());
            rules.push(format!("goto {cluster_chain}"));
        }
        self.chain(&external_chain, None, rules);
        for ip in &external_ips {
            self.element(
                "service-ips",
                format!("{ip} . {proto} . {} : goto {external_chain}", port.port),
            );
        }
        if let Some(np) = port.node_port {
            self.element(
                "service-nodeports",
                format!("{proto} . {np} : goto {external_chain}"),
            );
        }
    }

    /// The `nft -f` script that brings table `table` from `previous` (what this process
    /// applied last; `None`: unknown) to this ruleset, in one atomic transaction. Nothing
    /// outside that table is touched, so proxies with tables of their own share a host.
    pub fn transaction(&self, table: &str, previous: Option<&Ruleset>) -> String {
        let t = format!("{} {table}", self.family.keyword());
        let mut out = String::new();
        let empty = Ruleset {
            family: self.family,
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
            affinity: BTreeMap::new(),
        };
        let previous = match previous {
            Some(p) => p,
            None => {
                // Whatever is there is replaced: the table goes and comes back.
                let _ = writeln!(out, "add table {t}");
                let _ = writeln!(out, "delete table {t}");
                &empty
            }
        };
        let _ = writeln!(out, "add table {t}");
        // Definitions first, so every rule below can refer to every chain and set.
        for (name, chain) in &self.chains {
            if previous.chains.contains_key(name) {
                continue;
            }
            match chain.hook {
                Some(hook) => {
                    let _ = writeln!(out, "add chain {t} {name} {{ {hook} }}");
                }
                None => {
                    let _ = writeln!(out, "add chain {t} {name}");
                }
            }
        }
        for (name, set) in &self.sets {
            if !previous.sets.contains_key(name) {
                let _ = writeln!(out, "add {} {t} {name} {{ {} }}", set.kind, set.spec);
            }
        }
        for (name, spec) in &self.affinity {
            if !previous.affinity.contains_key(name) {
                let _ = writeln!(out, "add set {t} {name} {{ {spec} }}");
            }
        }
        for (name, chain) in &self.chains {
            match previous.chains.get(name) {
                Some(old) if old == chain => continue,
                Some(_) => {
                    let _ = writeln!(out, "flush chain {t} {name}");
                }
                None => {}
            }
            for rule in &chain.rules {
                let _ = writeln!(out, "add rule {t} {name} {rule}");
            }
        }
        for (name, set) in &self.sets {
            match previous.sets.get(name) {
                Some(old) if old == set => continue,
                Some(_) => {
                    let _ = writeln!(out, "flush {} {t} {name}", set.kind);
                }
                None => {}
            }
            if !set.elements.is_empty() {
                let _ = writeln!(
                    out,
                    "add element {t} {name} {{ {} }}",
                    set.elements.join(", ")
                );
            }
        }
        // What is gone, last: nothing refers to it any more.
        // All of them are emptied before any is deleted: stale chains refer to each other.
        let stale: Vec<&String> = previous
            .chains
            .keys()
            .filter(|n| !self.chains.contains_key(*n))
            .collect();
        for name in &stale {
            let _ = writeln!(out, "flush chain {t} {name}");
        }
        for name in &stale {
            let _ = writeln!(out, "delete chain {t} {name}");
        }
        for name in previous
            .affinity
            .keys()
            .filter(|n| !self.affinity.contains_key(*n))
        {
            let _ = writeln!(out, "delete set {t} {name}");
        }
        out
    }
}

/// `10.0.0.1:80` or `[fd00::1]:80`.
fn socket(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// An address as it may appear in an nft identifier (no colons).
fn ip_label(ip: &IpAddr) -> String {
    ip.to_string().replace(':', ".")
}

/// A short stable hash, as upstream prefixes chain names: 8 base32 characters of FNV-1a.
pub(crate) fn short_hash(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..8)
        .map(|i| ALPHABET[((h >> (i * 5)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests;
