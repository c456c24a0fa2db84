//! A scheduler over a real in-process API server (SQLite in a temporary directory), with
//! helpers to create Nodes and Pods directly and to wait for placements, conditions and
//! Events. Each test file includes this with `mod common;`.
#![allow(dead_code)]

use std::time::Duration;

use apiserver::authn::Identity;
use apiserver::testing::InProcess;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The API server and the scheduler; the scheduler stops when this is dropped.
pub struct Cluster {
    /// Cluster-admin client.
    pub client: Client,
    /// The API server.
    pub api: InProcess,
    scheduler: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// API server and scheduler.
    pub async fn start() -> Self {
        let mut cluster = Self::without_scheduler().await;
        cluster.start_scheduler();
        cluster
    }

    /// API server only; [`Cluster::start_scheduler`] starts the scheduler later.
    pub async fn without_scheduler() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let api = InProcess::start(dir.path()).await.expect("API server");
        Self {
            client: api.client(),
            api,
            scheduler: None,
            _dir: dir,
        }
    }

    /// Starts the scheduler.
    pub fn start_scheduler(&mut self) {
        let client = self.api.client_as(Identity::scheduler());
        self.scheduler = Some(tokio::spawn(async move {
            if let Err(e) = scheduler::run(client).await {
                panic!("scheduler: {e}");
            }
        }));
    }

    /// Creates a Ready node `name` with `cpu`, `memory` and 110 pods, plus what `extra`
    /// merges in (labels, taints, spec fields, more allocatable).
    pub async fn node(&self, name: &str, cpu: &str, memory: &str, extra: Value) -> Node {
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}]
            }
        });
        merge(&mut node, extra);
        let node: Node = serde_json::from_value(node).expect("node");
        // Nodes keep the status they are created with, as a registering kubelet's do.
        let api: Api<Node> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &node)
            .await
            .expect("create node")
    }

    /// Creates pod `name` in `default` with one container requesting `cpu`/`memory`
    /// (either may be empty), plus what `extra` merges in.
    pub async fn pod(&self, name: &str, cpu: &str, memory: &str, extra: Value) -> Pod {
        let mut requests = serde_json::Map::new();
        if !cpu.is_empty() {
            requests.insert("cpu".into(), json!(cpu));
        }
        if !memory.is_empty() {
            requests.insert("memory".into(), json!(memory));
        }
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": requests}}]}
        });
        merge(&mut pod, extra);
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Pods in `default`.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Waits until pod `name` is bound and returns its node.
    pub async fn bound(&self, name: &str) -> String {
        let pods = self.pods();
        wait_for(
            Duration::from_secs(20),
            &format!("pod {name} bound"),
            || async {
                let pod = pods.get(name).await.ok()?;
                pod.spec?.node_name.filter(|n| !n.is_empty())
            },
        )
        .await
    }

    /// Waits until pod `name` has the PodScheduled=False condition with reason
    /// Unschedulable and returns its message.
    pub async fn unschedulable(&self, name: &str) -> String {
        let pods = self.pods();
        wait_for(
            Duration::from_secs(20),
            &format!("pod {name} unschedulable"),
            || async {
                let pod = pods.get(name).await.ok()?;
                let conditions = pod.status?.conditions?;
                let c = conditions.into_iter().find(|c| c.type_ == "PodScheduled")?;
                (c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                    .then(|| c.message.unwrap_or_default())
            },
        )
        .await
    }

    /// The node pod `name` is on now (`None` while pending).
    pub async fn node_of(&self, name: &str) -> Option<String> {
        self.pods()
            .get(name)
            .await
            .ok()?
            .spec?
            .node_name
            .filter(|n| !n.is_empty())
    }

    /// Waits for an Event with `reason` about pod `name` and returns its note.
    pub async fn event(&self, name: &str, reason: &str) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        wait_for(
            Duration::from_secs(20),
            &format!("{reason} event for {name}"),
            || async {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find_map(|e| {
                    let about = e.regarding.as_ref()?.name.as_deref()? == name;
                    (about && e.reason.as_deref() == Some(reason))
                        .then(|| e.note.unwrap_or_default())
                })
            },
        )
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(task) = &self.scheduler {
            task.abort();
        }
    }
}

/// Merges `patch` into `target` (objects recursively, everything else replaced).
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
