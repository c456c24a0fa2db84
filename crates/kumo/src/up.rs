//! `kumo up`: a one-node cluster in one process. The API server with its control loops,
//! then, for this host, the node agent on a private containerd (with a node client
//! certificate issued from the cluster CA), the cluster DNS behind the `kube-dns` Service,
//! and the service proxy. SIGINT or SIGTERM stops it; the containers keep running and the
//! next start adopts them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use apiserver::authn::Identity;
use apiserver::request::DEFAULT_CLUSTER;
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::agent::AgentArgs;
use crate::server::{self, ServerArgs};

/// Flags of `kumo up`: the server's, and the node's.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The Node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's address: the Node's InternalIP, where NodePorts and the cluster DNS
    /// answer (port 53, or a free port when another `kumo up` holds it; default: the
    /// address of the default route's interface).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Pod network of the node, registered with its Node (the node IPAM controller then
    /// gives other nodes other subnets); a Node that already has one keeps it.
    #[arg(long, default_value = "10.42.0.0/24")]
    pub pod_cidr: ipnet::IpNet,
    /// The Linux bridge of the pod network. It also names what this node puts on the host
    /// besides (the nftables tables `ip BRIDGE` and `ip6 BRIDGE`, the loopback label
    /// `lo:BRIDGE`), so several `kumo up` on one host each need a bridge of their own.
    #[arg(long, default_value = "kumo0")]
    pub bridge: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Addresses LoadBalancer Services get their ingress IP from (none: they stay pending);
    /// the node holds the ones it announces on `lo` (label `lo:BRIDGE`), so a pool on the
    /// node's LAN is reachable from its neighbours.
    #[arg(long = "load-balancer-pool", value_delimiter = ',')]
    pub load_balancer_pool: Vec<ipnet::IpNet>,
    /// The containerd binary.
    #[arg(long, default_value = "containerd")]
    pub containerd: PathBuf,
    /// The busybox the built-in images are made from.
    #[arg(long, default_value = ::agent::images::DEFAULT_BUSYBOX)]
    pub busybox: PathBuf,
}

/// The cluster DNS's identity; the default policy binds it to system:kumo-dns.
fn dns_identity() -> Identity {
    Identity {
        user: "system:kumo-dns".into(),
        groups: vec!["system:authenticated".into()],
        ..Default::default()
    }
}

/// The proxy's identity, as upstream's kube-proxy (system:node-proxier, system:kumo-proxy).
fn proxy_identity() -> Identity {
    Identity {
        user: "system:kube-proxy".into(),
        groups: vec!["system:authenticated".into()],
        ..Default::default()
    }
}

/// Runs the cluster until SIGINT or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.server.cluster_cidr.contains(&args.pod_cidr),
        "--pod-cidr {} is not inside --cluster-cidr {}",
        args.pod_cidr,
        args.server.cluster_cidr
    );
    let cluster_cidr = args.server.cluster_cidr;
    let started = server::start(args.server).await?;
    let data_dir = started.data_dir.clone();
    let server = started.server.clone();
    let url = started.url.clone();
    let dns_ip = started
        .service_cidr
        .hosts()
        .nth(9)
        .context("the service CIDR has no 10th address for the cluster DNS")?;
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let ca = started.pki.ca.clone();
    let serving = tokio::spawn(started.serve(async {
        let _ = serving_stopped.await;
    }));
    println!("kumo up: API server on {url}");

    let node_name = match args.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name")?
            .trim()
            .to_lowercase(),
    };
    let node_ip: IpAddr = match args.node_ip {
        Some(ip) => ip,
        None => ::agent::node::default_host_ip()
            .parse()
            .context("the default route's address")?,
    };
    let node_kubeconfig = data_dir.join("node.kubeconfig");
    write_node_kubeconfig(&node_kubeconfig, &node_name, &url, &ca)?;

    let admin = apiserver::local::client(server.clone(), DEFAULT_CLUSTER, Identity::loopback());
    let dns_config = |port| dns::Config {
        listen: SocketAddr::new(node_ip, port),
        domain: args.cluster_domain.clone(),
        ..Default::default()
    };
    let dns_client = || apiserver::local::client(server.clone(), DEFAULT_CLUSTER, dns_identity());
    let dns = match dns::start(dns_client(), dns_config(53)).await {
        // Another `kumo up` on this host serves its cluster there: pods reach this one's
        // through the kube-dns ClusterIP all the same, whatever port it listens on.
        Err(dns::Error::Bind { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse => {
            dns::start(dns_client(), dns_config(0)).await
        }
        other => other,
    }
    .with_context(|| format!("starting the cluster DNS on {node_ip}"))?;
    let dns_port = dns.udp.port();
    publish_dns_service(
        &admin,
        dns_ip,
        SocketAddr::new(node_ip, dns_port),
        &node_name,
    )
    .await?;
    println!(
        "kumo up: cluster DNS on {node_ip}:{dns_port}, Service kube-system/kube-dns at {dns_ip}"
    );
    let dns = tokio::spawn(dns.wait());

    let proxy_config = proxy::Config {
        node_name: node_name.clone(),
        node_ips: vec![node_ip],
        cluster_cidrs: vec![cluster_cidr],
        table: proxy::table_for_bridge(&args.bridge),
        announce_label: (!args.load_balancer_pool.is_empty())
            .then(|| proxy::announce_label_for_bridge(&args.bridge)),
        load_balancer_pool: args.load_balancer_pool,
        ..Default::default()
    };
    let mut proxy = tokio::spawn(proxy::run(
        apiserver::local::client(server.clone(), DEFAULT_CLUSTER, proxy_identity()),
        proxy_config.clone(),
    ));
    println!(
        "kumo up: service proxy running (nftables table ip {})",
        proxy_config.table
    );

    let agent = tokio::spawn(crate::agent::run(AgentArgs {
        kubeconfig: Some(node_kubeconfig),
        server: None,
        token: None,
        ca_cert_hash: None,
        node_name: Some(node_name.clone()),
        cri_socket: None,
        data_dir: data_dir.join("agent"),
        pod_cidr: Some(args.pod_cidr.trunc().to_string()),
        bridge: args.bridge,
        node_ip: Some(node_ip.to_string()),
        cluster_dns: vec![dns_ip.to_string()],
        cluster_domain: args.cluster_domain,
        containerd: args.containerd,
        busybox: args.busybox,
    }));
    println!("kumo up: starting node {node_name} ({node_ip}) on a private containerd");

    let admin_kubeconfig = data_dir.join("admin.kubeconfig");
    let announce_ready = async {
        wait_node_ready(&admin, &node_name).await;
        println!("kumo up: node {node_name} is Ready");
        println!("kubeconfig: {}", admin_kubeconfig.display());
        std::future::pending::<()>().await;
    };
    let mut agent = agent;
    let result = tokio::select! {
        () = crate::signal::shutdown() => Ok(()),
        () = announce_ready => Ok(()),
        // The agent returns Ok only when it saw the signal too.
        r = &mut agent => match r {
            Ok(Ok(())) => Ok(()),
            other => flatten("the agent", other),
        },
        r = dns => flatten("the cluster DNS", r),
        r = &mut proxy => flatten("the service proxy", r),
    };
    tracing::info!("shutting down");
    // The rules go with the proxy: only this node's tables, other instances keep theirs.
    proxy.abort();
    let _ = (&mut proxy).await;
    if let Err(e) = proxy::cleanup(&proxy_config).await {
        tracing::warn!(error = %e, table = %proxy_config.table, "removing the service proxy's rules");
    }
    // Aborting the agent drops its containerd, which stops it; containers keep running.
    agent.abort();
    let _ = agent.await;
    let _ = stop_serving.send(());
    let _ = serving.await;
    result
}

/// Writes DIR/node.kubeconfig: the node's credentials (`system:node:<name>` in
/// `system:nodes`), a fresh client certificate from the cluster CA, as `kumo join` would
/// leave them.
fn write_node_kubeconfig(
    path: &Path,
    node_name: &str,
    url: &str,
    ca: &apiserver::pki::CertKey,
) -> anyhow::Result<()> {
    let user = format!("system:node:{node_name}");
    let cert = apiserver::pki::issue_client(ca, &user, &["system:nodes"])
        .context("issuing the node's client certificate")?;
    let config = apiserver::pki::kubeconfig("kumo", url, &ca.cert_pem, &user, &cert);
    apiserver::pki::write_private(path, config.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The `kube-dns` Service in kube-system at `dns_ip` (port 53), without a selector, and
/// its EndpointSlice and Endpoints pointing at the DNS server on the node (`dns_server`),
/// so the proxy sends the ClusterIP's traffic there. Applied on every start: the node's
/// address (and the server's port) may change.
async fn publish_dns_service(
    client: &kube::Client,
    dns_ip: IpAddr,
    dns_server: SocketAddr,
    node_name: &str,
) -> anyhow::Result<()> {
    let node_ip = dns_server.ip();
    let params = PatchParams::apply("kumo-up").force();
    let labels = serde_json::json!({
        "k8s-app": "kube-dns",
        "kubernetes.io/cluster-service": "true",
        "kubernetes.io/name": "KumoDNS",
    });
    let target = dns_server.port();
    let service_ports = serde_json::json!([
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": target},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": target},
    ]);
    let ports = serde_json::json!([
        {"name": "dns", "port": target, "protocol": "UDP"},
        {"name": "dns-tcp", "port": target, "protocol": "TCP"},
    ]);
    let service = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {"clusterIP": dns_ip.to_string(), "ports": service_ports},
    });
    Api::<Service>::namespaced(client.clone(), "kube-system")
        .patch("kube-dns", &params, &Patch::Apply(&service))
        .await
        .context("applying Service kube-system/kube-dns")?;
    let family = if node_ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-kumo",
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "kumo-up",
            },
        },
        "addressType": family,
        "endpoints": [{
            "addresses": [node_ip.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node_name,
        }],
        "ports": ports,
    });
    Api::<EndpointSlice>::namespaced(client.clone(), "kube-system")
        .patch("kube-dns-kumo", &params, &Patch::Apply(&slice))
        .await
        .context("applying EndpointSlice kube-system/kube-dns-kumo")?;
    // Endpoints too, for clients that read them; not mirrored, the slice above exists.
    let endpoints = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [{
            "addresses": [{"ip": node_ip.to_string(), "nodeName": node_name}],
            "ports": ports,
        }],
    });
    Api::<Endpoints>::namespaced(client.clone(), "kube-system")
        .patch("kube-dns", &params, &Patch::Apply(&endpoints))
        .await
        .context("applying Endpoints kube-system/kube-dns")?;
    Ok(())
}

/// Polls the Node until its Ready condition is True.
async fn wait_node_ready(client: &kube::Client, node_name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        if let Ok(Some(node)) = nodes.get_opt(node_name).await {
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A component task's end, which is an error whatever it returned: they run until stopped.
fn flatten(
    what: &str,
    result: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match result {
        Ok(Ok(())) => anyhow::bail!("{what} stopped"),
        Ok(Err(e)) => Err(e.context(format!("{what} failed"))),
        Err(e) => Err(anyhow::anyhow!("{what} panicked: {e}")),
    }
}
