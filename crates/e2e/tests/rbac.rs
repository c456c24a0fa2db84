//! RBAC with kubectl against a real server: a user bound to `view` in one namespace reads
//! there and nowhere else, cannot write or read secrets, and `kubectl auth can-i` (with
//! `--list` and `--as`) reports exactly that; escalation is refused.

use std::path::Path;
use std::process::Output;

use e2e::Kumo;

fn run_as(kumo: &Kumo, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(kumo
        .kubectl_cmd(args)
        .env("KUBECONFIG", kubeconfig)
        .output()?)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rows of `kubectl auth can-i --list`: (resource, non-resource URLs, verbs).
fn rows(list: &str) -> Vec<(String, String, String)> {
    list.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let verbs_at = line.rfind('[').unwrap_or(0);
            let verbs = line[verbs_at..].trim().to_owned();
            let (resource, rest) = if line.starts_with(' ') {
                (String::new(), line.trim_start())
            } else {
                let (r, rest) = line.split_once(' ').unwrap_or((line, ""));
                (r.to_owned(), rest.trim_start())
            };
            let urls = rest.split_whitespace().next().unwrap_or("").to_owned();
            (resource, urls, verbs)
        })
        .collect()
}

#[test]
fn a_view_binding_reads_one_namespace_and_can_i_says_so() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "namespace", "team"])?;
    kumo.kubectl(&["create", "namespace", "other"])?;
    kumo.kubectl(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team",
        "--from-literal=a=b",
    ])?;
    kumo.kubectl(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "team",
        "--from-literal=t=s",
    ])?;
    kumo.kubectl(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
        "-n",
        "team",
    ])?;
    let alice = kumo.user_kubeconfig("alice", &["dev"])?;

    // Reads in team.
    let out = run_as(
        &kumo,
        &alice,
        &["get", "configmap", "settings", "-n", "team", "-o", "name"],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "configmap/settings");
    let out = run_as(
        &kumo,
        &alice,
        &["get", "pods,deployments,services", "-n", "team"],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    // No writes, no secrets, no other namespace.
    let out = run_as(&kumo, &alice, &["create", "configmap", "x", "-n", "team"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""
        ),
        "{}",
        stderr(&out)
    );
    let out = run_as(
        &kumo,
        &alice,
        &["delete", "configmap", "settings", "-n", "team"],
    )?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot delete resource"),
        "{}",
        stderr(&out)
    );
    let out = run_as(&kumo, &alice, &["get", "secret", "token", "-n", "team"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "secrets \"token\" is forbidden: User \"alice\" cannot get resource \"secrets\""
        ),
        "{}",
        stderr(&out)
    );
    let out = run_as(&kumo, &alice, &["get", "pods", "-n", "other"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("in the namespace \"other\""),
        "{}",
        stderr(&out)
    );

    // can-i agrees, with exit codes.
    for (args, expected) in [
        (&["auth", "can-i", "list", "pods", "-n", "team"][..], "yes"),
        (
            &["auth", "can-i", "watch", "deployments.apps", "-n", "team"][..],
            "yes",
        ),
        (
            &["auth", "can-i", "create", "configmaps", "-n", "team"][..],
            "no",
        ),
        (&["auth", "can-i", "get", "secrets", "-n", "team"][..], "no"),
        (&["auth", "can-i", "get", "pods", "-n", "other"][..], "no"),
        (&["auth", "can-i", "get", "/apis"][..], "yes"),
    ] {
        let out = run_as(&kumo, &alice, args)?;
        assert_eq!(stdout(&out).trim(), expected, "{args:?}: {}", stderr(&out));
        assert_eq!(out.status.success(), expected == "yes", "{args:?}");
    }

    // --list reports exactly the view role's reads in team, plus what everyone holds.
    let out = run_as(&kumo, &alice, &["auth", "can-i", "--list", "-n", "team"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    let team = rows(&list);
    let self_reviews = [
        "selfsubjectreviews.authentication.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io",
    ];
    for (resource, urls, verbs) in &team {
        if !urls.is_empty() && urls != "[]" {
            assert_eq!(verbs, "[get]", "{list}");
        } else if self_reviews.contains(&resource.as_str()) {
            assert_eq!(verbs, "[create]", "{list}");
        } else {
            assert_eq!(verbs, "[get list watch]", "{resource} in\n{list}");
        }
        assert!(!resource.starts_with("secrets"), "{list}");
    }
    for wanted in [
        "pods",
        "configmaps",
        "deployments.apps",
        "pods/log",
        "jobs.batch",
    ] {
        assert!(
            team.iter().any(|(r, _, _)| r == wanted),
            "{wanted} in\n{list}"
        );
    }
    assert!(team.iter().any(|(_, u, _)| u == "[/apis/*]"), "{list}");

    let out = run_as(&kumo, &alice, &["auth", "can-i", "--list", "-n", "other"])?;
    let other = rows(&stdout(&out));
    let resources: Vec<&str> = other
        .iter()
        .map(|(r, _, _)| r.as_str())
        .filter(|r| !r.is_empty())
        .collect();
    assert_eq!(resources, self_reviews, "{}", stdout(&out));
    Ok(())
}

#[test]
fn the_admin_asks_as_someone_else() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "namespace", "team"])?;
    kumo.kubectl(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
        "-n",
        "team",
    ])?;
    let can_i = |args: &[&str]| -> anyhow::Result<String> {
        let out = kumo.kubectl_cmd(args).output()?;
        Ok(stdout(&out).trim().to_owned())
    };
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "create",
            "deployments",
            "--as",
            "alice",
            "-n",
            "team"
        ])?,
        "yes"
    );
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "create",
            "deployments",
            "--as",
            "alice",
            "-n",
            "default"
        ])?,
        "no"
    );
    assert_eq!(
        can_i(&[
            "auth", "can-i", "create", "roles", "--as", "alice", "-n", "team"
        ])?,
        "no"
    );
    assert_eq!(
        can_i(&[
            "auth",
            "can-i",
            "delete",
            "nodes",
            "--as",
            "alice",
            "--as-group",
            "system:masters"
        ])?,
        "yes"
    );
    let whoami = kumo.kubectl(&[
        "auth",
        "whoami",
        "--as",
        "alice",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ])?;
    assert_eq!(whoami, "alice");
    // Acting as alice for real.
    kumo.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "-n",
        "team",
        "--as",
        "alice",
    ])?;
    let denied = kumo.kubectl_fails(&["get", "nodes", "--as", "alice"])?;
    assert!(
        denied.contains("User \"alice\" cannot list resource \"nodes\""),
        "{denied}"
    );

    // Alice herself may not impersonate.
    let alice = kumo.user_kubeconfig("alice", &[])?;
    let out = run_as(&kumo, &alice, &["get", "pods", "-n", "team", "--as", "bob"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\""
        ),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn escalation_is_refused() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    kumo.kubectl(&["create", "namespace", "team"])?;
    kumo.kubectl(&[
        "create",
        "rolebinding",
        "bob-admin",
        "--clusterrole=admin",
        "--user=bob",
        "-n",
        "team",
    ])?;
    let bob = kumo.user_kubeconfig("bob", &[])?;
    let out = run_as(
        &kumo,
        &bob,
        &[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods",
            "-n",
            "team",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_as(
        &kumo,
        &bob,
        &[
            "create",
            "role",
            "noder",
            "--verb=get",
            "--resource=nodes",
            "-n",
            "team",
        ],
    )?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"),
        "{}",
        stderr(&out)
    );
    let out = run_as(
        &kumo,
        &bob,
        &[
            "create",
            "rolebinding",
            "carol-admin",
            "--clusterrole=cluster-admin",
            "--user=carol",
            "-n",
            "team",
        ],
    )?;
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("rolebindings.rbac.authorization.k8s.io \"carol-admin\" is forbidden"),
        "{}",
        stderr(&out)
    );
    let out = run_as(
        &kumo,
        &bob,
        &[
            "create",
            "rolebinding",
            "carol-view",
            "--clusterrole=view",
            "--user=carol",
            "-n",
            "team",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(())
}
