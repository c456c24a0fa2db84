//! Raw write benchmark: concurrent creates straight into a backend. Its rate is the
//! baseline the API benchmarks report their ratios against.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::{Backend, Error, Result};

/// A value about the size of a small ConfigMap as the API server stores it.
const VALUE: &[u8] = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bench","namespace":"default","uid":"00000000-0000-0000-0000-000000000000","creationTimestamp":"2025-01-01T00:00:00Z"},"data":{"key":"value","other":"a somewhat longer value to make the object realistic"}}"#;

/// Creates `count` keys in total from `writers` concurrent tasks (at least one) and
/// returns the rate in creates per second. Keys go under `/bench/<revision>/`, so runs
/// against the same store do not collide. Fails with the first error a writer hit.
pub async fn bench_raw_creates(
    backend: Arc<dyn Backend>,
    writers: usize,
    count: usize,
) -> Result<f64> {
    let writers = writers.max(1);
    let run = backend.current_revision().await?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        // Spread the remainder over the first writers.
        let mine = count / writers + usize::from(w < count % writers);
        let backend = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            let value = Bytes::from_static(VALUE);
            for i in 0..mine {
                backend
                    .create(&format!("/bench/{run}/{w}/{i}"), value.clone())
                    .await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| Error::Backend(format!("benchmark writer failed: {e}")))??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(if secs > 0.0 { count as f64 / secs } else { 0.0 })
}
