//! Service address allocation through the real request pipeline of an in-process server.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::range::Range;
use super::*;
use crate::testing::InProcess;

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("service")
}

fn tcp(port: i32) -> Value {
    json!([{"port": port, "protocol": "TCP"}])
}

async fn start() -> (tempfile::TempDir, InProcess, Api<Service>) {
    let dir = tempfile::tempdir().expect("dir");
    let api = InProcess::start(dir.path()).await.expect("server");
    let services = Api::namespaced(api.client(), "default");
    (dir, api, services)
}

fn ip_of(svc: &Service) -> String {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap_or_default()
}

fn node_port_of(svc: &Service, i: usize) -> i32 {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.get(i))
        .and_then(|p| p.node_port)
        .unwrap_or(0)
}

/// The 422 message of a failed write.
fn invalid(result: Result<Service, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => status.message,
        other => panic!("expected 422, got {other:?}"),
    }
}

#[tokio::test]
async fn cluster_ips_are_allocated_honoured_and_never_duplicated() {
    let (_dir, _api, services) = start().await;
    let pp = PostParams::default();
    let web = services
        .create(
            &pp,
            &service("web", json!({"ports": tcp(80), "selector": {"app": "web"}})),
        )
        .await
        .expect("create");
    let ip: IpAddr = ip_of(&web).parse().expect("allocated IP");
    let range = Range::Ips("10.43.0.0/16".parse().expect("cidr"));
    let offset = range.ip_offset(ip).expect("in the service CIDR");
    assert!(
        offset >= range.dynamic_start(),
        "dynamic allocations avoid the low band: {ip}"
    );
    let spec = web.spec.clone().expect("spec");
    assert_eq!(spec.cluster_ips, Some(vec![ip.to_string()]));
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_owned()]));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));

    // A requested address is honoured, once.
    let fixed = services
        .create(
            &pp,
            &service(
                "fixed",
                json!({"clusterIP": "10.43.0.10", "ports": tcp(80)}),
            ),
        )
        .await
        .expect("requested IP");
    assert_eq!(ip_of(&fixed), "10.43.0.10");
    let message = invalid(
        services
            .create(
                &pp,
                &service(
                    "again",
                    json!({"clusterIP": "10.43.0.10", "ports": tcp(80)}),
                ),
            )
            .await,
    );
    assert_eq!(
        message,
        "Service \"again\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.43.0.10\"}: failed to allocate IP 10.43.0.10: provided IP is already allocated"
    );
    let message = invalid(
        services
            .create(
                &pp,
                &service(
                    "outside",
                    json!({"clusterIP": "10.99.0.1", "ports": tcp(80)}),
                ),
            )
            .await,
    );
    assert!(
        message.contains("the provided IP (10.99.0.1) is not in the valid range. The range of valid IPs is 10.43.0.0/16"),
        "{message}"
    );
    // The kubernetes Service holds the first address.
    let message = invalid(
        services
            .create(
                &pp,
                &service("first", json!({"clusterIP": "10.43.0.1", "ports": tcp(80)})),
            )
            .await,
    );
    assert!(
        message.contains("provided IP is already allocated"),
        "{message}"
    );

    // Deleting gives the address back.
    services
        .delete("fixed", &DeleteParams::default())
        .await
        .expect("delete");
    let reused = services
        .create(
            &pp,
            &service(
                "reuse",
                json!({"clusterIP": "10.43.0.10", "ports": tcp(80)}),
            ),
        )
        .await
        .expect("freed IP can be requested");
    assert_eq!(ip_of(&reused), "10.43.0.10");
}

#[tokio::test]
async fn headless_and_external_name_services_get_no_address() {
    let (_dir, api, services) = start().await;
    let pp = PostParams::default();
    let headless = services
        .create(
            &pp,
            &service(
                "db",
                json!({"clusterIP": "None", "ports": tcp(5432), "selector": {"app": "db"}}),
            ),
        )
        .await
        .expect("headless");
    let spec = headless.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.cluster_ips, Some(vec!["None".to_owned()]));
    let external = services
        .create(
            &pp,
            &service(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
        )
        .await
        .expect("external name");
    let spec = external.spec.expect("spec");
    assert_eq!(spec.cluster_ip, None);
    assert_eq!(spec.ip_families, None);
    let cp = api
        .server
        .cluster(crate::request::DEFAULT_CLUSTER)
        .expect("cluster");
    let allocated = cp.services().ips.read().await.expect("read").bitmap.count();
    assert_eq!(allocated, 1, "only the kubernetes Service holds an IP");
}

#[tokio::test]
async fn node_ports_are_allocated_checked_and_released_on_type_change() {
    let (_dir, api, services) = start().await;
    let pp = PostParams::default();
    let dns_ports = json!([
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "metrics", "port": 9153, "protocol": "TCP"},
    ]);
    let dns = services
        .create(
            &pp,
            &service("dns", json!({"type": "NodePort", "ports": dns_ports})),
        )
        .await
        .expect("NodePort service");
    let (udp, tcp_port, metrics) = (
        node_port_of(&dns, 0),
        node_port_of(&dns, 1),
        node_port_of(&dns, 2),
    );
    assert!((30000..=32767).contains(&udp), "{udp}");
    assert_eq!(udp, tcp_port, "ports with one number share a node port");
    assert_ne!(udp, metrics);

    let requested = json!([{"port": 80, "nodePort": 30080}]);
    services
        .create(
            &pp,
            &service("web", json!({"type": "NodePort", "ports": requested})),
        )
        .await
        .expect("requested node port");
    let message = invalid(
        services
            .create(
                &pp,
                &service("web2", json!({"type": "NodePort", "ports": requested})),
            )
            .await,
    );
    assert_eq!(
        message,
        "Service \"web2\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );

    // NodePort → ClusterIP: the node port goes away without the client clearing it.
    let patched = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
        )
        .await
        .expect("to ClusterIP");
    assert_eq!(node_port_of(&patched, 0), 0);
    services
        .create(
            &pp,
            &service("web2", json!({"type": "NodePort", "ports": requested})),
        )
        .await
        .expect("the released node port can be requested");

    // ClusterIP → NodePort allocates; the ClusterIP stays.
    let before = ip_of(&patched);
    let patched = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "NodePort"}})),
        )
        .await
        .expect("to NodePort");
    assert_eq!(ip_of(&patched), before);
    let port = node_port_of(&patched, 0);
    assert!((30000..=32767).contains(&port) && port != 30080);

    // ClusterIP → ExternalName frees the IP; back to ClusterIP allocates one.
    let patched = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ExternalName", "externalName": "example.com"}})),
        )
        .await
        .expect("to ExternalName");
    assert_eq!(ip_of(&patched), "");
    assert_eq!(node_port_of(&patched, 0), 0);
    services
        .create(
            &pp,
            &service("takes-ip", json!({"clusterIP": before, "ports": tcp(80)})),
        )
        .await
        .expect("the released IP can be requested");
    let patched = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP", "externalName": null}})),
        )
        .await
        .expect("back to ClusterIP");
    assert!(!ip_of(&patched).is_empty() && ip_of(&patched) != before);

    // LoadBalancer with externalTrafficPolicy Local gets a health check node port.
    let lb = services
        .create(
            &pp,
            &service("lb", json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": tcp(443)})),
        )
        .await
        .expect("LoadBalancer");
    let hc = lb
        .spec
        .as_ref()
        .and_then(|s| s.health_check_node_port)
        .unwrap_or(0);
    assert!((30000..=32767).contains(&hc), "{hc}");
    assert_ne!(hc, node_port_of(&lb, 0));

    // Every held port is marked, nothing more: dns 2, web2 1, lb 2 (web is a ClusterIP
    // Service again).
    let cp = api
        .server
        .cluster(crate::request::DEFAULT_CLUSTER)
        .expect("cluster");
    assert_eq!(
        cp.services()
            .ports
            .read()
            .await
            .expect("read")
            .bitmap
            .count(),
        5
    );
}

#[tokio::test]
async fn replacing_a_service_keeps_its_addresses() {
    let (_dir, _api, services) = start().await;
    let pp = PostParams::default();
    let created = services
        .create(
            &pp,
            &service(
                "web",
                json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}),
            ),
        )
        .await
        .expect("create");
    // A PUT of the manifest without the allocated fields (as `kubectl replace` sends).
    let mut manifest = service(
        "web",
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}),
    );
    manifest.metadata.resource_version = created.metadata.resource_version.clone();
    let replaced = services
        .replace("web", &pp, &manifest)
        .await
        .expect("replace");
    assert_eq!(ip_of(&replaced), ip_of(&created));
    assert_eq!(node_port_of(&replaced, 0), node_port_of(&created, 0));
    // Changing the ClusterIP is refused.
    let message = invalid(
        services
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"clusterIP": "10.43.0.77", "clusterIPs": ["10.43.0.77"]}}),
                ),
            )
            .await,
    );
    assert!(message.contains("may not change once set"), "{message}");
}

#[tokio::test]
async fn dry_run_allocates_nothing() {
    let (_dir, api, services) = start().await;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answer = services
        .create(&dry, &service("web", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}], "clusterIP": "10.43.0.20"})))
        .await
        .expect("dry run");
    assert_eq!(ip_of(&answer), "10.43.0.20");
    let answer = services
        .create(
            &dry,
            &service("auto", json!({"type": "NodePort", "ports": tcp(80)})),
        )
        .await
        .expect("dry run");
    assert!(!ip_of(&answer).is_empty() && node_port_of(&answer, 0) != 0);
    let cp = api
        .server
        .cluster(crate::request::DEFAULT_CLUSTER)
        .expect("cluster");
    assert_eq!(
        cp.services().ips.read().await.expect("read").bitmap.count(),
        1
    );
    assert_eq!(
        cp.services()
            .ports
            .read()
            .await
            .expect("read")
            .bitmap
            .count(),
        0
    );
    // A dry run still reports a taken address.
    let message = invalid(
        services
            .create(
                &dry,
                &service("taken", json!({"clusterIP": "10.43.0.1", "ports": tcp(80)})),
            )
            .await,
    );
    assert!(message.contains("already allocated"), "{message}");
    services
        .create(&PostParams::default(), &service("web", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}], "clusterIP": "10.43.0.20"})))
        .await
        .expect("what the dry run showed is still free");
}

#[tokio::test]
async fn a_second_server_on_the_same_store_sees_allocations_and_repairs_leaks() {
    // A restart, or a second API server sharing the datastore: a new server with empty
    // memory over the same store.
    let dir = tempfile::tempdir().expect("dir");
    let backend: Arc<dyn store::Backend> = Arc::new(
        store::SqliteBackend::open(store::SqliteConfig::new(&dir.path().join("state.db")))
            .expect("store"),
    );
    let first = Arc::new(crate::ApiServer::new(backend.clone()));
    first
        .bootstrap(crate::request::DEFAULT_CLUSTER)
        .await
        .expect("bootstrap");
    let client = crate::local::client(
        first,
        crate::request::DEFAULT_CLUSTER,
        crate::authn::Identity::loopback(),
    );
    let kept = Api::<Service>::namespaced(client, "default")
        .create(
            &PostParams::default(),
            &service("web", json!({"type": "NodePort", "ports": tcp(80)})),
        )
        .await
        .expect("create");
    let second = Arc::new(crate::ApiServer::new(backend));
    second
        .bootstrap(crate::request::DEFAULT_CLUSTER)
        .await
        .expect("bootstrap");
    let client = crate::local::client(
        second.clone(),
        crate::request::DEFAULT_CLUSTER,
        crate::authn::Identity::loopback(),
    );
    let services: Api<Service> = Api::namespaced(client, "default");
    let message = invalid(
        services
            .create(
                &PostParams::default(),
                &service("copy", json!({"clusterIP": ip_of(&kept), "ports": tcp(80)})),
            )
            .await,
    );
    assert!(message.contains("already allocated"), "{message}");
    let requested = json!([{"port": 80, "nodePort": node_port_of(&kept, 0)}]);
    let message = invalid(
        services
            .create(
                &PostParams::default(),
                &service("copy", json!({"type": "NodePort", "ports": requested})),
            )
            .await,
    );
    assert!(message.contains("already allocated"), "{message}");

    // A leak (allocated, no Service) is freed after RUNS_BEFORE_LEAK_CLEANUP runs; an
    // address a Service holds but the bitmap lost is restored at once.
    let cp: Arc<ControlPlane> = second
        .cluster(crate::request::DEFAULT_CLUSTER)
        .expect("cluster");
    let allocators = cp.services();
    let leaked = allocators
        .ips
        .range
        .ip_offset("10.43.0.50".parse().expect("ip"))
        .expect("offset");
    allocators.ips.allocate(leaked).await.expect("leak");
    let held = allocators
        .ips
        .range
        .ip_offset(ip_of(&kept).parse().expect("ip"))
        .expect("offset");
    allocators.ips.release(&[held]).await.expect("lose");
    let first = repair::run_once(&cp).await.expect("repair");
    assert_eq!((first.restored_ips, first.freed_ips), (1, 0));
    for _ in 1..repair::RUNS_BEFORE_LEAK_CLEANUP - 1 {
        let report = repair::run_once(&cp).await.expect("repair");
        assert_eq!(
            report.freed_ips, 0,
            "a leak is kept while it may be a create in flight"
        );
    }
    let last = repair::run_once(&cp).await.expect("repair");
    assert_eq!(last.freed_ips, 1);
    let snapshot = allocators.ips.read().await.expect("read");
    assert!(snapshot.bitmap.has(held) && !snapshot.bitmap.has(leaked));
}

#[tokio::test]
async fn the_kubernetes_service_points_at_the_api_server() {
    let dir = tempfile::tempdir().expect("dir");
    let backend: Arc<dyn store::Backend> = Arc::new(
        store::SqliteBackend::open(store::SqliteConfig::new(&dir.path().join("state.db")))
            .expect("store"),
    );
    let network = ServiceNetwork {
        cidr: "10.96.0.0/24".parse().expect("cidr"),
        advertise: Some("192.0.2.10:6443".parse().expect("addr")),
        ..Default::default()
    };
    let server = Arc::new(crate::ApiServer::with_service_network(backend, network));
    server
        .bootstrap(crate::request::DEFAULT_CLUSTER)
        .await
        .expect("bootstrap");
    let client = crate::local::client(
        server.clone(),
        crate::request::DEFAULT_CLUSTER,
        crate::authn::Identity::loopback(),
    );
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .expect("service");
    assert_eq!(ip_of(&svc), "10.96.0.1");
    let port = &svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("https"), 443));
    let endpoints =
        Api::<k8s_openapi::api::core::v1::Endpoints>::namespaced(client.clone(), "default")
            .get("kubernetes")
            .await
            .expect("endpoints");
    let subset = &endpoints.subsets.expect("subsets")[0];
    assert_eq!(
        subset.addresses.as_ref().expect("addresses")[0].ip,
        "192.0.2.10"
    );
    assert_eq!(subset.ports.as_ref().expect("ports")[0].port, 6443);
    let slice =
        Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(client, "default")
            .get("kubernetes")
            .await
            .expect("slice");
    assert_eq!(slice.endpoints[0].addresses, vec!["192.0.2.10".to_owned()]);
    assert_eq!(
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(String::as_str),
        Some("kubernetes")
    );
}

#[tokio::test]
async fn a_full_range_answers_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let backend: Arc<dyn store::Backend> = Arc::new(
        store::SqliteBackend::open(store::SqliteConfig::new(&dir.path().join("state.db")))
            .expect("store"),
    );
    let network = ServiceNetwork {
        cidr: "10.96.0.0/30".parse().expect("cidr"),
        ..Default::default()
    };
    let server = Arc::new(crate::ApiServer::with_service_network(backend, network));
    server
        .bootstrap(crate::request::DEFAULT_CLUSTER)
        .await
        .expect("bootstrap");
    let client = crate::local::client(
        server,
        crate::request::DEFAULT_CLUSTER,
        crate::authn::Identity::loopback(),
    );
    let services: Api<Service> = Api::namespaced(client, "default");
    services
        .create(
            &PostParams::default(),
            &service("one", json!({"ports": tcp(80)})),
        )
        .await
        .expect("the last address");
    match services
        .create(
            &PostParams::default(),
            &service("two", json!({"ports": tcp(80)})),
        )
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 500);
            assert!(
                status
                    .message
                    .contains("failed to allocate a serviceIP: range is full"),
                "{}",
                status.message
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn networks_are_checked() {
    let check = |cidr: &str| {
        ServiceNetwork {
            cidr: cidr.parse().expect("cidr"),
            ..Default::default()
        }
        .validate()
    };
    assert!(check("10.43.0.0/16").is_ok());
    assert!(check("10.0.0.0/12").is_ok());
    assert!(check("10.0.0.0/8").is_err());
    assert!(check("fd00::/108").is_ok());
    assert!(check("fd00::/64").is_err());
    assert!(check("10.43.0.1/16").is_err());
    assert!(check("10.43.0.0/31").is_err());
}
