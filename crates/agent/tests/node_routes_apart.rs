//! Two agents' node routes on one host (two `kumo up`): both use kumo's route protocol,
//! and each keeps a record of its own, so neither removes the other's routes.

use std::collections::BTreeMap;
use std::process::Command;

use ipnet::IpNet;

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

/// A network namespace standing for the host, deleted on drop (with its routes).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn routes(host: &Netns) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &host.0, "ip", "route", "show", "proto"])
        .arg(agent::routes::ROUTE_PROTOCOL)
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wanted(list: &[(&str, &str)]) -> BTreeMap<IpNet, std::net::IpAddr> {
    list.iter()
        .map(|(dst, via)| (dst.parse().expect("net"), via.parse().expect("ip")))
        .collect()
}

#[tokio::test]
async fn each_agent_removes_only_the_routes_it_recorded() {
    let host = Netns(format!("kumo-ra-{}", std::process::id()));
    run(&["ip", "netns", "add", &host.0]);
    let exec = |args: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", &host.0];
        full.extend_from_slice(args);
        run(&full);
    };
    // The host's link to its neighbours (a veth pair: no dummy module needed).
    exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    exec(&["ip", "addr", "add", "192.168.90.1/24", "dev", "eth0"]);
    exec(&["ip", "link", "set", "eth0", "up"]);
    exec(&["ip", "link", "set", "eth1", "up"]);
    let ip: Vec<String> = ["ip", "netns", "exec", &host.0, "ip"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let first = agent::routes::Router::new(ip.clone()).with_record(dir.path().join("first.json"));
    let second = agent::routes::Router::new(ip).with_record(dir.path().join("second.json"));

    first
        .sync(&wanted(&[("10.42.1.0/24", "192.168.90.2")]))
        .await
        .expect("first");
    second
        .sync(&wanted(&[("10.52.1.0/24", "192.168.90.3")]))
        .await
        .expect("second");
    let both = routes(&host);
    assert!(
        both.contains("10.42.1.0/24 via 192.168.90.2")
            && both.contains("10.52.1.0/24 via 192.168.90.3"),
        "{both}"
    );

    // The first cluster's other node leaves: only its route goes.
    first.sync(&BTreeMap::new()).await.expect("first again");
    let left = routes(&host);
    assert!(!left.contains("10.42.1.0/24"), "{left}");
    assert!(left.contains("10.52.1.0/24 via 192.168.90.3"), "{left}");

    // A restarted agent (a new router on the same record) still knows its own.
    let second = agent::routes::Router::new(
        ["ip", "netns", "exec", &host.0, "ip"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    )
    .with_record(dir.path().join("second.json"));
    second.sync(&BTreeMap::new()).await.expect("second again");
    assert_eq!(routes(&host).trim(), "");
}
