//! Two proxies on one node, as two `kumo up` on one host: each writes only its own
//! nftables table, both tables work side by side, and cleaning one up leaves the other
//! (and its Service) untouched.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;

// Shared with the other proxy tests, which use more of it.
#[allow(dead_code)]
mod netns;

use netns::{BACKENDS, NODE_IP, Netns, Network};

/// Aborts a proxy when the test ends, failed or not.
struct Task(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One cluster's Service `web` at `cluster_ip`, backed by `backend` only.
async fn publish(api: &apiserver::testing::InProcess, cluster_ip: &str, backend: &str) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"clusterIP": cluster_ip, "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(api.client(), "default")
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [backend], "nodeName": "node-a",
                       "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("slice");
    Api::<EndpointSlice>::namespaced(api.client(), "default")
        .create(&PostParams::default(), &slice)
        .await
        .expect("slice");
}

/// The names of the tables in the namespace (`ip kumo-a`, ...).
fn tables(ns: &Netns) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "list", "tables"])
        .output()
        .expect("nft list tables");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_owned)
        .collect()
}

/// Polls until `url` from `ns` answers `page` (Some) or fails (None), for at most 10 s.
async fn until(ns: &Netns, url: &str, page: Option<&str>) {
    let started = Instant::now();
    loop {
        let got = Network::fetch(ns, url).await;
        if got.as_deref().ok() == page {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url}: still {got:?}, want {page:?}; tables: {:?}",
            tables(ns)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_keep_to_their_own_tables() {
    let net = Network::start();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let cluster_a = apiserver::testing::InProcess::start(dir_a.path())
        .await
        .expect("API server a");
    let cluster_b = apiserver::testing::InProcess::start(dir_b.path())
        .await
        .expect("API server b");
    publish(&cluster_a, "10.43.0.51", BACKENDS[0]).await;
    publish(&cluster_b, "10.43.0.52", BACKENDS[1]).await;

    let config = |bridge: &str| proxy::Config {
        node_name: "node-a".into(),
        node_ips: vec![NODE_IP.parse().expect("ip")],
        cluster_cidrs: vec!["10.99.0.0/24".parse().expect("cidr")],
        nft_command: ["ip", "netns", "exec", &net.node.name, "nft"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        table: proxy::table_for_bridge(bridge),
        ..Default::default()
    };
    let (config_a, config_b) = (config("kumoa0"), config("kumob0"));
    assert_eq!(config_a.table, "kumoa0");
    // Someone else's table in the same family, which neither proxy may touch.
    net.node
        .exec(&["nft", "add", "table", "ip", "someone-else"]);
    let proxy_a = Task(tokio::spawn(proxy::run(
        cluster_a.client(),
        config_a.clone(),
    )));
    let _proxy_b = Task(tokio::spawn(proxy::run(
        cluster_b.client(),
        config_b.clone(),
    )));

    until(&net.client, "http://10.43.0.51/", Some("ep1")).await;
    until(&net.client, "http://10.43.0.52/", Some("ep2")).await;
    let mut listed = tables(&net.node);
    listed.sort();
    assert_eq!(
        listed,
        [
            "ip kumoa0",
            "ip kumob0",
            "ip someone-else",
            "ip6 kumoa0",
            "ip6 kumob0"
        ]
    );

    // Proxy a stops and cleans up: its table goes, b's Service keeps working.
    drop(proxy_a);
    proxy::cleanup(&config_a).await.expect("cleanup a");
    let mut listed = tables(&net.node);
    listed.sort();
    assert_eq!(listed, ["ip kumob0", "ip someone-else", "ip6 kumob0"]);
    until(&net.client, "http://10.43.0.51/", None).await;
    until(&net.client, "http://10.43.0.52/", Some("ep2")).await;
    // Cleaning up what is already gone is no error.
    proxy::cleanup(&config_a).await.expect("cleanup a again");
}

#[test]
fn table_and_label_names_follow_the_bridge() {
    assert_eq!(proxy::table_for_bridge("kumo0"), "kumo0");
    assert_eq!(proxy::table_for_bridge("kumoup0"), "kumoup0");
    let odd = proxy::table_for_bridge("0bridge@x");
    assert!(odd.starts_with("kumo-") && odd.len() == 13, "{odd}");
    assert_ne!(odd, proxy::table_for_bridge("1bridge@x"));
    assert_eq!(proxy::announce_label_for_bridge("kumo0"), "lo:kumo0");
    // Labels are at most 15 characters: long bridge names are hashed, still apart.
    let long = proxy::announce_label_for_bridge("kumo-very-long0");
    let other = proxy::announce_label_for_bridge("kumo-very-long1");
    assert!(long.len() <= 15 && other.len() <= 15);
    assert_ne!(long, other);
}
