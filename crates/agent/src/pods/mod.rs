//! The pods of this node: a watch on the pods bound to it feeds one worker per pod (as
//! kubelet's pod workers), and runtime objects of pods that no longer exist are removed.

pub mod env;
pub mod probes;
pub mod pull_secrets;
pub mod spec;
pub mod status;
pub mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::Shared;

/// Why a pod could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod's spec refers to something missing or invalid (CreateContainerConfigError).
    #[error("{0}")]
    Config(String),
    /// An API call failed.
    #[error("API: {0}")]
    Api(#[source] kube::Error),
    /// A CRI call failed.
    #[error(transparent)]
    Cri(#[from] crate::cri::Error),
    /// A file operation on the node failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// What the per-pod helpers need to resolve a pod's references.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub client: &'a kube::Client,
    pub node_name: &'a str,
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
    pub node_cpu_millis: i64,
    pub node_memory_bytes: i64,
    pub node_storage_bytes: i64,
}

/// What a worker is told: the pod's newest version, or that its object is gone.
#[derive(Clone, Debug)]
enum Update {
    Pod(Arc<Pod>),
    Gone,
}

struct WorkerHandle {
    updates: watch::Sender<Update>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the pods bound to the node until the future is dropped.
pub async fn run(shared: Arc<Shared>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", shared.config.node_name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        workers.retain(|_, w| !w.task.is_finished());
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(pod) => {
                listed.insert(pod.metadata.uid.clone().unwrap_or_default());
                dispatch(&shared, &mut workers, pod);
            }
            watcher::Event::Apply(pod) => dispatch(&shared, &mut workers, pod),
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(worker) = workers.get(&uid) {
                    let _ = worker.updates.send(Update::Gone);
                } else {
                    // Not running here (or already finished): clean up what is left.
                    let shared = shared.clone();
                    tokio::spawn(async move { worker::remove_pod(&shared, &uid).await });
                }
            }
            watcher::Event::InitDone => {
                for (uid, worker) in &workers {
                    if !listed.contains(uid) {
                        let _ = worker.updates.send(Update::Gone);
                    }
                }
                // Inline, so no pod dispatched meanwhile is mistaken for an orphan.
                let known: HashSet<String> = listed.iter().chain(workers.keys()).cloned().collect();
                if let Err(e) = remove_orphans(&shared, &known).await {
                    tracing::warn!(error = %e, "removing sandboxes of deleted pods");
                }
            }
        }
    }
    Ok(())
}

fn dispatch(shared: &Arc<Shared>, workers: &mut HashMap<String, WorkerHandle>, pod: Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod = Arc::new(pod);
    if let Some(worker) = workers.get(&uid) {
        let _ = worker.updates.send(Update::Pod(pod));
        return;
    }
    let (updates, receiver) = watch::channel(Update::Pod(pod.clone()));
    let task = tokio::spawn(worker::Worker::new(shared.clone(), pod).run(receiver));
    workers.insert(uid, WorkerHandle { updates, task });
}

/// Stops and removes the sandboxes (and pod directories) of pods that no longer exist:
/// pods deleted while the agent was down.
async fn remove_orphans(shared: &Shared, known: &HashSet<String>) -> anyhow::Result<()> {
    let sandboxes = shared
        .cri
        .sandboxes(&[(spec::NODE_NAME, &shared.config.node_name)])
        .await?;
    let mut orphans: HashSet<String> = sandboxes
        .iter()
        .filter_map(|s| s.labels.get(spec::POD_UID).cloned())
        .filter(|uid| !known.contains(uid))
        .collect();
    // Directories of pods whose sandboxes are gone already.
    if let Ok(entries) = std::fs::read_dir(shared.config.data_dir.join("pods")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let uid = name.rsplit('_').next().unwrap_or(&name).to_owned();
            if !known.contains(&uid) {
                orphans.insert(uid);
            }
        }
    }
    for uid in orphans {
        tracing::info!(%uid, "removing the runtime objects of a deleted pod");
        worker::remove_pod(shared, &uid).await;
    }
    Ok(())
}
