//! RBAC through the whole request pipeline, in process: the default policy and its
//! aggregation, bindings in a namespace, escalation prevention, impersonation, the access and
//! rules reviews, bootstrap reconciliation across restarts, and the least-privilege roles of
//! the built-in controllers and scheduler.

use std::time::Duration;

use apiserver::authn::Identity;
use apiserver::testing::InProcess;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

fn user(name: &str, groups: &[&str]) -> Identity {
    let mut groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    groups.push("system:authenticated".into());
    Identity {
        user: name.into(),
        groups,
        ..Default::default()
    }
}

/// The HTTP code of a failed call (0 when it did not fail with a Status).
fn code<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => (0, format!("{other:?}")),
    }
}

async fn create_ns(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

async fn bind(client: &Client, ns: &str, name: &str, role_kind: &str, role: &str, subject: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": subject}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("role binding");
}

/// POSTs a review as `client` and returns its status.
async fn review(client: &Client, path: &str, body: Value) -> Value {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let answer: Value = client.request(req).await.expect("review");
    answer["status"].clone()
}

async fn can_i(client: &Client, attrs: Value) -> bool {
    let status = review(
        client,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": attrs}}),
    )
    .await;
    status["allowed"] == json!(true)
}

/// Waits (bounded) until the ClusterRole `name` grants `verb` on `resource`.
async fn wait_for_rule(client: &Client, name: &str, verb: &str, resource: &str) -> ClusterRole {
    let api = Api::<ClusterRole>::all(client.clone());
    for _ in 0..100 {
        let role = api.get(name).await.expect("cluster role");
        let has = role.rules.iter().flatten().any(|r| {
            r.verbs.iter().any(|v| v == verb)
                && r.resources.iter().flatten().any(|res| res == resource)
        });
        if has {
            return role;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never granted {verb} {resource}");
}

#[tokio::test]
async fn default_policy_aggregates_admin_edit_view() {
    let dir = tempfile::tempdir().unwrap();
    let api = InProcess::start(dir.path()).await.unwrap();
    let admin = api.client();
    let view = wait_for_rule(&admin, "view", "get", "pods").await;
    assert_eq!(
        view.metadata.labels.as_ref().unwrap()["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert!(view.aggregation_rule.is_some());
    // view reads no secrets; edit (which gathers view) writes deployments and reads secrets;
    // admin (which gathers edit) manages roles.
    assert!(
        !view.rules.iter().flatten().any(|r| r
            .resources
            .iter()
            .flatten()
            .any(|res| res == "secrets"))
    );
    wait_for_rule(&admin, "edit", "create", "deployments").await;
    wait_for_rule(&admin, "edit", "get", "pods").await;
    wait_for_rule(&admin, "admin", "create", "roles").await;
    wait_for_rule(&admin, "admin", "get", "pods").await;

    // A new role labelled for view is gathered into view, edit and admin.
    let extra: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "crontab-reader", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["stable.example.com"], "resources": ["crontabs"], "verbs": ["get"]}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &extra)
        .await
        .unwrap();
    wait_for_rule(&admin, "view", "get", "crontabs").await;
    wait_for_rule(&admin, "admin", "get", "crontabs").await;

    // The discovery roles are bound to every authenticated user.
    let bindings = Api::<ClusterRoleBinding>::all(admin.clone());
    let discovery = bindings.get("system:discovery").await.unwrap();
    assert_eq!(discovery.subjects.unwrap()[0].name, "system:authenticated");
    let masters = bindings.get("cluster-admin").await.unwrap();
    assert_eq!(masters.subjects.unwrap()[0].name, "system:masters");
}

#[tokio::test]
async fn a_view_binding_reads_one_namespace_only() {
    let dir = tempfile::tempdir().unwrap();
    let api = InProcess::start(dir.path()).await.unwrap();
    let admin = api.client();
    wait_for_rule(&admin, "view", "get", "pods").await;
    create_ns(&admin, "team").await;
    create_ns(&admin, "other").await;
    bind(&admin, "team", "alice-view", "ClusterRole", "view", "alice").await;
    let alice = api.client_as(user("alice", &["dev"]));

    // Reads in team work at once (the binding's write waited for the authorizer).
    Api::<Pod>::namespaced(alice.clone(), "team")
        .list(&ListParams::default())
        .await
        .expect("alice lists pods in team");
    Api::<ConfigMap>::namespaced(alice.clone(), "team")
        .list(&ListParams::default())
        .await
        .expect("alice lists configmaps in team");
    // No writes, no secrets, nothing elsewhere.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    let (status, message) = code(
        Api::<ConfigMap>::namespaced(alice.clone(), "team")
            .create(&PostParams::default(), &cm)
            .await,
    );
    assert_eq!(status, 403);
    assert_eq!(
        message,
        "configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );
    let (status, _) = code(
        Api::<Secret>::namespaced(alice.clone(), "team")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(status, 403);
    let (status, message) = code(
        Api::<Pod>::namespaced(alice.clone(), "other")
            .get("x")
            .await,
    );
    assert_eq!(status, 403);
    assert!(message.starts_with("pods \"x\" is forbidden"), "{message}");
    let (status, _) = code(
        Api::<Namespace>::all(alice.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(status, 403);
    // Discovery and self-reviews come from the default bindings.
    alice.list_api_groups().await.expect("discovery");
    assert!(can_i(&alice, json!({"namespace": "team", "verb": "watch", "resource": "deployments", "group": "apps"})).await);
    assert!(
        !can_i(
            &alice,
            json!({"namespace": "team", "verb": "get", "resource": "secrets"})
        )
        .await
    );
    assert!(
        !can_i(
            &alice,
            json!({"namespace": "other", "verb": "get", "resource": "pods"})
        )
        .await
    );

    // The rules review lists exactly what alice holds in each namespace.
    let rules = |ns: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
               "spec": {"namespace": ns}})
    };
    let path = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";
    let team = review(&alice, path, rules("team")).await;
    let grants = |status: &Value, verb: &str, resource: &str| {
        status["resourceRules"].as_array().unwrap().iter().any(|r| {
            r["verbs"].as_array().unwrap().contains(&json!(verb))
                && r["resources"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(resource))
        })
    };
    assert!(grants(&team, "list", "pods"));
    assert!(grants(&team, "create", "selfsubjectaccessreviews"));
    assert!(!grants(&team, "get", "secrets"));
    assert!(!grants(&team, "create", "pods"));
    assert_eq!(team["incomplete"], json!(false));
    assert!(
        team["nonResourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["nonResourceURLs"]
                .as_array()
                .unwrap()
                .contains(&json!("/apis/*")))
    );
    let other = review(&alice, path, rules("other")).await;
    assert!(!grants(&other, "list", "pods"));
    assert!(grants(&other, "create", "selfsubjectrulesreviews"));

    // Unbinding takes the access away again.
    Api::<RoleBinding>::namespaced(admin.clone(), "team")
        .delete("alice-view", &Default::default())
        .await
        .unwrap();
    let (status, _) = code(
        Api::<Pod>::namespaced(alice.clone(), "team")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(status, 403);
}

#[tokio::test]
async fn nobody_grants_what_they_do_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let api = InProcess::start(dir.path()).await.unwrap();
    let admin = api.client();
    wait_for_rule(&admin, "admin", "create", "roles").await;
    create_ns(&admin, "team").await;
    bind(&admin, "team", "bob-admin", "ClusterRole", "admin", "bob").await;
    let bob = api.client_as(user("bob", &[]));
    let roles = Api::<Role>::namespaced(bob.clone(), "team");
    let role = |name: &str, rules: Value| -> Role {
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap()
    };

    // What bob holds he may grant.
    roles
        .create(
            &PostParams::default(),
            &role(
                "pod-reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
            ),
        )
        .await
        .expect("a role within bob's permissions");
    // Not more.
    let (status, message) = code(
        roles
            .create(
                &PostParams::default(),
                &role(
                    "node-reader",
                    json!([{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "escalate"]}]),
                ),
            )
            .await,
    );
    assert_eq!(status, 403);
    assert_eq!(
        message,
        "roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"escalate\" \"get\"]}\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"escalate\"]}"
    );
    // Updates are checked too (a patch that adds a rule).
    let patch = json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
                                 {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    let (status, message) = code(
        roles
            .patch(
                "pod-reader",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await,
    );
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"),
        "{message}"
    );

    // Bindings: bob may bind what he holds (view, his own role), not cluster-admin.
    bind(&bob, "team", "carol-view", "ClusterRole", "view", "carol").await;
    bind(&bob, "team", "carol-pods", "Role", "pod-reader", "carol").await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "carol-admin", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "carol"}],
    }))
    .unwrap();
    let bindings = Api::<RoleBinding>::namespaced(bob.clone(), "team");
    let (status, message) = code(bindings.create(&PostParams::default(), &binding).await);
    assert_eq!(status, 403);
    assert!(
        message.starts_with(
            "rolebindings.rbac.authorization.k8s.io \"carol-admin\" is forbidden: user \"bob\""
        ),
        "{message}"
    );
    // A binding to a role that does not exist grants nothing bob can show he holds.
    let mut missing = binding.clone();
    missing.metadata.name = Some("ghost".into());
    missing.role_ref.kind = "Role".into();
    missing.role_ref.name = "ghost".into();
    let (status, message) = code(bindings.create(&PostParams::default(), &missing).await);
    assert_eq!(status, 403);
    assert!(
        message.contains("role.rbac.authorization.k8s.io \"ghost\" not found"),
        "{message}"
    );

    // With `bind` on cluster-admin, or `escalate` on roles, he may.
    let granter: Role = serde_json::from_value(json!({
        "metadata": {"name": "granter"},
        "rules": [
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["cluster-admin"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]},
        ],
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), "team")
        .create(&PostParams::default(), &granter)
        .await
        .unwrap();
    bind(&admin, "team", "bob-granter", "Role", "granter", "bob").await;
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind is allowed");
    roles
        .create(
            &PostParams::default(),
            &role(
                "node-reader",
                json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]),
            ),
        )
        .await
        .expect("escalate is allowed");

    // Validation: roleRef is immutable, rules need verbs.
    let mut changed = bindings.get("carol-view").await.unwrap();
    changed.role_ref.name = "edit".into();
    let (status, message) = code(
        Api::<RoleBinding>::namespaced(admin.clone(), "team")
            .replace("carol-view", &PostParams::default(), &changed)
            .await,
    );
    assert_eq!(status, 422);
    assert!(message.contains("cannot change roleRef"), "{message}");
    let (status, message) = code(
        Api::<Role>::namespaced(admin.clone(), "team")
            .create(
                &PostParams::default(),
                &role(
                    "no-verbs",
                    json!([{"apiGroups": [""], "resources": ["pods"], "verbs": []}]),
                ),
            )
            .await,
    );
    assert_eq!(status, 422);
    assert!(message.contains("rules[0].verbs"), "{message}");

    // An aggregation rule needs cluster-admin's authority.
    let aggregated: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "gather-all"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]},
    }))
    .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "dave-clusterroles"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "dave"},
        "subjects": [{"kind": "User", "name": "dave"}],
    }))
    .unwrap();
    let dave_role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "dave"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &dave_role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
    let dave = api.client_as(user("dave", &[]));
    let (status, message) = code(
        Api::<ClusterRole>::all(dave)
            .create(&PostParams::default(), &aggregated)
            .await,
    );
    assert_eq!(status, 403);
    assert!(
        message.ends_with("must have cluster-admin privileges to use the aggregationRule"),
        "{message}"
    );
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb() {
    let dir = tempfile::tempdir().unwrap();
    let api = InProcess::start(dir.path()).await.unwrap();
    let admin = api.client();
    wait_for_rule(&admin, "view", "get", "pods").await;
    create_ns(&admin, "team").await;
    bind(&admin, "team", "alice-view", "ClusterRole", "view", "alice").await;
    let whoami = |client: Client, headers: Vec<(&'static str, &'static str)>| async move {
        let mut req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(
                br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#.to_vec(),
            )
            .unwrap();
        client.request::<Value>(req).await
    };
    // The admin may impersonate anyone; the request then runs as that user.
    let answer = whoami(
        admin.clone(),
        vec![("Impersonate-User", "alice"), ("Impersonate-Group", "dev")],
    )
    .await
    .unwrap();
    assert_eq!(answer["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        answer["status"]["userInfo"]["groups"],
        json!(["dev", "system:authenticated"])
    );
    let as_alice = http::Request::get("/api/v1/namespaces/team/secrets")
        .header("Impersonate-User", "alice")
        .body(Vec::new())
        .unwrap();
    let (status, message) = code(admin.request::<Value>(as_alice).await);
    assert_eq!(status, 403);
    assert!(
        message.contains("User \"alice\" cannot list resource \"secrets\""),
        "{message}"
    );
    // A service account gets its groups.
    let answer = whoami(
        admin.clone(),
        vec![("Impersonate-User", "system:serviceaccount:team:builder")],
    )
    .await
    .unwrap();
    assert_eq!(
        answer["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated"
        ])
    );

    // Alice may not impersonate, until she may impersonate bob (and only bob).
    let alice = api.client_as(user("alice", &[]));
    let (status, message) = code(whoami(alice.clone(), vec![("Impersonate-User", "bob")]).await);
    assert_eq!(status, 403);
    assert_eq!(
        message,
        "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "impersonate-bob"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["bob"]}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-impersonates-bob"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonate-bob"},
        "subjects": [{"kind": "User", "name": "alice"}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
    let answer = whoami(alice.clone(), vec![("Impersonate-User", "bob")])
        .await
        .unwrap();
    assert_eq!(answer["status"]["userInfo"]["username"], "bob");
    let (status, message) = code(
        whoami(
            alice.clone(),
            vec![
                ("Impersonate-User", "bob"),
                ("Impersonate-Group", "system:masters"),
            ],
        )
        .await,
    );
    assert_eq!(status, 403);
    assert!(
        message.starts_with("groups \"system:masters\" is forbidden"),
        "{message}"
    );
    let (status, _) = code(whoami(alice, vec![("Impersonate-Group", "dev")]).await);
    assert_eq!(status, 400, "a group without a user");
}

#[tokio::test]
async fn subject_access_reviews_answer_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let api = InProcess::start(dir.path()).await.unwrap();
    let admin = api.client();
    wait_for_rule(&admin, "edit", "create", "deployments").await;
    create_ns(&admin, "team").await;
    bind(&admin, "team", "erin-edit", "ClusterRole", "edit", "erin").await;
    let sar = |user: &str, groups: Vec<&str>, ns: &str, verb: &str, group: &str, resource: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "spec": {"user": user, "groups": groups,
                        "resourceAttributes": {"namespace": ns, "verb": verb, "group": group, "resource": resource}}})
    };
    let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let status = review(
        &admin,
        path,
        sar("erin", vec![], "team", "create", "apps", "deployments"),
    )
    .await;
    assert_eq!(status["allowed"], json!(true));
    assert_eq!(
        status["reason"],
        json!(
            "RBAC: allowed by RoleBinding \"erin-edit/team\" of ClusterRole \"edit\" to User \"erin\""
        )
    );
    let status = review(
        &admin,
        path,
        sar("erin", vec![], "other", "create", "apps", "deployments"),
    )
    .await;
    assert_eq!(status["allowed"], json!(false));
    let status = review(
        &admin,
        path,
        sar("root", vec!["system:masters"], "", "delete", "", "nodes"),
    )
    .await;
    // The privileged group is allowed before RBAC is consulted, as upstream.
    assert_eq!(status["allowed"], json!(true));
    // Non-resource paths.
    let status = review(
        &admin,
        path,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "spec": {"groups": ["system:authenticated"], "nonResourceAttributes": {"verb": "get", "path": "/apis/apps/v1"}}}),
    )
    .await;
    assert_eq!(status["allowed"], json!(true));
    // A binding to a missing role is reported as an evaluation problem.
    bind(&admin, "team", "erin-ghost", "Role", "ghost", "erin").await;
    let status = review(
        &admin,
        path,
        sar("erin", vec![], "team", "get", "", "secrets"),
    )
    .await;
    assert_eq!(status["allowed"], json!(true), "edit still grants secrets");
    let status = review(
        &admin,
        path,
        sar("erin", vec![], "team", "escalate", "", "secrets"),
    )
    .await;
    assert_eq!(status["allowed"], json!(false));
    assert_eq!(
        status["reason"],
        json!("RBAC: role.rbac.authorization.k8s.io \"ghost\" not found")
    );

    // Local reviews: the namespace is the URL's.
    let local = "/apis/authorization.k8s.io/v1/namespaces/team/localsubjectaccessreviews";
    let body = |ns: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
               "metadata": {"namespace": "team"},
               "spec": {"user": "erin", "resourceAttributes": {"namespace": ns, "verb": "get", "resource": "pods"}}})
    };
    assert_eq!(
        review(&admin, local, body("team")).await["allowed"],
        json!(true)
    );
    let req = http::Request::post(local)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body("other")).unwrap())
        .unwrap();
    let (status, _) = code(admin.request::<Value>(req).await);
    assert_eq!(status, 422);
    // Users without the right may not ask about others.
    let erin = api.client_as(user("erin", &[]));
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&sar("x", vec![], "team", "get", "", "pods")).unwrap())
        .unwrap();
    let (status, _) = code(erin.request::<Value>(req).await);
    assert_eq!(status, 403);
}

#[test]
fn bootstrap_reconciles_the_default_policy_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Each run of the server gets its own runtime: dropping it stops every task of the
    // first server, which releases the store for the second.
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    runtime().block_on(async {
        let api = InProcess::start(dir.path()).await.unwrap();
        let admin = api.client();
        let roles = Api::<ClusterRole>::all(admin.clone());
        // An autoupdated role loses a rule; a protected one is emptied on purpose.
        let mut discovery = roles.get("system:discovery").await.unwrap();
        discovery.rules = Some(Vec::new());
        roles
            .replace("system:discovery", &PostParams::default(), &discovery)
            .await
            .unwrap();
        let mut basic = roles.get("system:basic-user").await.unwrap();
        basic.rules = Some(Vec::new());
        basic.metadata.annotations.get_or_insert_default().insert(
            "rbac.authorization.kubernetes.io/autoupdate".into(),
            "false".into(),
        );
        roles
            .replace("system:basic-user", &PostParams::default(), &basic)
            .await
            .unwrap();
        Api::<ClusterRoleBinding>::all(admin)
            .delete("system:public-info-viewer", &Default::default())
            .await
            .unwrap();
    });
    runtime().block_on(async {
        let api = InProcess::start(dir.path()).await.unwrap();
        let admin = api.client();
        let roles = Api::<ClusterRole>::all(admin.clone());
        let discovery = roles.get("system:discovery").await.unwrap();
        assert!(!discovery.rules.unwrap_or_default().is_empty(), "restored");
        let basic = roles.get("system:basic-user").await.unwrap();
        assert!(basic.rules.unwrap_or_default().is_empty(), "protected");
        Api::<ClusterRoleBinding>::all(admin)
            .get("system:public-info-viewer")
            .await
            .expect("recreated");
    });
}

#[tokio::test]
async fn built_in_components_hold_least_privilege() {
    let dir = tempfile::tempdir().unwrap();
    let api = InProcess::start(dir.path()).await.unwrap();
    for id in [Identity::controller_manager(), Identity::scheduler()] {
        assert!(
            !id.groups.iter().any(|g| g == "system:masters"),
            "{} is not a cluster admin",
            id.user
        );
    }
    let controllers = api.client_as(Identity::controller_manager());
    let scheduler = api.client_as(Identity::scheduler());
    let attrs = |verb: &str, group: &str, resource: &str, sub: &str| json!({"namespace": "default", "verb": verb, "group": group, "resource": resource, "subresource": sub});
    for (verb, group, resource, sub) in [
        ("create", "apps", "replicasets", ""),
        ("update", "apps", "deployments", "status"),
        ("create", "", "pods", ""),
        ("delete", "batch", "jobs", ""),
        ("patch", "", "events", ""),
        ("create", "events.k8s.io", "events", ""),
        ("update", "", "namespaces", "finalize"),
        ("delete", "stable.example.com", "crontabs", ""),
        ("create", "discovery.k8s.io", "endpointslices", ""),
        ("create", "", "serviceaccounts", ""),
        ("create", "", "configmaps", ""),
        ("patch", "", "nodes", ""),
        ("update", "policy", "poddisruptionbudgets", "status"),
    ] {
        assert!(
            can_i(&controllers, attrs(verb, group, resource, sub)).await,
            "controllers may {verb} {group}/{resource}/{sub}"
        );
    }
    for (verb, group, resource, sub) in [
        ("create", "", "pods", "exec"),
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
        ),
        ("impersonate", "", "users", ""),
    ] {
        assert!(
            !can_i(&controllers, attrs(verb, group, resource, sub)).await,
            "controllers may not {verb} {group}/{resource}"
        );
    }
    for (verb, group, resource, sub) in [
        ("create", "", "pods", "binding"),
        ("list", "", "nodes", ""),
        ("patch", "", "pods", "status"),
        ("create", "coordination.k8s.io", "leases", ""),
        ("update", "", "persistentvolumeclaims", ""),
    ] {
        assert!(
            can_i(&scheduler, attrs(verb, group, resource, sub)).await,
            "the scheduler may {verb} {group}/{resource}/{sub}"
        );
    }
    for (verb, group, resource, sub) in [
        ("create", "", "pods", ""),
        ("delete", "", "nodes", ""),
        ("get", "", "secrets", ""),
    ] {
        assert!(
            !can_i(&scheduler, attrs(verb, group, resource, sub)).await,
            "the scheduler may not {verb} {group}/{resource}"
        );
    }
}
