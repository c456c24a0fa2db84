//! The agent's tunnel to the API server. The agent dials out and upgrades one request to a
//! yamux session (see `apiserver::node_tunnel`); the server opens a stream on it for each
//! log, exec, attach or port-forward request, and the agent serves HTTP/1.1 on that stream
//! as kubelet serves its API. No inbound port on the node is needed, so nodes behind NAT
//! or a firewall work.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hyper_util::rt::TokioIo;

use crate::Shared;

/// Must match `apiserver::node_tunnel::UPGRADE_PROTOCOL`.
const UPGRADE_PROTOCOL: &str = "kumo-node-tunnel/1";
/// Must match the route `apiserver::request` parses for tunnels.
const PATH: &str = "/kumo/v1/node-tunnel";

/// Keeps the tunnel connected until the future is dropped, redialling with back-off.
pub async fn run(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match connect(&shared.client).await {
            Ok(connection) => {
                backoff = Duration::from_millis(200);
                tracing::info!("tunnel to the API server connected");
                serve(shared.clone(), connection).await;
                tracing::info!("tunnel to the API server closed; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %e, "connecting the tunnel to the API server");
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn connect(client: &kube::Client) -> anyhow::Result<hyper::upgrade::Upgraded> {
    let request = http::Request::get(PATH)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, UPGRADE_PROTOCOL)
        .body(kube::client::Body::empty())?;
    let response = client.send(request).await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        anyhow::bail!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(hyper::upgrade::on(response).await?)
}

/// Serves the server's streams until the session ends.
async fn serve(shared: Arc<Shared>, connection: hyper::upgrade::Upgraded) {
    let config = tokio_yamux::Config {
        keepalive_interval: Duration::from_secs(15),
        connection_write_timeout: Duration::from_secs(20),
        max_stream_window_size: 1024 * 1024,
        ..Default::default()
    };
    let mut session = tokio_yamux::Session::new_server(TokioIo::new(connection), config);
    while let Some(stream) = session.next().await {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel session failed");
                break;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(crate::streaming::handle(shared, req).await)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(error = %e, "tunnel stream ended with an error");
            }
        });
    }
}
