//! Scheduler throughput: an in-process API server on SQLite in a temporary directory,
//! 5,000 Ready nodes (32 CPUs, 128 GiB, 110 pods) and 10,000 pending pods with small
//! requests; measures how fast the scheduler binds them all. As the same-run baseline,
//! 10,000 other pods are bound by plain binding requests without any scheduling logic.
//!
//! Run with `cargo run --release -p scheduler --example scheduler_bench`
//! (`-- --nodes N --pods M` to change the sizes).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use apiserver::authn::Identity;
use apiserver::testing::InProcess;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;

/// Requests in flight at once while setting up and in the baseline.
const CONCURRENCY: usize = 256;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (n_nodes, n_pods) = (arg("--nodes", 5000), arg("--pods", 10_000));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let dir = tempfile::tempdir()?;
    let api = InProcess::start(dir.path()).await?;
    let client = api.client();

    let started = Instant::now();
    for ns in ["bench", "baseline"] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..n_nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let node: Node = serde_json::from_value(node(i))?;
                nodes.create(&PostParams::default(), &node).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    for ns in ["bench", "baseline"] {
        create_pods(&client, ns, n_pods).await?;
    }
    println!(
        "setup: {n_nodes} nodes, 2 x {n_pods} pending pods in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Baseline: bind the `baseline` pods directly, round robin over the nodes.
    let scheduler_client = api.client_as(Identity::scheduler());
    let started = Instant::now();
    futures::stream::iter(0..n_pods)
        .map(|i| {
            let client = scheduler_client.clone();
            async move {
                let mut pod = Pod::default();
                pod.metadata.namespace = Some("baseline".into());
                pod.metadata.name = Some(format!("pod-{i}"));
                scheduler::binding::bind(&client, &pod, &format!("node-{}", i % n_nodes)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    let baseline = started.elapsed();
    let baseline_rate = n_pods as f64 / baseline.as_secs_f64();
    println!(
        "baseline: {n_pods} raw binding requests in {:.2} s = {baseline_rate:.0} bindings/s",
        baseline.as_secs_f64()
    );

    // The scheduler.
    let counter = tokio::spawn(count_bound(client.clone(), n_pods));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let sched = tokio::spawn(scheduler::run(scheduler_client));
    let first_bound = counter.await??.saturating_duration_since(started);
    let elapsed = started.elapsed();
    sched.abort();
    let rate = n_pods as f64 / elapsed.as_secs_f64();
    println!(
        "scheduler: {n_pods} pods bound in {:.2} s = {rate:.0} pods/s (first bind after {:.2} s of cache sync; {:.0} pods/s after it)",
        elapsed.as_secs_f64(),
        first_bound.as_secs_f64(),
        n_pods as f64 / (elapsed - first_bound).as_secs_f64(),
    );
    println!("ratio scheduler/baseline: {:.2}", rate / baseline_rate);
    Ok(())
}

fn node(i: usize) -> serde_json::Value {
    let name = format!("node-{i}");
    json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
        }},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }
    })
}

async fn create_pods(client: &Client, ns: &str, n: usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Watches the `bench` pods until `n` are bound; returns when the first was bound.
async fn count_bound(client: Client, n: usize) -> anyhow::Result<Instant> {
    let pods: Api<Pod> = Api::namespaced(client, "bench");
    let mut stream = std::pin::pin!(watcher(pods, watcher::Config::default()).applied_objects());
    let mut bound = HashSet::new();
    let mut first: Option<Instant> = None;
    while let Some(pod) = stream.try_next().await? {
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
        {
            first.get_or_insert_with(Instant::now);
            bound.insert(pod.metadata.name.unwrap_or_default());
            if bound.len() >= n {
                break;
            }
        }
    }
    Ok(first.unwrap_or_else(Instant::now))
}
