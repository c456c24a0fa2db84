//! Server-side apply with kubectl: create-on-apply, managedFields, conflicts with another
//! manager (and --force-conflicts), fields removed when no longer applied, and switching
//! from client-side apply.

use e2e::Kumo;

const V1: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api, tier: back}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: main
        image: busybox:1.36
"#;

fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn server_side_apply_owns_fields_and_reports_conflicts() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;
    let v1 = write(dir.path(), "v1.yaml", V1);
    let out = kumo.kubectl(&["apply", "--server-side", "-f", &v1])?;
    assert!(out.contains("serverside-applied"), "{out}");
    let obj: serde_json::Value = serde_json::from_str(&kumo.kubectl(&[
        "get",
        "deploy",
        "api",
        "-o",
        "json",
        "--show-managed-fields",
    ])?)?;
    let managed = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        managed
            .iter()
            .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"),
        "{managed:?}"
    );
    let rv = obj["metadata"]["resourceVersion"].clone();
    // Re-applying the same configuration changes nothing.
    kumo.kubectl(&["apply", "--server-side", "-f", &v1])?;
    assert_eq!(
        kumo.kubectl(&[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ])?,
        rv.as_str().unwrap_or("")
    );

    // Another manager takes replicas; applying a different value conflicts.
    kumo.kubectl(&[
        "patch",
        "deploy",
        "api",
        "--field-manager=autoscaler",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":7}}"#,
    ])?;
    let v2 = write(
        dir.path(),
        "v2.yaml",
        &V1.replace("replicas: 2", "replicas: 3"),
    );
    let conflict = kumo.kubectl_fails(&["apply", "--server-side", "-f", &v2])?;
    assert!(
        conflict.contains("conflict")
            && conflict.contains("autoscaler")
            && conflict.contains(".spec.replicas"),
        "{conflict}"
    );
    assert_eq!(
        kumo.kubectl(&["get", "deploy", "api", "-o", "jsonpath={.spec.replicas}"])?,
        "7"
    );
    kumo.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &v2])?;
    assert_eq!(
        kumo.kubectl(&["get", "deploy", "api", "-o", "jsonpath={.spec.replicas}"])?,
        "3"
    );

    // A label the manager stops applying is removed.
    let v3 = write(
        dir.path(),
        "v3.yaml",
        &V1.replace("replicas: 2", "replicas: 3")
            .replace(", tier: back", ""),
    );
    kumo.kubectl(&["apply", "--server-side", "-f", &v3])?;
    assert_eq!(
        kumo.kubectl(&[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ])?,
        ""
    );
    assert_eq!(
        kumo.kubectl(&[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.metadata.labels.app}"
        ])?,
        "api"
    );
    Ok(())
}

#[test]
fn switching_from_client_side_apply_does_not_conflict() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;
    let v1 = write(dir.path(), "v1.yaml", V1);
    kumo.kubectl(&["apply", "-f", &v1])?;
    let out = kumo.kubectl(&["apply", "--server-side", "-f", &v1])?;
    assert!(out.contains("serverside-applied"), "{out}");
    let v2 = write(
        dir.path(),
        "v2.yaml",
        &V1.replace("busybox:1.36", "busybox:1.37"),
    );
    kumo.kubectl(&["apply", "--server-side", "-f", &v2])?;
    assert_eq!(
        kumo.kubectl(&[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ])?,
        "busybox:1.37"
    );
    Ok(())
}
