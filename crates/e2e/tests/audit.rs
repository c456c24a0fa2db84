//! The audit log: every request, with the identity that made it.

use std::time::Duration;

use e2e::{Kumo, eventually};
use serde_json::Value;

fn events(kumo: &Kumo) -> Vec<Value> {
    std::fs::read_to_string(kumo.data_dir().join("audit/audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn every_request_is_audited_with_its_identity() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    kumo.kubectl(&["create", "configmap", "audited", "--from-literal=k=v"])?;
    let alice = kumo.user_kubeconfig("alice", &["dev"])?;
    let denied = kumo
        .kubectl_cmd(&["get", "secrets", "-n", "kube-system"])
        .env("KUBECONFIG", &alice)
        .output()?;
    assert!(!denied.status.success());
    let found = |kumo: &Kumo| {
        let events = events(kumo);
        let created = events.iter().any(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "configmaps"
                && e["objectRef"]["name"].is_null()
                && e["user"]["username"] == "kubernetes-admin"
                && e["responseStatus"]["code"] == 201
        });
        let forbidden = events.iter().any(|e| {
            e["verb"] == "list"
                && e["objectRef"]["resource"] == "secrets"
                && e["objectRef"]["namespace"] == "kube-system"
                && e["user"]["username"] == "alice"
                && e["user"]["groups"][0] == "dev"
                && e["responseStatus"]["code"] == 403
                && e["sourceIPs"][0] == "127.0.0.1"
        });
        created && forbidden
    };
    assert!(
        eventually(Duration::from_secs(10), || found(&kumo)),
        "audit log:\n{}",
        std::fs::read_to_string(kumo.data_dir().join("audit/audit.log")).unwrap_or_default()
    );
    // Unauthenticated requests are recorded too.
    let out = std::process::Command::new("curl")
        .args(["-sk", &format!("{}/api/v1/pods", kumo.url)])
        .output();
    if out.is_ok() {
        assert!(eventually(Duration::from_secs(10), || {
            events(&kumo).iter().any(|e| {
                e["user"]["username"] == "system:anonymous" && e["responseStatus"]["code"] == 401
            })
        }));
    }
    Ok(())
}
