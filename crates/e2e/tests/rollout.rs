//! Deployments driven by the installed kubectl against a real `kumo server` with hollow
//! nodes: create, scale, set image, rollout status/history/undo/pause/resume/restart, and
//! delete (which takes the ReplicaSets and pods along).

use std::time::Duration;

use e2e::{Kumo, eventually};

fn jsonpath(kumo: &Kumo, args: &[&str], path: &str) -> String {
    let output = format!("jsonpath={path}");
    let mut all = args.to_vec();
    all.extend(["-o", output.as_str()]);
    kumo.kubectl(&all).expect("kubectl get")
}

fn rollout_status(kumo: &Kumo, name: &str) {
    let target = format!("deployment/{name}");
    let out = kumo
        .kubectl(&["rollout", "status", &target, "--timeout=60s"])
        .expect("rollout status");
    assert!(out.contains("successfully rolled out"), "{out}");
}

fn replica_set_count(kumo: &Kumo, app: &str) -> usize {
    let selector = format!("app={app}");
    jsonpath(
        kumo,
        &["get", "rs", "-l", &selector],
        "{.items[*].metadata.name}",
    )
    .split_whitespace()
    .count()
}

#[test]
fn create_scale_set_image_history_undo_and_delete() {
    let kumo = Kumo::start().expect("kumo");
    let _nodes = kumo.hollow_nodes(&["--count", "2"]).expect("hollow nodes");

    kumo.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=3",
    ])
    .expect("create deployment");
    rollout_status(&kumo, "web");
    assert_eq!(
        jsonpath(
            &kumo,
            &["get", "deployment", "web"],
            "{.status.availableReplicas}"
        ),
        "3"
    );

    kumo.kubectl(&["scale", "deployment", "web", "--replicas=5"])
        .expect("scale");
    rollout_status(&kumo, "web");
    assert_eq!(
        jsonpath(
            &kumo,
            &["get", "deployment", "web"],
            "{.status.readyReplicas}"
        ),
        "5"
    );

    kumo.kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.26"])
        .expect("set image");
    kumo.kubectl(&[
        "annotate",
        "deployment",
        "web",
        "kubernetes.io/change-cause=image 1.26",
        "--overwrite",
    ])
    .expect("annotate");
    rollout_status(&kumo, "web");
    assert_eq!(replica_set_count(&kumo, "web"), 2);
    let images = jsonpath(
        &kumo,
        &["get", "pods", "-l", "app=web"],
        "{.items[*].spec.containers[0].image}",
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let images = jsonpath(
                &kumo,
                &["get", "pods", "-l", "app=web"],
                "{.items[*].spec.containers[0].image}",
            );
            images.split_whitespace().count() == 5
                && images.split_whitespace().all(|i| i == "nginx:1.26")
        }),
        "old pods remain: {images}"
    );

    let history = kumo
        .kubectl(&["rollout", "history", "deployment/web"])
        .expect("history");
    let lines: Vec<&str> = history.lines().map(str::trim).collect();
    assert!(lines.iter().any(|l| l.starts_with("1 ")), "{history}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("2 ") && l.ends_with("image 1.26")),
        "{history}"
    );
    let second = kumo
        .kubectl(&["rollout", "history", "deployment/web", "--revision=2"])
        .expect("history of revision 2");
    assert!(second.contains("nginx:1.26"), "{second}");

    let describe = kumo
        .kubectl(&["describe", "deployment", "web"])
        .expect("describe");
    assert!(describe.contains("ScalingReplicaSet"), "{describe}");
    assert!(
        describe.contains("Scaled up replica set web-"),
        "{describe}"
    );

    let undo = kumo
        .kubectl(&["rollout", "undo", "deployment/web"])
        .expect("undo");
    assert!(undo.contains("rolled back"), "{undo}");
    rollout_status(&kumo, "web");
    assert_eq!(
        jsonpath(
            &kumo,
            &["get", "deployment", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "nginx:1.25"
    );
    assert_eq!(
        jsonpath(
            &kumo,
            &["get", "deployment", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );
    // Revision 1's ReplicaSet became revision 3.
    let history = kumo
        .kubectl(&["rollout", "history", "deployment/web"])
        .expect("history");
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    assert_eq!(replica_set_count(&kumo, "web"), 2);

    kumo.kubectl(&["delete", "deployment", "web"])
        .expect("delete");
    let gone = eventually(Duration::from_secs(30), || {
        replica_set_count(&kumo, "web") == 0
            && jsonpath(
                &kumo,
                &["get", "pods", "-l", "app=web"],
                "{.items[*].metadata.name}",
            )
            .trim()
            .is_empty()
    });
    assert!(
        gone,
        "ReplicaSets or pods outlived their Deployment: {}",
        kumo.kubectl(&["get", "rs,pods", "-l", "app=web"])
            .unwrap_or_default()
    );
}

#[test]
fn pause_resume_and_restart() {
    let kumo = Kumo::start().expect("kumo");
    let _nodes = kumo.hollow_nodes(&["--count", "2"]).expect("hollow nodes");
    kumo.kubectl(&[
        "create",
        "deployment",
        "api",
        "--image=nginx:1.25",
        "--replicas=2",
    ])
    .expect("create deployment");
    rollout_status(&kumo, "api");

    kumo.kubectl(&["rollout", "pause", "deployment/api"])
        .expect("pause");
    kumo.kubectl(&["set", "image", "deployment/api", "nginx=nginx:1.26"])
        .expect("set image");
    // The change is observed but not rolled out.
    assert!(eventually(Duration::from_secs(10), || {
        jsonpath(
            &kumo,
            &["get", "deployment", "api"],
            "{.status.observedGeneration}",
        ) == jsonpath(
            &kumo,
            &["get", "deployment", "api"],
            "{.metadata.generation}",
        )
    }));
    let reason = jsonpath(
        &kumo,
        &["get", "deployment", "api"],
        "{.status.conditions[?(@.type==\"Progressing\")].reason}",
    );
    assert_eq!(reason, "DeploymentPaused");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(replica_set_count(&kumo, "api"), 1);
    kumo.kubectl(&["rollout", "resume", "deployment/api"])
        .expect("resume");
    rollout_status(&kumo, "api");
    assert_eq!(replica_set_count(&kumo, "api"), 2);

    // kubectl refuses to roll back a paused Deployment.
    kumo.kubectl(&["rollout", "pause", "deployment/api"])
        .expect("pause");
    let undo = kumo
        .kubectl_fails(&["rollout", "undo", "deployment/api"])
        .expect("undo of a paused deployment fails");
    assert!(undo.contains("paused"), "{undo}");
    kumo.kubectl(&["rollout", "resume", "deployment/api"])
        .expect("resume");

    kumo.kubectl(&["rollout", "restart", "deployment/api"])
        .expect("restart");
    rollout_status(&kumo, "api");
    assert_eq!(replica_set_count(&kumo, "api"), 3);
    let restarted = jsonpath(
        &kumo,
        &["get", "pods", "-l", "app=api"],
        "{.items[*].metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let annotations = jsonpath(
                &kumo,
                &["get", "pods", "-l", "app=api"],
                "{range .items[*]}{.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}{\"\\n\"}{end}",
            );
            let lines: Vec<&str> = annotations.lines().collect();
            lines.len() == 2 && lines.iter().all(|l| !l.is_empty())
        }),
        "pods not restarted: {restarted}"
    );
}
