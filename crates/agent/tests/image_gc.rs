//! Image garbage collection against a real containerd: above the high threshold, unused
//! images go; an image a container uses and the pinned sandbox image stay.

mod common;

use std::time::Duration;

use common::Env;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_are_removed_and_used_or_pinned_ones_kept() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "uses-busybox"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": agent::images::BUSYBOX_IMAGE,
                            "imagePullPolicy": "Never", "command": ["sleep", "3600"]}],
        },
    }))
    .await?;
    env.wait_ready("uses-busybox").await?;
    let present = |image: &'static str| {
        let cri = env.cri.clone();
        async move { cri.image_status(image).await.map(|s| s.is_some()) }
    };
    assert!(present(agent::images::WEB_IMAGE).await?);

    // Under the thresholds nothing goes.
    let relaxed = agent::image_gc::Policy {
        high_threshold_percent: 100,
        minimum_age: Duration::ZERO,
        ..Default::default()
    };
    assert!(
        agent::image_gc::collect_once(&env.cri, &relaxed)
            .await?
            .is_empty()
    );

    // A full disk (any usage is over a 0 % threshold): the unused web image goes.
    let full = agent::image_gc::Policy {
        high_threshold_percent: 0,
        low_threshold_percent: 0,
        minimum_age: Duration::ZERO,
        ..Default::default()
    };
    // containerd measures its image filesystem every few seconds; until it has, usage is 0
    // and there is nothing to free.
    let started = std::time::Instant::now();
    let removed = loop {
        let removed = agent::image_gc::collect_once(&env.cri, &full).await?;
        if !removed.is_empty() || started.elapsed() > Duration::from_secs(40) {
            break removed;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(!present(agent::images::WEB_IMAGE).await?);
    assert!(present(agent::images::BUSYBOX_IMAGE).await?, "in use");
    assert!(present(agent::images::PAUSE_IMAGE).await?, "pinned");

    // Images younger than the minimum age are kept too.
    let young = agent::image_gc::Policy {
        minimum_age: Duration::from_secs(3600),
        ..full
    };
    assert!(
        agent::image_gc::collect_once(&env.cri, &young)
            .await?
            .is_empty()
    );
    Ok(())
}
