//! `kumo server`: opens the store, loads or creates the PKI, bootstraps the default
//! cluster, writes the admin kubeconfig and serves HTTPS until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apiserver::authn::Identity;
use apiserver::pki::{self, Pki};
use apiserver::{ApiServer, serve};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
}

/// Namespaces every cluster has from the start.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Runs the server until a shutdown signal.
pub async fn run(mut args: ServerArgs) -> anyhow::Result<()> {
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
    let _compactor = store::Compactor::spawn(backend.clone(), policy);

    let hosts = serving_hosts(&args);
    let pki = Pki::load_or_create(&args.data_dir.join("pki"), &hosts).context("loading PKI")?;
    let tls = serve::tls_config(&pki)?;

    let server = Arc::new(ApiServer::new(backend.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let base_url = format!("https://{}", client_address(local));

    bootstrap(&server, "").await?;
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
        server.add_cluster(id);
        let prefix = format!("/clusters/{id}");
        bootstrap(&server, &prefix).await?;
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
    tracing::info!(listen = %local, "kumo API server ready");
    println!(
        "kubeconfig: {}",
        args.data_dir.join("admin.kubeconfig").display()
    );

    serve::serve(server, listener, tls, shutdown_signal()).await;
    tracing::info!("shutting down");
    Ok(())
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

/// Creates the system namespaces through the normal request pipeline.
async fn bootstrap(server: &ApiServer, prefix: &str) -> anyhow::Result<()> {
    for ns in SYSTEM_NAMESPACES {
        let body =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let req = http::Request::post(format!("{prefix}/api/v1/namespaces"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = server.handle(req, Some(Identity::loopback())).await;
        let code = resp.status().as_u16();
        if code != 201 && code != 409 {
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            anyhow::bail!(
                "creating namespace {ns}: {code} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
