//! exec, attach and port-forward through the runtime's streaming server: the agent asks
//! CRI for a one-time URL (Exec, Attach, PortForward) and connects the caller to it.
//!
//! The runtime's server (containerd's copy of kubelet's streaming package) speaks SPDY and
//! WebSocket `v4.channel.k8s.io` and older, so requests in those protocols are relayed byte
//! for byte after the runtime accepts the upgrade. Two newer protocols are handled here:
//! WebSocket `v5.channel.k8s.io` exec/attach ([`super::exec_v5`]) and kubectl's port-forward
//! that runs SPDY inside WebSocket binary messages (unwrapped by [`spdy_in_websocket`]).

use std::time::Duration;

use apimachinery::status::ApiError;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};

use super::{Body, PodRef, Query, running_container};
use crate::Shared;
use crate::cri::{CallExt, api};
use crate::pods::spec;

/// kubectl's port-forward: SPDY/3.1 inside WebSocket binary messages.
const SPDY_IN_WEBSOCKET: &str = "SPDY/3.1+portforward.k8s.io";
/// The remote-command protocol with a stdin close signal, which runtimes do not speak.
pub const V5_CHANNEL: &str = "v5.channel.k8s.io";

/// Headers that negotiate an upgrade; they pass to the runtime unchanged.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// `/exec/...` and `/attach/...`.
pub async fn exec_or_attach(
    shared: &Shared,
    req: Request<Incoming>,
    pod: &PodRef<'_>,
    container: &str,
    exec: bool,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let container_id = running_container(shared, pod, container).await?;
    let tty = query.flag("tty");
    let stdin = query.flag("stdin");
    let stdout = query.flag("stdout");
    // kubelet drops stderr with a TTY: the terminal carries both.
    let stderr = query.flag("stderr") && !tty;
    let url = if exec {
        shared
            .cri
            .runtime
            .clone()
            .exec(api::ExecRequest {
                container_id,
                cmd: query.all("command"),
                tty,
                stdin,
                stdout,
                stderr,
            })
            .await
            .call("Exec")
            .map_err(runtime_error)?
            .url
    } else {
        shared
            .cri
            .runtime
            .clone()
            .attach(api::AttachRequest {
                container_id,
                stdin,
                tty,
                stdout,
                stderr,
            })
            .await
            .call("Attach")
            .map_err(runtime_error)?
            .url
    };
    if is_websocket(req.headers()) && offers(req.headers(), V5_CHANNEL) {
        let streams = super::exec_v5::Streams {
            stdin,
            stdout,
            stderr,
            tty,
        };
        return super::exec_v5::serve(req, &url, streams).await;
    }
    relay(req, &url, false).await
}

/// `/portForward/...`.
pub async fn port_forward(
    shared: &Shared,
    req: Request<Incoming>,
    pod: &PodRef<'_>,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let sandbox = shared
        .cri
        .sandboxes(&[(spec::POD_UID, pod.uid)])
        .await
        .map_err(runtime_error)?
        .into_iter()
        .find(|s| s.state == api::PodSandboxState::SandboxReady as i32)
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {:?} has no running sandbox", pod.name))
        })?;
    let ports = query
        .all("ports")
        .iter()
        .flat_map(|p| p.split(','))
        .map(|p| {
            p.trim()
                .parse::<i32>()
                .map_err(|_| ApiError::bad_request(format!("invalid port {p:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let url = shared
        .cri
        .runtime
        .clone()
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            port: ports,
        })
        .await
        .call("PortForward")
        .map_err(runtime_error)?
        .url;
    if is_websocket(req.headers()) && offers(req.headers(), SPDY_IN_WEBSOCKET) {
        return spdy_in_websocket(req, &url).await;
    }
    // WebSocket port-forward takes its ports from the query.
    relay(req, &url, true).await
}

fn runtime_error(e: crate::cri::Error) -> ApiError {
    ApiError::internal(format!("the container runtime failed: {}", e.message()))
}

/// Whether a request asks for a WebSocket.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether the client offers WebSocket subprotocol `protocol`.
pub fn offers(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol)
}

/// The 101 answer accepting a client's WebSocket with `protocol`.
pub fn accept_websocket(headers: &HeaderMap, protocol: &str) -> Result<Response<Body>, ApiError> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Empty::new().boxed())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The client's side of an accepted WebSocket.
pub async fn server_websocket(upgrade: OnUpgrade) -> Option<WebSocketStream<TokioIo<Upgraded>>> {
    match upgrade.await {
        Ok(io) => {
            Some(WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await)
        }
        Err(e) => {
            tracing::debug!(error = %e, "client upgrade failed");
            None
        }
    }
}

/// Sends `request` to the runtime's streaming server at `url` (whose path and query it
/// replaces).
async fn send_to_runtime(
    url: &str,
    request: http::request::Builder,
    path_and_query: &str,
) -> Result<Response<Incoming>, ApiError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ApiError::internal(format!("the runtime gave a bad URL {url:?}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| ApiError::internal(format!("the runtime gave a bad URL {url:?}")))?
        .to_string();
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!("the runtime's streaming server: {e}"))
    };
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    .map_err(|e| unreachable(&e))?
    .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let request = request
        .uri(path_and_query)
        .header(header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))
}

/// The runtime's answer when it refused an upgrade, as our response.
async fn refused(response: Response<Incoming>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Response::from_parts(parts, Full::new(body).boxed())
}

/// Relays a request in a protocol the runtime speaks: its answer is the caller's, and
/// after a 101 the two connections are joined.
async fn relay(
    mut req: Request<Incoming>,
    url: &str,
    with_query: bool,
) -> Result<Response<Body>, ApiError> {
    let mut target = url.to_owned();
    if with_query && let Some(q) = req.uri().query() {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(q);
    }
    let uri: http::Uri = target
        .parse()
        .map_err(|_| ApiError::internal(format!("the runtime gave a bad URL {url:?}")))?;
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut request = Request::builder().method(req.method());
    for (name, value) in req.headers() {
        if UPGRADE_HEADERS.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut response = send_to_runtime(url, request, &path_and_query).await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(refused(response).await);
    }
    let runtime_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        if let (Ok(client), Ok(runtime)) = tokio::join!(client_upgrade, runtime_upgrade) {
            let _ = tokio::io::copy_bidirectional(
                &mut TokioIo::new(client),
                &mut TokioIo::new(runtime),
            )
            .await;
        }
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Empty::new().boxed()))
}

/// Opens a SPDY connection to the runtime's streaming server (`protocol` is the
/// `X-Stream-Protocol-Version` asked for).
pub async fn runtime_spdy(url: &str, protocol: &str) -> Result<Upgraded, ApiError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ApiError::internal(format!("the runtime gave a bad URL {url:?}")))?;
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let request = Request::post("/")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol);
    let response = send_to_runtime(url, request, &path_and_query).await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = refused(response).await.into_body().collect().await;
        let body = body.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(ApiError::internal(format!(
            "the runtime refused the stream ({status}): {}",
            String::from_utf8_lossy(&body)
        )));
    }
    hyper::upgrade::on(response)
        .await
        .map_err(|e| ApiError::internal(format!("the runtime's upgrade failed: {e}")))
}

/// kubectl's port-forward: the SPDY session inside the WebSocket goes to the runtime's
/// SPDY port-forward server unchanged.
async fn spdy_in_websocket(
    mut req: Request<Incoming>,
    url: &str,
) -> Result<Response<Body>, ApiError> {
    let accepted = accept_websocket(req.headers(), SPDY_IN_WEBSOCKET)?;
    let runtime = runtime_spdy(url, "portforward.k8s.io").await?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Some(ws) = server_websocket(client_upgrade).await {
            websocket_to_bytes(ws, TokioIo::new(runtime)).await;
        }
    });
    Ok(accepted)
}

/// Joins a WebSocket whose binary messages carry a byte stream with that byte stream.
async fn websocket_to_bytes<S, IO>(mut ws: WebSocketStream<S>, io: IO)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if writer.write_all(&data).await.is_err() {
                        break;
                    }
                }
                // Answer pings now: tungstenite queues the pong until the next write.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    if ws.flush().await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = writer.shutdown().await;
    let _ = ws.close(None).await;
}
