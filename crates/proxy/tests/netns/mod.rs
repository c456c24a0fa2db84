//! A small network in namespaces for proxy tests, removed when dropped (also when a test
//! fails): a "node" namespace with a bridge for the pod network (10.99.0.0/24, the node at
//! .1), two backend namespaces on it running busybox `httpd`, and a "client" namespace
//! on a second link (192.168.77.0/24: client .2, node .1) that routes everything through
//! the node, as a machine next to the node would.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `args`, panicking with its output when it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop (with every interface in it).
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// An empty namespace of its own for one test.
    pub fn new_for_test(what: &str) -> Self {
        Self::new(format!(
            "kumo-test-{}-{}-{what}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ))
    }

    fn new(name: String) -> Self {
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test network.
pub struct Network {
    /// The node: the proxy's rules go here.
    pub node: Netns,
    /// Where requests come from.
    pub client: Netns,
    _backends: Vec<Netns>,
    _servers: Vec<Process>,
    _pages: tempfile::TempDir,
}

/// Backend addresses: `httpd` answers on port 8080 with its name (`ep1`, `ep2`).
pub const BACKENDS: [&str; 2] = ["10.99.0.11", "10.99.0.12"];
/// The node's address on the client link: NodePorts answer here.
pub const NODE_IP: &str = "192.168.77.1";

impl Network {
    /// Builds the network and starts the backends.
    pub fn start() -> Self {
        let id = format!(
            "kumo-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let node = Netns::new(format!("{id}-node"));
        let client = Netns::new(format!("{id}-client"));
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        node.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        node.exec(&["ip", "addr", "add", "10.99.0.1/24", "dev", "br0"]);
        node.exec(&["ip", "link", "set", "br0", "up"]);
        run(&[
            "ip",
            "link",
            "add",
            "uplink",
            "netns",
            &node.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &client.name,
        ]);
        node.exec(&["ip", "addr", "add", "192.168.77.1/24", "dev", "uplink"]);
        node.exec(&["ip", "link", "set", "uplink", "up"]);
        node.exec(&["ip", "route", "add", "default", "via", "192.168.77.2"]);
        client.exec(&["ip", "addr", "add", "192.168.77.2/24", "dev", "eth0"]);
        client.exec(&["ip", "link", "set", "eth0", "up"]);
        client.exec(&["ip", "route", "add", "default", "via", "192.168.77.1"]);
        let pages = tempfile::tempdir().expect("pages dir");
        let mut backends = Vec::new();
        let mut servers = Vec::new();
        for (i, ip) in BACKENDS.iter().enumerate() {
            let name = format!("ep{}", i + 1);
            let ns = Netns::new(format!("{id}-{name}"));
            let host_side = format!("v{name}");
            run(&[
                "ip", "link", "add", &host_side, "netns", &node.name, "type", "veth", "peer",
                "name", "eth0", "netns", &ns.name,
            ]);
            node.exec(&["ip", "link", "set", &host_side, "master", "br0"]);
            node.exec(&["ip", "link", "set", &host_side, "up"]);
            ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns.exec(&["ip", "link", "set", "eth0", "up"]);
            ns.exec(&["ip", "route", "add", "default", "via", "10.99.0.1"]);
            let dir = pages.path().join(&name);
            std::fs::create_dir_all(&dir).expect("page dir");
            std::fs::write(dir.join("index.html"), &name).expect("page");
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns.name,
                    "/bin/busybox",
                    "httpd",
                    "-f",
                    "-p",
                ])
                .arg(format!("{ip}:8080"))
                .arg("-h")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("httpd");
            servers.push(Process(child));
            backends.push(ns);
        }
        Self {
            node,
            client,
            _backends: backends,
            _servers: servers,
            _pages: pages,
        }
    }

    /// GET `url` from `ns`: the page, or the error wget printed.
    pub async fn fetch(ns: &Netns, url: &str) -> Result<String, String> {
        let out = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                // busybox 1.35's `wget -T` crashes; coreutils bounds the wait instead.
                "timeout",
                "3",
                "/bin/busybox",
                "wget",
                "-O",
                "-",
                url,
            ])
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}
