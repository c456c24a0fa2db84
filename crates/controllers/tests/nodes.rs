//! Node lifecycle and taint eviction against a real API server: fake kubelets renew their
//! Leases (or stop), and the loop, with short grace periods, turns silent nodes Unknown,
//! taints them, marks their pods not Ready and evicts the pods that do not tolerate it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apiserver::authn::Identity;
use apiserver::testing::InProcess;
use controllers::node_lifecycle::{NodeLifecycleConfig, run_with};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// An API server and the node lifecycle loop alone, with test timings.
struct Setup {
    client: Client,
    _api: InProcess,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let api = InProcess::start(dir.path()).await.unwrap();
    let ctx = controllers::Context {
        client: api.client_as(Identity::controller_manager()),
        cluster: "default".into(),
        root_ca_pem: "".into(),
        pod_network: Default::default(),
    };
    let config = NodeLifecycleConfig {
        node_monitor_period: Duration::from_millis(200),
        node_monitor_grace_period: Duration::from_secs(2),
        node_startup_grace_period: Duration::from_secs(3),
        node_eviction_rate: 1000.0,
        ..Default::default()
    };
    let task = tokio::spawn(async move {
        let _ = run_with(ctx, config).await;
    });
    Setup {
        client: api.client(),
        _api: api,
        tasks: vec![task],
        _dir: dir,
    }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// A fake kubelet: registers a Ready node and renews its Lease every 300 ms while `alive`.
async fn kubelet(setup: &mut Setup, name: &str, alive: Arc<AtomicBool>) {
    let nodes: Api<Node> = Api::all(setup.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    post_ready(&setup.client, name, "True").await;
    let leases: Api<Lease> = Api::namespaced(setup.client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": MicroTime(now())},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let name = name.to_owned();
    setup.tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if !alive.load(Ordering::SeqCst) {
                continue;
            }
            let patch = json!({"spec": {"renewTime": MicroTime(now())}});
            let _ = leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await;
        }
    }));
}

/// Posts the node's Ready condition as a kubelet does.
async fn post_ready(client: &Client, name: &str, status: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node = nodes.get(name).await.unwrap();
    let reason = if status == "True" {
        "KubeletReady"
    } else {
        "KubeletNotReady"
    };
    let conditions = json!([
        {"type": "Ready", "status": status, "reason": reason, "message": "kubelet says so",
         "lastHeartbeatTime": Time(now()), "lastTransitionTime": Time(now())},
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
         "lastHeartbeatTime": Time(now()), "lastTransitionTime": Time(now())},
    ]);
    node.status.get_or_insert_default().conditions =
        Some(serde_json::from_value(conditions).unwrap());
    nodes
        .replace_status(name, &PostParams::default(), &node)
        .await
        .unwrap();
}

/// A Running, Ready pod bound to `node`, with extra `tolerations`.
async fn pod_on(client: &Client, name: &str, node: &str, tolerations: serde_json::Value) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                 "tolerations": tolerations},
    }))
    .unwrap();
    let mut pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    pod.status = Some(
        serde_json::from_value(json!({
            "phase": "Running",
            "podIP": "10.1.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": Time(now())}],
        }))
        .unwrap(),
    );
    pods.replace_status(name, &PostParams::default(), &pod)
        .await
        .unwrap()
}

fn condition(node: &Node, type_: &str) -> Option<(String, Option<String>)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn taint_keys(node: &Node) -> Vec<String> {
    let mut keys: Vec<String> = taints(node)
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    keys.sort();
    keys
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout`.
async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn being_deleted(pods: &Api<Pod>, name: &str) -> bool {
    match pods.get_opt(name).await.unwrap() {
        None => true,
        Some(p) => p.metadata.deletion_timestamp.is_some(),
    }
}

#[tokio::test]
async fn silent_node_becomes_unknown_is_tainted_and_its_pods_are_evicted() {
    let mut setup = setup().await;
    let renewing = Arc::new(AtomicBool::new(true));
    kubelet(&mut setup, "n-dead", renewing.clone()).await;
    kubelet(&mut setup, "n-live", Arc::new(AtomicBool::new(true))).await;
    let client = setup.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let unreachable = |seconds: Option<i64>| {
        json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": seconds}])
    };
    pod_on(&client, "defaulted", "n-dead", json!([])).await;
    pod_on(&client, "short", "n-dead", unreachable(Some(2))).await;
    pod_on(&client, "forever", "n-dead", unreachable(None)).await;
    pod_on(&client, "elsewhere", "n-live", json!([])).await;
    // The defaulting admission gave the pod five minutes.
    let defaulted = pods.get("defaulted").await.unwrap();
    let seconds: Vec<Option<i64>> = defaulted
        .spec
        .unwrap()
        .tolerations
        .unwrap()
        .iter()
        .map(|t| t.toleration_seconds)
        .collect();
    assert_eq!(seconds, [Some(300), Some(300)]);

    // Healthy nodes stay untouched for longer than the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live = nodes.get("n-dead").await.unwrap();
    assert_eq!(condition(&live, "Ready").unwrap().0, "True");
    assert!(taints(&live).is_empty());

    renewing.store(false, Ordering::SeqCst);
    let stopped = tokio::time::Instant::now();
    let node = wait_for(Duration::from_secs(6), "node Unknown and tainted", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("n-dead").await.ok()?;
            (taints(&n).len() == 2).then_some(n)
        }
    })
    .await;
    // The grace period runs from the last renewal seen, which is at most one renewal
    // interval (300 ms) and one monitor period (200 ms) before the kubelet stopped.
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "not before the grace period: {:?}",
        stopped.elapsed()
    );
    for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        let (status, reason) = condition(&node, type_).unwrap();
        assert_eq!(status, "Unknown", "{type_}");
        let want = if type_ == "DiskPressure" || type_ == "PIDPressure" {
            "NodeStatusNeverUpdated"
        } else {
            "NodeStatusUnknown"
        };
        assert_eq!(reason.as_deref(), Some(want), "{type_}");
    }
    assert_eq!(
        taint_keys(&node),
        [
            "node.kubernetes.io/unreachable:NoExecute",
            "node.kubernetes.io/unreachable:NoSchedule"
        ]
    );
    let no_execute = taints(&node)
        .into_iter()
        .find(|t| t.effect == "NoExecute")
        .unwrap();
    let added = no_execute.time_added.expect("timeAdded").0;
    // The other node is fine.
    let live = nodes.get("n-live").await.unwrap();
    assert_eq!(condition(&live, "Ready").unwrap().0, "True");
    assert!(taints(&live).is_empty());

    // Pods on the silent node are no longer Ready.
    wait_for(Duration::from_secs(3), "pods marked not ready", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("forever").await.ok()?;
            (!controllers::pods::is_ready(&p)).then_some(())
        }
    })
    .await;
    assert!(controllers::pods::is_ready(
        &pods.get("elsewhere").await.unwrap()
    ));

    // The pod tolerating for 2 s goes 2 s after the taint was added; the others stay.
    wait_for(
        Duration::from_secs(5),
        "short-toleration pod evicted",
        || {
            let pods = pods.clone();
            async move { being_deleted(&pods, "short").await.then_some(()) }
        },
    )
    .await;
    assert!(now() >= added + jiff::SignedDuration::from_secs(2));
    let short = pods.get_opt("short").await.unwrap();
    if let Some(short) = short {
        let target = short
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "DisruptionTarget")
            .expect("DisruptionTarget condition");
        assert_eq!(target.reason.as_deref(), Some("DeletionByTaintManager"));
    }
    assert!(!being_deleted(&pods, "forever").await);
    assert!(!being_deleted(&pods, "defaulted").await);
    assert!(!being_deleted(&pods, "elsewhere").await);

    // The kubelet comes back and posts Ready: the taints go.
    renewing.store(true, Ordering::SeqCst);
    post_ready(&client, "n-dead", "True").await;
    wait_for(Duration::from_secs(3), "taints removed", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("n-dead").await.ok()?;
            taints(&n).is_empty().then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn not_ready_and_user_taints() {
    let mut setup = setup().await;
    kubelet(&mut setup, "n-1", Arc::new(AtomicBool::new(true))).await;
    kubelet(&mut setup, "n-2", Arc::new(AtomicBool::new(true))).await;
    let client = setup.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // A kubelet reporting NotReady: not-ready taints, pods left Ready (the kubelet owns them).
    pod_on(&client, "on-1", "n-1", json!([])).await;
    post_ready(&client, "n-1", "False").await;
    let node = wait_for(Duration::from_secs(3), "not-ready taints", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("n-1").await.ok()?;
            (taints(&n).len() == 2).then_some(n)
        }
    })
    .await;
    assert_eq!(
        taint_keys(&node),
        [
            "node.kubernetes.io/not-ready:NoExecute",
            "node.kubernetes.io/not-ready:NoSchedule"
        ]
    );
    assert!(controllers::pods::is_ready(
        &pods.get("on-1").await.unwrap()
    ));
    post_ready(&client, "n-1", "True").await;
    wait_for(Duration::from_secs(3), "not-ready taints removed", || {
        let nodes = nodes.clone();
        async move {
            taints(&nodes.get("n-1").await.ok()?)
                .is_empty()
                .then_some(())
        }
    })
    .await;

    // Cordoning adds the unschedulable taint.
    nodes
        .patch(
            "n-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(3), "unschedulable taint", || {
        let nodes = nodes.clone();
        async move {
            let keys = taint_keys(&nodes.get("n-2").await.ok()?);
            (keys == ["node.kubernetes.io/unschedulable:NoSchedule"]).then_some(())
        }
    })
    .await;

    // A NoExecute taint of the user's: pods not tolerating it go at once, pods tolerating
    // it without a time stay.
    pod_on(&client, "intolerant", "n-2", json!([])).await;
    pod_on(
        &client,
        "tolerant",
        "n-2",
        json!([{"key": "maintenance", "operator": "Exists", "effect": "NoExecute"}]),
    )
    .await;
    let mut node = nodes.get("n-2").await.unwrap();
    let mut node_taints = taints(&node);
    node_taints.push(Taint {
        key: "maintenance".into(),
        value: Some("yes".into()),
        effect: "NoExecute".into(),
        time_added: None,
    });
    node.spec.get_or_insert_default().taints = Some(node_taints);
    nodes
        .replace("n-2", &PostParams::default(), &node)
        .await
        .unwrap();
    wait_for(Duration::from_secs(3), "intolerant pod evicted", || {
        let pods = pods.clone();
        async move { being_deleted(&pods, "intolerant").await.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!being_deleted(&pods, "tolerant").await);
    // The user's taint is left alone.
    assert!(
        taint_keys(&nodes.get("n-2").await.unwrap()).contains(&"maintenance:NoExecute".to_owned())
    );
}

#[tokio::test]
async fn every_node_down_withholds_no_execute_taints() {
    let mut setup = setup().await;
    let a = Arc::new(AtomicBool::new(true));
    let b = Arc::new(AtomicBool::new(true));
    kubelet(&mut setup, "n-a", a.clone()).await;
    kubelet(&mut setup, "n-b", b.clone()).await;
    let client = setup.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pod_on(&client, "p", "n-a", json!([])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.store(false, Ordering::SeqCst);
    b.store(false, Ordering::SeqCst);
    for name in ["n-a", "n-b"] {
        wait_for(Duration::from_secs(6), "node Unknown", || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get(name).await.ok()?;
                (condition(&n, "Ready")?.0 == "Unknown"
                    && taint_keys(&n) == ["node.kubernetes.io/unreachable:NoSchedule"])
                .then_some(())
            }
        })
        .await;
    }
    // No NoExecute taint follows while every node is down, so nothing is evicted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in ["n-a", "n-b"] {
        assert_eq!(
            taint_keys(&nodes.get(name).await.unwrap()),
            ["node.kubernetes.io/unreachable:NoSchedule"]
        );
    }
    assert!(!being_deleted(&pods, "p").await);
}
