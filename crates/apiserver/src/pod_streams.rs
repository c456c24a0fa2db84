//! The streaming subresources of pods (`log`, `exec`, `attach`, `portforward`): the server
//! checks the request and the pod, then hands the request to the agent of the pod's node
//! through its tunnel ([`crate::node_tunnel`]) and relays the answer: a streamed body for
//! logs, or the upgraded connection (WebSocket or SPDY) for the others, byte for byte, as
//! kube-apiserver proxies to kubelet. The agent speaks the client's protocol itself.

use std::convert::Infallible;

use apimachinery::status::ApiError;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Request, Response, header};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::control_plane::ControlPlane;
use crate::query::Query;
use crate::server::Body;

/// The pod subresources served by the node agent.
pub const SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward"];

/// Headers never passed to the agent: the caller's credentials stay at the server.
const PRIVATE_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// Serves `subresource` of pod `namespace/name`.
pub async fn serve<B>(
    cp: &ControlPlane,
    mut req: Request<B>,
    namespace: &str,
    name: &str,
    subresource: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let pod = crate::authn::service_account::core_object(cp, "Pod", namespace, name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let agent_path = match subresource {
        "log" => {
            check_log_options(query, name)?;
            let container = container(&pod, query, name)?;
            if node.is_empty() {
                // Not scheduled yet: nothing has been logged (upstream answers the same).
                let (_, nothing) = tokio::sync::mpsc::channel(1);
                return Ok(text_stream(200, nothing));
            }
            format!("/containerLogs/{namespace}/{name}/{uid}/{container}")
        }
        "exec" | "attach" => {
            if subresource == "exec" && query.get_all("command").is_empty() {
                return Err(ApiError::bad_request("you must specify at least 1 command"));
            }
            let streams = ["stdin", "stdout", "stderr"];
            if !streams.iter().any(|s| query.flag(s)) {
                return Err(ApiError::bad_request(
                    "you must specify at least one of stdin, stdout, stderr",
                ));
            }
            let container = container(&pod, query, name)?;
            require_node(&node, name)?;
            format!("/{subresource}/{namespace}/{name}/{uid}/{container}")
        }
        "portforward" => {
            require_node(&node, name)?;
            format!("/portForward/{namespace}/{name}/{uid}")
        }
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "the {other} subresource of pods is not served by the node agent"
            )));
        }
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let stream = cp.tunnels().open(&node).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| crate::node_tunnel::unreachable(&node, &e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "agent stream ended with an error");
        }
    });
    let uri = match req.uri().query() {
        Some(q) => format!("{agent_path}?{q}"),
        None => agent_path,
    };
    let mut forward = Request::builder().method(req.method()).uri(uri);
    for (name, value) in req.headers() {
        if !PRIVATE_HEADERS.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    let forward = forward
        .header(header::HOST, "agent")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut answer = sender
        .send_request(forward)
        .await
        .map_err(|e| crate::node_tunnel::unreachable(&node, &e.to_string()))?;
    if answer.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let agent_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            let (client, agent) = match tokio::join!(client_upgrade, agent_upgrade) {
                (Ok(c), Ok(a)) => (c, a),
                (c, a) => {
                    tracing::debug!(client = ?c.err(), agent = ?a.err(), "upgrade failed");
                    return;
                }
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(agent))
                    .await;
        });
        let (parts, _) = answer.into_parts();
        return Ok(Response::from_parts(parts, Empty::new().boxed()));
    }
    let (parts, body) = answer.into_parts();
    // A broken tunnel ends the body: the client sees the stream stop, as with kubelet.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        while let Some(Ok(chunk)) = data.next().await {
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let mut response = text_stream(parts.status.as_u16(), rx);
    copy_headers(&parts.headers, response.headers_mut());
    Ok(response)
}

/// A plain-text response streaming what arrives on `data`.
fn text_stream(code: u16, data: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames = tokio_stream::wrappers::ReceiverStream::new(data)
        .map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or_default();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if name == header::CONTENT_TYPE || name == header::CACHE_CONTROL {
            to.insert(name, value.clone());
        }
    }
}

fn require_node(node: &str, pod: &str) -> Result<(), ApiError> {
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {pod} does not have a host assigned"
        )));
    }
    Ok(())
}

/// The container a request is about: the named one, or the only one (upstream's rules and
/// messages, so kubectl users see what they know).
fn container(pod: &Value, query: &Query, pod_name: &str) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let ephemeral = names("ephemeralContainers");
    match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_owned())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// PodLogOptions validation: numbers must parse (400) and be in range (422).
fn check_log_options(query: &Query, pod: &str) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    for (param, min) in [("tailLines", 0), ("limitBytes", 1), ("sinceSeconds", 1)] {
        if let Some(raw) = query.get(param) {
            let value: i64 = raw.parse().map_err(|_| {
                ApiError::bad_request(format!("{param}: invalid value {raw:?}: not an integer"))
            })?;
            if value < min {
                causes.push(apimachinery::status::StatusCause::new(
                    "FieldValueInvalid",
                    param,
                    format!("Invalid value: {value}: must be greater than or equal to {min}"),
                ));
            }
        }
    }
    if let Some(raw) = query.get("sinceTime")
        && raw.parse::<jiff::Timestamp>().is_err()
    {
        return Err(ApiError::bad_request(format!(
            "sinceTime: invalid value {raw:?}: not an RFC 3339 time"
        )));
    }
    if query.get("sinceSeconds").is_some() && query.get("sinceTime").is_some() {
        causes.push(apimachinery::status::StatusCause::new(
            "FieldValueForbidden",
            "",
            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("", "PodLogOptions", pod, causes))
    }
}
