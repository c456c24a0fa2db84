//! Node IPAM against an in-process API server: Nodes get distinct pod CIDRs, a deleted
//! Node's CIDR goes to the next one, and a restarted loop keeps what Nodes hold.

use std::time::{Duration, Instant};

use apiserver::authn::Identity;
use apiserver::testing::InProcess;
use controllers::node_ipam::{Config, run_with};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

/// Stops the loop when the test ends.
struct Task(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start(api: &InProcess, cidr: &str) -> Task {
    let config = Config {
        cluster_cidr: cidr.parse().expect("cidr"),
        node_mask: 24,
    };
    Task(tokio::spawn(run_with(
        api.client_as(Identity::controller_manager()),
        config,
    )))
}

async fn create(nodes: &Api<Node>, name: &str, pod_cidr: Option<&str>) {
    let mut node = json!({"metadata": {"name": name}});
    if let Some(cidr) = pod_cidr {
        node["spec"] = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    }
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).expect("node"),
        )
        .await
        .expect("create node");
}

/// The Node's pod CIDR once it has one (at most 5 s).
async fn cidr_of(nodes: &Api<Node>, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let node = nodes.get(name).await.expect("node");
        let spec = node.spec.unwrap_or_default();
        if let Some(cidr) = spec.pod_cidr {
            assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]));
            return cidr;
        }
        assert!(Instant::now() < deadline, "{name} got no pod CIDR");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn nodes_get_distinct_pod_cidrs_and_deleted_ones_free_theirs() {
    let dir = tempfile::tempdir().expect("dir");
    let api = InProcess::start(dir.path()).await.expect("API server");
    let nodes: Api<Node> = Api::all(api.client());
    let _ipam = start(&api, "10.200.0.0/23");
    create(&nodes, "a", None).await;
    create(&nodes, "b", None).await;
    let (a, b) = (cidr_of(&nodes, "a").await, cidr_of(&nodes, "b").await);
    let mut both = [a.clone(), b];
    both.sort();
    assert_eq!(both, ["10.200.0.0/24", "10.200.1.0/24"]);

    // The range is full: a third node waits, and gets a's CIDR once a is gone.
    create(&nodes, "c", None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = nodes.get("c").await.expect("node");
    assert_eq!(c.spec.and_then(|s| s.pod_cidr), None);
    nodes
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(cidr_of(&nodes, "c").await, a);
}

#[tokio::test]
async fn a_restarted_loop_keeps_what_nodes_hold() {
    let dir = tempfile::tempdir().expect("dir");
    let api = InProcess::start(dir.path()).await.expect("API server");
    let nodes: Api<Node> = Api::all(api.client());
    {
        let _ipam = start(&api, "10.201.0.0/22");
        create(&nodes, "first", None).await;
        assert_eq!(cidr_of(&nodes, "first").await, "10.201.0.0/24");
    }
    // While no loop runs, a node joins with a CIDR of its own (set by an installer).
    create(&nodes, "manual", Some("10.201.1.0/24")).await;
    let _ipam = start(&api, "10.201.0.0/22");
    create(&nodes, "second", None).await;
    assert_eq!(cidr_of(&nodes, "second").await, "10.201.2.0/24");
    assert_eq!(cidr_of(&nodes, "first").await, "10.201.0.0/24");
}
