//! Finalizers and graceful deletion: objects with finalizers stay (marked) until the last
//! finalizer goes; pods on a node are deleted gracefully, unscheduled pods at once.

use std::time::Duration;

use e2e::Kumo;

#[test]
fn finalizers_hold_objects_until_removed() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cm.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\ndata: {a: b}\n",
    )?;
    kumo.kubectl(&["create", "-f", &file.to_string_lossy()])?;
    kumo.kubectl(&["delete", "configmap", "held", "--wait=false"])?;
    let ts = kumo.kubectl(&[
        "get",
        "configmap",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ])?;
    assert!(!ts.is_empty(), "marked for deletion");
    // Deleting again does not move the timestamp.
    kumo.kubectl(&["delete", "configmap", "held", "--wait=false"])?;
    assert_eq!(
        kumo.kubectl(&[
            "get",
            "configmap",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])?,
        ts
    );
    // Ordinary updates still work while it is held.
    kumo.kubectl(&["label", "configmap", "held", "x=y"])?;
    kumo.kubectl(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    let gone = kumo.kubectl_fails(&["get", "configmap", "held"])?;
    assert!(gone.contains("NotFound"), "{gone}");
    Ok(())
}

#[test]
fn pods_on_nodes_are_deleted_gracefully() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["run", "unscheduled", "--image=busybox"])?;
    kumo.kubectl(&["delete", "pod", "unscheduled", "--wait=false"])?;
    assert!(
        kumo.kubectl_fails(&["get", "pod", "unscheduled"])?
            .contains("NotFound")
    );

    kumo.kubectl(&["run", "bound", "--image=busybox"])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("binding.json");
    std::fs::write(
        &file,
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"bound"},"target":{"name":"node-a"}}"#,
    )?;
    kumo.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/bound/binding",
        "-f",
        &file.to_string_lossy(),
    ])?;
    kumo.kubectl(&["delete", "pod", "bound", "--wait=false"])?;
    let grace = kumo.kubectl(&[
        "get",
        "pod",
        "bound",
        "-o",
        "jsonpath={.metadata.deletionGracePeriodSeconds}",
    ])?;
    assert_eq!(grace, "30", "the pod's default grace period");
    let status = kumo.kubectl(&["get", "pod", "bound"])?;
    assert!(status.contains("Terminating"), "{status}");
    // A status update during termination does not delete it.
    kumo.kubectl(&["annotate", "pod", "bound", "note=still-here"])?;
    assert!(
        kumo.kubectl(&["get", "pod", "bound", "-o", "name"])?
            .contains("pod/bound")
    );
    // Force deletion (grace 0) removes it now.
    kumo.kubectl(&["delete", "pod", "bound", "--grace-period=0", "--force"])?;
    assert!(
        kumo.kubectl_fails(&["get", "pod", "bound"])?
            .contains("NotFound")
    );
    Ok(())
}

#[test]
fn deleting_a_namespace_deletes_its_content() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "namespace", "doomed"])?;
    kumo.kubectl(&[
        "create",
        "configmap",
        "c",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])?;
    kumo.kubectl(&[
        "create",
        "deployment",
        "d",
        "-n",
        "doomed",
        "--image=busybox",
    ])?;
    kumo.kubectl(&["delete", "namespace", "doomed"])?;
    assert!(
        kumo.kubectl_fails(&["get", "namespace", "doomed"])?
            .contains("NotFound")
    );
    // Re-created, it starts empty (but for what the control loops put in every namespace).
    kumo.kubectl(&["create", "namespace", "doomed"])?;
    let left = kumo.kubectl(&[
        "get",
        "configmaps,deployments",
        "-n",
        "doomed",
        "-o",
        "name",
    ])?;
    let left: Vec<&str> = left
        .lines()
        .filter(|l| *l != "configmap/kube-root-ca.crt")
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A namespace held by a finalizer stays Terminating and refuses new objects.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ns.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n",
    )?;
    kumo.kubectl(&["create", "-f", &file.to_string_lossy()])?;
    kumo.kubectl(&[
        "create",
        "configmap",
        "c",
        "-n",
        "held",
        "--from-literal=a=b",
    ])?;
    kumo.kubectl(&["delete", "namespace", "held", "--wait=false"])?;
    assert!(e2e::eventually(std::time::Duration::from_secs(10), || {
        kumo.kubectl(&["get", "configmaps", "-n", "held", "-o", "name"])
            .is_ok_and(|o| o.trim().is_empty())
    }));
    assert_eq!(
        kumo.kubectl(&["get", "namespace", "held", "-o", "jsonpath={.status.phase}"])?,
        "Terminating"
    );
    let refused = kumo.kubectl_fails(&[
        "create",
        "configmap",
        "late",
        "-n",
        "held",
        "--from-literal=a=b",
    ])?;
    assert!(refused.contains("being terminated"), "{refused}");
    kumo.kubectl(&[
        "patch",
        "namespace",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    assert!(
        kumo.kubectl_fails(&["get", "namespace", "held"])?
            .contains("NotFound")
    );
    Ok(())
}

/// Namespace deletion goes through the normal delete path: an object held by a finalizer
/// keeps the namespace Terminating until the finalizer goes, then both disappear.
#[test]
fn namespace_deletion_honours_finalizers_of_its_content() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    kumo.kubectl(&["create", "namespace", "held-content"])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cm.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: precious\n  namespace: held-content\n  finalizers: [example.com/backup]\n",
    )?;
    kumo.kubectl(&["create", "-f", &file.to_string_lossy()])?;
    kumo.kubectl(&["create", "configmap", "plain", "-n", "held-content"])?;
    kumo.kubectl(&["delete", "namespace", "held-content", "--wait=false"])?;
    // The plain object goes; the held one is marked and stays, and so does the namespace.
    assert!(e2e::eventually(Duration::from_secs(10), || {
        kumo.kubectl_fails(&["get", "configmap", "plain", "-n", "held-content"])
            .is_ok_and(|e| e.contains("NotFound"))
    }));
    let marked = kumo.kubectl(&[
        "get",
        "configmap",
        "precious",
        "-n",
        "held-content",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ])?;
    assert!(!marked.is_empty(), "the held object is marked for deletion");
    std::thread::sleep(Duration::from_secs(1));
    let phase = kumo.kubectl(&[
        "get",
        "namespace",
        "held-content",
        "-o",
        "jsonpath={.status.phase}",
    ])?;
    assert_eq!(phase, "Terminating");
    // Releasing the finalizer lets both go.
    kumo.kubectl(&[
        "patch",
        "configmap",
        "precious",
        "-n",
        "held-content",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    assert!(e2e::eventually(Duration::from_secs(15), || {
        kumo.kubectl_fails(&["get", "namespace", "held-content"])
            .is_ok_and(|e| e.contains("NotFound"))
    }));
    Ok(())
}

#[test]
fn system_namespaces_stay() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    // default, kube-system and kube-public may not be deleted at all.
    for ns in ["default", "kube-system", "kube-public"] {
        let err = kumo.kubectl_fails(&["delete", "namespace", ns, "--wait=false"])?;
        assert!(
            err.contains("this namespace may not be deleted"),
            "{ns}: {err}"
        );
        assert_eq!(
            kumo.kubectl(&["get", "namespace", ns, "-o", "jsonpath={.status.phase}"])?,
            "Active"
        );
    }
    // kube-node-lease may be deleted, and comes back empty.
    kumo.kubectl(&["-n", "kube-node-lease", "create", "configmap", "c"])?;
    let uid = kumo.kubectl(&[
        "get",
        "ns",
        "kube-node-lease",
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    kumo.kubectl(&["delete", "namespace", "kube-node-lease", "--wait=false"])?;
    let back = e2e::eventually(Duration::from_secs(15), || {
        kumo.kubectl(&[
            "get",
            "ns",
            "kube-node-lease",
            "-o",
            "jsonpath={.metadata.uid} {.status.phase}",
        ])
        .is_ok_and(|out| !out.starts_with(&uid) && out.ends_with("Active"))
    });
    assert!(back, "kube-node-lease was recreated");
    assert!(
        kumo.kubectl_fails(&["-n", "kube-node-lease", "get", "configmap", "c"])
            .is_ok()
    );
    Ok(())
}

#[test]
fn a_dry_run_namespace_delete_deletes_nothing() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "namespace", "dry"])?;
    kumo.kubectl(&[
        "-n",
        "dry",
        "create",
        "configmap",
        "c",
        "--from-literal=a=b",
    ])?;
    // kubectl sends the dry run in the DeleteOptions body, not the query.
    let out = kumo.kubectl(&["delete", "namespace", "dry", "--dry-run=server"])?;
    assert!(out.contains("server dry run"), "{out}");
    // The namespace cleanup would take its content within a second or two; give it time.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        kumo.kubectl(&["get", "namespace", "dry", "-o", "jsonpath={.status.phase}"])?,
        "Active"
    );
    assert_eq!(
        kumo.kubectl(&[
            "-n",
            "dry",
            "get",
            "configmap",
            "c",
            "-o",
            "jsonpath={.data.a}"
        ])?,
        "b"
    );
    Ok(())
}
