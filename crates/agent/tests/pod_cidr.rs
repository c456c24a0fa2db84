//! An agent without `--pod-cidr`, as `kumo agent` joining a cluster: it registers its Node,
//! waits until the node IPAM controller gives the Node a podCIDR, hands it to the runtime
//! (CRI `UpdateRuntimeConfig`, which the private containerd renders from its CNI template),
//! and its pods get addresses inside that CIDR. Restarted with a `--pod-cidr` that differs,
//! it keeps the Node's, as kubelet does.

mod common;

use std::time::{Duration, Instant};

use agent::containerd::{self, Containerd};
use agent::cri::Cri;
use apiserver::authn::Identity;
use common::{Env, NODE};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// Aborts a task when the test ends, failed or not.
struct Task(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn sleeper(name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "main",
            "image": agent::images::BUSYBOX_IMAGE,
            "command": ["sleep", "3600"],
        }]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_pod_cidr_takes_the_one_ipam_assigns() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    // The harness's containerd has a pod network from the start; this node's comes from
    // its Node, so containerd starts again without one (same directory, images kept).
    let old = env.containerd.take().expect("containerd");
    let mut config = old.config().clone();
    old.stop();
    drop(old);
    config.pod_cidr = String::new();
    let containerd = Containerd::start(config.clone()).await?;
    env.cri = Cri::connect(&containerd.socket()).await?;
    env.containerd = Some(containerd);
    let rendered = config.dir.join("cni").join(containerd::CNI_CONFLIST);
    assert!(!rendered.exists(), "a pod network before the Node has one");

    // The cluster network is this test's slot, four /26 node subnets; another Node holds
    // the first.
    let slot: IpNet = env.network.cidr().parse()?;
    let subnets: Vec<IpNet> = slot.subnets(26)?.collect();
    let nodes: Api<Node> = Api::all(env.api.client());
    let earlier: Node = serde_json::from_value(json!({
        "metadata": {"name": "earlier-node"},
        "spec": {"podCIDR": subnets[0].to_string(), "podCIDRs": [subnets[0].to_string()]},
    }))?;
    nodes.create(&PostParams::default(), &earlier).await?;

    let mut agent_config = agent::Config::new(NODE, &env.dir.path().join("agent"));
    agent_config.pod_cidr = None;
    let agent = Task(tokio::spawn(agent::run(
        env.api.client(),
        env.cri.clone(),
        agent_config.clone(),
    )));
    env.create_pod(sleeper("first")).await?;

    // Without the IPAM controller the Node has no podCIDR, and the agent waits for it:
    // no pod network, the pod stays without an address.
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.get_opt(NODE).await?.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the agent did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node = nodes.get(NODE).await?;
    assert_eq!(node.spec.and_then(|s| s.pod_cidr), None);
    assert!(!rendered.exists());
    assert!(!agent.0.is_finished(), "the agent gave up waiting");
    let pod = env.pods().get("first").await?;
    assert_eq!(pod.status.and_then(|s| s.pod_ip), None);

    let ipam = Task(tokio::spawn(controllers::node_ipam::run_with(
        env.api.client_as(Identity::controller_manager()),
        controllers::node_ipam::Config {
            cluster_cidr: slot,
            node_mask: 26,
        },
    )));
    let pod = env.wait_ready("first").await?;
    let node = nodes.get(NODE).await?;
    let assigned = node.spec.and_then(|s| s.pod_cidr).expect("podCIDR");
    assert_eq!(assigned, subnets[1].to_string());
    let pod_ip = pod.status.and_then(|s| s.pod_ip).expect("podIP");
    assert!(
        subnets[1].contains(&pod_ip.parse::<std::net::IpAddr>()?),
        "{pod_ip} outside {assigned}"
    );
    // containerd wrote the network from its template with the Node's CIDR.
    let conflist: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rendered)?)?;
    assert_eq!(
        conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        assigned.as_str()
    );
    assert_eq!(conflist["plugins"][0]["bridge"], env.network.bridge());

    // Restarted with a --pod-cidr of its own, the agent keeps the Node's (kubelet's rule).
    drop(agent);
    drop(ipam);
    agent_config.pod_cidr = Some(subnets[3].to_string());
    let _agent = Task(tokio::spawn(agent::run(
        env.api.client(),
        env.cri.clone(),
        agent_config,
    )));
    env.create_pod(sleeper("second")).await?;
    let pod = env.wait_ready("second").await?;
    let pod_ip = pod.status.and_then(|s| s.pod_ip).expect("podIP");
    assert!(
        subnets[1].contains(&pod_ip.parse::<std::net::IpAddr>()?),
        "{pod_ip}"
    );
    Ok(())
}
