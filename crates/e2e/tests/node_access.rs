//! Node credentials (`system:node:<name>` in `system:nodes`) reach only what their own pods
//! use, and change only their own Node, Lease and pods: the Node authorizer and
//! NodeRestriction.

use e2e::Kumo;

const SETUP: &str = r#"
{apiVersion: v1, kind: Node, metadata: {name: n1}}
---
{apiVersion: v1, kind: Node, metadata: {name: n2}}
---
{apiVersion: v1, kind: Secret, metadata: {name: s1}, stringData: {k: one}}
---
{apiVersion: v1, kind: Secret, metadata: {name: s2}, stringData: {k: two}}
---
{apiVersion: v1, kind: ConfigMap, metadata: {name: c2}, data: {k: two}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1}
spec:
  nodeName: n1
  volumes: [{name: s, secret: {secretName: s1}}]
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: p2}
spec:
  nodeName: n2
  containers:
  - name: c
    image: busybox
    env:
    - {name: A, valueFrom: {secretKeyRef: {name: s2, key: k}}}
    envFrom:
    - configMapRef: {name: c2}
"#;

#[test]
fn node_credentials_reach_only_their_own_pods_objects() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    kumo.kubectl_stdin(&["apply", "-f", "-"], SETUP)?;
    let n1 = kumo.user_kubeconfig("system:node:n1", &["system:nodes"])?;
    let as_n1 = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = kumo.kubectl_cmd(args).env("KUBECONFIG", &n1).output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let allowed = |args: &[&str]| -> anyhow::Result<()> {
        let (ok, out) = as_n1(args)?;
        anyhow::ensure!(ok, "n1 should be allowed {args:?}: {out}");
        Ok(())
    };
    let forbidden = |args: &[&str]| -> anyhow::Result<()> {
        let (ok, out) = as_n1(args)?;
        anyhow::ensure!(
            !ok && out.contains("Forbidden"),
            "n1 should be forbidden {args:?}: {out}"
        );
        Ok(())
    };

    // stringData is merged into data on write.
    assert_eq!(
        kumo.kubectl(&["get", "secret", "s1", "-o", "jsonpath={.data.k}"])?,
        "b25l"
    );
    // Secrets and config maps: only those of pods bound to n1, one at a time.
    allowed(&["get", "secret", "s1"])?;
    forbidden(&["get", "secret", "s2"])?;
    forbidden(&["get", "configmap", "c2"])?;
    forbidden(&["get", "secrets"])?;
    // Pods and nodes are readable.
    allowed(&["get", "pods"])?;
    allowed(&["get", "nodes"])?;

    // Its own Node only.
    allowed(&["label", "node", "n1", "zone=a"])?;
    forbidden(&["label", "node", "n2", "zone=a"])?;
    // Its own Lease only.
    let lease = |name: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: kube-node-lease}}\nspec: {{holderIdentity: {name}}}\n"
        )
    };
    let create_lease = |name: &str| -> anyhow::Result<(bool, String)> {
        let mut child = kumo
            .kubectl_cmd(&["create", "-f", "-"])
            .env("KUBECONFIG", &n1)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(lease(name).as_bytes())?;
        let out = child.wait_with_output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, err) = create_lease("n1")?;
    assert!(ok, "own lease: {err}");
    let (ok, err) = create_lease("n2")?;
    assert!(!ok && err.contains("Forbidden"), "other lease: {err}");

    // Status of its own pods only; no deleting other nodes' pods.
    // (kubectl patch reads pods/status first, which nodes may not: PUT the status as the
    // kubelet does.)
    let put_status = |pod: &str| -> anyhow::Result<(bool, String)> {
        let mut obj: serde_json::Value =
            serde_json::from_str(&kumo.kubectl(&["get", "pod", pod, "-o", "json"])?)?;
        obj["status"]["phase"] = "Running".into();
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("pod.json");
        std::fs::write(&file, obj.to_string())?;
        let path = format!("/api/v1/namespaces/default/pods/{pod}/status");
        as_n1(&["replace", "--raw", &path, "-f", &file.display().to_string()])
    };
    let (ok, out) = put_status("p1")?;
    assert!(ok, "own pod's status: {out}");
    let (ok, out) = put_status("p2")?;
    assert!(
        !ok && out.contains("Forbidden"),
        "other pod's status: {out}"
    );
    forbidden(&["delete", "pod", "p2", "--wait=false"])?;
    // Tokens for the service account its pod runs as, bound to that pod (no control loops
    // run here, so the account is made by hand).
    kumo.kubectl(&["create", "serviceaccount", "default"])?;
    allowed(&[
        "create",
        "token",
        "default",
        "--bound-object-kind=Pod",
        "--bound-object-name=p1",
    ])?;
    Ok(())
}
