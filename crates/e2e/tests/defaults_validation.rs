//! Defaulting and validation of built-in kinds, as kubectl users see them: `get -o yaml`
//! after create looks like upstream, and bad specs get 422 with field paths.

use e2e::Kumo;

fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn created_objects_are_defaulted_like_upstream() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "deployment", "web", "--image=nginx"])?;
    let d: serde_json::Value =
        serde_json::from_str(&kumo.kubectl(&["get", "deploy", "web", "-o", "json"])?)?;
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(
        pod["containers"][0]["imagePullPolicy"], "Always",
        "no tag means latest"
    );
    assert_eq!(
        pod["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );

    kumo.kubectl(&["create", "service", "clusterip", "svc", "--tcp=80:8080"])?;
    let s: serde_json::Value =
        serde_json::from_str(&kumo.kubectl(&["get", "svc", "svc", "-o", "json"])?)?;
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["sessionAffinity"], "None");
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(
        kumo.kubectl(&[
            "get",
            "ns",
            "default",
            "-o",
            "jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name}"
        ])?,
        "default"
    );
    Ok(())
}

#[test]
fn invalid_specs_get_422_with_field_paths() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;
    let mismatched = write(
        dir.path(),
        "d.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec:\n      containers: [{name: c, image: busybox}]\n",
    );
    let err = kumo.kubectl_fails(&["create", "-f", &mismatched])?;
    assert!(
        err.contains("is invalid") && err.contains("spec.template.metadata.labels"),
        "{err}"
    );

    let pod = write(
        dir.path(),
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    volumeMounts: [{name: missing, mountPath: /data}]\n    ports: [{containerPort: 70000}]\n",
    );
    let err = kumo.kubectl_fails(&["create", "-f", &pod])?;
    assert!(
        err.contains("spec.containers[0].volumeMounts[0].name"),
        "{err}"
    );
    assert!(
        err.contains("spec.containers[0].ports[0].containerPort"),
        "{err}"
    );

    kumo.kubectl(&["create", "deployment", "web", "--image=busybox"])?;
    let err = kumo.kubectl_fails(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#,
    ])?;
    assert!(
        err.contains("field is immutable") || err.contains("spec.selector"),
        "{err}"
    );
    Ok(())
}

/// Priority admission: classes resolve to spec.priority, the global default applies to
/// pods without a class, unknown classes and hand-set priorities are refused.
#[test]
fn priority_classes_resolve_at_admission() -> anyhow::Result<()> {
    let kumo = e2e::Kumo::start_with(&["--no-control-loops"])?;
    let classes = kumo.kubectl(&["get", "priorityclasses", "-o", "name"])?;
    assert!(
        classes.contains("system-node-critical") && classes.contains("system-cluster-critical"),
        "{classes}"
    );
    kumo.kubectl(&["run", "plain", "--image=busybox"])?;
    let plain = kumo.kubectl(&[
        "get",
        "pod",
        "plain",
        "-o",
        "jsonpath={.spec.priority} {.spec.preemptionPolicy}",
    ])?;
    assert_eq!(plain, "0 PreemptLowerPriority");
    kumo.kubectl(&[
        "run",
        "critical",
        "--image=busybox",
        "--overrides",
        r#"{"spec":{"priorityClassName":"system-cluster-critical"}}"#,
    ])?;
    let critical = kumo.kubectl(&["get", "pod", "critical", "-o", "jsonpath={.spec.priority}"])?;
    assert_eq!(critical, "2000000000");
    let unknown = kumo.kubectl_fails(&[
        "run",
        "unknown",
        "--image=busybox",
        "--overrides",
        r#"{"spec":{"priorityClassName":"nope"}}"#,
    ])?;
    assert!(
        unknown.contains("no PriorityClass with name nope was found"),
        "{unknown}"
    );
    kumo.kubectl(&[
        "create",
        "priorityclass",
        "batch",
        "--value=100",
        "--global-default",
        "--preemption-policy=Never",
    ])?;
    kumo.kubectl(&["run", "defaulted", "--image=busybox"])?;
    let defaulted = kumo.kubectl(&[
        "get",
        "pod",
        "defaulted",
        "-o",
        "jsonpath={.spec.priority} {.spec.priorityClassName} {.spec.preemptionPolicy}",
    ])?;
    assert_eq!(defaulted, "100 batch Never");
    let forced = kumo.kubectl_fails(&[
        "run",
        "forced",
        "--image=busybox",
        "--overrides",
        r#"{"spec":{"priority":7}}"#,
    ])?;
    assert!(
        forced.contains("must not be provided in pod spec"),
        "{forced}"
    );
    Ok(())
}
