//! A tiny authoritative server for `example.test.` on a loopback port, standing in for the
//! host's resolvers: `www.example.test.` is `192.0.2.7`, other names do not exist.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// The running upstream; stops when dropped.
pub struct Upstream {
    /// UDP and TCP address.
    pub addr: SocketAddr,
    server: Server<Catalog>,
}

impl Upstream {
    pub async fn start() -> Self {
        let origin = Name::from_str("example.test.").expect("origin");
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            Name::from_str("ns.example.test.").expect("name"),
            Name::from_str("hostmaster.example.test.").expect("name"),
            1,
            3600,
            600,
            86400,
            60,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
        let www = Name::from_str("www.example.test.").expect("name");
        zone.upsert_mut(
            Record::from_rdata(www, 60, RData::A(A::new(192, 0, 2, 7))),
            1,
        );
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp");
        let addr = udp.local_addr().expect("addr");
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .expect("tcp on the same port");
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        Self { addr, server }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}
