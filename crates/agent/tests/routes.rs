//! Pod traffic between two nodes, built from network namespaces: each "node" namespace has
//! a bridge with a "pod" namespace on it, and the nodes share one link. The routes that
//! `agent::routes` installs from the Node objects are all that connects a pod on node A to
//! a pod on node B.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

static NEXT: AtomicU32 = AtomicU32::new(0);

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

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(what: &str) -> Self {
        let name = format!(
            "kumo-rt-{}-{}-{what}",
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

    fn ip_command(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.0, "ip"]
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

/// A busybox httpd in a namespace, killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// `wget` from `pod` to `url`: the page, or why not (busybox 1.35's `wget -T` crashes, so
/// coreutils' `timeout` bounds the wait).
fn fetch(pod: &Netns, url: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.0,
            "timeout",
            "2",
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "-",
            url,
        ])
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

fn kumo_routes(node: &Netns) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.0,
            "ip",
            "route",
            "show",
            "proto",
            agent::routes::ROUTE_PROTOCOL,
        ])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_two_nodes_reach_each_other_through_node_routes() {
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
    node_with_pod(&node_a, &pod_a, "192.168.88.1", "10.88.1.1", "10.88.1.2");
    node_with_pod(&node_b, &pod_b, "192.168.88.2", "10.88.2.1", "10.88.2.2");
    let page_dir = tempfile::tempdir().expect("dir");
    std::fs::write(page_dir.path().join("index.html"), "pod on node b").expect("page");
    let _server = Server(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod_b.0,
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
                "10.88.2.2:8080",
                "-h",
            ])
            .arg(page_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("httpd"),
    );
    let url = "http://10.88.2.2:8080/";
    // Without routes the nodes do not know each other's pod networks.
    assert!(fetch(&pod_a, url).is_err());

    // Node A follows the Node objects through the API; node B's routes are set directly.
    let dir = tempfile::tempdir().expect("dir");
    let api = apiserver::testing::InProcess::start(dir.path())
        .await
        .expect("API server");
    let nodes: Api<Node> = Api::all(api.client());
    let a = node_object("node-a", "192.168.88.1", "10.88.1.0/24");
    let b = node_object("node-b", "192.168.88.2", "10.88.2.0/24");
    for node in [&a, &b] {
        nodes
            .create(&PostParams::default(), node)
            .await
            .expect("node");
        // Addresses are status, which a create does not set.
        let status = json!({"status": node.status});
        nodes
            .patch_status(
                node.metadata.name.as_deref().expect("name"),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .expect("node status");
    }
    let router_a = agent::routes::Router::new(node_a.ip_command());
    let running = tokio::spawn(agent::routes::run(api.client(), "node-a".into(), router_a));
    let router_b = agent::routes::Router::new(node_b.ip_command());
    router_b
        .sync(&agent::routes::wanted("node-b", &[a.clone(), b.clone()]))
        .await
        .expect("node b's routes");

    let started = Instant::now();
    let page = loop {
        match fetch(&pod_a, url) {
            Ok(page) => break page,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(15),
                "pod a cannot reach pod b: {e}; node a's routes: {}",
                kumo_routes(&node_a)
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(page, "pod on node b");
    assert!(kumo_routes(&node_a).contains("10.88.2.0/24 via 192.168.88.2"));

    // Node B leaves the cluster: node A's route to its pods goes away.
    nodes
        .delete("node-b", &DeleteParams::default())
        .await
        .expect("delete node");
    let started = Instant::now();
    while !kumo_routes(&node_a).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "route still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fetch(&pod_a, url).is_err());
    running.abort();
}
