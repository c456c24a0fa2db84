//! ResourceQuota: the controller publishes `status.hard` and `status.used`; admission in the
//! API server rejects creates that would exceed a quota, with upstream's messages, and
//! charges atomically so that concurrent creates cannot overshoot.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn quota(
    client: &Client,
    ns: &str,
    name: &str,
    hard: serde_json::Value,
) -> Api<ResourceQuota> {
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let q: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"hard": hard}}))
            .expect("quota");
    api.create(&PostParams::default(), &q)
        .await
        .expect("create quota");
    api
}

/// Waits until the quota's `status.used` is exactly `want` (`name=value,…`).
async fn wait_used(api: &Api<ResourceQuota>, name: &str, want: &str) {
    wait_used_within(api, name, want, TIMEOUT).await;
}

async fn wait_used_within(api: &Api<ResourceQuota>, name: &str, want: &str, timeout: Duration) {
    wait_for(timeout, &format!("{name} to show used {want}"), || async {
        let q = api.get(name).await.ok()?;
        let used = q.status?.used?;
        let shown = used
            .iter()
            .map(|(k, v)| format!("{k}={}", v.0))
            .collect::<Vec<_>>()
            .join(",");
        (shown == want).then_some(())
    })
    .await
}

fn pod(name: &str, cpu: Option<&str>) -> Pod {
    let resources = cpu.map_or(json!({}), |c| json!({"requests": {"cpu": c}}));
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}
    }))
    .expect("pod")
}

async fn create_error(api: &Api<Pod>, pod: &Pod) -> (u16, String) {
    match api.create(&PostParams::default(), pod).await {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn usage_is_published_and_limits_enforced() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    namespace(&client, "q1").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "q1");
    // The namespace's kube-root-ca.crt counts, so wait for it.
    wait_for(TIMEOUT, "kube-root-ca.crt", || async {
        cms.get_opt("kube-root-ca.crt").await.ok().flatten()
    })
    .await;
    let quotas = quota(
        &client,
        "q1",
        "objects",
        json!({"pods": "2", "configmaps": "3", "count/pods": "10"}),
    )
    .await;
    wait_used(&quotas, "objects", "configmaps=1,count/pods=0,pods=0").await;
    let q = quotas.get("objects").await.expect("quota");
    assert_eq!(q.status.and_then(|s| s.hard).map(|h| h.len()), Some(3));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "q1");
    for name in ["p1", "p2"] {
        pods.create(&PostParams::default(), &pod(name, None))
            .await
            .expect("within quota");
    }
    // Admission charged the quota in the same request.
    let used = quotas
        .get("objects")
        .await
        .expect("quota")
        .status
        .and_then(|s| s.used)
        .unwrap_or_default();
    assert_eq!(used.get("pods").map(|q| q.0.as_str()), Some("2"));
    let (code, message) = create_error(&pods, &pod("p3", None)).await;
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "pods \"p3\" is forbidden: exceeded quota: objects, requested: pods=1, used: pods=2, limited: pods=2"
    );
    // Deleting a pod gives its share back.
    pods.delete("p1", &DeleteParams::default())
        .await
        .expect("delete");
    wait_used(&quotas, "objects", "configmaps=1,count/pods=1,pods=1").await;
    pods.create(&PostParams::default(), &pod("p3", None))
        .await
        .expect("room again");

    // Other kinds count too.
    for name in ["a", "b"] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("configmap within quota");
    }
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).expect("cm");
    match cms.create(&PostParams::default(), &cm).await {
        Err(kube::Error::Api(s)) => assert_eq!(
            s.message,
            "configmaps \"c\" is forbidden: exceeded quota: objects, requested: configmaps=1, used: configmaps=3, limited: configmaps=3"
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn compute_quotas_need_requests_and_sum_them() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    namespace(&client, "q2").await;
    let quotas = quota(
        &client,
        "q2",
        "compute",
        json!({"requests.cpu": "1", "limits.memory": "1Gi"}),
    )
    .await;
    wait_used(&quotas, "compute", "limits.memory=0,requests.cpu=0").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "q2");
    let (code, message) = create_error(&pods, &pod("bare", None)).await;
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: c; requests.cpu for: c"
    );
    let with = |name: &str, cpu: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": cpu}, "limits": {"memory": "256Mi"}}}]}
        }))
        .expect("pod")
    };
    pods.create(&PostParams::default(), &with("a", "600m"))
        .await
        .expect("a");
    let (code, message) = create_error(&pods, &with("b", "500m")).await;
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"
    );
    pods.create(&PostParams::default(), &with("c", "400m"))
        .await
        .expect("c fits exactly");
    wait_used(&quotas, "compute", "limits.memory=512Mi,requests.cpu=1").await;
}

#[tokio::test]
async fn concurrent_creates_cannot_overshoot() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    namespace(&client, "q3").await;
    let quotas = quota(&client, "q3", "five", json!({"pods": "5"})).await;
    wait_used(&quotas, "five", "pods=0").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "q3");
    let attempts = (0..12).map(|i| {
        let pods = pods.clone();
        async move {
            pods.create(&PostParams::default(), &pod(&format!("p{i}"), None))
                .await
                .is_ok()
        }
    });
    let admitted = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    assert_eq!(admitted, 5);
    let listed = pods
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .len();
    assert_eq!(listed, 5);
    wait_used(&quotas, "five", "pods=5").await;
}

#[tokio::test]
async fn object_counts_of_other_kinds_follow_their_objects_at_once() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    namespace(&client, "q4").await;
    let quotas = quota(
        &client,
        "q4",
        "deploys",
        json!({"count/deployments.apps": "3"}),
    )
    .await;
    wait_used(&quotas, "deploys", "count/deployments.apps=0").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "q4");
    for name in ["d1", "d2"] {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }))
        .expect("deployment");
        deployments
            .create(&PostParams::default(), &d)
            .await
            .expect("within quota");
    }
    wait_used(&quotas, "deploys", "count/deployments.apps=2").await;
    // A deletion is seen by the quota's informer and gives the count back within moments,
    // not at the next resync.
    deployments
        .delete("d1", &DeleteParams::default())
        .await
        .expect("delete");
    wait_used_within(
        &quotas,
        "deploys",
        "count/deployments.apps=1",
        Duration::from_secs(3),
    )
    .await;
    // Another quota naming the same kind shares the informer and starts counted.
    let second = quota(
        &client,
        "q4",
        "more",
        json!({"count/deployments.apps": "5"}),
    )
    .await;
    wait_used_within(
        &second,
        "more",
        "count/deployments.apps=1",
        Duration::from_secs(3),
    )
    .await;
    deployments
        .delete("d2", &DeleteParams::default())
        .await
        .expect("delete");
    wait_used_within(
        &quotas,
        "deploys",
        "count/deployments.apps=0",
        Duration::from_secs(3),
    )
    .await;
    wait_used_within(
        &second,
        "more",
        "count/deployments.apps=0",
        Duration::from_secs(3),
    )
    .await;
}
