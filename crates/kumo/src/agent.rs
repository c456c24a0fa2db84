//! `kumo agent`: the node agent. It runs the pods bound to its node on containerd over
//! CRI: on a given CRI socket, or on a private containerd it starts and supervises under
//! its data directory (with the pod network and the built-in images).

use std::path::PathBuf;

use anyhow::Context;

/// Flags of `kumo agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Kubeconfig of the cluster (a node identity `system:node:<name>`, or admin). Without
    /// it the node joins with --server, --token and --ca-cert-hash, and keeps its
    /// credentials in DATA_DIR/node.kubeconfig, renewed before they expire.
    #[arg(long, required_unless_present = "token")]
    pub kubeconfig: Option<PathBuf>,
    /// The API server to join, https://HOST:PORT.
    #[arg(long, requires = "token")]
    pub server: Option<String>,
    /// A bootstrap token (`kumo token create` prints the whole join command).
    #[arg(long, requires_all = ["server", "ca_cert_hash"])]
    pub token: Option<String>,
    /// sha256:<hex> of the cluster CA's public key, which pins the server.
    #[arg(long, requires = "token")]
    pub ca_cert_hash: Option<String>,
    /// The Node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// An existing CRI socket to use instead of starting a private containerd.
    #[arg(long)]
    pub cri_socket: Option<PathBuf>,
    /// Directory for pods, logs and the private containerd.
    #[arg(long, default_value = "/var/lib/kumo-agent")]
    pub data_dir: PathBuf,
    /// Pod network of a Node this agent creates. Without it the node IPAM controller
    /// assigns the Node's spec.podCIDR and the agent waits for it; a Node that already has
    /// a podCIDR keeps it (as kubelet, the Node's wins).
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// The Linux bridge of the pod network (private containerd only).
    #[arg(long, default_value = "kumo0")]
    pub bridge: String,
    /// The node's InternalIP (default: the address of the default route's interface).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Cluster DNS server addresses for pods with dnsPolicy ClusterFirst.
    #[arg(long = "cluster-dns", value_delimiter = ',')]
    pub cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The containerd binary (private containerd only).
    #[arg(long, default_value = "containerd")]
    pub containerd: PathBuf,
    /// The busybox the built-in images are made from (private containerd only).
    #[arg(long, default_value = ::agent::images::DEFAULT_BUSYBOX)]
    pub busybox: PathBuf,
}

/// Runs the agent until SIGINT or SIGTERM. A private containerd is stopped on exit; the
/// containers keep running and are adopted by the next start.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let node_name = match args.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name")?
            .trim()
            .to_lowercase(),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    // Joined nodes renew their certificate; the agent then starts over with it (running
    // containers are adopted, as after any restart).
    let (kubeconfig, renews) = match &args.kubeconfig {
        Some(path) => (path.clone(), false),
        None => {
            let path = data_dir.join("node.kubeconfig");
            if path.exists() {
                tracing::info!(kubeconfig = %path.display(), "already joined");
            } else {
                let server = args
                    .server
                    .clone()
                    .context("--server is required to join")?;
                let token = args.token.clone().context("--token is required to join")?;
                let pin = args
                    .ca_cert_hash
                    .clone()
                    .context("--ca-cert-hash is required to join")?;
                let ca_pem = crate::join::pinned_ca(&server, &pin).await?;
                let kubeconfig = crate::join::join(&server, &token, &ca_pem, &node_name).await?;
                apiserver::pki::write_private(&path, kubeconfig.as_bytes())?;
                tracing::info!(node = %node_name, kubeconfig = %path.display(), "joined the cluster");
            }
            (path, true)
        }
    };
    let client = ::agent::client_from_kubeconfig(&kubeconfig).await?;

    let (containerd, socket) = match args.cri_socket {
        Some(socket) => (None, socket),
        None => {
            // The pod network follows once the Node has its podCIDR (UpdateRuntimeConfig).
            let mut config = ::agent::containerd::Config::new(&data_dir.join("containerd"));
            config.bridge = args.bridge;
            config.containerd_binary = args.containerd;
            tracing::info!(dir = %config.dir.display(), "starting containerd");
            let containerd = ::agent::containerd::Containerd::start(config).await?;
            let socket = containerd.socket();
            (Some(containerd), socket)
        }
    };
    let cri = ::agent::cri::Cri::connect(&socket).await?;
    if containerd.is_some() {
        let archives = ::agent::images::build_all(&args.busybox)?;
        let imported =
            ::agent::containerd::ensure_images(&cri, &data_dir.join("images"), &archives).await?;
        if !imported.is_empty() {
            tracing::info!(?imported, "imported the built-in images");
        }
    }
    let mut config = ::agent::Config::new(&node_name, &data_dir);
    config.pod_cidr = args.pod_cidr;
    config.node_ip = args.node_ip;
    config.cluster_dns = args.cluster_dns;
    config.cluster_domain = args.cluster_domain;
    config.node_routes = true;
    tracing::info!(node = %node_name, cri = %socket.display(), "agent running");
    let shutdown = crate::signal::shutdown();
    tokio::pin!(shutdown);
    let mut client = client;
    let result = loop {
        let renewed = async {
            if renews {
                crate::join::renew_when_due(&kubeconfig).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            r = ::agent::run(client.clone(), cri.clone(), config.clone()) => break r,
            () = &mut shutdown => break Ok(()),
            () = renewed => {
                tracing::info!("node certificate renewed; restarting the agent with it");
                client = ::agent::client_from_kubeconfig(&kubeconfig).await?;
            }
        }
    };
    drop(containerd);
    result
}
