//! Images pulled through CRI as on a real network: a local docker-registry serves as
//! containerd's mirror for `kumo.local`, and the agent pulls per imagePullPolicy.

mod common;

use std::time::Duration;

use common::{Env, container_status};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pulled_from_the_mirror() -> anyhow::Result<()> {
    let Some(mut env) = Env::start_with_registry().await? else {
        return Ok(());
    };
    let socket = env.containerd.as_ref().unwrap().socket();
    // kumo.local/web:2 exists only in the registry.
    env.registry
        .as_ref()
        .unwrap()
        .push(&socket, agent::images::WEB_IMAGE, "web:2")?;
    assert!(env.cri.image_status("kumo.local/web:2").await?.is_none());
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "pulled"},
        "spec": {"containers": [{
            "name": "web",
            "image": "kumo.local/web:2",
            "imagePullPolicy": "IfNotPresent",
        }]},
    }))
    .await?;
    env.create_pod(json!({
        "metadata": {"name": "missing"},
        "spec": {"containers": [{"name": "app", "image": "kumo.local/nope:1"}]},
    }))
    .await?;
    env.create_pod(json!({
        "metadata": {"name": "never"},
        "spec": {"containers": [{
            "name": "app",
            "image": "kumo.local/absent:1",
            "imagePullPolicy": "Never",
        }]},
    }))
    .await?;
    let pod = env.wait_ready("pulled").await?;
    assert!(env.cri.image_status("kumo.local/web:2").await?.is_some());
    let status = container_status(&pod, "web").unwrap();
    assert!(status.image_id.contains("sha256:"), "{}", status.image_id);

    let waiting_reason = |reasons: &'static [&'static str]| {
        move |p: &k8s_openapi::api::core::v1::Pod| {
            container_status(p, "app")
                .and_then(|c| c.state)
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .is_some_and(|r| reasons.contains(&r.as_str()))
        }
    };
    let pod = env
        .wait_pod(
            "missing",
            Duration::from_secs(30),
            "ErrImagePull",
            waiting_reason(&["ErrImagePull", "ImagePullBackOff"]),
        )
        .await?;
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    // While it backs off, the status still says why the last pull failed.
    env.wait_pod(
        "missing",
        Duration::from_secs(30),
        "ImagePullBackOff with the pull error",
        |p: &k8s_openapi::api::core::v1::Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| {
                    w.reason.as_deref() == Some("ImagePullBackOff")
                        && w.message.as_deref().is_some_and(|m| {
                            m.starts_with("Back-off pulling image \"kumo.local/nope:1\": ErrImagePull: failed to pull image")
                        })
                })
        },
    )
    .await?;
    env.wait_pod(
        "never",
        Duration::from_secs(30),
        "ErrImageNeverPull",
        waiting_reason(&["ErrImageNeverPull"]),
    )
    .await?;
    Ok(())
}
