//! kumo's service proxy, kube-proxy's nftables mode: Services and EndpointSlices (watched
//! with kube-rs reflectors) become one nftables table per address family (`ip NAME`,
//! `ip6 NAME`; each node instance on a host has its own NAME, see [`table_for_bridge`],
//! and touches no other table), applied atomically with `nft -f` whenever the rules change, debounced so a
//! burst of endpoint updates costs one transaction and reaches the kernel well within a
//! second. With a LoadBalancer pool configured, the proxy also gives LoadBalancer Services
//! their ingress IP ([`loadbalancer`]) and announces it from one node ([`announce`]).
//!
//! [`run`] is the whole component.

pub mod announce;
pub mod loadbalancer;
pub mod model;
pub mod nft;
pub mod ruleset;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use crate::ruleset::{Family, Node, Ruleset};

/// How the proxy runs on a node.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node's name: endpoints on it are local for the `Local` traffic policies.
    pub node_name: String,
    /// The node's addresses: NodePorts answer on them.
    pub node_ips: Vec<IpAddr>,
    /// The pod network (the cluster CIDR): traffic from outside it to a ClusterIP is
    /// masqueraded. Empty: nothing is masqueraded for ClusterIPs.
    pub cluster_cidrs: Vec<IpNet>,
    /// The nft command (`["nft"]`; tests run it in a namespace with
    /// `["ip", "netns", "exec", NAME, "nft"]`).
    pub nft_command: Vec<String>,
    /// The name of this proxy's tables (`ip NAME`, `ip6 NAME`): the only ones it writes or
    /// removes, so several proxies (several `kumo up` on one host) keep apart.
    pub table: String,
    /// Addresses LoadBalancer Services get their ingress IP from; none leaves them pending.
    pub load_balancer_pool: Vec<IpNet>,
    /// The loopback label (`lo:kumo`) under which this node holds the LoadBalancer
    /// addresses it announces (none: addresses are not announced).
    pub announce_label: Option<String>,
    /// The ip command (`["ip"]`; tests prefix `ip netns exec NAME`).
    pub ip_command: Vec<String>,
    /// How long a sync waits for more changes before writing rules.
    pub debounce: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            node_ips: Vec::new(),
            cluster_cidrs: Vec::new(),
            nft_command: vec!["nft".into()],
            table: ruleset::DEFAULT_TABLE.into(),
            load_balancer_pool: Vec::new(),
            announce_label: None,
            ip_command: vec!["ip".into()],
            debounce: Duration::from_millis(50),
        }
    }
}

/// The table of the proxy of the node whose pod bridge is `bridge`: the bridge's own name
/// (two pod networks on one host never share a bridge), or `kumo-` and a hash of it when
/// the name is not a plain nft identifier.
pub fn table_for_bridge(bridge: &str) -> String {
    let plain = bridge.starts_with(|c: char| c.is_ascii_alphabetic())
        && bridge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        bridge.to_owned()
    } else {
        format!("kumo-{}", ruleset::short_hash(bridge).to_lowercase())
    }
}

/// The loopback label ([`Config::announce_label`]) of the node whose pod bridge is
/// `bridge`: `lo:` and the bridge's name, or a hash of it where the name is too long for
/// a label (15 characters in all).
pub fn announce_label_for_bridge(bridge: &str) -> String {
    let label = format!("lo:{bridge}");
    if label.len() <= 15 && bridge.chars().all(|c| c.is_ascii_graphic()) {
        label
    } else {
        format!("lo:{}", ruleset::short_hash(bridge).to_lowercase())
    }
}

/// Undoes what the proxy of `config` put on the node, and nothing else: its tables
/// (`ip TABLE` and `ip6 TABLE`, in one transaction; absent ones are no error) and the
/// LoadBalancer addresses under its loopback label.
pub async fn cleanup(config: &Config) -> anyhow::Result<()> {
    let mut script = String::new();
    for family in [Family::V4, Family::V6] {
        let t = format!("{} {}", family.keyword(), config.table);
        // `add` first: deleting a table that does not exist fails the whole batch.
        script += &format!("add table {t}\ndelete table {t}\n");
    }
    nft::apply(&config.nft_command, &script).await?;
    if let Some(label) = &config.announce_label {
        announce::Announcer::new(label, config.ip_command.clone())
            .sync(&Default::default())
            .await?;
    }
    Ok(())
}

/// How long to wait before trying again after nft refused a transaction.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs the proxy until it fails: watches Services and EndpointSlices and keeps the
/// node's nftables rules in step with them.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let (services, services_feed) = reflect::<Service>(Api::all(client.clone()), &changed);
    let (slices, slices_feed) = reflect::<EndpointSlice>(Api::all(client.clone()), &changed);
    let sync = sync_loop(client, config, services, slices, changed.clone());
    futures::select! {
        () = services_feed.fuse() => anyhow::bail!("Service watch ended"),
        () = slices_feed.fuse() => anyhow::bail!("EndpointSlice watch ended"),
        result = sync.fuse() => result,
    }
}

async fn sync_loop(
    client: kube::Client,
    config: Config,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    changed: Arc<Notify>,
) -> anyhow::Result<()> {
    services.wait_until_ready().await?;
    slices.wait_until_ready().await?;
    let node = Node {
        name: config.node_name.clone(),
        ips: config.node_ips.clone(),
        cluster_cidrs: config.cluster_cidrs.clone(),
    };
    let assigner = loadbalancer::Assigner::new(client, config.load_balancer_pool.clone());
    let mut announcer = config
        .announce_label
        .as_deref()
        .map(|label| announce::Announcer::new(label, config.ip_command.clone()));
    let mut applied: HashMap<Family, Ruleset> = HashMap::new();
    tracing::info!(node = %config.node_name, "service proxy synced its caches");
    loop {
        let service_state = services.state();
        let slice_state = slices.state();
        assigner.assign(&service_state).await;
        let ports = model::service_ports(
            &service_state.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            &slice_state.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        );
        let mut failed = false;
        if let Some(announcer) = announcer.as_mut() {
            let wanted = announce::wanted(
                &config.node_name,
                &config.load_balancer_pool,
                &service_state,
                &slice_state,
            );
            if let Err(e) = announcer.sync(&wanted).await {
                tracing::warn!(error = %e, "announcing LoadBalancer addresses failed");
                failed = true;
            }
        }
        for family in [Family::V4, Family::V6] {
            let wanted = ruleset::build(family, &node, &ports);
            if applied.get(&family) == Some(&wanted) {
                continue;
            }
            let script = wanted.transaction(&config.table, applied.get(&family));
            match nft::apply(&config.nft_command, &script).await {
                Ok(()) => {
                    tracing::debug!(
                        family = family.keyword(),
                        n_ports = ports.len(),
                        "service rules applied"
                    );
                    applied.insert(family, wanted);
                }
                Err(e) => {
                    tracing::warn!(family = family.keyword(), error = %e, "applying service rules failed; rewriting the table on the next try");
                    applied.remove(&family);
                    failed = true;
                }
            }
        }
        if failed {
            let changed = changed.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_AFTER).await;
                changed.notify_one();
            });
        }
        changed.notified().await;
        tokio::time::sleep(config.debounce).await;
    }
}

/// A reflector over `api`: its store, and the future that feeds it, notifying `changed`
/// on every event.
fn reflect<K>(
    api: Api<K>,
    changed: &Arc<Notify>,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let feed = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |event| {
            if let Err(e) = &event {
                tracing::warn!(error = %e, "service proxy watch failed; retrying");
            }
            changed.notify_one();
            futures::future::ready(())
        })
        .boxed();
    (reader, feed)
}
