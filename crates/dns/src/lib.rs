//! kumo's cluster DNS, the counterpart of CoreDNS with its `kubernetes` and `forward`
//! plugins: a hickory-server answering the cluster zone from Services, EndpointSlices (and
//! pods, in verified mode) that kube-rs watchers keep current, and forwarding every other
//! name to the host's resolvers.
//!
//! [`run`] is the whole component; [`start`] returns once it serves, with the bound
//! addresses (for tests and for callers that listen on port 0).

mod handler;
pub mod records;
mod watch;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::Name;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::resolver::config::{ConnectionConfig, NameServerConfig};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};

pub use records::PodRecords;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster domain is not a DNS name.
    #[error("invalid cluster domain {domain:?}: {source}")]
    InvalidDomain {
        /// The domain given.
        domain: String,
        /// Why it is invalid.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The forwarder could not be configured (for example, no readable resolv.conf).
    #[error("configuring the forwarder: {0}")]
    Forwarder(String),
    /// The first list of Services, EndpointSlices or pods failed.
    #[error("initial sync with the API server did not finish within {0:?}")]
    InitialSyncTimedOut(Duration),
}

/// Where names outside the cluster zone go.
#[derive(Clone, Debug, Default)]
pub enum Upstream {
    /// The nameservers of the host's `/etc/resolv.conf`.
    #[default]
    System,
    /// These nameservers (UDP and TCP).
    Servers(Vec<SocketAddr>),
    /// Nowhere: other names are refused.
    None,
}

/// How the DNS server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// UDP and TCP address to serve on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// Where other names are forwarded.
    pub upstream: Upstream,
    /// Pod records (`<dashed-ip>.<ns>.pod.<domain>`).
    pub pods: PodRecords,
    /// TTL of the cluster's records, in seconds (CoreDNS's default: 5).
    pub ttl: u32,
    /// How long to wait for the first lists before serving anyway.
    pub sync_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            domain: "cluster.local".into(),
            upstream: Upstream::System,
            pods: PodRecords::Insecure,
            ttl: 5,
            sync_timeout: Duration::from_secs(5),
        }
    }
}

/// A running DNS server; dropping it stops the server and its watches.
pub struct Server {
    /// The UDP address it serves on.
    pub udp: SocketAddr,
    /// The TCP address it serves on.
    pub tcp: SocketAddr,
    server: hickory_server::Server<handler::Handler>,
    watches: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves until the server's tasks end (they do not, short of a failure).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        self.server
            .block_until_done()
            .await
            .map_err(|e| anyhow::anyhow!("DNS server stopped: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.watches.abort();
        self.server.shutdown_token().cancel();
    }
}

/// Runs the DNS server until it fails.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    start(client, config).await?.wait().await
}

/// Starts watching the cluster, waits for the first lists (at most `sync_timeout`),
/// binds UDP and TCP and serves.
pub async fn start(client: kube::Client, config: Config) -> Result<Server, Error> {
    let mut origin = Name::from_ascii(&config.domain).map_err(|source| Error::InvalidDomain {
        domain: config.domain.clone(),
        source,
    })?;
    origin.set_fqdn(true);
    let forwarder = forwarder(&config.upstream)?;
    let (zones, watches) = watch::start(client, origin, &config).await?;
    let (udp, tcp) = bind(config.listen).await?;
    let udp_addr = udp.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let tcp_addr = tcp.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let mut server = hickory_server::Server::new(handler::Handler::new(zones, forwarder));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tracing::info!(udp = %udp_addr, tcp = %tcp_addr, domain = %config.domain, "cluster DNS serving");
    Ok(Server {
        udp: udp_addr,
        tcp: tcp_addr,
        server,
        watches,
    })
}

/// Binds UDP and TCP on one port; with port 0, a port free for both.
async fn bind(
    listen: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), Error> {
    let err = |source| Error::Bind {
        addr: listen,
        source,
    };
    for _ in 0..16 {
        let udp = tokio::net::UdpSocket::bind(listen).await.map_err(err)?;
        let addr = udp.local_addr().map_err(err)?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    )))
}

fn forwarder(upstream: &Upstream) -> Result<Option<handler::Forwarder>, Error> {
    let builder = match upstream {
        Upstream::None => return Ok(None),
        Upstream::System => ForwardZoneHandler::builder(TokioRuntimeProvider::default())
            .map_err(Error::Forwarder)?,
        Upstream::Servers(servers) => {
            let name_servers = servers
                .iter()
                .map(|addr| name_server(addr.ip(), addr.port()))
                .collect();
            ForwardZoneHandler::builder_tokio(ForwardConfig {
                name_servers,
                options: None,
            })
        }
    };
    let handler = builder.build().map_err(Error::Forwarder)?;
    Ok(Some(handler::Forwarder::new(handler)))
}

fn name_server(ip: IpAddr, port: u16) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = port;
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = port;
    NameServerConfig::new(ip, true, vec![udp, tcp])
}
