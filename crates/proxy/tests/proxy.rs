//! The proxy for real: `proxy::run` against an in-process API server, writing its rules
//! with nft inside a "node" network namespace; busybox `httpd` backends in their own
//! namespaces; requests from a client namespace (and from the node itself) through the
//! ClusterIP and the NodePort.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod netns;

use netns::{BACKENDS, NODE_IP, Netns, Network};

const CLUSTER_URL: &str = "http://10.43.0.50/";

fn node_port_url() -> String {
    format!("http://{NODE_IP}:30080/")
}

fn endpoints(conditions: &[Value]) -> Value {
    let list: Vec<Value> = BACKENDS
        .iter()
        .zip(conditions)
        .filter(|(_, c)| !c.is_null())
        .map(|(ip, c)| json!({"addresses": [ip], "nodeName": "node-a", "conditions": c}))
        .collect();
    json!(list)
}

fn ready() -> Value {
    json!({"ready": true, "serving": true, "terminating": false})
}

/// Stops the proxy when the test ends, failed or not.
struct Task(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `fetch` from `ns` until `want` holds, for at most `limit`; returns how long it took.
async fn until(
    ns: &Netns,
    url: &str,
    limit: Duration,
    want: impl Fn(&Result<String, String>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = Network::fetch(ns, url).await;
        if want(&got) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{url} from {}: still {got:?} after {limit:?}",
            ns.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_page(r: &Result<String, String>) -> bool {
    matches!(r, Ok(page) if page == "ep1" || page == "ep2")
}

fn is_refused(r: &Result<String, String>) -> bool {
    matches!(r, Err(e) if e.contains("refused"))
}

/// Which backends answer `n` requests.
async fn answers(ns: &Netns, url: &str, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let page = Network::fetch(ns, url).await.expect("page");
        if !seen.contains(&page) {
            seen.push(page);
        }
    }
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_and_node_port_follow_the_endpoints() {
    let net = Network::start();
    let dir = tempfile::tempdir().expect("dir");
    let api = apiserver::testing::InProcess::start(dir.path())
        .await
        .expect("API server");
    let services: Api<Service> = Api::namespaced(api.client(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(api.client(), "default");
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "clusterIP": "10.43.0.50", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &web)
        .await
        .expect("service");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints(&[ready(), ready()]),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("slice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("slice");

    let config = proxy::Config {
        node_name: "node-a".into(),
        node_ips: vec![NODE_IP.parse().expect("ip")],
        cluster_cidrs: vec!["10.99.0.0/24".parse().expect("cidr")],
        nft_command: ["ip", "netns", "exec", &net.node.name, "nft"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        ..Default::default()
    };
    let _proxy = Task(tokio::spawn(proxy::run(api.client(), config)));

    // The ClusterIP from a neighbour, and from the node itself; the NodePort; both
    // backends take requests.
    until(&net.client, CLUSTER_URL, Duration::from_secs(10), is_page).await;
    until(&net.node, CLUSTER_URL, Duration::from_secs(2), is_page).await;
    until(
        &net.client,
        &node_port_url(),
        Duration::from_secs(2),
        is_page,
    )
    .await;
    assert_eq!(answers(&net.client, CLUSTER_URL, 30).await, ["ep1", "ep2"]);
    // An unknown port of the ClusterIP is refused.
    let other_port = Network::fetch(&net.client, "http://10.43.0.50:81/").await;
    assert!(is_refused(&other_port), "{other_port:?}");

    // A terminating endpoint is drained: new connections go to the ready one.
    let set_endpoints = |conditions: Vec<Value>| {
        let slices = slices.clone();
        async move {
            let patch = json!({"endpoints": endpoints(&conditions)});
            slices
                .patch("web-1", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patch slice");
        }
    };
    let terminating = json!({"ready": false, "serving": true, "terminating": true});
    set_endpoints(vec![ready(), terminating.clone()]).await;
    // One answer from ep1 may be luck: wait until a run of them is ep1 alone.
    let started = Instant::now();
    while answers(&net.client, CLUSTER_URL, 12).await != ["ep1"] {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the terminating endpoint still gets new connections"
        );
    }

    // No endpoints: refused within a second, on the ClusterIP and the NodePort.
    set_endpoints(vec![Value::Null, Value::Null]).await;
    let took = until(&net.client, CLUSTER_URL, Duration::from_secs(1), is_refused).await;
    eprintln!("removal reached the kernel in {took:?}");
    assert!(is_refused(
        &Network::fetch(&net.client, &node_port_url()).await
    ));
    assert!(is_refused(&Network::fetch(&net.node, CLUSTER_URL).await));

    // Back again within a second.
    set_endpoints(vec![ready(), ready()]).await;
    until(&net.client, CLUSTER_URL, Duration::from_secs(1), is_page).await;
    until(
        &net.client,
        &node_port_url(),
        Duration::from_secs(1),
        is_page,
    )
    .await;

    // ClientIP affinity: one client sticks to one backend.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sessionAffinity": "ClientIP"}})),
        )
        .await
        .expect("affinity");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(answers(&net.client, CLUSTER_URL, 20).await.len(), 1);
}

#[tokio::test]
async fn every_feature_of_the_ruleset_is_accepted_by_nft() {
    use proxy::model::service_ports;
    use proxy::ruleset::{Family, Node, build};
    let svc = |v: Value| -> Service { serde_json::from_value(v).expect("service") };
    let services = [
        svc(json!({"metadata": {"name": "lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.60", "externalIPs": ["203.0.113.4"],
                     "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30081}, {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}}})),
        svc(
            json!({"metadata": {"name": "local", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.61", "internalTrafficPolicy": "Local", "ports": [{"name": "http", "port": 80}]}}),
        ),
        svc(
            json!({"metadata": {"name": "empty", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.62", "ports": [{"port": 80, "nodePort": 30082}]}}),
        ),
        svc(json!({"metadata": {"name": "six", "namespace": "default"},
            "spec": {"clusterIP": "fd00::62", "ports": [{"name": "http", "port": 80}]}})),
    ];
    let slice = |name: &str, family: &str, addresses: &[&str]| -> EndpointSlice {
        let endpoints: Vec<Value> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| json!({"addresses": [a], "nodeName": if i == 0 { "node-a" } else { "node-b" }}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-x"), "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "addressType": family, "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        }))
        .expect("slice")
    };
    let slices = [
        slice("lb", "IPv4", &["10.99.0.11", "10.99.0.12"]),
        slice("local", "IPv4", &["10.99.0.11"]),
        slice("six", "IPv6", &["fd00:99::11"]),
    ];
    let node = Node {
        name: "node-a".into(),
        ips: vec![
            NODE_IP.parse().expect("ip"),
            "fd00:77::1".parse().expect("ip"),
        ],
        cluster_cidrs: vec![
            "10.99.0.0/24".parse().expect("cidr"),
            "fd00:99::/64".parse().expect("cidr"),
        ],
    };
    let ports = service_ports(
        &services.iter().collect::<Vec<_>>(),
        &slices.iter().collect::<Vec<_>>(),
    );
    let fewer = service_ports(
        &services[1..].iter().collect::<Vec<_>>(),
        &slices[1..].iter().collect::<Vec<_>>(),
    );
    let ns = Netns::new_for_test("nft");
    for family in [Family::V4, Family::V6] {
        let full = build(family, &node, &ports);
        let smaller = build(family, &node, &fewer);
        // From scratch, then the difference to a smaller ruleset and back.
        for script in [
            full.transaction(proxy::ruleset::DEFAULT_TABLE, None),
            smaller.transaction(proxy::ruleset::DEFAULT_TABLE, Some(&full)),
            full.transaction(proxy::ruleset::DEFAULT_TABLE, Some(&smaller)),
        ] {
            apply_in(&ns, &script).await;
        }
        // Applying the full ruleset from scratch over an existing table works too.
        apply_in(&ns, &full.transaction(proxy::ruleset::DEFAULT_TABLE, None)).await;
    }
}

async fn apply_in(ns: &Netns, script: &str) {
    let command: Vec<String> = ["ip", "netns", "exec", &ns.name, "nft"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Err(e) = proxy::nft::apply(&command, script).await {
        panic!("{e}\n--- script ---\n{script}");
    }
}

/// The node holds a LoadBalancer address while it announces it: a neighbour on the node's
/// link reaches the Service through it (ARP answered by the node), and the address goes
/// away when the Service has no ready endpoint left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_addresses_are_announced_on_the_node() {
    let net = Network::start();
    let dir = tempfile::tempdir().expect("dir");
    let api = apiserver::testing::InProcess::start(dir.path())
        .await
        .expect("API server");
    let services: Api<Service> = Api::namespaced(api.client(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(api.client(), "default");
    let lb: Service = serde_json::from_value(json!({
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.60", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &lb)
        .await
        .expect("service");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "lb-1", "labels": {"kubernetes.io/service-name": "lb"}},
        "addressType": "IPv4",
        "endpoints": endpoints(&[ready(), ready()]),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("slice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("slice");
    // The pool is on the node's link, as with MetalLB's layer 2: the client does not route
    // it through the node, it asks on the link who has it.
    let address = "192.168.77.100";
    let netns_ip = |tool: &str| -> Vec<String> {
        ["ip", "netns", "exec", &net.node.name, tool]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    };
    let config = proxy::Config {
        node_name: "node-a".into(),
        node_ips: vec![NODE_IP.parse().expect("ip")],
        cluster_cidrs: vec!["10.99.0.0/24".parse().expect("cidr")],
        nft_command: netns_ip("nft"),
        ip_command: netns_ip("ip"),
        load_balancer_pool: vec![format!("{address}/32").parse().expect("pool")],
        announce_label: Some("lo:kumo".into()),
        ..Default::default()
    };
    let _proxy = Task(tokio::spawn(proxy::run(api.client(), config)));

    let url = format!("http://{address}/");
    until(&net.client, &url, Duration::from_secs(10), is_page).await;
    let ingress = services
        .get("lb")
        .await
        .expect("lb")
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default();
    assert_eq!(ingress[0].ip.as_deref(), Some(address));

    // No ready endpoint: the node stops holding the address.
    slices
        .patch(
            "lb-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": endpoints(&[Value::Null, Value::Null])})),
        )
        .await
        .expect("patch slice");
    let held = || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.node.name,
                "ip",
                "-o",
                "addr",
                "show",
                "dev",
                "kumo-lb",
            ])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(address)
    };
    let started = Instant::now();
    while held() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the address is still announced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
