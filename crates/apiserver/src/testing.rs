//! An in-process API server for other crates' tests: a real [`ApiServer`] on a real SQLite
//! store in a directory the test owns, with in-process kube-rs clients. No TLS, no socket.

use std::path::Path;
use std::sync::Arc;

use store::{Backend, SqliteBackend, SqliteConfig};

use crate::authn::Identity;
use crate::server::ApiServer;

/// A bootstrapped default cluster over `DIR/state.db`.
pub struct InProcess {
    /// The server.
    pub server: Arc<ApiServer>,
}

impl InProcess {
    /// Opens the store in `dir` and bootstraps the default cluster.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::open(SqliteConfig::new(
            &dir.join("state.db"),
        ))?);
        let server = Arc::new(ApiServer::new(backend));
        server
            .bootstrap(crate::request::DEFAULT_CLUSTER)
            .await
            .map_err(|e| anyhow::anyhow!("bootstrap: {}", e.message))?;
        Ok(Self { server })
    }

    /// A client of the default cluster acting as `identity`.
    pub fn client_as(&self, identity: Identity) -> kube::Client {
        crate::local::client(
            self.server.clone(),
            crate::request::DEFAULT_CLUSTER,
            identity,
        )
    }

    /// A cluster-admin client.
    pub fn client(&self) -> kube::Client {
        self.client_as(Identity::loopback())
    }
}
