//! The server's side of logs, exec and port-forward, without a node agent: the checks it
//! makes before it reaches for a node (container choice, log options, RBAC's `create` on
//! exec) and the answer when the node's agent is not connected. The streams themselves
//! are tested with a real node in `up.rs`.

use e2e::Kumo;

/// A pod with two containers, bound to `node` (no scheduler or agent involved).
fn two_container_pod(kumo: &Kumo, name: &str, node: Option<&str>) -> anyhow::Result<()> {
    let node = node.map_or(String::new(), |n| format!("\"nodeName\": \"{n}\","));
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
            "spec": {{{node} "containers": [
              {{"name": "a", "image": "kumo.local/busybox:1"}},
              {{"name": "b", "image": "kumo.local/busybox:1"}}]}}}}"#
    );
    kumo.kubectl_stdin(&["create", "-f", "-"], &manifest)?;
    Ok(())
}

#[test]
fn streaming_requests_are_checked_before_reaching_a_node() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    two_container_pod(&kumo, "unbound", None)?;
    two_container_pod(&kumo, "bound", Some("n1"))?;

    // Container choice, with upstream's messages.
    let raw = "/api/v1/namespaces/default/pods/unbound/log";
    let err = kumo.kubectl_fails(&["get", "--raw", raw])?;
    assert!(
        err.contains("a container name must be specified for pod unbound, choose one of: [a b]"),
        "{err}"
    );
    let err = kumo.kubectl_fails(&["logs", "unbound", "-c", "nope"])?;
    assert!(
        err.contains("container nope is not valid for pod unbound"),
        "{err}"
    );
    // Not scheduled yet: nothing has been logged.
    assert_eq!(kumo.kubectl(&["logs", "unbound", "-c", "a"])?, "");

    // Bad log options: 400 for what does not parse, 422 for what is out of range.
    let err = kumo.kubectl_fails(&["get", "--raw", &format!("{raw}?container=a&tailLines=x")])?;
    assert!(err.contains("tailLines"), "{err}");
    let err = kumo.kubectl_fails(&[
        "get",
        "--raw",
        &format!("{raw}?container=a&sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"),
    ])?;
    assert!(
        err.contains("at most one of `sinceTime` or `sinceSeconds`"),
        "{err}"
    );

    // The node's agent is not connected: 503 with the reason.
    let err = kumo.kubectl_fails(&["logs", "bound", "-c", "a"])?;
    assert!(
        err.contains("cannot reach the agent of node \"n1\": its agent is not connected"),
        "{err}"
    );
    let err = kumo.kubectl_fails(&["exec", "bound", "-c", "a", "--", "true"])?;
    assert!(err.contains("cannot reach the agent of node"), "{err}");
    let err = kumo.kubectl_fails(&["exec", "unbound", "-c", "a", "--", "true"])?;
    assert!(err.contains("does not have a host assigned"), "{err}");

    // exec needs `create` on pods/exec, even though kubectl's WebSocket request is a GET.
    kumo.kubectl(&[
        "create",
        "role",
        "exec-get",
        "--verb=get",
        "--resource=pods,pods/exec,pods/log",
    ])?;
    kumo.kubectl(&[
        "create",
        "rolebinding",
        "dev-exec-get",
        "--role=exec-get",
        "--user=dev",
    ])?;
    let dev = kumo.user_kubeconfig("dev", &[])?;
    let out = kumo
        .kubectl_cmd(&["exec", "bound", "-c", "a", "--", "true"])
        .env("KUBECONFIG", &dev)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot create resource \"pods/exec\""),
        "{stderr}"
    );
    // Logs are a get, which dev has.
    let out = kumo
        .kubectl_cmd(&["logs", "bound", "-c", "a"])
        .env("KUBECONFIG", &dev)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("its agent is not connected"), "{stderr}");

    // Only nodes open tunnels.
    let err = kumo.kubectl_fails(&["get", "--raw", "/kumo/v1/node-tunnel"])?;
    assert!(err.contains("cannot open a node tunnel"), "{err}");
    Ok(())
}
