//! PodDisruptionBudget status and the eviction API against the in-process cluster.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, EvictParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const NS: &str = "default";
const TIMEOUT: Duration = Duration::from_secs(15);

fn pods(client: &Client) -> Api<Pod> {
    Api::namespaced(client.clone(), NS)
}

fn budgets(client: &Client) -> Api<PodDisruptionBudget> {
    Api::namespaced(client.clone(), NS)
}

/// Writes a Running status with the given readiness (and a phase).
async fn set_status(client: &Client, name: &str, phase: &str, ready: bool) {
    let api = pods(client);
    let mut pod = api.get(name).await.unwrap();
    let status = if ready { "True" } else { "False" };
    pod.status = Some(
        serde_json::from_value(json!({
            "phase": phase,
            "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": Time(jiff::Timestamp::now())}],
        }))
        .unwrap(),
    );
    api.replace_status(name, &PostParams::default(), &pod)
        .await
        .unwrap();
}

/// An unscheduled bare pod, Running and Ready.
async fn ready_pod(client: &Client, name: &str, labels: Value) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods(client)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    set_status(client, name, "Running", true).await;
}

async fn budget(client: &Client, name: &str, spec: Value) {
    let pdb: PodDisruptionBudget =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    budgets(client)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
}

/// The budget's status once `check` accepts it.
async fn status_where(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(TIMEOUT, what, || {
        let api = budgets(client);
        let check = &check;
        async move {
            let pdb = api.get(name).await.ok()?;
            let status = serde_json::to_value(pdb.status?).ok()?;
            check(&status).then_some(status)
        }
    })
    .await
}

fn counts(status: &Value) -> [i64; 4] {
    [
        status["expectedPods"].as_i64().unwrap_or(-1),
        status["currentHealthy"].as_i64().unwrap_or(-1),
        status["desiredHealthy"].as_i64().unwrap_or(-1),
        status["disruptionsAllowed"].as_i64().unwrap_or(-1),
    ]
}

fn condition(status: &Value) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionAllowed")
        .unwrap();
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
    )
}

async fn evict(client: &Client, name: &str) -> Result<(), kube::Error> {
    pods(client)
        .evict(name, &EvictParams::default())
        .await
        .map(|_| ())
}

/// POSTs a raw Eviction body.
async fn evict_raw(client: &Client, name: &str, body: Value) -> Result<Value, kube::Error> {
    pods(client)
        .create_subresource("eviction", name, &PostParams::default(), &body)
        .await
}

fn api_error(result: Result<(), kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn min_available_and_evictions() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    for i in 0..3 {
        ready_pod(&client, &format!("web-{i}"), json!({"app": "web"})).await;
    }
    ready_pod(&client, "free", json!({"app": "free"})).await;
    budget(
        &client,
        "web",
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    let status = status_where(&client, "web", "one disruption allowed", |s| {
        counts(s) == [3, 3, 2, 1]
    })
    .await;
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        condition(&status),
        ("True".to_owned(), "SufficientPods".to_owned())
    );

    // A pod no budget covers is simply deleted; a dry run deletes nothing.
    let dry = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "free"},
                     "deleteOptions": {"dryRun": ["All"]}});
    evict_raw(&client, "free", dry).await.unwrap();
    assert!(pods(&client).get_opt("free").await.unwrap().is_some());
    evict(&client, "free").await.unwrap();
    assert!(pods(&client).get_opt("free").await.unwrap().is_none());

    // The budget allows one eviction, recorded in the status.
    evict(&client, "web-0").await.unwrap();
    assert!(pods(&client).get_opt("web-0").await.unwrap().is_none());
    let status = status_where(&client, "web", "no disruption left", |s| {
        counts(s) == [2, 2, 2, 0]
    })
    .await;
    assert_eq!(
        condition(&status),
        ("False".to_owned(), "InsufficientPods".to_owned())
    );
    let refused = api_error(evict(&client, "web-1").await);
    assert_eq!(refused.code, 429);
    assert_eq!(refused.reason, "TooManyRequests");
    assert_eq!(
        refused.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let cause = &refused.details.as_ref().unwrap().causes[0];
    assert_eq!(cause.reason, "DisruptionBudget");
    assert_eq!(
        cause.message,
        "The disruption budget web needs 2 healthy pods and has 2 currently"
    );
    assert!(pods(&client).get_opt("web-1").await.unwrap().is_some());

    // A finished pod is evicted whatever the budget says.
    set_status(&client, "web-1", "Succeeded", false).await;
    evict(&client, "web-1").await.unwrap();
    assert!(pods(&client).get_opt("web-1").await.unwrap().is_none());

    // Two budgets over one pod: the eviction API cannot decide (500).
    budget(
        &client,
        "web-too",
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;
    let error = api_error(evict(&client, "web-2").await);
    assert_eq!(error.code, 500, "{error:?}");
    assert!(error.message.contains("more than one PodDisruptionBudget"));
}

#[tokio::test]
async fn eviction_bodies_and_options() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    for i in 0..3 {
        ready_pod(&client, &format!("db-{i}"), json!({"app": "db"})).await;
    }
    budget(
        &client,
        "db",
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    // Bare pods have no controller: maxUnavailable counts no expected pods, so no
    // disruption is allowed (upstream's rule).
    status_where(&client, "db", "status", |s| counts(s) == [0, 3, 0, 0]).await;
    budgets(&client)
        .delete("db", &Default::default())
        .await
        .unwrap();
    budget(
        &client,
        "db2",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    )
    .await;
    status_where(&client, "db2", "two allowed", |s| counts(s) == [3, 3, 1, 2]).await;

    // A policy/v1beta1 body with a UID precondition that does not match: 409, pod kept.
    let stale = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "db-0"},
                       "deleteOptions": {"preconditions": {"uid": "not-the-uid"}}});
    match evict_raw(&client, "db-0", stale).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(pods(&client).get_opt("db-0").await.unwrap().is_some());
    // The matching UID works.
    let uid = pods(&client).get("db-0").await.unwrap().uid().unwrap();
    let good = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "db-0"},
                      "deleteOptions": {"preconditions": {"uid": uid}}});
    evict_raw(&client, "db-0", good).await.unwrap();
    assert!(pods(&client).get_opt("db-0").await.unwrap().is_none());
    // A name that differs from the URL's is refused.
    let wrong =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "db-2"}});
    match evict_raw(&client, "db-1", wrong).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 400, "{s:?}"),
        other => panic!("expected a bad request, got {other:?}"),
    }

    // An unready pod costs nothing while the budget is met.
    set_status(&client, "db-1", "Running", false).await;
    status_where(&client, "db2", "db-1 unhealthy", |s| {
        counts(s) == [2, 1, 1, 0]
    })
    .await;
    evict(&client, "db-1").await.unwrap();
    assert!(pods(&client).get_opt("db-1").await.unwrap().is_none());
}

#[tokio::test]
async fn percentages_use_the_controllers_scale() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let names = wait_for(TIMEOUT, "four pods of the ReplicaSet", || {
        let api = pods(&client);
        async move {
            let list = api
                .list(&ListParams::default().labels("app=api"))
                .await
                .ok()?;
            (list.items.len() == 4)
                .then(|| list.items.iter().map(|p| p.name_any()).collect::<Vec<_>>())
        }
    })
    .await;
    // Three of four are ready.
    for name in &names[..3] {
        set_status(&client, name, "Running", true).await;
    }
    budget(
        &client,
        "api-max",
        json!({"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "api"}}}),
    )
    .await;
    budget(
        &client,
        "api-min",
        json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "api"}}}),
    )
    .await;
    // maxUnavailable 25% of 4 = 1: 3 desired, 3 healthy, none allowed.
    status_where(&client, "api-max", "maxUnavailable counts", |s| {
        counts(s) == [4, 3, 3, 0]
    })
    .await;
    // minAvailable 50% of 4 = 2: one allowed.
    status_where(&client, "api-min", "minAvailable counts", |s| {
        counts(s) == [4, 3, 2, 1]
    })
    .await;
    set_status(&client, &names[3], "Running", true).await;
    status_where(&client, "api-max", "all ready", |s| {
        counts(s) == [4, 4, 3, 1]
    })
    .await;

    // A pod controlled by a kind without a known scale makes the budget fail safe.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "odd", "labels": {"app": "odd"}, "ownerReferences": [{
            "apiVersion": "example.com/v1", "kind": "CronTab", "name": "x",
            "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods(&client)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    budget(
        &client,
        "odd",
        json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "odd"}}}),
    )
    .await;
    let status = status_where(&client, "odd", "sync failed", |s| {
        s["conditions"].as_array().is_some_and(|c| !c.is_empty())
    })
    .await;
    assert_eq!(
        condition(&status),
        ("False".to_owned(), "SyncFailed".to_owned())
    );
    assert_eq!(status["disruptionsAllowed"], 0);
}
