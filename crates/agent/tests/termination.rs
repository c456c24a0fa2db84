//! Terminations cut short: a pod whose container ignores SIGTERM is stopping with a long
//! grace period when a second delete shortens it (kubectl's `--grace-period=2`), or when
//! the pod is force-deleted (`--grace-period=0 --force`); the agent kills it soon after,
//! not when the first grace period runs out.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use kube::api::DeleteParams;
use serde_json::json;

/// A pod whose only process ignores SIGTERM: only a SIGKILL stops it.
async fn stubborn_pod(env: &Env, name: &str) -> anyhow::Result<String> {
    let pod = env
        .create_pod(json!({
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 300,
                "containers": [{
                    "name": "app",
                    "image": agent::images::BUSYBOX_IMAGE,
                    "command": ["sh", "-c", "trap '' TERM; sleep 3600"],
                }],
            },
        }))
        .await?;
    env.wait_ready(name).await?;
    Ok(pod.metadata.uid.unwrap_or_default())
}

/// Deletes with a grace period, as `kubectl delete --grace-period`.
async fn delete(env: &Env, name: &str, grace: u32) -> anyhow::Result<()> {
    env.pods()
        .delete(name, &DeleteParams::default().grace_period(grace))
        .await?;
    Ok(())
}

/// Waits (at most `timeout`) until the pod's sandboxes are gone from the runtime.
async fn wait_sandboxes_gone(env: &Env, uid: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = env
            .cri
            .sandboxes(&[(agent::pods::spec::POD_UID, uid)])
            .await?;
        if left.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pod's sandbox is still there after {timeout:?}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes with 300 s and checks the container is still stopping a few seconds later
/// (it ignores SIGTERM, so only the grace period's end would stop it).
async fn start_long_termination(env: &Env, name: &str, uid: &str) -> anyhow::Result<()> {
    delete(env, name, 300).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = env.pods().get_opt(name).await?;
    anyhow::ensure!(
        pod.as_ref()
            .is_some_and(|p| p.metadata.deletion_grace_period_seconds == Some(300)),
        "the pod should be terminating with 300 s: {pod:?}"
    );
    let running = env.cri.pod_containers(uid).await?;
    anyhow::ensure!(
        running
            .iter()
            .any(|c| c.state == agent::cri::api::ContainerState::ContainerRunning as i32),
        "the container should ignore SIGTERM and still run: {running:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_second_delete_kills_sooner() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    env.start_agent();
    let uid = stubborn_pod(&env, "stubborn").await?;
    start_long_termination(&env, "stubborn", &uid).await?;

    let shortened = Instant::now();
    delete(&env, "stubborn", 2).await?;
    // The agent kills the container once the 2 s pass, then finishes the deletion.
    let deadline = shortened + Duration::from_secs(20);
    while env.pods().get_opt("stubborn").await?.is_some() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pod still there 20 s after the grace period was shortened to 2 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = shortened.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "killed before the new grace period: {took:?}"
    );
    wait_sandboxes_gone(&env, &uid, Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_delete_during_termination_kills_at_once() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    env.start_agent();
    let uid = stubborn_pod(&env, "forced").await?;
    start_long_termination(&env, "forced", &uid).await?;

    delete(&env, "forced", 0).await?;
    assert!(
        env.pods().get_opt("forced").await?.is_none(),
        "--grace-period=0 --force removes the pod from the API at once"
    );
    // On the node the container still gets the short forced grace, then the kill.
    wait_sandboxes_gone(&env, &uid, Duration::from_secs(15)).await?;
    Ok(())
}
