//! A web pod on a real containerd: the node registers, the pod gets a sandbox on the pod
//! network, reaches Running and Ready (with an HTTP readiness probe), serves its page to
//! the host, and its log is where kubelet keeps logs.

mod common;

use std::time::Duration;

use common::{Env, NODE};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pod_runs_and_serves_its_page() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{
            "name": "web",
            "image": agent::images::WEB_IMAGE,
            "ports": [{"containerPort": 80, "name": "http"}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        }]},
    }))
    .await?;
    let pod = env.wait_ready("web").await?;
    let status = pod.status.clone().unwrap();
    let pod_ip = status.pod_ip.clone().expect("podIP");
    assert!(
        pod_ip.starts_with(&format!("10.201.{}.", env.network.index)),
        "{pod_ip}"
    );
    assert_eq!(status.pod_ips.unwrap()[0].ip, pod_ip);
    assert!(status.host_ip.is_some());
    let container = common::container_status(&pod, "web").unwrap();
    assert!(container.ready && container.started == Some(true));
    assert_eq!(container.restart_count, 0);
    assert!(container.container_id.unwrap().starts_with("containerd://"));
    assert!(
        container.image_id.contains("sha256:"),
        "{}",
        container.image_id
    );
    assert!(container.state.unwrap().running.is_some());
    let conditions = status.conditions.unwrap();
    for type_ in [
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True"),
            "{type_} in {conditions:?}"
        );
    }
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));

    // The page, from the host, over the pod network.
    let page = http_get(&pod_ip, 80, "/").await?;
    assert!(page.contains(agent::images::WEB_PAGE.trim()), "{page}");

    // The container's log is kept as kubelet lays it out.
    let log = env.dir.path().join(format!(
        "agent/pods/default_web_{}/web/0.log",
        pod.metadata.uid.clone().unwrap()
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("response:200")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no access log line in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The node is registered with the host's resources and the runtime's version, Ready,
    // with a Lease.
    let node = Api::<Node>::all(env.api.client()).get(NODE).await?;
    let node_status = node.status.unwrap();
    let info = node_status.node_info.unwrap();
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );
    let capacity = node_status.capacity.unwrap();
    assert_eq!(capacity["pods"].0, "110");
    assert!(capacity.contains_key("cpu") && capacity.contains_key("memory"));
    assert!(
        node_status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert_eq!(node.spec.unwrap().pod_cidr, Some(env.network.cidr()));
    let lease = Api::<Lease>::namespaced(env.api.client(), "kube-node-lease")
        .get(NODE)
        .await?;
    assert!(lease.spec.unwrap().renew_time.is_some());

    // The page server exits on SIGTERM: deleting the pod with the default 30 s grace
    // period does not wait that period out.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    env.pods().delete("web", &Default::default()).await?;
    while env.pods().get_opt("web").await?.is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the web pod is still terminating"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A plain HTTP/1.0 GET with a bounded wait.
pub async fn http_get(host: &str, port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        anyhow::Ok(body)
    };
    tokio::time::timeout(Duration::from_secs(10), work).await?
}
