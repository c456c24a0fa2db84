//! Measures raw store create throughput with N concurrent writers on a fresh SQLite
//! database: `cargo run --release -p store --example raw_writes -- --writers 16 --count 5000`.

use std::sync::Arc;

use store::{Backend, SqliteBackend, SqliteConfig};

/// Reads `--writers N` and `--count N` (total creates) from the command line.
fn parse_args() -> Result<(usize, usize), String> {
    let (mut writers, mut count) = (16usize, 5000usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--writers" => &mut writers,
            "--count" => &mut count,
            "-h" | "--help" => return Err("usage: raw_writes [--writers N] [--count TOTAL]".into()),
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        *slot = value
            .parse()
            .map_err(|e| format!("{flag} {value:?}: {e}"))?;
    }
    Ok((writers, count))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (writers, count) = parse_args()?;
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteBackend::open(SqliteConfig::new(&dir.path().join("raw.db")))?;
    let backend: Arc<dyn Backend> = Arc::new(sqlite.clone());
    let rate = store::bench::bench_raw_creates(backend, writers, count).await?;
    let stats = sqlite.stats();
    println!("writers={writers} count={count} rate={rate:.0} writes/s");
    println!(
        "transactions={} writes={} ({:.1} writes per fsync)",
        stats.transactions,
        stats.writes,
        stats.writes as f64 / stats.transactions.max(1) as f64
    );
    Ok(())
}
