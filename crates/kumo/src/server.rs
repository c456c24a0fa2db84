//! `kumo server`: opens the store, loads or creates the PKI, bootstraps the default
//! cluster, writes the admin kubeconfig and serves HTTPS until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apiserver::authn::Identity;
use apiserver::pki::{self, Pki};
use apiserver::{ApiServer, local, serve};
use store::{Backend, SqliteBackend, SqliteConfig};

/// Flags of `kumo server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Directory for the database, PKI and kubeconfigs.
    #[arg(long, default_value = "/var/lib/kumo")]
    pub data_dir: PathBuf,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Additional clusters to serve from the same datastore, at /clusters/<id>; each gets
    /// DIR/clusters/<id>/admin.kubeconfig.
    #[arg(long = "extra-cluster")]
    pub extra_clusters: Vec<String>,
    /// History kept before compaction, in seconds. Watches and lists at older revisions
    /// get 410 Expired. Values below 300 are meant for tests.
    #[arg(long, default_value_t = 300)]
    pub compaction_retention_seconds: u64,
    /// How often the compaction policy runs, in seconds.
    #[arg(long, default_value_t = 60)]
    pub compaction_interval_seconds: u64,
    /// The service-account token issuer (`iss`), where OIDC discovery is served; clusters
    /// added with --extra-cluster use <issuer>/clusters/<id>. Defaults to the server's URL.
    #[arg(long)]
    pub service_account_issuer: Option<String>,
    /// Audit log file (one JSON line per request); default DIR/audit/audit.log.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// What the audit log records: metadata (who did what to which object, and the
    /// answer) or none.
    #[arg(long, default_value = "metadata")]
    pub audit_level: apiserver::audit::Level,
    /// Rotate the audit log when it reaches this many megabytes.
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// How many rotated audit logs to keep.
    #[arg(long, default_value_t = 5)]
    pub audit_log_maxbackup: usize,
    /// Where Services' ClusterIPs come from (at most 20 host bits); the first address is
    /// the `kubernetes` Service's.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: ipnet::IpNet,
    /// The cluster's pod network, which the node IPAM controller carves node podCIDRs
    /// from (with `kumo up`, traffic from outside it to a ClusterIP is also masqueraded).
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: ipnet::IpNet,
    /// The prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Where NodePorts come from, inclusive (`FROM-TO`).
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: (u16, u16),
    /// The address the `kubernetes` Service's endpoints point at; default: the listen
    /// address (loopback when that is a wildcard).
    #[arg(long)]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Serve the API only: no controllers and no scheduler (for tests of the API alone).
    #[arg(long)]
    pub no_control_loops: bool,
}

/// Runs the server until a shutdown signal.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let started = start(args).await?;
    println!("kubeconfig: {}", started.admin_kubeconfig().display());
    started.serve(crate::signal::shutdown()).await;
    tracing::info!("shutting down");
    Ok(())
}

/// A server that is set up (store, PKI, clusters, control loops) and bound, not yet serving.
pub struct Started {
    /// The API server.
    pub server: Arc<ApiServer>,
    /// The cluster's PKI.
    pub pki: Pki,
    /// The URL local clients use (`https://127.0.0.1:6443`).
    pub url: String,
    /// The data directory, absolute.
    pub data_dir: PathBuf,
    /// The Service network the server allocates ClusterIPs from.
    pub service_cidr: ipnet::IpNet,
    listener: tokio::net::TcpListener,
    tls: serve::Tls,
    /// Compacts history while the server runs (dropping it stops compaction).
    _compactor: store::Compactor,
}

impl Started {
    /// The admin kubeconfig of the default cluster.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// Serves HTTPS until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        serve::serve(self.server, self.listener, self.tls, shutdown).await;
    }
}

/// Sets the server up: opens the store, loads or creates the PKI, bootstraps the clusters,
/// writes the admin kubeconfigs, starts the control loops and binds the listen address.
pub async fn start(mut args: ServerArgs) -> anyhow::Result<Started> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    // Absolute, so the kubeconfig path printed below works from any directory.
    args.data_dir = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let db_path = args.data_dir.join("state.db");
    let backend: Arc<dyn Backend> = Arc::new(
        SqliteBackend::open(SqliteConfig::new(&db_path))
            .with_context(|| format!("opening {}", db_path.display()))?,
    );
    let policy = store::CompactionPolicy {
        retain: Duration::from_secs(args.compaction_retention_seconds),
        interval: Duration::from_secs(args.compaction_interval_seconds.max(1)),
    };
    if policy.retain < Duration::from_secs(300) {
        tracing::warn!(
            seconds = args.compaction_retention_seconds,
            "history retention below 5 minutes: clients may see 410 Expired often"
        );
    }
    let compactor = store::Compactor::spawn(backend.clone(), policy);

    let hosts = serving_hosts(&args);
    let pki = Pki::load_or_create(&args.data_dir.join("pki"), &hosts).context("loading PKI")?;
    let tls = serve::tls_config(&pki)?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let base_url = format!("https://{}", client_address(local));
    let server = Arc::new(ApiServer::with_service_network(
        backend.clone(),
        service_network(&args, local)?,
    ));
    let audit = apiserver::audit::Config {
        path: args
            .audit_log_path
            .clone()
            .unwrap_or_else(|| args.data_dir.join("audit").join("audit.log")),
        max_bytes: args.audit_log_maxsize.max(1) * 1024 * 1024,
        max_backups: args.audit_log_maxbackup,
        level: args.audit_level,
    };
    if audit.level != apiserver::audit::Level::None {
        let path = audit.path.clone();
        server.set_audit_log(
            apiserver::audit::AuditLog::open(audit)
                .with_context(|| format!("opening the audit log {}", path.display()))?,
        );
    }

    let issuer = args
        .service_account_issuer
        .clone()
        .unwrap_or_else(|| base_url.clone());
    let issuer = issuer.trim_end_matches('/').to_owned();
    let configure = |id: &str, issuer: &str| {
        let cp = server.add_cluster(id);
        cp.tokens().set_issuer(issuer);
        cp.set_ca_pem(&pki.ca.cert_pem);
    };
    configure(apiserver::request::DEFAULT_CLUSTER, &issuer);
    let mut clusters = vec![apiserver::request::DEFAULT_CLUSTER.to_owned()];
    bootstrap(&server, apiserver::request::DEFAULT_CLUSTER).await?;
    write_kubeconfig(
        &args.data_dir.join("admin.kubeconfig"),
        "kumo",
        &base_url,
        &pki,
    )?;
    for id in &args.extra_clusters {
        anyhow::ensure!(
            apimachinery::validation::dns1123_label(id).is_empty()
                && id != apiserver::request::DEFAULT_CLUSTER,
            "cluster id {id:?} must be a DNS label other than \"default\""
        );
        let prefix = format!("/clusters/{id}");
        configure(id, &format!("{issuer}{prefix}"));
        bootstrap(&server, id).await?;
        clusters.push(id.clone());
        let dir = args.data_dir.join("clusters").join(id);
        std::fs::create_dir_all(&dir)?;
        write_kubeconfig(
            &dir.join("admin.kubeconfig"),
            id,
            &format!("{base_url}{prefix}"),
            &pki,
        )?;
    }
    server
        .load_custom_kinds()
        .await
        .map_err(|e| anyhow::anyhow!("loading CRDs: {}", e.message))?;
    if !args.no_control_loops {
        let holder = server_id(&args.data_dir)?;
        anyhow::ensure!(
            args.node_cidr_mask_size >= args.cluster_cidr.prefix_len()
                && args.node_cidr_mask_size <= args.cluster_cidr.max_prefix_len(),
            "--node-cidr-mask-size {} does not fit --cluster-cidr {}",
            args.node_cidr_mask_size,
            args.cluster_cidr
        );
        let pod_network = controllers::node_ipam::Config {
            cluster_cidr: args.cluster_cidr,
            node_mask: args.node_cidr_mask_size,
        };
        for cluster in &clusters {
            spawn_control_loops(&server, cluster, &holder, &pki.ca, &pod_network);
        }
    }
    tracing::info!(listen = %local, "kumo API server ready");
    Ok(Started {
        server,
        pki,
        url: base_url,
        service_cidr: args.service_cidr,
        data_dir: args.data_dir,
        listener,
        tls,
        _compactor: compactor,
    })
}

/// Where Services get their addresses, and where the `kubernetes` Service points.
fn service_network(
    args: &ServerArgs,
    local: SocketAddr,
) -> anyhow::Result<apiserver::service_alloc::ServiceNetwork> {
    let advertise = args
        .advertise_address
        .unwrap_or_else(|| client_address(local).ip());
    let network = apiserver::service_alloc::ServiceNetwork {
        cidr: args.service_cidr,
        node_ports: args.service_node_port_range,
        advertise: Some(SocketAddr::new(advertise, local.port())),
        ..Default::default()
    };
    network
        .validate()
        .map_err(|e| anyhow::anyhow!("--service-cidr/--service-node-port-range: {e}"))?;
    Ok(network)
}

/// `30000-32767` → (30000, 32767).
fn parse_port_range(raw: &str) -> Result<(u16, u16), String> {
    let (from, to) = raw
        .split_once('-')
        .ok_or_else(|| format!("{raw:?} is not a range FROM-TO"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port number"))
    };
    let (from, to) = (port(from)?, port(to)?);
    if from == 0 || from > to {
        return Err(format!("{raw:?}: the range must be 1-65535 and FROM ≤ TO"));
    }
    Ok((from, to))
}

/// The names and addresses clients use to reach the server.
fn serving_hosts(args: &ServerArgs) -> Vec<String> {
    let mut hosts: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    hosts.push("kubernetes.default.svc.cluster.local".to_owned());
    let ip = args.listen.ip();
    if !ip.is_unspecified() && !hosts.contains(&ip.to_string()) {
        hosts.push(ip.to_string());
    }
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty()
            && apimachinery::validation::dns1123_subdomain(&name).is_empty()
            && !hosts.contains(&name)
        {
            hosts.push(name);
        }
    }
    for san in &args.tls_san {
        if !hosts.contains(san) {
            hosts.push(san.clone());
        }
    }
    hosts
}

/// The address a local client dials: the listen address, or loopback when it is a wildcard.
fn client_address(local: SocketAddr) -> SocketAddr {
    if local.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], local.port()))
    } else {
        local
    }
}

fn write_kubeconfig(path: &Path, name: &str, url: &str, pki: &Pki) -> anyhow::Result<()> {
    let config = pki::kubeconfig(name, url, &pki.ca.cert_pem, "admin", &pki.admin);
    pki::write_private(path, config.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

async fn bootstrap(server: &ApiServer, cluster: &str) -> anyhow::Result<()> {
    server
        .bootstrap(cluster)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping cluster {cluster}: {}", e.message))
}

/// This server's identity as a leader-election candidate: random on first start, then kept
/// in DIR/server-id so that a restarted server resumes its own leases at once.
fn server_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("server-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_owned());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id = format!("{}_{}", host.trim(), uuid::Uuid::new_v4());
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Starts the cluster's controllers and scheduler, each while it holds its Lease, over
/// in-process clients with their own identities.
fn spawn_control_loops(
    server: &Arc<ApiServer>,
    cluster: &str,
    holder: &str,
    ca: &pki::CertKey,
    pod_network: &controllers::node_ipam::Config,
) {
    use controllers::leader::{LeaseLock, run_as_leader};
    let client = local::client(server.clone(), cluster, Identity::controller_manager());
    let ctx = controllers::Context {
        client: client.clone(),
        cluster: Arc::from(cluster),
        root_ca_pem: Arc::from(ca.cert_pem.as_str()),
        pod_network: pod_network.clone(),
    };
    let lock = LeaseLock::new("kube-controller-manager", holder);
    let signing = controllers::certificates::SigningCa {
        cert_pem: ca.cert_pem.clone(),
        key_pem: ca.key_pem.clone(),
    };
    tokio::spawn(run_as_leader(client.clone(), lock, move || {
        let ctx = ctx.clone();
        let certificates = controllers::certificates::run(ctx.client.clone(), signing.clone());
        async move {
            tokio::try_join!(controllers::run(ctx), certificates)?;
            Ok(())
        }
    }));
    let client = local::client(server.clone(), cluster, Identity::scheduler());
    let lock = LeaseLock::new("kube-scheduler", holder);
    tokio::spawn(run_as_leader(client.clone(), lock, move || {
        scheduler::run(client.clone())
    }));
}
