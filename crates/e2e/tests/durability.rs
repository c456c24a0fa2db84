//! Acknowledged writes survive `kill -9`: creates under load, a SIGKILL at a random
//! moment, a restart; every create answered 201 is there and the database is intact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::Kumo;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_kill_9() -> anyhow::Result<()> {
    let mut kumo = Kumo::start()?;
    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let cms = cms.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            // Bounded: at most 2000 creates per writer; the kill ends it much sooner.
            for i in 0..2000 {
                let name = format!("w{w}-{i}");
                let cm: ConfigMap = serde_json::from_value(
                    serde_json::json!({"metadata": {"name": name}, "data": {"i": i.to_string()}}),
                )
                .expect("valid");
                match cms.create(&PostParams::default(), &cm).await {
                    Ok(_) => acked.lock().expect("lock").push(name),
                    Err(_) => return,
                }
            }
        }));
    }
    let delay = rand::rng().random_range(300..1500);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    tokio::task::block_in_place(|| kumo.kill9())?;
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        !acked.is_empty(),
        "no create was acknowledged before the kill"
    );

    let db = kumo.data_dir().join("state.db");
    let backend = store::SqliteBackend::open(store::SqliteConfig::new(&db))?;
    backend.integrity_check()?;
    drop(backend);

    tokio::task::block_in_place(|| kumo.start_again())?;
    let cms: Api<ConfigMap> = Api::namespaced(kumo.client().await?, "default");
    let present: std::collections::BTreeSet<String> = cms
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates were lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    Ok(())
}
