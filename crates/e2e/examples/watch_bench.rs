//! Watch fan-out benchmark: W concurrent watchers on pods while P pods are created.
//! Reports events delivered per second and commit-to-delivery latency (p50/p99), measured
//! from the moment the create's response arrived (the commit is acknowledged by then, so
//! this slightly understates latency; deliveries that beat the response count as 0).
//!
//! Baseline, in the same run and against the same server: creating P pods with no
//! watchers. The ratio of create rates says what fan-out costs the write path.
//!
//! Run: `cargo build --release -p kumo && cargo run --release -p e2e --example watch_bench`
//! (flags: `--watchers N` (default 1000), `--pods N` (default 10000), `--connections N`
//! (default 20: watchers are spread over this many HTTP/2 connections)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::Kumo;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every `SAMPLE`th pod's deliveries are timed (timing all would cost more than it tells).
const SAMPLE: usize = 10;

/// Creates `count` pods named `<prefix>-<i>` in namespace `ns` from 16 writers; returns
/// the rate and when each sampled pod's create was acknowledged.
async fn create_pods(
    client: &kube::Client,
    ns: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<(f64, HashMap<usize, Instant>)> {
    let writers = 16;
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let prefix = prefix.to_owned();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(writers) {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("{prefix}-{i}")},
                    "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]},
                }))?;
                api.create(&PostParams::default(), &pod).await?;
                if i % SAMPLE == 0 {
                    acked.lock().unwrap().insert(i, Instant::now());
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    Ok((rate, acked))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let watchers = arg("--watchers", 1000);
    let pods = arg("--pods", 10_000);
    let connections = arg("--connections", 20).max(1);
    if std::env::var_os("KUMO_BIN").is_none() {
        let release =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/kumo");
        if release.exists() {
            e2e::set_kumo_bin(&release);
        }
    }
    println!("kumo watch benchmark: {watchers} watchers, {pods} pods, {connections} connections");
    println!("binary: {}", e2e::kumo_bin().display());
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    let client = kumo.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["baseline", "watched"] {
        let body: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        namespaces.create(&PostParams::default(), &body).await?;
    }

    // Baseline: creates with nobody watching.
    let (baseline_rate, _) = create_pods(&client, "baseline", "b", pods).await?;
    println!("baseline creates (no watchers):   {baseline_rate:>9.0} /s");

    // Watchers, each its own watch request, spread over several connections.
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(kumo.client().await?);
    }
    let start_rv = Api::<Pod>::namespaced(client.clone(), "watched")
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let delivered = Arc::new(AtomicU64::new(0));
    let deliveries: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers.max(1));
    let mut watch_tasks = Vec::new();
    for w in 0..watchers {
        let client = clients[w % connections].clone();
        let delivered = delivered.clone();
        let deliveries = deliveries.clone();
        let ready_tx = ready_tx.clone();
        let url = format!(
            "/api/v1/namespaces/watched/pods?watch=true&resourceVersion={start_rv}&timeoutSeconds=3600"
        );
        watch_tasks.push(tokio::spawn(async move {
            let req = http::Request::get(url).body(Vec::new())?;
            let stream = client.request_stream(req).await?;
            let _ = ready_tx.send(()).await;
            let mut lines = stream.lines();
            let mut local = Vec::new();
            let mut seen = 0usize;
            while let Some(line) = lines.next().await {
                let line = line?;
                let now = Instant::now();
                seen += 1;
                // The pod's name is the first "name" in the object; no full decode needed.
                if let Some(at) = line.find("\"name\":\"w-") {
                    let digits: String = line[at + 10..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(i) = digits.parse::<usize>()
                        && i % SAMPLE == 0
                    {
                        local.push((i, now));
                    }
                }
                if seen == pods {
                    break;
                }
            }
            delivered.fetch_add(seen as u64, Ordering::Relaxed);
            deliveries.lock().unwrap().extend(local);
            anyhow::Ok(())
        }));
    }
    drop(ready_tx);
    let mut ready = 0;
    while ready < watchers && ready_rx.recv().await.is_some() {
        ready += 1;
    }
    println!("{ready} watchers connected");

    let started = Instant::now();
    let (watched_rate, acked) = create_pods(&client, "watched", "w", pods).await?;
    println!("creates with {watchers} watchers: {watched_rate:>9.0} /s");
    let deadline = Duration::from_secs(1800);
    for t in watch_tasks {
        match tokio::time::timeout(deadline.saturating_sub(started.elapsed()), t).await {
            Ok(r) => r??,
            Err(_) => anyhow::bail!("watchers did not receive every event within 30 minutes"),
        }
    }
    let elapsed = started.elapsed();
    let total = delivered.load(Ordering::Relaxed);
    println!(
        "events delivered: {total} in {:.1} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    let mut latencies: Vec<Duration> = deliveries
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(i, at)| {
            acked
                .get(i)
                .map(|acked| at.saturating_duration_since(*acked))
        })
        .collect();
    latencies.sort();
    let pick = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "commit-to-delivery latency over {} sampled deliveries: p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        pick(0.5).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "ratio: creates with watchers / without = {:.2}",
        watched_rate / baseline_rate
    );
    Ok(())
}
