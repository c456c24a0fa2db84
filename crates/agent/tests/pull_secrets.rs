//! imagePullSecrets against a registry that requires authentication: a docker-registry
//! with htpasswd basic auth on loopback holds an image; a pod pulls it only with a
//! `kubernetes.io/dockerconfigjson` secret that has the right password for `host:port`.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Env, Registry, container_status};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const USER: &str = "puller";
const PASSWORD: &str = "s3cret-pa55";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_authenticate_to_a_private_registry() -> anyhow::Result<()> {
    if !common::registry_installed() {
        return Ok(());
    }
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    let registry = Registry::start_with_htpasswd(env.dir.path(), &[(USER, PASSWORD)])?;
    let socket = env.containerd.as_ref().unwrap().socket();
    let image = format!("{}/private/web:1", registry.address);
    // The registry really refuses anonymous clients: even a push needs the password.
    assert!(
        registry
            .push(&socket, agent::images::WEB_IMAGE, "private/web:1")
            .is_err()
    );
    registry.push_as(
        &socket,
        agent::images::WEB_IMAGE,
        "private/web:1",
        Some(&format!("{USER}:{PASSWORD}")),
    )?;

    // Both ways a config names the credentials: `docker login`'s base64 `auth` alone, and
    // the plain fields.
    create_secret(
        &env,
        "registry-login",
        &registry.address,
        USER,
        PASSWORD,
        true,
    )
    .await?;
    create_secret(&env, "stale-login", &registry.address, USER, "wrong", false).await?;
    env.start_agent();
    // Always: the node may hold the image once an authorized pod pulled it, and every
    // pull must still go through the registry's check.
    let pod = |name: &str, secrets: &[&str]| {
        json!({
            "metadata": {"name": name},
            "spec": {
                "imagePullSecrets": secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
                "containers": [{"name": "web", "image": image, "imagePullPolicy": "Always"}],
            },
        })
    };
    env.create_pod(pod("anonymous", &[])).await?;
    env.create_pod(pod("wrong-password", &["stale-login"]))
        .await?;
    for name in ["anonymous", "wrong-password"] {
        let pod = env
            .wait_pod(name, Duration::from_secs(40), "an image pull error", |p| {
                waiting_reason(p).is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
            })
            .await?;
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
        let failures = wait_failed_pulls(&env, name, 1).await?;
        assert!(
            failures.iter().all(|m| m.contains("401 Unauthorized")),
            "{name}: {failures:?}"
        );
    }
    assert!(env.cri.image_status(&image).await?.is_none());

    // A missing secret is skipped; the matching one still authenticates.
    env.create_pod(pod("authorized", &["not-there", "registry-login"]))
        .await?;
    let pod = env.wait_ready("authorized").await?;
    let status = container_status(&pod, "web").unwrap();
    assert!(status.image_id.contains("sha256:"), "{}", status.image_id);
    assert!(env.cri.image_status(&image).await?.is_some());

    // The image is on the node now, yet the next anonymous pull is refused all the same.
    let (refused, _) = failed_pulls(&env, "anonymous").await?;
    let failures = wait_failed_pulls(&env, "anonymous", refused + 1).await?;
    assert!(
        failures.iter().all(|m| m.contains("401 Unauthorized")),
        "{failures:?}"
    );
    let anonymous = env.pods().get("anonymous").await?;
    assert!(
        waiting_reason(&anonymous).is_some(),
        "{:?}",
        anonymous.status
    );
    drop(registry);
    Ok(())
}

/// Creates a `kubernetes.io/dockerconfigjson` secret for `server` with only the base64
/// `auth` of `user:password` (as `docker login` writes it), or with only the username and
/// password fields.
async fn create_secret(
    env: &Env,
    name: &str,
    server: &str,
    user: &str,
    password: &str,
    auth_only: bool,
) -> anyhow::Result<()> {
    let entry = if auth_only {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        json!({ "auth": auth })
    } else {
        json!({"username": user, "password": password})
    };
    let config = json!({"auths": {server: entry}});
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {
            ".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config.to_string()),
        },
    }))?;
    Api::<Secret>::namespaced(env.api.client(), "default")
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    container_status(pod, "web")?.state?.waiting?.reason
}

/// Waits (bounded by the agent's first two back-offs) until the agent reported at least
/// `count` failed pulls for the pod; returns their messages.
async fn wait_failed_pulls(env: &Env, pod: &str, count: i32) -> anyhow::Result<Vec<String>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (seen, failures) = failed_pulls(env, pod).await?;
        if seen >= count {
            return Ok(failures);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{pod}: fewer than {count} failed pulls reported: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many pulls of the pod's image failed, by the agent's `Failed` events (a repeated
/// event is one object with a series count), and their messages.
async fn failed_pulls(env: &Env, pod: &str) -> anyhow::Result<(i32, Vec<String>)> {
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.api.client(), "default")
            .list(&Default::default())
            .await?;
    let failed: Vec<_> = events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
        .filter(|e| e.reason.as_deref() == Some("Failed"))
        .collect();
    let count = failed
        .iter()
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum();
    Ok((count, failed.into_iter().filter_map(|e| e.note).collect()))
}
