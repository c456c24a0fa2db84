//! The StatefulSet and DaemonSet loops on an in-process cluster with hollow nodes and the
//! scheduler.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, Options, wait_for};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

async fn cluster(nodes: usize) -> Cluster {
    let cluster = Cluster::start_with(Options {
        scheduler: true,
        hollow_nodes: nodes,
    })
    .await;
    // Start once every hollow node is registered, so no pod waits for a node to appear.
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    wait_for(Duration::from_secs(10), "hollow nodes", || async {
        let n = nodes_api.list(&Default::default()).await.ok()?.items.len();
        (n == nodes).then_some(())
    })
    .await;
    cluster
}

fn statefulset(name: &str, replicas: i32, extra: Value) -> StatefulSet {
    let mut set = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": "svc",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    });
    merge(&mut set["spec"], extra);
    serde_json::from_value(set).expect("statefulset")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

async fn pods_of(client: &kube::Client, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut pods = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items;
    pods.sort_by_key(|p| p.metadata.name.clone());
    pods
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

async fn wait_ready(sets: &Api<StatefulSet>, name: &str, replicas: i32) -> StatefulSet {
    wait_for(
        Duration::from_secs(20),
        &format!("{name} ready with {replicas}"),
        || async {
            let set = sets.get(name).await.ok()?;
            let status = set.status.clone()?;
            let done = status.replicas == replicas
                && status.ready_replicas == Some(replicas)
                && status.updated_replicas == Some(replicas)
                && status.current_revision == status.update_revision
                && status.observed_generation == set.metadata.generation;
            done.then_some(set)
        },
    )
    .await
}

/// Records the order in which pods of `app` are deleted.
fn record_deletions(client: &kube::Client, app: &str) -> Arc<Mutex<Vec<String>>> {
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let config = watcher::Config::default().labels(&format!("app={app}"));
    let sink = deleted.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Delete(pod) = event {
                sink.lock()
                    .unwrap()
                    .push(pod.metadata.name.unwrap_or_default());
            }
        }
    });
    deleted
}

#[tokio::test]
async fn statefulset_scales_up_and_down_in_order() {
    let cluster = cluster(2).await;
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let claims = json!({"volumeClaimTemplates": [{
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }]});
    sets.create(&PostParams::default(), &statefulset("web", 3, claims))
        .await
        .unwrap();
    let set = wait_ready(&sets, "web", 3).await;
    let pods = pods_of(&client, "web").await;
    assert_eq!(names(&pods), ["web-0", "web-1", "web-2"]);
    let revision = set
        .status
        .as_ref()
        .unwrap()
        .update_revision
        .clone()
        .unwrap();
    assert!(revision.starts_with("web-"), "{revision}");
    for (ordinal, pod) in pods.iter().enumerate() {
        let name = format!("web-{ordinal}");
        assert_eq!(
            label(pod, "statefulset.kubernetes.io/pod-name"),
            Some(name.as_str())
        );
        assert_eq!(
            label(pod, "apps.kubernetes.io/pod-index"),
            Some(ordinal.to_string().as_str())
        );
        assert_eq!(
            label(pod, "controller-revision-hash"),
            Some(revision.as_str())
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("svc"));
        let volume = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(
            volume.persistent_volume_claim.as_ref().unwrap().claim_name,
            format!("data-web-{ordinal}")
        );
        assert!(spec.node_name.is_some(), "{name} scheduled");
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    for ordinal in 0..3 {
        let pvc = pvcs.get(&format!("data-web-{ordinal}")).await.unwrap();
        assert_eq!(pvc.metadata.labels.unwrap()["app"], "web");
        assert!(
            pvc.metadata.owner_references.is_none_or(|r| r.is_empty()),
            "retained claims are not owned"
        );
    }
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let history = revisions.get(&revision).await.unwrap();
    assert_eq!(history.revision, 1);

    let deleted = record_deletions(&client, "web");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    wait_ready(&sets, "web", 1).await;
    wait_for(Duration::from_secs(10), "pods removed", || async {
        (names(&pods_of(&client, "web").await) == ["web-0"]).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(5), "deletions seen", || async {
        (deleted.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(*deleted.lock().unwrap(), ["web-2", "web-1"]);
    // Claims stay (whenScaled: Retain).
    assert!(pvcs.get_opt("data-web-2").await.unwrap().is_some());
}

#[tokio::test]
async fn ordered_ready_waits_for_readiness_and_parallel_does_not() {
    let cluster = cluster(2).await;
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let unready =
        json!({"template": {"metadata": {"annotations": {"hollow.kumo.dev/not-ready": "true"}}}});
    sets.create(
        &PostParams::default(),
        &statefulset("ordered", 3, unready.clone()),
    )
    .await
    .unwrap();
    let mut parallel = unready;
    merge(&mut parallel, json!({"podManagementPolicy": "Parallel"}));
    sets.create(&PostParams::default(), &statefulset("par", 3, parallel))
        .await
        .unwrap();
    wait_for(Duration::from_secs(10), "parallel pods", || async {
        (pods_of(&client, "par").await.len() == 3).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(10), "ordered pod running", || async {
        let pods = pods_of(&client, "ordered").await;
        pods.first()
            .and_then(|p| p.status.as_ref()?.phase.clone())
            .filter(|p| p == "Running")
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(names(&pods_of(&client, "ordered").await), ["ordered-0"]);
    let status = sets.get("ordered").await.unwrap().status.unwrap();
    assert_eq!(
        (status.replicas, status.ready_replicas.unwrap_or(0)),
        (1, 0)
    );
    let status = sets.get("par").await.unwrap().status.unwrap();
    assert_eq!(status.replicas, 3);
}

#[tokio::test]
async fn rolling_update_respects_the_partition() {
    let cluster = cluster(2).await;
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let strategy =
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
    sets.create(&PostParams::default(), &statefulset("roll", 3, strategy))
        .await
        .unwrap();
    let before = wait_ready(&sets, "roll", 3).await;
    let old = before.status.unwrap().current_revision.unwrap();
    let deleted = record_deletions(&client, "roll");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sets.patch(
        "roll",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"metadata": {"labels": {"version": "2"}}}}})),
    )
    .await
    .unwrap();
    let set = wait_for(Duration::from_secs(20), "partial rollout", || async {
        let set = sets.get("roll").await.ok()?;
        let status = set.status.clone()?;
        (status.updated_replicas == Some(2) && status.ready_replicas == Some(3)).then_some(set)
    })
    .await;
    let status = set.status.unwrap();
    let new = status.update_revision.clone().unwrap();
    assert_ne!(new, old);
    assert_eq!(status.current_revision.as_deref(), Some(old.as_str()));
    let pods = pods_of(&client, "roll").await;
    let revisions: Vec<_> = pods
        .iter()
        .map(|p| label(p, "controller-revision-hash").unwrap().to_owned())
        .collect();
    assert_eq!(revisions, [old.clone(), new.clone(), new.clone()]);
    assert_eq!(
        deleted.lock().unwrap()[..2],
        ["roll-2".to_owned(), "roll-1".to_owned()]
    );
    let history: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    assert_eq!(history.get(&new).await.unwrap().revision, 2);
    // Lowering the partition finishes the rollout; the update becomes current.
    sets.patch(
        "roll",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    let done = wait_ready(&sets, "roll", 3).await;
    assert_eq!(
        done.status.unwrap().current_revision.as_deref(),
        Some(new.as_str())
    );
    let pods = pods_of(&client, "roll").await;
    assert!(pods.iter().all(|p| label(p, "version") == Some("2")));
}

#[tokio::test]
async fn claim_retention_policy_owns_claims() {
    let cluster = cluster(1).await;
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let extra = json!({
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
        "volumeClaimTemplates": [{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }],
    });
    sets.create(&PostParams::default(), &statefulset("db", 2, extra))
        .await
        .unwrap();
    let set = wait_ready(&sets, "db", 2).await;
    let set_uid = set.metadata.uid.clone().unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let owners = |pvc: PersistentVolumeClaim| pvc.metadata.owner_references.unwrap_or_default();
    for name in ["data-db-0", "data-db-1"] {
        let refs = owners(pvcs.get(name).await.unwrap());
        assert!(
            refs.iter()
                .any(|r| r.uid == set_uid && r.controller != Some(true))
        );
    }
    // Scaling down hands the condemned pod's claim to the pod, before the pod goes.
    let handed_over = Arc::new(Mutex::new(false));
    let flag = handed_over.clone();
    let watch_pvcs = pvcs.clone();
    tokio::spawn(async move {
        let mut events = watcher(watch_pvcs, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(pvc) | watcher::Event::InitApply(pvc) = event {
                let refs = pvc.metadata.owner_references.unwrap_or_default();
                if pvc.metadata.name.as_deref() == Some("data-db-1")
                    && refs.iter().any(|r| r.kind == "Pod" && r.name == "db-1")
                {
                    *flag.lock().unwrap() = true;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    // The claim is handed over (and then collected with the pod, when the garbage
    // collector runs): watch for the version that names the pod.
    wait_for(
        Duration::from_secs(10),
        "claim owned by the pod",
        || async { (*handed_over.lock().unwrap()).then_some(()) },
    )
    .await;
    let refs = owners(pvcs.get("data-db-0").await.unwrap());
    assert!(!refs.iter().any(|r| r.kind == "Pod"));
}

fn daemonset(name: &str, extra: Value) -> DaemonSet {
    let mut ds = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    });
    merge(&mut ds["spec"], extra);
    serde_json::from_value(ds).expect("daemonset")
}

async fn wait_daemon(api: &Api<DaemonSet>, name: &str, desired: i32) -> DaemonSet {
    wait_for(
        Duration::from_secs(20),
        &format!("daemonset {name} on {desired} nodes"),
        || async {
            let ds = api.get(name).await.ok()?;
            let s = ds.status.clone()?;
            let done = s.desired_number_scheduled == desired
                && s.current_number_scheduled == desired
                && s.number_ready == desired
                && s.number_available == Some(desired)
                && s.updated_number_scheduled == Some(desired)
                && s.number_misscheduled == 0
                && s.observed_generation == ds.metadata.generation;
            done.then_some(ds)
        },
    )
    .await
}

#[tokio::test]
async fn daemonset_runs_one_pod_per_node_and_rolls() {
    let cluster = cluster(3).await;
    let client = cluster.client.clone();
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    sets.create(&PostParams::default(), &daemonset("agent", json!({})))
        .await
        .unwrap();
    wait_daemon(&sets, "agent", 3).await;
    let pods = pods_of(&client, "agent").await;
    let mut nodes: Vec<_> = pods
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["hollow-0", "hollow-1", "hollow-2"]);
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        let term = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        let field = &term.match_fields.as_ref().unwrap()[0];
        assert_eq!(field.key, "metadata.name");
        assert_eq!(
            field.values.as_ref().unwrap(),
            &[spec.node_name.clone().unwrap()]
        );
        let tolerations = spec.tolerations.as_ref().unwrap();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/unschedulable",
        ] {
            assert!(
                tolerations.iter().any(|t| t.key.as_deref() == Some(key)),
                "{key}"
            );
        }
        assert!(label(pod, "controller-revision-hash").is_some());
    }

    // A template change rolls through every node, one unavailable at a time.
    let old_hash = label(&pods[0], "controller-revision-hash")
        .unwrap()
        .to_owned();
    sets.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"metadata": {"labels": {"version": "2"}}}}})),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(25), "rollout", || async {
        let pods = pods_of(&client, "agent").await;
        let done = pods.len() == 3
            && pods.iter().all(|p| {
                label(p, "version") == Some("2")
                    && p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
        done.then_some(())
    })
    .await;
    let ds = wait_daemon(&sets, "agent", 3).await;
    assert_eq!(ds.status.unwrap().number_unavailable, None);
    let pods = pods_of(&client, "agent").await;
    assert!(
        pods.iter()
            .all(|p| label(p, "controller-revision-hash") != Some(&old_hash))
    );
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let history = revisions
        .list(&ListParams::default().labels("app=agent"))
        .await
        .unwrap();
    assert_eq!(history.items.len(), 2);
    let mut numbers: Vec<_> = history.items.iter().map(|r| r.revision).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2]);

    // A NoExecute taint the pods do not tolerate removes the pod from that node.
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            "hollow-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]}})),
        )
        .await
        .unwrap();
    wait_daemon(&sets, "agent", 2).await;
    wait_for(
        Duration::from_secs(10),
        "pod leaves the tainted node",
        || async {
            let pods = pods_of(&client, "agent").await;
            let on_tainted = pods
                .iter()
                .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("hollow-2"));
            (!on_tainted && pods.len() == 2).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn daemonset_node_selector_and_surge() {
    let cluster = cluster(3).await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(Duration::from_secs(10), "nodes registered", || async {
        (nodes.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await;
    for node in ["hollow-0", "hollow-1"] {
        nodes
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"role": "edge"}}})),
            )
            .await
            .unwrap();
    }
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let extra = json!({
        "template": {"spec": {"nodeSelector": {"role": "edge"}}},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
    });
    sets.create(&PostParams::default(), &daemonset("edge", extra))
        .await
        .unwrap();
    wait_daemon(&sets, "edge", 2).await;
    let pods = pods_of(&client, "edge").await;
    let mut placed: Vec<_> = pods
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    placed.sort();
    assert_eq!(placed, ["hollow-0", "hollow-1"]);
    // With surge, the new pod runs next to the old one before the old one goes: the number
    // of available daemons never drops. A watch (not polling, which can miss a short
    // overlap) counts the pods alive at once.
    let saw_surge = Arc::new(AtomicBool::new(false));
    let observer = {
        let saw = saw_surge.clone();
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        tokio::spawn(async move {
            let mut alive = std::collections::HashMap::new();
            let mut events = watcher(api, watcher::Config::default().labels("app=edge")).boxed();
            while let Some(Ok(event)) = events.next().await {
                match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        let live = p.metadata.deletion_timestamp.is_none();
                        alive.insert(p.metadata.name.clone().unwrap_or_default(), live);
                    }
                    watcher::Event::Delete(p) => {
                        alive.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                    _ => {}
                }
                if alive.values().filter(|live| **live).count() > 2 {
                    saw.store(true, Ordering::SeqCst);
                }
            }
        })
    };
    // Let the watch start before the update.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sets.patch(
        "edge",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"metadata": {"labels": {"version": "2"}}}}})),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(25), "surge rollout", || {
        let client = client.clone();
        let sets = sets.clone();
        async move {
            let pods = pods_of(&client, "edge").await;
            let running = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count();
            let status = sets.get("edge").await.ok()?.status?;
            let done = status.updated_number_scheduled == Some(2)
                && status.number_available == Some(2)
                && running == 2
                && pods.iter().all(|p| label(p, "version") == Some("2"));
            done.then_some(())
        }
    })
    .await;
    observer.abort();
    assert!(
        saw_surge.load(Ordering::SeqCst),
        "a surge pod ran next to an old one"
    );
    // A node losing the label loses its daemon.
    nodes
        .patch(
            "hollow-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": null}}})),
        )
        .await
        .unwrap();
    wait_daemon(&sets, "edge", 1).await;
}
