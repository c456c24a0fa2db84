//! A whole cluster in the test process: a real API server on SQLite in a temporary
//! directory, the controllers (and optionally the scheduler and hollow nodes) on in-process
//! clients. Each test file includes this with `mod common;`.
#![allow(dead_code)]

use std::time::Duration;

use apiserver::authn::Identity;
use apiserver::testing::InProcess;
use kube::Client;
use tokio::task::JoinHandle;

/// A running in-process cluster; everything stops when it is dropped.
pub struct Cluster {
    /// Cluster-admin client.
    pub client: Client,
    /// The API server.
    pub api: InProcess,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// What to run besides the API server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Run the scheduler.
    pub scheduler: bool,
    /// Run this many hollow nodes named `hollow-0`, `hollow-1`, …
    pub hollow_nodes: usize,
}

impl Cluster {
    /// API server and controllers only.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// API server, controllers, and what `options` asks for.
    pub async fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let api = InProcess::start(dir.path()).await.expect("API server");
        let client = api.client();
        let mut tasks = Vec::new();
        let ctx = controllers::Context {
            client: api.client_as(Identity::controller_manager()),
            cluster: "default".into(),
            root_ca_pem: "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n".into(),
            pod_network: Default::default(),
        };
        tasks.push(tokio::spawn(async move {
            let _ = controllers::run(ctx).await;
        }));
        if options.scheduler {
            let client = api.client_as(Identity::scheduler());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = scheduler::run(client).await {
                    panic!("scheduler: {e}");
                }
            }));
        }
        if options.hollow_nodes > 0 {
            let config = hollow::Config {
                count: options.hollow_nodes,
                ..hollow::Config::default()
            };
            let client = api.client_as(Identity::loopback());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = hollow::run(client, config).await {
                    panic!("hollow nodes: {e}");
                }
            }));
        }
        Self {
            client,
            api,
            tasks,
            _dir: dir,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
