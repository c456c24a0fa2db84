//! Node IPAM, as upstream's `pkg/controller/nodeipam` with the range allocator: every Node
//! gets a pod CIDR (`spec.podCIDR` and `spec.podCIDRs`) carved from the cluster CIDR, one
//! subnet of `node_mask` bits per node, never two nodes the same one.
//!
//! The loop is level-triggered: the subnets in use are those the Nodes in the cache hold
//! (so a restart rebuilds them from the existing Nodes, and a deleted Node's subnet is
//! free again), plus the ones this loop assigned that the cache has not shown yet.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::{Context, FIELD_MANAGER};

/// The pod network to carve node subnets from.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster CIDR (`--cluster-cidr`; kumo's default 10.42.0.0/16).
    pub cluster_cidr: IpNet,
    /// The prefix length of each node's subnet (`--node-cidr-mask-size`; 24).
    pub node_mask: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_cidr: "10.42.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
            node_mask: 24,
        }
    }
}

/// Errors of the loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node mask does not fit the cluster CIDR.
    #[error("node CIDR mask /{mask} does not fit the cluster CIDR {cidr}")]
    InvalidMask {
        /// The cluster CIDR.
        cidr: IpNet,
        /// The node mask.
        mask: u8,
    },
    /// The first list of Nodes failed.
    #[error("initial Node list failed: {0}")]
    InitialListFailed(#[source] kube::runtime::reflector::store::WriterDropped),
}

/// Runs the loop on the cluster's pod network.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    run_with(ctx.client, ctx.pod_network).await
}

/// Runs the loop over `config`'s cluster CIDR until the future is dropped.
pub async fn run_with(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let subnets = Subnets::new(&config)?;
    let api: Api<Node> = Api::all(client);
    let (nodes, writer) = reflector::store();
    let changed = Arc::new(tokio::sync::Notify::new());
    let feed = {
        let changed = changed.clone();
        reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .for_each(move |_| {
                changed.notify_one();
                futures::future::ready(())
            })
    };
    let assign = assign_loop(&api, &nodes, &subnets, &changed);
    tokio::select! {
        () = feed => anyhow::bail!("Node watch ended"),
        result = assign => result,
    }
}

/// Assigns pod CIDRs whenever the Nodes change, once the first list is in.
async fn assign_loop(
    api: &Api<Node>,
    nodes: &Store<Node>,
    subnets: &Subnets,
    changed: &tokio::sync::Notify,
) -> anyhow::Result<()> {
    nodes
        .wait_until_ready()
        .await
        .map_err(Error::InitialListFailed)?;
    let mut pending: HashMap<String, IpNet> = HashMap::new();
    loop {
        if assign_all(api, nodes, subnets, &mut pending).await {
            // A write failed: try again soon even without news from the watch.
            let _ = tokio::time::timeout(Duration::from_secs(1), changed.notified()).await;
        } else {
            changed.notified().await;
        }
    }
}

/// Gives every Node without a pod CIDR a free subnet. Returns whether a write failed.
async fn assign_all(
    api: &Api<Node>,
    nodes: &Store<Node>,
    subnets: &Subnets,
    pending: &mut HashMap<String, IpNet>,
) -> bool {
    let state = nodes.state();
    let mut used: BTreeSet<IpNet> = BTreeSet::new();
    for node in &state {
        let name = node.metadata.name.clone().unwrap_or_default();
        let held = pod_cidrs(node);
        if !held.is_empty() {
            // The cache has caught up with our write (or someone else assigned one).
            pending.remove(&name);
        }
        used.extend(held);
    }
    // Pending assignments of Nodes that are gone are void.
    pending.retain(|name, _| {
        state
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(name))
    });
    used.extend(pending.values().copied());
    let mut failed = false;
    for node in &state {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        if !pod_cidrs(node).is_empty() || node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let cidr = match pending.get(name) {
            Some(cidr) => *cidr,
            None => match subnets.first_free(&used) {
                Some(cidr) => cidr,
                None => {
                    tracing::warn!(node = name, cluster_cidr = %subnets.cluster, "no pod CIDR left for the node (CIDRNotAvailable)");
                    continue;
                }
            },
        };
        used.insert(cidr);
        let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
        match api
            .patch(
                name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(node = name, pod_cidr = %cidr, "assigned the node's pod CIDR");
                pending.insert(name.to_owned(), cidr);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(node = name, error = %e, "assigning the pod CIDR failed");
                pending.remove(name);
                failed = true;
            }
        }
    }
    failed
}

/// The pod CIDRs a Node holds.
fn pod_cidrs(node: &Node) -> Vec<IpNet> {
    let spec = node.spec.as_ref();
    spec.and_then(|s| s.pod_cidrs.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(spec.and_then(|s| s.pod_cidr.clone()))
        .filter_map(|c| c.parse::<IpNet>().ok())
        .collect()
}

/// The node subnets of the cluster CIDR.
struct Subnets {
    cluster: IpNet,
    mask: u8,
}

impl Subnets {
    fn new(config: &Config) -> Result<Self, Error> {
        let cluster = config.cluster_cidr.trunc();
        let mask = config.node_mask;
        if mask < cluster.prefix_len() || mask > cluster.max_prefix_len() {
            return Err(Error::InvalidMask {
                cidr: cluster,
                mask,
            });
        }
        Ok(Self { cluster, mask })
    }

    /// The first subnet no Node holds (nor overlaps).
    fn first_free(&self, used: &BTreeSet<IpNet>) -> Option<IpNet> {
        let mut candidates = self.cluster.subnets(self.mask).ok()?;
        candidates.find(|candidate| !used.iter().any(|u| overlaps(u, candidate)))
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    let contains = |net: &IpNet, ip: IpAddr| net.contains(&ip);
    contains(a, b.network()) || contains(b, a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnets(cidr: &str, mask: u8) -> Subnets {
        Subnets::new(&Config {
            cluster_cidr: cidr.parse().expect("cidr"),
            node_mask: mask,
        })
        .expect("subnets")
    }

    fn nets(list: &[&str]) -> BTreeSet<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    #[test]
    fn first_free_skips_held_and_overlapping_subnets() {
        let s = subnets("10.42.0.0/16", 24);
        assert_eq!(
            s.first_free(&nets(&[])),
            Some("10.42.0.0/24".parse().expect("net"))
        );
        assert_eq!(
            s.first_free(&nets(&["10.42.0.0/24", "10.42.1.0/24"])),
            Some("10.42.2.0/24".parse().expect("net"))
        );
        // A wider subnet someone set by hand covers several node subnets.
        assert_eq!(
            s.first_free(&nets(&["10.42.0.0/23"])),
            Some("10.42.2.0/24".parse().expect("net"))
        );
        let small = subnets("10.200.0.0/23", 24);
        assert_eq!(
            small.first_free(&nets(&["10.200.0.0/24", "10.200.1.0/24"])),
            None
        );
        assert!(
            Subnets::new(&Config {
                cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
                node_mask: 8
            })
            .is_err()
        );
    }
}
