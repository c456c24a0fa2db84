//! The node agent: kubelet's role in kumo. It registers its Node, renews its Lease, and
//! runs the pods bound to it on a CRI runtime (containerd, with runc and CNI underneath):
//! sandboxes, init containers, containers, probes, volumes, restarts with back-off,
//! graceful termination, and the pods' status.
//!
//! - [`image_gc`]: removes unused images when the image filesystem fills up.
//! - [`images`]: the project's own OCI images (busybox, pause, web) built from busybox.
//! - [`containerd`]: a private containerd under the data directory, and image import.
//! - [`cri`]: the CRI v1 gRPC client.
//! - [`node`]: Node registration, Lease and conditions.
//! - [`pods`]: the pod watch and one worker per pod.
//! - [`routes`]: routes to the other nodes' pod CIDRs (host-gateway pod network).
//! - [`tunnel`]: the connection to the API server that carries logs, exec, attach and
//!   port-forward; [`streaming`] serves them.

pub mod containerd;
pub mod cri;
pub mod image_gc;
pub mod images;
pub mod node;
pub mod pods;
pub mod routes;
pub mod streaming;
pub mod tunnel;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Node's name.
    pub node_name: String,
    /// Pod directories (volumes, /etc/hosts, termination messages) and container logs
    /// (`pods/<namespace>_<name>_<uid>/<container>/<restart>.log`) live here.
    pub data_dir: PathBuf,
    /// The podCIDR registered with a new Node. Either way the pod network is the Node's
    /// podCIDR, handed to the runtime once the Node has one.
    pub pod_cidr: Option<String>,
    /// How long to wait for the node IPAM controller to give the Node a podCIDR.
    pub pod_cidr_wait: Duration,
    /// The node's InternalIP (default: the address of the default route's interface).
    pub node_ip: Option<String>,
    /// Cluster DNS servers for dnsPolicy ClusterFirst (none: the node's resolv.conf).
    pub cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Extra node labels.
    pub labels: BTreeMap<String, String>,
    /// Pod capacity.
    pub max_pods: u32,
    /// How often each pod is synced without a change (kubelet's relist period).
    pub sync_interval: Duration,
    /// First restart back-off of a crashing container.
    pub backoff_initial: Duration,
    /// Longest restart back-off.
    pub backoff_max: Duration,
    /// The Lease's duration.
    pub lease_duration_seconds: i32,
    /// How often the Lease is renewed.
    pub lease_renew_interval: Duration,
    /// How often node status is posted when nothing changed.
    pub status_report_interval: Duration,
    /// Whether to route to the other nodes' pod CIDRs via their InternalIPs (off for
    /// agents sharing a host in tests; `kumo agent` and `kumo up` turn it on).
    pub node_routes: bool,
    /// Image garbage collection (none: images are never removed).
    pub image_gc: Option<image_gc::Policy>,
}

impl Config {
    /// Kubelet's defaults for a node name and data directory.
    pub fn new(node_name: &str, data_dir: &Path) -> Self {
        Self {
            node_name: node_name.to_owned(),
            data_dir: data_dir.to_owned(),
            pod_cidr: None,
            pod_cidr_wait: Duration::from_secs(120),
            node_ip: None,
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            labels: BTreeMap::new(),
            max_pods: 110,
            sync_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            lease_duration_seconds: 40,
            lease_renew_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(60),
            node_routes: false,
            image_gc: Some(image_gc::Policy::default()),
        }
    }
}

/// What every part of the running agent shares.
pub struct Shared {
    /// The API client (the node's identity).
    pub client: kube::Client,
    /// The runtime.
    pub cri: cri::Cri,
    /// The configuration.
    pub config: Config,
    /// Host and runtime facts.
    pub facts: node::Facts,
    /// Publishes the pods' events (Pulled, Created, Started, Killing, BackOff, ...).
    pub recorder: kube::runtime::events::Recorder,
}

/// Registers the node and runs it until the future is dropped or a loop fails.
pub async fn run(client: kube::Client, cri: cri::Cri, config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(config.data_dir.join("pods"))
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let facts = node::facts(&cri, &config).await?;
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "kubelet".into(),
            instance: Some(config.node_name.clone()),
        },
    );
    let shared = Arc::new(Shared {
        client,
        cri,
        config,
        facts,
        recorder,
    });
    node::register(&shared)
        .await
        .context("registering the node")?;
    configure_pod_network(&shared).await?;
    tokio::select! {
        r = node::run(&shared) => r,
        r = pods::run(shared.clone()) => r,
        r = tunnel::run(shared.clone()) => r,
        r = node_routes(&shared) => r,
        r = collect_images(&shared) => r,
    }
}

/// Hands the Node's pod CIDRs to the runtime (CRI `UpdateRuntimeConfig`, as kubelet
/// does), then waits a little for its network to be ready, so the Node turns Ready at once.
async fn configure_pod_network(shared: &Shared) -> anyhow::Result<()> {
    let cidrs = node::wait_pod_cidrs(shared)
        .await
        .context("reading the Node's pod CIDR")?;
    let joined = cidrs.join(",");
    shared
        .cri
        .update_runtime_config(&joined)
        .await
        .context("handing the pod CIDR to the runtime")?;
    tracing::info!(pod_cidr = %joined, "pod network configured");
    let started = tokio::time::Instant::now();
    loop {
        let status = shared.cri.status().await?;
        let network_ready = status
            .conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status);
        if network_ready {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            // A runtime without a CNI template waits for someone else's config.
            tracing::warn!(pod_cidr = %joined, "the runtime's network is not ready yet");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn collect_images(shared: &Shared) -> anyhow::Result<()> {
    match shared.config.image_gc.clone() {
        Some(policy) => image_gc::run(shared.cri.clone(), policy).await,
        None => std::future::pending().await,
    }
}

async fn node_routes(shared: &Shared) -> anyhow::Result<()> {
    if !shared.config.node_routes {
        return std::future::pending().await;
    }
    let router = routes::Router::new(vec!["ip".into()])
        .with_record(shared.config.data_dir.join("node-routes.json"));
    routes::run(
        shared.client.clone(),
        shared.config.node_name.clone(),
        router,
    )
    .await
}

/// The API client of the agent, from a kubeconfig (a node identity `system:node:<name>`
/// or an admin). Joining with a bootstrap token will make its credentials here too.
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
