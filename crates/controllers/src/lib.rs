//! kumo's reconcile loops, the counterpart of kube-controller-manager.
//!
//! Every loop is written against kube-rs like any operator: a kube-runtime `Controller`
//! (informer caches, a work queue that deduplicates keys, rate-limited requeues on error)
//! over the [`Context`]'s client. Inside `kumo server` that client is in-process (no socket,
//! same request pipeline; see `apiserver::local`), one per hosted cluster; the binary runs
//! [`run`] while it holds the cluster's `kube-controller-manager` Lease ([`leader`]).
//!
//! Loops are level-triggered: each reconcile reads the current state from the caches and
//! converges towards the spec, so a missed or repeated event does no harm.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

pub mod certificates;
pub mod leader;
pub mod local_path;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod persistent_volume;
pub mod pods;
pub mod volume_protection;

mod controller_revision;
mod cron;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod endpointslice;
mod garbage_collector;
mod job;
mod replicaset;
mod replication_controller;
mod resource_quota;
mod service_account;
mod statefulset;
mod workloads;

/// What every loop gets: the cluster's client and facts about the cluster.
#[derive(Clone)]
pub struct Context {
    /// Client for this cluster, acting as `system:kube-controller-manager`.
    pub client: Client,
    /// The cluster's id (for logs).
    pub cluster: Arc<str>,
    /// PEM of the cluster CA, published in every namespace as `kube-root-ca.crt`.
    pub root_ca_pem: Arc<str>,
    /// The pod network node IPAM carves node podCIDRs from.
    pub pod_network: node_ipam::Config,
}

impl Context {
    /// An event recorder for `controller` (for example `replicaset-controller`), the
    /// reporting component upstream's loops use in their events.
    pub fn recorder(&self, controller: &str) -> Recorder {
        Recorder::new(
            self.client.clone(),
            Reporter {
                controller: controller.into(),
                instance: None,
            },
        )
    }
}

/// Field manager for writes made by the built-in loops.
pub const FIELD_MANAGER: &str = "kube-controller-manager";

type Loop = fn(Context) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Every loop, by the name upstream's `--controllers` flag uses.
const LOOPS: &[(&str, Loop)] = &[
    ("replicaset", |c| Box::pin(replicaset::run(c))),
    ("replicationcontroller", |c| {
        Box::pin(replication_controller::run(c))
    }),
    ("deployment", |c| Box::pin(deployment::run(c))),
    ("garbagecollector", |c| Box::pin(garbage_collector::run(c))),
    ("serviceaccount", |c| Box::pin(service_account::run(c))),
    ("endpoint", |c| Box::pin(endpoints::run(c))),
    ("endpointslice", |c| Box::pin(endpointslice::run(c))),
    ("nodelifecycle", |c| Box::pin(node_lifecycle::run(c))),
    ("nodeipam", |c| Box::pin(node_ipam::run(c))),
    ("job", |c| Box::pin(job::run(c))),
    ("cronjob", |c| Box::pin(cronjob::run(c))),
    ("statefulset", |c| Box::pin(statefulset::run(c))),
    ("daemonset", |c| Box::pin(daemonset::run(c))),
    ("disruption", |c| Box::pin(disruption::run(c))),
    ("resourcequota", |c| Box::pin(resource_quota::run(c))),
    ("persistentvolume-binder", |c| {
        Box::pin(persistent_volume::run(c))
    }),
    ("local-path-provisioner", |c| Box::pin(local_path::run(c))),
    ("pvc-protection", |c| {
        Box::pin(volume_protection::run_claims(c))
    }),
    ("pv-protection", |c| {
        Box::pin(volume_protection::run_volumes(c))
    }),
];

/// Runs every loop for one cluster until the future is dropped (when leadership is lost).
/// A loop that stops with an error is logged and restarted after a pause, without
/// disturbing the others.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let supervised = LOOPS.iter().map(|(name, start)| {
        let ctx = ctx.clone();
        async move {
            loop {
                match start(ctx.clone()).await {
                    Ok(()) => tracing::warn!(cluster = %ctx.cluster, controller = name, "controller stopped; restarting"),
                    Err(e) => tracing::error!(cluster = %ctx.cluster, controller = name, error = %e, "controller failed; restarting"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    futures::future::join_all(supervised).await;
    Ok(())
}
