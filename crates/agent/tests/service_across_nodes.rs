//! A ClusterIP Service whose only endpoint is a pod on another node. Two "node" network
//! namespaces share a link, each with a bridge and a "pod" namespace on it; node A runs
//! the service proxy (nftables in its namespace) and the agent's node routes, both
//! following an in-process API server. A client pod on node A reaches the ClusterIP: node
//! A's DNAT picks the endpoint on node B, and the host-gateway route to node B's podCIDR
//! carries the packet there.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

static NEXT: AtomicU32 = AtomicU32::new(0);

const CLUSTER_IP: &str = "10.43.0.77";
const CLUSTER_URL: &str = "http://10.43.0.77/";

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop (with its interfaces, routes and nft tables).
struct Netns(String);

impl Netns {
    fn new(what: &str) -> Self {
        let name = format!(
            "kumo-sx-{}-{}-{what}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = Self(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        run(&full);
    }

    /// `["ip", "netns", "exec", NAME, program]`.
    fn command(&self, program: &str) -> Vec<String> {
        ["ip", "netns", "exec", &self.0, program]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A process (busybox httpd) killed on drop.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Aborts a task when the test ends, failed or not.
struct Task(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A node namespace on the shared link with one pod behind its bridge.
fn node_with_pod(node: &Netns, pod: &Netns, node_ip: &str, gateway: &str, pod_ip: &str) {
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{node_ip}/24"),
        "dev",
        "link0",
    ]);
    node.exec(&["ip", "link", "set", "link0", "up"]);
    node.exec(&["ip", "link", "add", "cni0", "type", "bridge"]);
    node.exec(&["ip", "addr", "add", &format!("{gateway}/24"), "dev", "cni0"]);
    node.exec(&["ip", "link", "set", "cni0", "up"]);
    run(&[
        "ip", "link", "add", "veth-pod", "netns", &node.0, "type", "veth", "peer", "name", "eth0",
        "netns", &pod.0,
    ]);
    node.exec(&["ip", "link", "set", "veth-pod", "master", "cni0"]);
    node.exec(&["ip", "link", "set", "veth-pod", "up"]);
    pod.exec(&["ip", "addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"]);
    pod.exec(&["ip", "link", "set", "eth0", "up"]);
    pod.exec(&["ip", "route", "add", "default", "via", gateway]);
}

fn node_object(name: &str, ip: &str, cidr: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }))
    .expect("node")
}

/// `wget` from `ns`: the page, or why not (coreutils' `timeout` bounds the wait, as
/// busybox 1.35's `wget -T` crashes).
fn fetch(ns: &Netns, url: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "timeout", "2"])
        .args(["/bin/busybox", "wget", "-q", "-O", "-", url])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Polls `url` from `ns` until `want` holds, for at most 15 s.
async fn until(ns: &Netns, url: &str, want: impl Fn(&Result<String, String>) -> bool) {
    let started = Instant::now();
    loop {
        let got = fetch(ns, url);
        if want(&got) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{url} from {}: still {got:?}",
            ns.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_reaches_a_service_whose_only_endpoint_is_on_another_node() {
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: needs /bin/busybox (apt-get install busybox-static)");
        return;
    }
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (node_a, node_b) = (Netns::new("node-a"), Netns::new("node-b"));
    let (pod_a, pod_b) = (Netns::new("pod-a"), Netns::new("pod-b"));
    run(&[
        "ip", "link", "add", "link0", "netns", &node_a.0, "type", "veth", "peer", "name", "link0",
        "netns", &node_b.0,
    ]);
    node_with_pod(&node_a, &pod_a, "192.168.89.1", "10.89.1.1", "10.89.1.2");
    node_with_pod(&node_b, &pod_b, "192.168.89.2", "10.89.2.1", "10.89.2.2");
    // A node's own connections need some route to the ClusterIP before its DNAT (a real
    // node's default route); only the service range here, so node B's pods stay
    // reachable through the agent's routes alone.
    node_a.exec(&["ip", "route", "add", "10.43.0.0/16", "via", "192.168.89.2"]);
    let page_dir = tempfile::tempdir().expect("dir");
    std::fs::write(page_dir.path().join("index.html"), "pod on node b").expect("page");
    let _server = Process(
        Command::new("ip")
            .args(["netns", "exec", &pod_b.0, "/bin/busybox", "httpd", "-f"])
            .args(["-p", "10.89.2.2:8080", "-h"])
            .arg(page_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("httpd"),
    );

    let dir = tempfile::tempdir().expect("dir");
    let api = apiserver::testing::InProcess::start(dir.path())
        .await
        .expect("API server");
    let nodes: Api<Node> = Api::all(api.client());
    let a = node_object("node-a", "192.168.89.1", "10.89.1.0/24");
    let b = node_object("node-b", "192.168.89.2", "10.89.2.0/24");
    for node in [&a, &b] {
        nodes
            .create(&PostParams::default(), node)
            .await
            .expect("node");
        // Addresses are status, which a create does not set.
        nodes
            .patch_status(
                node.metadata.name.as_deref().expect("name"),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": node.status})),
            )
            .await
            .expect("node status");
    }
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"clusterIP": CLUSTER_IP, "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(api.client(), "default")
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    let slices: Api<EndpointSlice> = Api::namespaced(api.client(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.89.2.2"], "nodeName": "node-b",
                       "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("slice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("slice");

    // Node A's proxy alone: the ClusterIP is translated, but node A has no way to node
    // B's pods yet.
    let _proxy = Task(tokio::spawn(proxy::run(
        api.client(),
        proxy::Config {
            node_name: "node-a".into(),
            node_ips: vec!["192.168.89.1".parse().expect("ip")],
            cluster_cidrs: vec!["10.89.0.0/16".parse().expect("cidr")],
            nft_command: node_a.command("nft"),
            ip_command: node_a.command("ip"),
            table: proxy::table_for_bridge("cni0"),
            ..Default::default()
        },
    )));
    let started = Instant::now();
    while !Command::new("ip")
        .args([
            "netns", "exec", &node_a.0, "nft", "list", "map", "ip", "cni0",
        ])
        .arg("service-ips")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CLUSTER_IP))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the proxy wrote no rule for the Service"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fetch(&pod_a, CLUSTER_URL).is_err());

    // The node routes: node A's agent follows the Nodes; node B's route back to node A's
    // pods is set directly.
    let _routes = Task(tokio::spawn(agent::routes::run(
        api.client(),
        "node-a".into(),
        agent::routes::Router::new(node_a.command("ip")),
    )));
    agent::routes::Router::new(node_b.command("ip"))
        .sync(&agent::routes::wanted("node-b", &[a.clone(), b.clone()]))
        .await
        .expect("node b's routes");
    until(&pod_a, CLUSTER_URL, |r| r.as_deref() == Ok("pod on node b")).await;
    // From node A itself too (the output hook; the node's address is masqueraded).
    until(&node_a, CLUSTER_URL, |r| {
        r.as_deref() == Ok("pod on node b")
    })
    .await;

    // The endpoint goes: the ClusterIP refuses connections.
    slices
        .delete("web-1", &DeleteParams::default())
        .await
        .expect("delete slice");
    until(
        &pod_a,
        CLUSTER_URL,
        |r| matches!(r, Err(e) if e.contains("refused")),
    )
    .await;
}
