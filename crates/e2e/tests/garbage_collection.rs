//! Cascading deletion, namespace deletion and quotas through kubectl: `--cascade=orphan`
//! leaves ReplicaSets without owner references, `--cascade=foreground` keeps the Deployment
//! (marked) until its dependents are gone, a deleted namespace is emptied and removed, and a
//! create beyond a quota is Forbidden.

use std::time::Duration;

use e2e::{Kumo, eventually};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The names of the ReplicaSets in `ns` labelled `app=<app>`, once there is one.
fn replica_set_of(kumo: &Kumo, ns: &str, app: &str) -> String {
    let mut name = String::new();
    assert!(
        eventually(TIMEOUT, || {
            name = kumo
                .kubectl(&[
                    "get",
                    "rs",
                    "-n",
                    ns,
                    "-l",
                    &format!("app={app}"),
                    "-o",
                    "jsonpath={.items[*].metadata.name}",
                ])
                .unwrap_or_default();
            !name.is_empty()
        }),
        "the deployment controller made no ReplicaSet for {app}"
    );
    name
}

fn jsonpath(kumo: &Kumo, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let expr = format!("jsonpath={path}");
    all.extend(["-o", &expr]);
    kumo.kubectl(&all).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn cascade_orphan_and_foreground() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&[
        "create",
        "deployment",
        "orphaned",
        "--image=busybox",
        "--replicas=1",
    ])?;
    let rs = replica_set_of(&kumo, "default", "orphaned");
    assert_eq!(
        jsonpath(
            &kumo,
            &["get", "rs", &rs],
            "{.metadata.ownerReferences[0].kind}"
        ),
        "Deployment"
    );
    kumo.kubectl(&["delete", "deployment", "orphaned", "--cascade=orphan"])?;
    assert!(
        kumo.kubectl_fails(&["get", "deployment", "orphaned"])?
            .contains("NotFound")
    );
    assert_eq!(
        jsonpath(&kumo, &["get", "rs", &rs], "{.metadata.ownerReferences}"),
        ""
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        jsonpath(&kumo, &["get", "rs", &rs], "{.metadata.name}"),
        rs,
        "the ReplicaSet stays"
    );

    kumo.kubectl(&[
        "create",
        "deployment",
        "fg",
        "--image=busybox",
        "--replicas=1",
    ])?;
    let rs = replica_set_of(&kumo, "default", "fg");
    // A finalizer on the ReplicaSet holds the cascade, so the waiting can be seen.
    kumo.kubectl(&[
        "patch",
        "rs",
        &rs,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ])?;
    kumo.kubectl(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ])?;
    assert!(
        eventually(TIMEOUT, || !jsonpath(
            &kumo,
            &["get", "rs", &rs],
            "{.metadata.deletionTimestamp}"
        )
        .is_empty()),
        "the ReplicaSet is deleted first"
    );
    assert!(
        !jsonpath(
            &kumo,
            &["get", "deployment", "fg"],
            "{.metadata.deletionTimestamp}"
        )
        .is_empty()
    );
    assert_eq!(
        jsonpath(
            &kumo,
            &["get", "deployment", "fg"],
            "{.metadata.finalizers}"
        ),
        r#"["foregroundDeletion"]"#
    );
    kumo.kubectl(&[
        "patch",
        "rs",
        &rs,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])?;
    assert!(
        eventually(TIMEOUT, || kumo
            .kubectl_fails(&["get", "deployment", "fg"])
            .is_ok_and(|e| e.contains("NotFound"))),
        "the Deployment goes once its dependents are gone"
    );
    assert!(
        kumo.kubectl_fails(&["get", "rs", &rs])?
            .contains("NotFound")
    );
    assert_eq!(
        jsonpath(
            &kumo,
            &["get", "pods", "-l", "app=fg"],
            "{.items[*].metadata.name}"
        ),
        ""
    );

    // The default (background) cascade.
    kumo.kubectl(&["create", "deployment", "bg", "--image=busybox"])?;
    let rs = replica_set_of(&kumo, "default", "bg");
    kumo.kubectl(&["delete", "deployment", "bg"])?;
    assert!(
        eventually(TIMEOUT, || kumo
            .kubectl_fails(&["get", "rs", &rs])
            .is_ok_and(|e| e.contains("NotFound"))),
        "the ReplicaSet is collected"
    );
    Ok(())
}

#[test]
fn namespace_deletion_empties_and_removes_it() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "namespace", "doomed"])?;
    kumo.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "-n",
        "doomed",
    ])?;
    kumo.kubectl(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=a=b",
        "-n",
        "doomed",
    ])?;
    replica_set_of(&kumo, "doomed", "web");
    // Per-namespace defaults arrive on their own.
    assert!(eventually(TIMEOUT, || kumo
        .kubectl(&["get", "serviceaccount", "default", "-n", "doomed"])
        .is_ok()));
    assert!(eventually(TIMEOUT, || kumo
        .kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "doomed"])
        .is_ok()));
    kumo.kubectl(&["delete", "namespace", "doomed", "--timeout=30s"])?;
    assert!(
        kumo.kubectl_fails(&["get", "namespace", "doomed"])?
            .contains("NotFound")
    );
    assert_eq!(
        jsonpath(
            &kumo,
            &["get", "deployments,replicasets,configmaps", "-n", "doomed"],
            "{.items}"
        ),
        "[]"
    );
    Ok(())
}

#[test]
fn quota_exceeded_is_forbidden() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "namespace", "limited"])?;
    kumo.kubectl(&[
        "create",
        "quota",
        "pod-count",
        "--hard=pods=1,count/configmaps=5",
        "-n",
        "limited",
    ])?;
    assert!(
        eventually(TIMEOUT, || jsonpath(
            &kumo,
            &["get", "quota", "pod-count", "-n", "limited"],
            "{.status.used.pods}"
        ) == "0"),
        "the quota controller publishes usage"
    );
    kumo.kubectl(&["run", "first", "--image=busybox", "-n", "limited"])?;
    let err = kumo.kubectl_fails(&["run", "second", "--image=busybox", "-n", "limited"])?;
    assert!(
        err.contains(r#"Error from server (Forbidden): pods "second" is forbidden: exceeded quota: pod-count, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{err}"
    );
    let described = kumo.kubectl(&["describe", "quota", "pod-count", "-n", "limited"])?;
    assert!(described.contains("pods"), "{described}");
    Ok(())
}
