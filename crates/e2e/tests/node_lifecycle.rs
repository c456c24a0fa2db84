//! Node lifecycle with kubectl and hollow nodes: a node that stops renewing its Lease
//! turns NotReady and its pods are evicted after their toleration; `kubectl drain` evicts
//! through the eviction API and respects a PodDisruptionBudget.

use std::time::{Duration, Instant};

use e2e::Kumo;

/// Polls `check` every 500 ms until it returns `Some`, or fails after `timeout`.
fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The STATUS column of `kubectl get node NAME`.
fn node_status(kumo: &Kumo, name: &str) -> anyhow::Result<String> {
    let out = kumo.kubectl(&["get", "node", name, "--no-headers"])?;
    Ok(out.split_whitespace().nth(1).unwrap_or_default().to_owned())
}

#[test]
fn silent_node_turns_not_ready_and_its_pods_are_evicted() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let _live = kumo.hollow_nodes(&["--count", "1", "--first-index", "0"])?;
    let doomed = kumo.hollow_nodes(&["--count", "1", "--first-index", "1"])?;
    wait_for(Duration::from_secs(20), "both nodes Ready", || {
        Ok((node_status(&kumo, "hollow-0")? == "Ready"
            && node_status(&kumo, "hollow-1")? == "Ready")
            .then_some(()))
    })?;
    let manifest = |name: &str, tolerations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: hollow-1\n  containers:\n  - name: c\n    image: busybox\n{tolerations}"
        )
    };
    let short = "  tolerations:\n  - key: node.kubernetes.io/unreachable\n    operator: Exists\n    effect: NoExecute\n    tolerationSeconds: 5\n";
    kumo.kubectl_stdin(&["apply", "-f", "-"], &manifest("short", short))?;
    kumo.kubectl_stdin(&["apply", "-f", "-"], &manifest("patient", ""))?;
    wait_for(Duration::from_secs(20), "pods running", || {
        let phases = kumo.kubectl(&[
            "get",
            "pods",
            "short",
            "patient",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ])?;
        Ok((phases == "Running Running").then_some(()))
    })?;
    // The admission default gave the other pod five minutes.
    let seconds = kumo.kubectl(&[
        "get",
        "pod",
        "patient",
        "-o",
        "jsonpath={.spec.tolerations[*].tolerationSeconds}",
    ])?;
    assert_eq!(seconds, "300 300");

    drop(doomed);
    let stopped = Instant::now();
    // The promise: NotReady within 40 s of the last renewal (the kubelet stopped after it),
    // plus a little for kubectl's polling.
    wait_for(Duration::from_secs(42), "hollow-1 NotReady", || {
        Ok((node_status(&kumo, "hollow-1")? == "NotReady").then_some(()))
    })?;
    let took = stopped.elapsed();
    eprintln!("hollow-1 NotReady {took:?} after its kubelet stopped");
    assert!(took >= Duration::from_secs(25), "too early: {took:?}");
    assert_eq!(node_status(&kumo, "hollow-0")?, "Ready");
    let reason = kumo.kubectl(&[
        "get",
        "node",
        "hollow-1",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
    ])?;
    assert_eq!(reason, "NodeStatusUnknown");
    let taints = wait_for(Duration::from_secs(10), "unreachable taints", || {
        let taints = kumo.kubectl(&[
            "get",
            "node",
            "hollow-1",
            "-o",
            "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
        ])?;
        Ok(taints.contains("NoExecute").then_some(taints))
    })?;
    assert_eq!(
        taints.trim(),
        "node.kubernetes.io/unreachable:NoSchedule node.kubernetes.io/unreachable:NoExecute"
    );
    let ready = kumo.kubectl(&[
        "get",
        "pod",
        "patient",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])?;
    assert_eq!(ready, "False", "pods of an unreachable node are not ready");

    // The pod tolerating the taint for 5 s is evicted (Terminating: its node is gone, so
    // nothing finishes it); the one with the default 300 s stays.
    let tainted_at = Instant::now();
    wait_for(Duration::from_secs(15), "short evicted", || {
        let ts = kumo.kubectl(&[
            "get",
            "pod",
            "short",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])?;
        Ok((!ts.is_empty()).then_some(()))
    })?;
    eprintln!(
        "short evicted {:?} after the taint was seen",
        tainted_at.elapsed()
    );
    let listing = kumo.kubectl(&["get", "pods", "--no-headers"])?;
    assert!(listing.contains("Terminating"), "{listing}");
    let patient = kumo.kubectl(&[
        "get",
        "pod",
        "patient",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ])?;
    assert!(patient.is_empty(), "the 300 s toleration still holds");
    Ok(())
}

#[test]
fn drain_respects_the_disruption_budget() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let _nodes = kumo.hollow_nodes(&["--count", "2"])?;
    let deployment = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: busybox
        volumeMounts:
        - {name: scratch, mountPath: /scratch}
      volumes:
      - name: scratch
        emptyDir: {}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 3
  selector:
    matchLabels: {app: web}
";
    kumo.kubectl_stdin(&["apply", "-f", "-"], deployment)?;
    wait_for(Duration::from_secs(30), "three ready pods", || {
        let healthy = kumo.kubectl(&[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.currentHealthy}",
        ])?;
        Ok((healthy == "3").then_some(()))
    })?;
    // Pick the node with at least one of the pods.
    let nodes = kumo.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ])?;
    let node = nodes.split_whitespace().next().unwrap().to_owned();
    let other = if node == "hollow-0" {
        "hollow-1"
    } else {
        "hollow-0"
    };

    // minAvailable 3 of 3: the eviction is refused and drain gives up at its timeout.
    let refused = kumo.kubectl_fails(&[
        "drain",
        &node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=8s",
    ])?;
    assert!(
        refused.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{refused}"
    );
    let listing = kumo.kubectl(&["get", "node", &node, "--no-headers"])?;
    assert!(listing.contains("SchedulingDisabled"), "{listing}");

    // With room for one disruption the drain goes through, one pod at a time.
    kumo.kubectl(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":2}}"#,
    ])?;
    let out = kumo.kubectl(&[
        "drain",
        &node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ])?;
    assert!(out.contains(&format!("node/{node} drained")), "{out}");
    assert!(out.contains("evicted"), "{out}");
    let left = kumo.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "--field-selector",
        &format!("spec.nodeName={node}"),
        "-o",
        "name",
    ])?;
    assert!(left.trim().is_empty(), "pods left on {node}: {left}");
    wait_for(
        Duration::from_secs(30),
        "three pods on the other node",
        || {
            let names = kumo.kubectl(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "--field-selector",
                &format!("spec.nodeName={other},status.phase=Running"),
                "-o",
                "name",
            ])?;
            Ok((names.lines().count() == 3).then_some(()))
        },
    )?;
    kumo.kubectl(&["uncordon", &node])?;
    let taints = kumo.kubectl(&["get", "node", &node, "-o", "jsonpath={.spec.taints}"])?;
    let untainted = wait_for(
        Duration::from_secs(15),
        "unschedulable taint removed",
        || {
            let t = kumo.kubectl(&["get", "node", &node, "-o", "jsonpath={.spec.taints}"])?;
            Ok((!t.contains("unschedulable")).then_some(t))
        },
    )?;
    eprintln!("taints before/after uncordon: {taints} / {untainted}");
    Ok(())
}
