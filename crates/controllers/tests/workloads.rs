//! The ReplicaSet, ReplicationController and Deployment loops against a real API server:
//! replica counts, adoption and release, availability, failure conditions, rolling and
//! recreate rollouts, revision history, pausing and proportional scaling.

mod common;

use std::time::Duration;

use common::{Cluster, Options, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, ResourceQuota};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

fn pods(client: &Client) -> Api<Pod> {
    Api::namespaced(client.clone(), "default")
}

fn sets(client: &Client) -> Api<ReplicaSet> {
    Api::namespaced(client.clone(), "default")
}

fn deployments(client: &Client) -> Api<Deployment> {
    Api::namespaced(client.clone(), "default")
}

/// Pods matching `selector` that are not being deleted.
async fn live_pods(client: &Client, selector: &str) -> Vec<Pod> {
    pods(client)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn replica_set(name: &str, replicas: i32, app: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app, "tier": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}
            }
        }
    }))
    .expect("replica set")
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"kubernetes.io/change-cause": "first"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }
        }
    }))
    .expect("deployment")
}

/// Marks a pod Running and Ready now (what a node agent would do).
async fn make_ready(client: &Client, name: &str) {
    let now = jiff::Timestamp::now().to_string();
    pods(client)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]
            }})),
        )
        .await
        .expect("pod status");
}

async fn events_of(client: &Client, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

async fn rs_status(client: &Client, name: &str) -> k8s_openapi::api::apps::v1::ReplicaSetStatus {
    sets(client)
        .get(name)
        .await
        .expect("get rs")
        .status
        .unwrap_or_default()
}

#[tokio::test]
async fn replica_set_scales_up_and_down() {
    let cluster = Cluster::start().await;
    let client = &cluster.client;
    let rs = sets(client)
        .create(&PostParams::default(), &replica_set("web", 3, "web"))
        .await
        .expect("create rs");
    let uid = rs.uid().expect("uid");

    let created = wait_for(TIMEOUT, "three pods", || async {
        let p = live_pods(client, "app=web").await;
        (p.len() == 3).then_some(p)
    })
    .await;
    for pod in &created {
        let name = pod.name_any();
        let suffix = name.strip_prefix("web-").expect("generated name");
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ReplicaSet", uid.as_str())
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(pod.labels().get("tier").map(String::as_str), Some("web"));
    }
    wait_for(TIMEOUT, "status of three", || async {
        let s = rs_status(client, "web").await;
        (s.replicas == 3 && s.fully_labeled_replicas == Some(3) && s.observed_generation == Some(1))
            .then_some(())
    })
    .await;
    // Pods never come up (no nodes): none ready or available.
    let s = rs_status(client, "web").await;
    assert_eq!((s.ready_replicas, s.available_replicas), (None, None));

    sets(client)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale down");
    wait_for(TIMEOUT, "one pod", || async {
        (live_pods(client, "app=web").await.len() == 1).then_some(())
    })
    .await;
    wait_for(TIMEOUT, "status of one", || async {
        let s = rs_status(client, "web").await;
        (s.replicas == 1 && s.observed_generation == Some(2)).then_some(())
    })
    .await;
    // Nothing more is created or deleted once settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live_pods(client, "app=web").await.len(), 1);

    let events = wait_for(TIMEOUT, "events", || async {
        let e = events_of(client, "web").await;
        let creates = e.iter().filter(|(r, _)| r == "SuccessfulCreate").count();
        let deletes = e.iter().filter(|(r, _)| r == "SuccessfulDelete").count();
        (creates == 3 && deletes == 2).then_some(e)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "SuccessfulCreate" && n.starts_with("Created pod: web-")),
        "{events:?}"
    );
}

#[tokio::test]
async fn replica_set_adopts_orphans_and_releases_pods_that_stop_matching() {
    let cluster = Cluster::start().await;
    let client = &cluster.client;
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}
    }))
    .unwrap();
    pods(client)
        .create(&PostParams::default(), &orphan)
        .await
        .expect("orphan");
    let rs = sets(client)
        .create(&PostParams::default(), &replica_set("adopter", 2, "adopt"))
        .await
        .expect("rs");
    let uid = rs.uid().unwrap();

    wait_for(TIMEOUT, "orphan adopted", || async {
        let pod = pods(client).get("orphan").await.ok()?;
        pod.owner_references()
            .iter()
            .any(|r| r.uid == uid && r.controller == Some(true))
            .then_some(())
    })
    .await;
    wait_for(TIMEOUT, "two pods", || async {
        (live_pods(client, "app=adopt").await.len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        live_pods(client, "app=adopt").await.len(),
        2,
        "the adopted pod counts"
    );

    // Relabelled, the orphan leaves the set: released, and replaced.
    pods(client)
        .patch(
            "orphan",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
        )
        .await
        .expect("relabel");
    wait_for(TIMEOUT, "pod released", || async {
        let pod = pods(client).get("orphan").await.ok()?;
        pod.owner_references().is_empty().then_some(())
    })
    .await;
    wait_for(TIMEOUT, "replacement", || async {
        (live_pods(client, "app=adopt").await.len() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replica_set_counts_available_after_min_ready_seconds() {
    let cluster = Cluster::start().await;
    let client = &cluster.client;
    let mut rs = replica_set("slow", 1, "slow");
    rs.spec.as_mut().unwrap().min_ready_seconds = Some(2);
    sets(client)
        .create(&PostParams::default(), &rs)
        .await
        .expect("rs");
    let pod = wait_for(TIMEOUT, "pod", || async {
        live_pods(client, "app=slow").await.into_iter().next()
    })
    .await;
    make_ready(client, &pod.name_any()).await;
    wait_for(TIMEOUT, "ready", || async {
        let s = rs_status(client, "slow").await;
        (s.ready_replicas == Some(1)).then_some(())
    })
    .await;
    assert_eq!(rs_status(client, "slow").await.available_replicas, None);
    // Nothing changes after the pod turned ready: the loop comes back by itself.
    wait_for(Duration::from_secs(6), "available", || async {
        let s = rs_status(client, "slow").await;
        (s.available_replicas == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replica_set_reports_failed_creates() {
    let cluster = Cluster::start().await;
    let client = &cluster.client;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "pods"},
        "spec": {"hard": {"pods": "2"}}
    }))
    .unwrap();
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("quota");
    // The quota's status is what admission enforces; set it rather than wait for its loop.
    quotas
        .patch_status(
            "pods",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": {"pods": "2"}, "used": {"pods": "0"}}})),
        )
        .await
        .expect("quota status");
    sets(client)
        .create(&PostParams::default(), &replica_set("capped", 3, "capped"))
        .await
        .expect("rs");
    let condition = wait_for(TIMEOUT, "ReplicaFailure", || async {
        let s = rs_status(client, "capped").await;
        s.conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure")
    })
    .await;
    assert_eq!(condition.status, "True");
    assert_eq!(condition.reason.as_deref(), Some("FailedCreate"));
    assert!(
        condition
            .message
            .as_deref()
            .is_some_and(|m| m.contains("exceeded quota")),
        "{condition:?}"
    );
    assert_eq!(live_pods(client, "app=capped").await.len(), 2);
    let events = events_of(client, "capped").await;
    assert!(
        events.iter().any(|(r, _)| r == "FailedCreate"),
        "{events:?}"
    );

    // With room again, the third pod comes and the condition goes.
    sets(client)
        .patch(
            "capped",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale");
    wait_for(TIMEOUT, "condition cleared", || async {
        let s = rs_status(client, "capped").await;
        s.conditions
            .into_iter()
            .flatten()
            .all(|c| c.type_ != "ReplicaFailure")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn replication_controller_keeps_its_pods() {
    let cluster = Cluster::start().await;
    let client = &cluster.client;
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {
            "replicas": 2,
            "selector": {"app": "legacy"},
            "template": {
                "metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}
            }
        }
    }))
    .unwrap();
    let rc = rcs.create(&PostParams::default(), &rc).await.expect("rc");
    let created = wait_for(TIMEOUT, "two pods", || async {
        let p = live_pods(client, "app=legacy").await;
        (p.len() == 2).then_some(p)
    })
    .await;
    for pod in &created {
        let owner = &pod.owner_references()[0];
        assert_eq!(owner.kind, "ReplicationController");
        assert_eq!(Some(&owner.uid), rc.metadata.uid.as_ref());
        assert!(pod.name_any().starts_with("legacy-"));
    }
    make_ready(client, &created[0].name_any()).await;
    wait_for(TIMEOUT, "rc status", || async {
        let s = rcs.get("legacy").await.ok()?.status?;
        (s.replicas == 2
            && s.ready_replicas == Some(1)
            && s.available_replicas == Some(1)
            && s.observed_generation == Some(1))
        .then_some(())
    })
    .await;
    // A deleted pod is replaced.
    pods(client)
        .delete(&created[1].name_any(), &Default::default())
        .await
        .expect("delete pod");
    wait_for(TIMEOUT, "replacement", || async {
        let p = live_pods(client, "app=legacy").await;
        (p.len() == 2 && p.iter().all(|x| x.name_any() != created[1].name_any())).then_some(())
    })
    .await;
}

/// The Deployment's ReplicaSets, oldest revision first.
async fn replica_sets_of(client: &Client, app: &str) -> Vec<ReplicaSet> {
    let mut list = sets(client)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list rs")
        .items;
    list.sort_by_key(revision);
    list
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn condition_reason(d: &Deployment, type_: &str) -> Option<String> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?
        .reason
        .clone()
}

/// Waits until the Deployment is rolled out as `kubectl rollout status` judges it.
async fn wait_rolled_out(client: &Client, name: &str, replicas: i32) -> Deployment {
    wait_for(Duration::from_secs(25), "rollout complete", || async {
        let d = deployments(client).get(name).await.ok()?;
        let s = d.status.clone()?;
        (s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas)
            && condition_reason(&d, "Progressing").as_deref() == Some("NewReplicaSetAvailable"))
        .then_some(d)
    })
    .await
}

async fn set_image(client: &Client, name: &str, image: &str, cause: &str) {
    deployments(client)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}
            })),
        )
        .await
        .expect("set image");
}

fn with_nodes() -> Options {
    Options {
        scheduler: true,
        hollow_nodes: 2,
    }
}

#[tokio::test]
async fn deployment_rolls_out_updates_and_rolls_back() {
    let cluster = Cluster::start_with(with_nodes()).await;
    let client = &cluster.client;
    deployments(client)
        .create(&PostParams::default(), &deployment("web", 3, "nginx:1.25"))
        .await
        .expect("create");
    let d = wait_rolled_out(client, "web", 3).await;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        condition_reason(&d, "Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    let first = replica_sets_of(client, "web").await;
    assert_eq!(first.len(), 1);
    // Settled: the loops stop writing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d_later = deployments(client).get("web").await.unwrap();
    assert_eq!(
        d_later.resource_version(),
        d.resource_version(),
        "deployment keeps changing"
    );
    let rs_later = sets(client).get(&first[0].name_any()).await.unwrap();
    assert_eq!(
        rs_later.resource_version(),
        first[0].resource_version(),
        "replica set keeps changing"
    );
    let rs1 = &first[0];
    let hash = rs1.labels()["pod-template-hash"].clone();
    assert_eq!(rs1.name_any(), format!("web-{hash}"));
    let annotations = rs1.annotations();
    assert_eq!(annotations["deployment.kubernetes.io/revision"], "1");
    assert_eq!(
        annotations["deployment.kubernetes.io/desired-replicas"],
        "3"
    );
    assert_eq!(annotations["deployment.kubernetes.io/max-replicas"], "4");
    assert_eq!(annotations["kubernetes.io/change-cause"], "first");
    let rs_spec = rs1.spec.as_ref().unwrap();
    assert_eq!(
        rs_spec.selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );
    for pod in live_pods(client, "app=web").await {
        assert_eq!(pod.labels()["pod-template-hash"], hash);
    }

    // Roll to a new image, watching that the surge (25% of 3, rounded up: 1) holds.
    set_image(client, "web", "nginx:1.26", "second").await;
    let watcher_client = client.clone();
    let peak = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..150 {
            let sets = replica_sets_of(&watcher_client, "web").await;
            peak = peak.max(sets.iter().map(rs_replicas).sum::<i32>());
            if sets.len() == 2 && rs_replicas(&sets[0]) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    wait_rolled_out(client, "web", 3).await;
    assert!(peak.await.unwrap() <= 4, "more than replicas + maxSurge");
    let sets_now = replica_sets_of(client, "web").await;
    assert_eq!(sets_now.len(), 2);
    assert_eq!(rs_replicas(&sets_now[0]), 0);
    assert_eq!(revision(&sets_now[1]), 2);
    assert_eq!(
        sets_now[1].annotations()["kubernetes.io/change-cause"],
        "second"
    );
    let pods_now = wait_for(TIMEOUT, "old pods gone", || async {
        let pods = live_pods(client, "app=web").await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    for pod in pods_now {
        let image = pod.spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(image.as_deref(), Some("nginx:1.26"));
    }

    let events = events_of(client, "web").await;
    let scaling: Vec<&String> = events
        .iter()
        .filter(|(r, _)| r == "ScalingReplicaSet")
        .map(|(_, n)| n)
        .collect();
    assert!(
        scaling.contains(&&format!("Scaled up replica set web-{hash} from 0 to 3")),
        "{scaling:?}"
    );
    assert!(
        scaling
            .iter()
            .any(|n| n.starts_with(&format!("Scaled down replica set web-{hash} from 3 to "))),
        "{scaling:?}"
    );

    // Back to the first template (what `kubectl rollout undo` writes): the first
    // ReplicaSet is reused and gets the next revision.
    set_image(client, "web", "nginx:1.25", "first").await;
    let d = wait_rolled_out(client, "web", 3).await;
    let sets_now = replica_sets_of(client, "web").await;
    assert_eq!(sets_now.len(), 2);
    let reused = sets_now
        .iter()
        .find(|rs| rs.name_any() == rs1.name_any())
        .unwrap();
    assert_eq!(revision(reused), 3);
    assert_eq!(rs_replicas(reused), 3);
    assert_eq!(
        reused
            .annotations()
            .get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
}

#[tokio::test]
async fn deployment_recreate_stops_old_pods_first() {
    let cluster = Cluster::start_with(with_nodes()).await;
    let client = &cluster.client;
    let mut d = deployment("batch", 2, "nginx:1.25");
    d.spec.as_mut().unwrap().strategy =
        Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
    deployments(client)
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    wait_rolled_out(client, "batch", 2).await;
    let old_hash = replica_sets_of(client, "batch").await[0].labels()["pod-template-hash"].clone();

    set_image(client, "batch", "nginx:1.26", "second").await;
    // From the moment a new pod exists, no old pod is running.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let pods = pods(client)
            .list(&ListParams::default().labels("app=batch"))
            .await
            .unwrap()
            .items;
        let new = pods
            .iter()
            .filter(|p| p.labels()["pod-template-hash"] != old_hash)
            .count();
        let old = pods
            .iter()
            .filter(|p| p.labels()["pod-template-hash"] == old_hash)
            .count();
        if new > 0 {
            assert_eq!(old, 0, "new pods while old ones still exist");
        }
        if new == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recreate did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_rolled_out(client, "batch", 2).await;
    let sets = replica_sets_of(client, "batch").await;
    assert_eq!(sets.iter().map(rs_replicas).collect::<Vec<_>>(), [0, 2]);
    let new_rs = &sets[1];
    assert_eq!(
        new_rs.annotations()["deployment.kubernetes.io/max-replicas"],
        "2",
        "no surge with Recreate"
    );
}

#[tokio::test]
async fn deployment_keeps_revision_history_limit() {
    let cluster = Cluster::start_with(with_nodes()).await;
    let client = &cluster.client;
    let mut d = deployment("hist", 1, "nginx:1");
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    deployments(client)
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    wait_rolled_out(client, "hist", 1).await;
    for image in ["nginx:2", "nginx:3", "nginx:4"] {
        set_image(client, "hist", image, image).await;
        wait_rolled_out(client, "hist", 1).await;
    }
    let sets = wait_for(TIMEOUT, "old revisions cleaned up", || async {
        let sets = replica_sets_of(client, "hist").await;
        (sets.len() == 2).then_some(sets)
    })
    .await;
    assert_eq!(sets.iter().map(revision).collect::<Vec<_>>(), [3, 4]);
}

#[tokio::test]
async fn paused_deployment_scales_but_does_not_roll() {
    let cluster = Cluster::start_with(with_nodes()).await;
    let client = &cluster.client;
    deployments(client)
        .create(&PostParams::default(), &deployment("hold", 2, "nginx:1"))
        .await
        .expect("create");
    wait_rolled_out(client, "hold", 2).await;
    deployments(client)
        .patch(
            "hold",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .expect("pause");
    wait_for(TIMEOUT, "paused condition", || async {
        let d = deployments(client).get("hold").await.ok()?;
        (condition_reason(&d, "Progressing").as_deref() == Some("DeploymentPaused")).then_some(())
    })
    .await;
    set_image(client, "hold", "nginx:2", "second").await;
    deployments(client)
        .patch(
            "hold",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("scale");
    wait_for(TIMEOUT, "scaled while paused", || async {
        let sets = replica_sets_of(client, "hold").await;
        (sets.len() == 1 && rs_replicas(&sets[0]) == 4).then_some(())
    })
    .await;
    wait_for(TIMEOUT, "observed", || async {
        let d = deployments(client).get("hold").await.ok()?;
        (d.status?.observed_generation == d.metadata.generation).then_some(())
    })
    .await;
    assert_eq!(
        replica_sets_of(client, "hold").await.len(),
        1,
        "rolled while paused"
    );

    deployments(client)
        .patch(
            "hold",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("resume");
    wait_rolled_out(client, "hold", 4).await;
    let sets = replica_sets_of(client, "hold").await;
    assert_eq!(sets.len(), 2);
    assert_eq!(sets.iter().map(rs_replicas).collect::<Vec<_>>(), [0, 4]);
}

#[tokio::test]
async fn stuck_rollout_times_out_and_scales_proportionally() {
    let cluster = Cluster::start_with(with_nodes()).await;
    let client = &cluster.client;
    let mut d = deployment("prop", 10, "nginx:1");
    let spec = d.spec.as_mut().unwrap();
    spec.progress_deadline_seconds = Some(2);
    spec.strategy = Some(
        serde_json::from_value(json!({
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}
        }))
        .unwrap(),
    );
    deployments(client)
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    wait_rolled_out(client, "prop", 10).await;

    // The new pods never become ready: the rollout stops at 8 old + 5 new.
    deployments(client)
        .patch(
            "prop",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {
                "metadata": {"annotations": {"hollow.kumo.dev/not-ready": "true"}}
            }}})),
        )
        .await
        .expect("bad update");
    wait_for(TIMEOUT, "rollout stuck at 8 + 5", || async {
        let sets = replica_sets_of(client, "prop").await;
        (sets.iter().map(rs_replicas).collect::<Vec<_>>() == [8, 5]).then_some(())
    })
    .await;
    let d = wait_for(TIMEOUT, "progress deadline exceeded", || async {
        let d = deployments(client).get("prop").await.ok()?;
        (condition_reason(&d, "Progressing").as_deref() == Some("ProgressDeadlineExceeded"))
            .then_some(d)
    })
    .await;
    let progressing = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.status, "False");
    assert!(
        progressing
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with("has timed out progressing.")),
        "{progressing:?}"
    );

    // Scaled mid-rollout to 15 (18 with surge): 8 * 18 / 13 → 11 old, 5 * 18 / 13 → 7 new.
    deployments(client)
        .patch(
            "prop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 15}})),
        )
        .await
        .expect("scale");
    wait_for(TIMEOUT, "proportional scale", || async {
        let sets = replica_sets_of(client, "prop").await;
        (sets.iter().map(rs_replicas).collect::<Vec<_>>() == [11, 7]).then_some(())
    })
    .await;
    let sets = replica_sets_of(client, "prop").await;
    for rs in &sets {
        assert_eq!(
            rs.annotations()["deployment.kubernetes.io/desired-replicas"],
            "15"
        );
        assert_eq!(
            rs.annotations()["deployment.kubernetes.io/max-replicas"],
            "18"
        );
    }
}
