//! Control-loop benchmark: the time from creating an N-replica Deployment to N Running pods
//! on hollow nodes, through the Deployment and ReplicaSet controllers and the scheduler.
//!
//! Baseline, measured in the same run against the same server and nodes: creating N pods
//! directly with spec.nodeName already set (no controller, no scheduler) and waiting until
//! the hollow nodes report them Running. The ratio says what the control loops add.
//!
//! Run: `cargo build --release -p kumo && cargo run --release -p e2e --example rollout_bench`
//! (flags: `--replicas N` (default 1000), `--nodes N` (default 20)).

use std::time::{Duration, Instant};

use e2e::Kumo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until `want` pods with `selector` in `api` are Running; returns when they are.
async fn wait_running(api: &Api<Pod>, selector: &str, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let pods = api.list(&ListParams::default().labels(selector)).await?;
        let running = pods
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running >= want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {running} of {want} pods Running after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let replicas = arg("--replicas", 1000);
    let nodes = arg("--nodes", 20);
    if std::env::var_os("KUMO_BIN").is_none() {
        let release =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/kumo");
        if release.exists() {
            e2e::set_kumo_bin(&release);
        }
    }
    println!("kumo rollout benchmark: {replicas} replicas on {nodes} hollow nodes");
    println!("binary: {}", e2e::kumo_bin().display());
    let kumo = Kumo::start()?;
    let per_node = replicas.div_ceil(nodes) * 2 + 10;
    let _nodes = kumo.hollow_nodes(&[
        "--count",
        &nodes.to_string(),
        "--pods",
        &per_node.to_string(),
        "--cpu",
        "64",
        "--memory",
        "256Gi",
    ])?;
    let client = kumo.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Baseline: pods created directly on their nodes.
    let started = Instant::now();
    let mut tasks = Vec::new();
    let writers = 16;
    for w in 0..writers {
        let pods = pods.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..replicas).step_by(writers) {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("direct-{i}"), "labels": {"bench": "direct"}},
                    "spec": {
                        "nodeName": format!("hollow-{}", i % nodes),
                        "containers": [{"name": "c", "image": "registry.example/web:1"}],
                    },
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    wait_running(&pods, "bench=direct", replicas).await?;
    let direct = started.elapsed();
    println!(
        "baseline: {replicas} pods created on their nodes to Running: {:.2} s",
        direct.as_secs_f64()
    );
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=direct"),
    )
    .await?;

    // The control loops: one Deployment.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"bench": "deployment"}},
            "template": {
                "metadata": {"labels": {"bench": "deployment"}},
                "spec": {"containers": [{
                    "name": "c",
                    "image": "registry.example/web:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }]},
            },
        },
    }))?;
    let started = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    wait_running(&pods, "bench=deployment", replicas).await?;
    let rollout = started.elapsed();
    println!(
        "deployment: {replicas} replicas created to Running:       {:.2} s",
        rollout.as_secs_f64()
    );
    println!(
        "ratio: {:.2} (deployment time / direct pods time)",
        rollout.as_secs_f64() / direct.as_secs_f64()
    );
    Ok(())
}
