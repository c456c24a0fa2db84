//! Connections to node agents. An agent dials out to the server and upgrades one HTTPS
//! request to a yamux session, so nodes behind NAT or a firewall need no inbound kubelet
//! port. For each log, exec, attach or port-forward request the server opens a stream on
//! that session and speaks plain HTTP/1.1 (with upgrades) to the agent over it, as
//! kube-apiserver speaks HTTPS to kubelet.
//!
//! A tunnel lives on the server the agent dialled. With several servers per cluster, the
//! others will have to reach it through that server; today one server serves a cluster.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apimachinery::status::ApiError;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tokio_yamux::{Control, StreamHandle};

/// The `Upgrade` protocol of the tunnel request.
pub const UPGRADE_PROTOCOL: &str = "kumo-node-tunnel/1";

/// yamux settings (the agent uses the same): a keep-alive ping notices a dead peer; the
/// stream window bounds what one slow reader can buffer.
fn yamux_config() -> tokio_yamux::Config {
    tokio_yamux::Config {
        keepalive_interval: Duration::from_secs(15),
        connection_write_timeout: Duration::from_secs(20),
        max_stream_window_size: 1024 * 1024,
        ..Default::default()
    }
}

/// The connected agents of one cluster, by node name.
#[derive(Default)]
pub struct Tunnels {
    nodes: Mutex<HashMap<String, Tunnel>>,
    generation: AtomicU64,
}

struct Tunnel {
    control: Control,
    generation: u64,
}

impl Tunnels {
    /// Serves the tunnel of `node` on an upgraded connection until it ends. A newer tunnel
    /// of the same node replaces an older one (an agent that reconnected).
    pub async fn serve(&self, node: &str, connection: hyper::upgrade::Upgraded) {
        let mut session =
            tokio_yamux::Session::new_client(TokioIo::new(connection), yamux_config());
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            node.to_owned(),
            Tunnel {
                control: session.control(),
                generation,
            },
        );
        tracing::info!(%node, "node agent connected its tunnel");
        // Polling the session drives its IO; the agent opens no streams of its own.
        while let Some(stream) = session.next().await {
            if let Err(e) = stream {
                tracing::debug!(%node, error = %e, "node tunnel failed");
                break;
            }
        }
        let mut nodes = self.lock();
        if nodes.get(node).is_some_and(|t| t.generation == generation) {
            nodes.remove(node);
        }
        tracing::info!(%node, "node agent tunnel closed");
    }

    /// A new stream to `node`'s agent.
    pub async fn open(&self, node: &str) -> Result<StreamHandle, ApiError> {
        let control = self.lock().get(node).map(|t| t.control.clone());
        let Some(mut control) = control else {
            return Err(unreachable(node, "its agent is not connected"));
        };
        match tokio::time::timeout(Duration::from_secs(10), control.open_stream()).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(unreachable(node, &e.to_string())),
            Err(_) => Err(unreachable(node, "opening a stream timed out")),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tunnel>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// 503: the agent of `node` cannot be reached, and why.
pub(crate) fn unreachable(node: &str, why: &str) -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        format!("cannot reach the agent of node {node:?}: {why}"),
    )
}
