//! The installed kubectl (1.32) against a real `kumo server`: discovery, OpenAPI, CRUD,
//! the three patch types, apply, diff, edit, watch and output formats.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use e2e::{Kumo, eventually};

const DEPLOYMENT_V1: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
    tier: front
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: main
        image: busybox:1.36
        ports:
        - containerPort: 80
        - containerPort: 8080
        env:
        - name: MODE
          value: "one"
        - name: EXTRA
          value: "x"
      - name: side
        image: busybox:1.36
"#;

/// The second version drops a container, a port, an env var and a label, and changes
/// the image and replicas: client-side apply sends a strategic merge patch with
/// `$setElementOrder` and `$patch: delete` directives for this.
const DEPLOYMENT_V2: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: main
        image: busybox:1.37
        ports:
        - containerPort: 8080
        env:
        - name: MODE
          value: "two"
"#;

fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write manifest");
    path.to_string_lossy().into_owned()
}

#[test]
fn version_discovery_and_explain() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let version = kumo.kubectl(&["version", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&version)?;
    assert_eq!(v["serverVersion"]["major"], "1");
    assert_eq!(v["serverVersion"]["minor"], "33");

    let resources = kumo.kubectl(&["api-resources"])?;
    let deploy = resources
        .lines()
        .find(|l| l.starts_with("deployments "))
        .expect("deployments listed");
    assert!(
        deploy.contains("deploy")
            && deploy.contains("apps/v1")
            && deploy.contains("true")
            && deploy.contains("Deployment")
    );
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("namespaces ") && l.contains("false")),
        "{resources}"
    );
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("customresourcedefinitions ")),
        "{resources}"
    );

    let versions = kumo.kubectl(&["api-versions"])?;
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "rbac.authorization.k8s.io/v1",
        "autoscaling/v2",
        "autoscaling/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "{gv} missing from:\n{versions}"
        );
    }

    let explain = kumo.kubectl(&["explain", "deployment.spec.template"])?;
    assert!(
        explain.contains("KIND:") && explain.contains("Deployment"),
        "{explain}"
    );
    assert!(explain.contains("PodTemplateSpec"), "{explain}");
    assert!(
        explain.contains("metadata") && explain.contains("spec"),
        "{explain}"
    );
    Ok(())
}

#[test]
fn manifests_apply_diff_and_output_formats() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;
    kumo.kubectl(&["create", "namespace", "shop"])?;
    let v1 = write(dir.path(), "v1.yaml", DEPLOYMENT_V1);
    let v2 = write(dir.path(), "v2.yaml", DEPLOYMENT_V2);

    // create -f, then apply over it (a create without the last-applied annotation).
    let created = kumo.kubectl(&["create", "-f", &v1])?;
    assert!(created.contains("deployment.apps/web created"), "{created}");
    kumo.kubectl_fails(&["create", "-f", &v1])
        .map(|e| assert!(e.contains("AlreadyExists"), "{e}"))?;
    kumo.kubectl(&["delete", "-f", &v1])?;

    let applied = kumo.kubectl(&["apply", "-f", &v1])?;
    assert!(applied.contains("created"), "{applied}");
    let unchanged = kumo.kubectl(&["apply", "-f", &v1])?;
    assert!(unchanged.contains("unchanged"), "{unchanged}");

    // diff reports the change (exit code 1) and nothing after applying it (exit code 0).
    let diff = kumo.kubectl_cmd(&["diff", "-f", &v2]).output()?;
    assert_eq!(
        diff.status.code(),
        Some(1),
        "diff: {}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(String::from_utf8_lossy(&diff.stdout).contains("busybox:1.37"));

    let configured = kumo.kubectl(&["apply", "-f", &v2])?;
    assert!(configured.contains("configured"), "{configured}");
    let obj: serde_json::Value = serde_json::from_str(
        &kumo.kubectl(&["get", "deploy", "web", "-n", "shop", "-o", "json"])?,
    )?;
    let containers = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(
        containers.len(),
        1,
        "the side container was deleted: {containers:?}"
    );
    assert_eq!(containers[0]["image"], "busybox:1.37");
    let ports = containers[0]["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["containerPort"], 8080);
    assert_eq!(
        containers[0]["env"],
        serde_json::json!([{"name": "MODE", "value": "two"}])
    );
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(obj["metadata"]["generation"], 2);
    assert!(obj["metadata"]["labels"].get("tier").is_none());
    let diff = kumo.kubectl_cmd(&["diff", "-f", &v2]).output()?;
    assert_eq!(
        diff.status.code(),
        Some(0),
        "no diff after apply: {}",
        String::from_utf8_lossy(&diff.stdout)
    );

    // Output formats.
    let yaml = kumo.kubectl(&["get", "deployment", "web", "-n", "shop", "-o", "yaml"])?;
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("name: web"),
        "{yaml}"
    );
    let table = kumo.kubectl(&["get", "deployments", "-n", "shop"])?;
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    let wide = kumo.kubectl(&["get", "deployments", "-n", "shop", "-o", "wide"])?;
    assert!(
        wide.contains("CONTAINERS") && wide.contains("busybox:1.37") && wide.contains("app=web"),
        "{wide}"
    );
    let custom = kumo.kubectl(&[
        "get",
        "deploy",
        "-n",
        "shop",
        "-o",
        "custom-columns=N:.metadata.name,R:.spec.replicas",
    ])?;
    assert_eq!(
        custom
            .lines()
            .nth(1)
            .map(str::split_whitespace)
            .map(Iterator::collect::<Vec<_>>),
        Some(vec!["web", "3"])
    );
    let jsonpath = kumo.kubectl(&[
        "get",
        "deploy",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])?;
    assert_eq!(jsonpath, "busybox:1.37");
    let all_ns = kumo.kubectl(&["get", "deploy", "-A"])?;
    assert!(
        all_ns.starts_with("NAMESPACE") && all_ns.contains("shop"),
        "{all_ns}"
    );
    let labels = kumo.kubectl(&["get", "deploy", "-n", "shop", "--show-labels"])?;
    assert!(labels.contains("app=web"), "{labels}");
    let describe = kumo.kubectl(&["describe", "deployment", "web", "-n", "shop"])?;
    assert!(
        describe.contains("Name:") && describe.contains("web") && describe.contains("busybox:1.37"),
        "{describe}"
    );
    Ok(())
}

#[test]
fn label_annotate_patch_replace_edit() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;
    kumo.kubectl(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ])?;
    kumo.kubectl(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ])?;
    let secret = kumo.kubectl(&["get", "secret", "creds", "-o", "jsonpath={.data.password}"])?;
    assert_eq!(secret, "czNjcmV0", "base64 of s3cret");
    let cm_table = kumo.kubectl(&["get", "configmaps"])?;
    assert!(
        cm_table
            .lines()
            .any(|l| l.starts_with("cfg ") && l.split_whitespace().nth(1) == Some("2")),
        "{cm_table}"
    );

    kumo.kubectl(&["label", "configmap", "cfg", "team=blue"])?;
    kumo.kubectl(&["annotate", "configmap", "cfg", "note=hello"])?;
    let by_label = kumo.kubectl(&["get", "cm", "-l", "team=blue", "-o", "name"])?;
    assert_eq!(by_label.trim(), "configmap/cfg");
    assert_eq!(
        kumo.kubectl(&["get", "cm", "-l", "team!=blue", "-o", "name"])?
            .lines()
            .filter(|l| l.contains("cfg"))
            .count(),
        0
    );
    kumo.kubectl(&["label", "configmap", "cfg", "team-"])?;
    assert_eq!(
        kumo.kubectl(&["get", "cm", "-l", "team", "-o", "name"])?
            .trim(),
        ""
    );

    // The three patch types.
    kumo.kubectl(&["patch", "configmap", "cfg", "-p", r#"{"data":{"c":"3"}}"#])?;
    kumo.kubectl(&[
        "patch",
        "configmap",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"a":null}}"#,
    ])?;
    kumo.kubectl(&[
        "patch",
        "configmap",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/b","value":"22"}]"#,
    ])?;
    let data = kumo.kubectl(&["get", "cm", "cfg", "-o", "jsonpath={.data}"])?;
    let data: serde_json::Value = serde_json::from_str(&data)?;
    assert_eq!(data, serde_json::json!({"b": "22", "c": "3"}));
    let failed = kumo.kubectl_fails(&[
        "patch",
        "configmap",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/b","value":"nope"}]"#,
    ])?;
    assert!(
        failed.contains("could not be applied") && failed.contains("/data/b"),
        "{failed}"
    );

    // replace with the current object, then with a stale resourceVersion (409).
    let current = kumo.kubectl(&["get", "cm", "cfg", "-o", "json"])?;
    let mut obj: serde_json::Value = serde_json::from_str(&current)?;
    obj["data"]["d"] = serde_json::json!("4");
    let file = write(dir.path(), "cm.json", &obj.to_string());
    kumo.kubectl(&["replace", "-f", &file])?;
    let stale = kumo.kubectl_fails(&["replace", "-f", &file])?;
    assert!(
        stale.contains("Conflict") && stale.contains("the object has been modified"),
        "{stale}"
    );

    // edit with a scripted editor.
    let editor = write(
        dir.path(),
        "editor.sh",
        "#!/bin/sh\nsed -i 's/^  d: \"4\"/  d: \"edited\"/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = kumo
        .kubectl_cmd(&["edit", "configmap", "cfg"])
        .env("KUBE_EDITOR", &editor)
        .output()?;
    assert!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        kumo.kubectl(&["get", "cm", "cfg", "-o", "jsonpath={.data.d}"])?,
        "edited"
    );

    // --dry-run=server answers without storing.
    let dry = kumo.kubectl(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
        "-o",
        "name",
    ])?;
    assert_eq!(dry.trim(), "configmap/dry");
    assert!(
        kumo.kubectl_fails(&["get", "configmap", "dry"])?
            .contains("NotFound")
    );

    // apply --prune deletes labelled objects that left the manifest.
    let both = write(
        dir.path(),
        "both.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p1, labels: {set: a}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: p2, labels: {set: a}}\n",
    );
    let one = write(
        dir.path(),
        "one.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p1, labels: {set: a}}\n",
    );
    kumo.kubectl(&["apply", "-f", &both])?;
    let pruned = kumo.kubectl(&["apply", "-f", &one, "--prune", "-l", "set=a"])?;
    assert!(pruned.contains("configmap/p2 pruned"), "{pruned}");
    assert_eq!(
        kumo.kubectl(&["get", "cm", "-l", "set=a", "-o", "name"])?
            .trim(),
        "configmap/p1"
    );
    kumo.kubectl(&["delete", "cm", "p1"])?;

    // delete, delete --all, wait --for=delete.
    kumo.kubectl(&["create", "configmap", "gone", "--from-literal=x=y"])?;
    let mut waiter = kumo
        .kubectl_cmd(&["wait", "--for=delete", "configmap/gone", "--timeout=30s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    kumo.kubectl(&["delete", "configmap", "gone"])?;
    assert!(waiter.wait()?.success(), "kubectl wait --for=delete");
    let deleted = kumo.kubectl(&["delete", "configmap", "--all"])?;
    assert!(
        deleted.contains("cfg") && deleted.contains("deleted"),
        "{deleted}"
    );
    let notfound = kumo.kubectl_fails(&["get", "configmap", "cfg"])?;
    assert!(
        notfound.contains("NotFound") && notfound.contains("configmaps \"cfg\" not found"),
        "{notfound}"
    );
    Ok(())
}

#[test]
fn get_watch_sees_updates() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "configmap", "watched", "--from-literal=v=1"])?;
    let mut watch = kumo
        .kubectl_cmd(&[
            "get",
            "configmap",
            "watched",
            "-w",
            "-o",
            "jsonpath={.data.v}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(15))?, "1");
    kumo.kubectl(&[
        "patch",
        "configmap",
        "watched",
        "-p",
        r#"{"data":{"v":"2"}}"#,
    ])?;
    assert_eq!(rx.recv_timeout(Duration::from_secs(15))?, "2");
    let _ = watch.kill();
    let _ = watch.wait();
    Ok(())
}

#[test]
fn namespaces_are_required_and_errors_are_statuses() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let namespaces = kumo.kubectl(&["get", "namespaces", "-o", "name"])?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            namespaces.lines().any(|l| l == format!("namespace/{ns}")),
            "{namespaces}"
        );
    }
    let missing = kumo.kubectl_fails(&[
        "create",
        "configmap",
        "x",
        "-n",
        "nowhere",
        "--from-literal=a=b",
    ])?;
    assert!(
        missing.contains("namespaces \"nowhere\" not found"),
        "{missing}"
    );
    let invalid = kumo.kubectl_fails(&["create", "configmap", "Bad_Name", "--from-literal=a=b"])?;
    assert!(
        invalid.contains("Invalid") && invalid.contains("metadata.name"),
        "{invalid}"
    );
    let dir = tempfile::tempdir()?;
    let bad = write(
        dir.path(),
        "bad.json",
        "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {",
    );
    let raw = kumo.kubectl_fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &bad,
    ])?;
    assert!(
        raw.contains("BadRequest") || raw.contains("400") || raw.contains("could not be decoded"),
        "{raw}"
    );
    let huge = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"huge\"}},\"data\":{{\"x\":\"{}\"}}}}",
        "a".repeat(4 * 1024 * 1024)
    );
    let huge = write(dir.path(), "huge.json", &huge);
    let too_large = kumo.kubectl_fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &huge,
    ])?;
    assert!(
        too_large.contains("too large") || too_large.contains("413"),
        "{too_large}"
    );
    assert!(
        kumo.kubectl_fails(&["get", "configmap", "huge"])?
            .contains("NotFound")
    );
    // Strict field validation rejects unknown fields; kubectl asks for it by default.
    let unknown = write(
        dir.path(),
        "unknown.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\nbogus: 1\n",
    );
    let strict = kumo.kubectl_fails(&["create", "-f", &unknown])?;
    assert!(
        strict.contains("unknown field") && strict.contains("bogus"),
        "{strict}"
    );
    // Duplicate fields: rejected under Strict, reported under Warn (the last value wins).
    let dup = write(
        dir.path(),
        "dup.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},"data":{"a":"1","a":"2"}}"#,
    );
    let strict = kumo.kubectl_fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "-f",
        &dup,
    ])?;
    assert!(
        strict.contains("duplicate field") && strict.contains("data.a"),
        "{strict}"
    );
    let warn = kumo
        .kubectl_cmd(&[
            "create",
            "--raw",
            "/api/v1/namespaces/default/configmaps?fieldValidation=Warn",
            "-f",
            &dup,
        ])
        .output()?;
    assert!(
        warn.status.success(),
        "{}",
        String::from_utf8_lossy(&warn.stderr)
    );
    assert!(
        String::from_utf8_lossy(&warn.stderr).contains("duplicate field"),
        "Warning header shown"
    );
    assert_eq!(
        kumo.kubectl(&["get", "cm", "dup", "-o", "jsonpath={.data.a}"])?,
        "2"
    );
    assert!(eventually(Duration::from_secs(1), || kumo
        .kubectl_fails(&["get", "cm", "u"])
        .is_ok()));
    Ok(())
}
