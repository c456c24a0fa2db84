//! API benchmark: creates/s, GET and LIST latency over HTTPS with N concurrent clients,
//! against raw store writes/s measured in the same run as the baseline.
//!
//! Run: `cargo build --release -p kumo && cargo run --release -p e2e --example api_bench`
//! (flags: `--clients N`, `--creates N`, `--gets N`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::Kumo;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let clients = arg("--clients", 16);
    let creates = arg("--creates", 4000);
    let gets = arg("--gets", 4000);
    if std::env::var_os("KUMO_BIN").is_none() {
        let release =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/kumo");
        if release.exists() {
            e2e::set_kumo_bin(&release);
        }
    }
    println!("kumo API benchmark: {clients} concurrent clients, {creates} creates, {gets} GETs");
    println!("binary: {}", e2e::kumo_bin().display());

    // Baseline: raw creates into a fresh SQLite store, same concurrency.
    let dir = tempfile::tempdir()?;
    let backend: Arc<dyn store::Backend> = Arc::new(store::SqliteBackend::open(
        store::SqliteConfig::new(&dir.path().join("raw.db")),
    )?);
    let raw_rate = store::bench::bench_raw_creates(backend, clients, creates).await?;
    println!("raw store creates:   {raw_rate:>10.0} /s (baseline)");

    let kumo = Kumo::start()?;
    let client = kumo.client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");

    // API creates over HTTPS (HTTP/2, one connection pool shared by the clients).
    let started = Instant::now();
    let per_client = creates / clients;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("bench-{c}-{i}"), "labels": {"client": c.to_string()}},
                    "data": {"payload": "x".repeat(256)},
                }))?;
                api.create(&PostParams::default(), &cm).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let api_rate = (per_client * clients) as f64 / started.elapsed().as_secs_f64();
    println!(
        "API creates (HTTPS): {api_rate:>10.0} /s  = {:.0}% of raw store",
        api_rate / raw_rate * 100.0
    );

    // GET latency.
    let per_client = gets / clients;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                api.get(&format!("bench-{c}-{}", i % 50)).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    lat.sort();
    println!(
        "GET latency:         p50 {}  p99 {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );

    // LIST latency: one client's 250 objects by label selector, and a page of 500.
    let mut lat = Vec::new();
    let mut page_lat = Vec::new();
    for i in 0..100 {
        let t = Instant::now();
        api.list(&ListParams::default().labels(&format!("client={}", i % clients)))
            .await?;
        lat.push(t.elapsed());
        let t = Instant::now();
        api.list(&ListParams::default().limit(500)).await?;
        page_lat.push(t.elapsed());
    }
    lat.sort();
    page_lat.sort();
    println!(
        "LIST by label:       p50 {}  p99 {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    println!(
        "LIST limit=500:      p50 {}  p99 {}",
        ms(percentile(&page_lat, 0.5)),
        ms(percentile(&page_lat, 0.99))
    );
    Ok(())
}
