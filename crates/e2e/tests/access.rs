//! Authentication and authorization: no certificate → 401, a user nothing is bound to
//! → 403 (RBAC grants only discovery and self-reviews to every authenticated user), the
//! admin (`system:masters`, bound to cluster-admin) may do anything; `kubectl auth` reviews
//! answer without storing anything.

use e2e::Kumo;

#[test]
fn unauthenticated_requests_get_401() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let ca = kumo.data_dir().join("pki/ca.crt");
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("anon.kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: anon\n  user:\n    token: not-a-valid-token\ncontexts:\n- name: k\n  context:\n    cluster: k\n    user: anon\ncurrent-context: k\n",
            kumo.url,
            ca.display()
        ),
    )?;
    let out = kumo
        .kubectl_cmd(&["get", "pods"])
        .env("KUBECONFIG", &config)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("provide credentials"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn certificates_from_another_ca_get_401() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    // A CA of its own, claiming the admin's groups: the server answers 401, not a TLS
    // alert, and does not take the groups.
    let evil = apiserver::pki::new_ca("another-ca")?;
    let cert = apiserver::pki::issue_client(&evil, "kubernetes-admin", &["system:masters"])?;
    let server_ca = std::fs::read_to_string(kumo.data_dir().join("pki/ca.crt"))?;
    let config = apiserver::pki::kubeconfig("kumo", &kumo.url, &server_ca, "evil", &cert);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("evil.kubeconfig");
    std::fs::write(&path, config)?;
    let out = kumo
        .kubectl_cmd(&["get", "--raw", "/api/v1/namespaces"])
        .env("KUBECONFIG", &path)
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
    Ok(())
}

#[test]
fn users_without_bindings_are_forbidden_and_reviews_tell_them() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    // A client certificate for alice (group dev), signed by the cluster CA.
    let pki = kumo.data_dir().join("pki");
    let ca = apiserver::pki::CertKey {
        cert_pem: std::fs::read_to_string(pki.join("ca.crt"))?,
        key_pem: std::fs::read_to_string(pki.join("ca.key"))?,
    };
    let alice = apiserver::pki::issue_client(&ca, "alice", &["dev"])?;
    let config = apiserver::pki::kubeconfig("kumo", &kumo.url, &ca.cert_pem, "alice", &alice);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("alice.kubeconfig");
    std::fs::write(&path, config)?;
    let as_alice = |args: &[&str]| kumo.kubectl_cmd(args).env("KUBECONFIG", &path).output();

    let out = as_alice(&["get", "configmaps", "-n", "default"])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Forbidden")
            && stderr.contains("User \"alice\" cannot list resource \"configmaps\""),
        "{stderr}"
    );
    let whoami = String::from_utf8_lossy(&as_alice(&["auth", "whoami"])?.stdout).into_owned();
    assert!(
        whoami.contains("alice") && whoami.contains("dev"),
        "{whoami}"
    );
    let can = as_alice(&["auth", "can-i", "list", "pods"])?;
    assert_eq!(can.status.code(), Some(1), "alice cannot list pods");
    assert!(String::from_utf8_lossy(&can.stdout).starts_with("no"));

    // The admin can, and reviews are never stored.
    assert_eq!(
        kumo.kubectl(&["auth", "can-i", "delete", "nodes"])?.trim(),
        "yes"
    );
    assert_eq!(
        kumo.kubectl(&["auth", "can-i", "get", "/healthz"])?.trim(),
        "yes"
    );
    let list = kumo.kubectl(&["auth", "can-i", "--list"])?;
    assert!(list.lines().any(|l| l.starts_with("*.*")), "{list}");
    let whoami = kumo.kubectl(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])?;
    assert_eq!(whoami, "kubernetes-admin");
    Ok(())
}

#[test]
fn scale_and_binding_subresources() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ])?;
    kumo.kubectl(&["scale", "deployment", "web", "--replicas=5"])?;
    let out = kumo.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.replicas}/{.metadata.generation}",
    ])?;
    assert_eq!(out, "5/2");
    let scale = kumo.kubectl(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ])?;
    let scale: serde_json::Value = serde_json::from_str(&scale)?;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");

    kumo.kubectl(&["run", "p", "--image=busybox"])?;
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-1"}}"#;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("binding.json");
    std::fs::write(&file, binding)?;
    let file = file.to_string_lossy().into_owned();
    kumo.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/p/binding",
        "-f",
        &file,
    ])?;
    assert_eq!(
        kumo.kubectl(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"])?,
        "node-1"
    );
    let again = kumo.kubectl_fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/p/binding",
        "-f",
        &file,
    ])?;
    assert!(again.contains("already assigned"), "{again}");
    Ok(())
}
