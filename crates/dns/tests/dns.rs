//! The DNS server against an in-process API server: Services and EndpointSlices created
//! through the API become answers over UDP and TCP on a loopback port, changes show up
//! within a second, and other names go to an upstream server (a tiny hickory server on
//! loopback standing in for the host's resolvers).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{DnsResponse, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

mod upstream;

/// A DNS client over UDP or TCP.
async fn client(addr: SocketAddr, tcp: bool) -> Client<TokioRuntimeProvider> {
    let provider = TokioRuntimeProvider::default();
    if tcp {
        let (stream, sender) =
            TcpClientStream::new(addr, None, Some(Duration::from_secs(5)), provider);
        let stream = stream.await.expect("TCP connection");
        let (client, bg) = Client::<TokioRuntimeProvider>::new(stream, sender);
        tokio::spawn(bg);
        client
    } else {
        let stream = UdpClientStream::builder(addr, provider).build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        client
    }
}

async fn query(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    rtype: RecordType,
) -> DnsResponse {
    client
        .query(Name::from_str(name).expect("name"), DNSClass::IN, rtype)
        .await
        .expect("DNS answer")
}

/// The answer section as short strings.
fn answers(response: &DnsResponse) -> Vec<String> {
    let mut shown: Vec<String> = response
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => format!("A {}", a.0),
            RData::SRV(s) => format!("SRV {} {}", s.port, s.target),
            RData::CNAME(c) => format!("CNAME {}", c.0),
            other => format!("{other:?}"),
        })
        .collect();
    shown.sort();
    shown
}

struct Setup {
    _dir: tempfile::TempDir,
    _api: apiserver::testing::InProcess,
    services: Api<Service>,
    slices: Api<EndpointSlice>,
    dns: dns::Server,
    _upstream: upstream::Upstream,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let api = apiserver::testing::InProcess::start(dir.path())
        .await
        .expect("API server");
    let services: Api<Service> = Api::namespaced(api.client(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(api.client(), "default");
    let pp = PostParams::default();
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.43.0.80", "ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}},
    }))
    .expect("service");
    services.create(&pp, &web).await.expect("web");
    let db: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}], "selector": {"app": "db"}},
    }))
    .expect("service");
    services.create(&pp, &db).await.expect("db");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"], "conditions": {"ready": true}},
        ],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
    }))
    .expect("slice");
    slices.create(&pp, &slice).await.expect("slice");
    let upstream = upstream::Upstream::start().await;
    let config = dns::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        upstream: dns::Upstream::Servers(vec![upstream.addr]),
        ..Default::default()
    };
    let dns = dns::start(api.client(), config).await.expect("DNS server");
    Setup {
        _dir: dir,
        _api: api,
        services,
        slices,
        dns,
        _upstream: upstream,
    }
}

#[tokio::test]
async fn answers_cluster_names_over_udp_and_tcp() {
    let setup = setup().await;
    for tcp in [false, true] {
        let addr = if tcp { setup.dns.tcp } else { setup.dns.udp };
        let mut c = client(addr, tcp).await;
        let r = query(&mut c, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(answers(&r), vec!["A 10.43.0.80"], "tcp={tcp}");
        // The kubernetes Service of the bootstrap.
        let r = query(
            &mut c,
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(answers(&r), vec!["A 10.43.0.1"]);
        let r = query(
            &mut c,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(answers(&r), vec!["SRV 80 web.default.svc.cluster.local."]);
        assert_eq!(r.additionals.len(), 1);
        let r = query(&mut c, "db.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(answers(&r), vec!["A 10.42.0.5", "A 10.42.0.6"]);
        let r = query(&mut c, "db-0.db.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(answers(&r), vec!["A 10.42.0.5"]);
        let r = query(
            &mut c,
            "10-42-0-6.db.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(answers(&r), vec!["A 10.42.0.6"]);
        let r = query(
            &mut c,
            "_pg._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(
            answers(&r),
            vec![
                "SRV 5432 10-42-0-6.db.default.svc.cluster.local.",
                "SRV 5432 db-0.db.default.svc.cluster.local."
            ]
        );
        let r = query(
            &mut c,
            "10-42-0-9.default.pod.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(answers(&r), vec!["A 10.42.0.9"]);
        // Unknown names in the zone: NXDOMAIN with the zone's SOA.
        let r = query(&mut c, "missing.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.metadata.authoritative);
        assert_eq!(r.authorities.len(), 1);
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        // Everything else is forwarded.
        let r = query(&mut c, "www.example.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answers(&r), vec!["A 192.0.2.7"]);
        assert!(!r.metadata.authoritative);
        let r = query(&mut c, "nothing.example.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}

#[tokio::test]
async fn changes_reach_answers_within_a_second() {
    let setup = setup().await;
    let mut c = client(setup.dns.udp, false).await;
    let pp = PostParams::default();
    let api: Service = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"clusterIP": "10.43.0.81", "ports": [{"port": 443}]},
    }))
    .expect("service");
    let created = Instant::now();
    setup.services.create(&pp, &api).await.expect("create");
    let within = |deadline: Duration| created.elapsed() < deadline;
    loop {
        let r = query(&mut c, "api.default.svc.cluster.local.", RecordType::A).await;
        if answers(&r) == vec!["A 10.43.0.81"] {
            break;
        }
        assert!(
            within(Duration::from_secs(1)),
            "new Service not answered within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An endpoint leaving a headless Service leaves its answers.
    let started = Instant::now();
    setup
        .slices
        .delete("db-1", &DeleteParams::default())
        .await
        .expect("delete slice");
    loop {
        let r = query(&mut c, "db-0.db.default.svc.cluster.local.", RecordType::A).await;
        if r.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "removed endpoint still answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // External names are CNAMEs whose target is resolved through the upstream.
    let ext: Service = serde_json::from_value(json!({
        "metadata": {"name": "search"},
        "spec": {"type": "ExternalName", "externalName": "www.example.test"},
    }))
    .expect("service");
    setup.services.create(&pp, &ext).await.expect("create");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = query(&mut c, "search.default.svc.cluster.local.", RecordType::A).await;
        if !r.answers.is_empty() {
            assert_eq!(answers(&r), vec!["A 192.0.2.7", "CNAME www.example.test."]);
            break;
        }
        assert!(Instant::now() < deadline, "ExternalName not answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
