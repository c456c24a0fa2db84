//! Container lifecycles: crash loops with back-off and termination messages, liveness
//! probes that restart, pods that finish, graceful deletion, and an agent restart that
//! adopts running containers and cleans up pods deleted while it was down.

mod common;

use std::time::Duration;

use common::{Env, container_status};
use kube::api::DeleteParams;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_backs_off() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "crash"},
        "spec": {"containers": [{
            "name": "crash",
            "image": agent::images::BUSYBOX_IMAGE,
            "command": ["sh", "-c", "echo boom > /dev/termination-log; exit 3"],
        }]},
    }))
    .await?;
    // The first restart is immediate; the next waits 10 s, showing CrashLoopBackOff.
    let pod = env
        .wait_pod(
            "crash",
            Duration::from_secs(30),
            "CrashLoopBackOff after a restart",
            |p| {
                container_status(p, "crash").is_some_and(|c| {
                    c.restart_count >= 1
                        && c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
                })
            },
        )
        .await?;
    let status = container_status(&pod, "crash").unwrap();
    let first_count = status.restart_count;
    let waiting = status.state.unwrap().waiting.unwrap();
    assert!(
        waiting
            .message
            .unwrap()
            .contains("back-off 10s restarting failed container=crash"),
    );
    let last = status.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(last.message.as_deref(), Some("boom\n"));
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    let ready = pod
        .status
        .as_ref()
        .unwrap()
        .conditions
        .clone()
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    // After the back-off, it is restarted again.
    env.wait_pod("crash", Duration::from_secs(30), "a further restart", |p| {
        container_status(p, "crash").is_some_and(|c| c.restart_count > first_count)
    })
    .await?;
    // The agent told the story in events, as kubelet does.
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.api.client(), "default")
            .list(&Default::default())
            .await?;
    let reasons: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("crash"))
        .filter_map(|e| e.reason.clone())
        .collect();
    for reason in ["Pulled", "Created", "Started", "BackOff"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} not in {reasons:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_liveness_probe_restarts_and_pods_finish() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    env.start_agent();
    env.create_pod(json!({
        "metadata": {"name": "unhealthy"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "app",
                "image": agent::images::BUSYBOX_IMAGE,
                "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600"],
                "livenessProbe": {
                    "exec": {"command": ["cat", "/tmp/healthy"]},
                    "periodSeconds": 1,
                    "failureThreshold": 2,
                },
            }],
        },
    }))
    .await?;
    // A TCP probe against a port nobody serves keeps this one unready.
    env.create_pod(json!({
        "metadata": {"name": "unready"},
        "spec": {"containers": [{
            "name": "app",
            "image": agent::images::BUSYBOX_IMAGE,
            "command": ["sleep", "3600"],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        }]},
    }))
    .await?;
    // Pods that run to completion.
    for (name, code) in [("done", 0), ("failed", 7)] {
        env.create_pod(json!({
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "job",
                    "image": agent::images::BUSYBOX_IMAGE,
                    "command": ["sh", "-c", format!("exit {code}")],
                }],
            },
        }))
        .await?;
    }
    let pod = env
        .wait_pod(
            "unhealthy",
            Duration::from_secs(40),
            "a liveness restart",
            |p| {
                container_status(p, "app").is_some_and(|c| {
                    c.restart_count >= 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })
            },
        )
        .await?;
    let status = container_status(&pod, "app").unwrap();
    let last = status.last_state.unwrap().terminated.unwrap();
    // Killed by the agent: SIGTERM ignored by PID 1, then SIGKILL after the grace period.
    assert_eq!(last.exit_code, 137, "{last:?}");

    let done = env
        .wait_pod("done", Duration::from_secs(30), "Succeeded", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await?;
    let terminated = container_status(&done, "job")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    let failed = env
        .wait_pod("failed", Duration::from_secs(30), "Failed", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
        })
        .await?;
    let terminated = container_status(&failed, "job")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(terminated.exit_code, 7);
    assert_eq!(container_status(&failed, "job").unwrap().restart_count, 0);

    let unready = env.pods().get("unready").await?;
    let status = unready.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_is_graceful_and_finishes() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    let host_dir = env.dir.path().join("shared");
    std::fs::create_dir_all(&host_dir)?;
    env.start_agent();
    let pod = env
        .create_pod(json!({
            "metadata": {"name": "graceful"},
            "spec": {
                "terminationGracePeriodSeconds": 20,
                "containers": [{
                    "name": "app",
                    "image": agent::images::BUSYBOX_IMAGE,
                    "command": ["sh", "-c",
                        "trap 'echo got SIGTERM > /shared/bye; exit 0' TERM; while true; do sleep 0.2; done"],
                    "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
                }],
                "volumes": [{"name": "shared", "hostPath": {"path": host_dir.display().to_string()}}],
            },
        }))
        .await?;
    let uid = pod.metadata.uid.clone().unwrap();
    env.wait_ready("graceful").await?;
    let started = std::time::Instant::now();
    env.pods()
        .delete("graceful", &DeleteParams::default())
        .await?;
    // The object stays (terminating) until the agent has stopped the containers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.pods().get_opt("graceful").await?.is_some() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "pod not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The container saw SIGTERM and exited by itself, well before the grace period ran out.
    assert_eq!(
        std::fs::read_to_string(host_dir.join("bye"))?,
        "got SIGTERM\n"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    let sandboxes = env
        .cri
        .sandboxes(&[(agent::pods::spec::POD_UID, uid.as_str())])
        .await?;
    assert!(sandboxes.is_empty(), "{sandboxes:?}");
    assert!(!env.dir.path().join(format!("agent/pods/{uid}")).exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_adopts_containers_and_removes_deleted_pods() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    env.start_agent();
    for name in ["keeper", "doomed"] {
        env.create_pod(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{
                "name": "app",
                "image": agent::images::BUSYBOX_IMAGE,
                "command": ["sleep", "3600"],
            }]},
        }))
        .await?;
    }
    let keeper = env.wait_ready("keeper").await?;
    let doomed = env.wait_ready("doomed").await?;
    let before = container_status(&keeper, "app").unwrap();

    env.stop_agent().await;
    // Deleted while the agent is away: nobody finishes it, so force it.
    env.pods()
        .delete("doomed", &DeleteParams::default().grace_period(0))
        .await?;
    let doomed_uid = doomed.metadata.uid.clone().unwrap();
    // The containers run on without the agent.
    assert_eq!(
        env.exec(&keeper, "app", &["echo", "alive"]).await?.trim(),
        "alive"
    );

    env.start_agent();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = env
            .cri
            .sandboxes(&[(agent::pods::spec::POD_UID, doomed_uid.as_str())])
            .await?;
        if left.is_empty() {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the deleted pod's sandbox is still there: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give the new agent a few syncs, then check nothing was restarted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let keeper = env.wait_ready("keeper").await?;
    let after = container_status(&keeper, "app").unwrap();
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.restart_count, 0);
    assert_eq!(
        after.state.unwrap().running.unwrap().started_at,
        before.state.unwrap().running.unwrap().started_at
    );
    let running = env
        .cri
        .pod_containers(keeper.metadata.uid.as_deref().unwrap())
        .await?;
    assert_eq!(running.len(), 1, "{running:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_start_hooks_run_and_a_failing_one_restarts_the_container() -> anyhow::Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    env.start_agent();
    // The hook's file exists before the container is reported Ready.
    let pod = env
        .create_pod(json!({
            "metadata": {"name": "hooked"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "app",
                    "image": agent::images::BUSYBOX_IMAGE,
                    "command": ["sleep", "3600"],
                    "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo hooked > /tmp/hook"]}}},
                }],
            },
        }))
        .await?;
    let pod = env.wait_ready("hooked").await.map(|_| pod)?;
    let pod = env
        .pods()
        .get(pod.metadata.name.as_deref().unwrap())
        .await?;
    assert_eq!(
        env.exec(&pod, "app", &["cat", "/tmp/hook"]).await?,
        "hooked\n"
    );

    // A failing hook kills the container; restartPolicy Always starts it again.
    env.create_pod(json!({
        "metadata": {"name": "bad-hook"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": agent::images::BUSYBOX_IMAGE,
                "command": ["sleep", "3600"],
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 7"]}}},
            }],
        },
    }))
    .await?;
    env.wait_pod("bad-hook", Duration::from_secs(40), "a restart", |p| {
        container_status(p, "app").is_some_and(|s| s.restart_count >= 1)
    })
    .await?;
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(env.api.client(), "default");
    let failed = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedPostStartHook"))
        .filter_map(|e| e.message)
        .collect::<Vec<_>>();
    assert!(
        failed.iter().any(|m| m.contains("exited with 7")),
        "{failed:?}"
    );
    Ok(())
}
