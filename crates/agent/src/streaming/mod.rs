//! The node's streaming API (kubelet's `/containerLogs`, `/exec`, `/attach` and
//! `/portForward`), served on the streams of the tunnel to the API server.
//!
//! - [`logs`]: container logs from the CRI log files, with follow, tail, since, previous,
//!   timestamps and byte limits.
//! - [`runtime_proxy`]: exec, attach and port-forward through the runtime's streaming
//!   server (CRI Exec/Attach/PortForward). Protocols the runtime speaks (SPDY, WebSocket
//!   v4) are relayed byte for byte; kubectl's SPDY-in-WebSocket port-forward is unwrapped.
//! - [`exec_v5`]: WebSocket `v5.channel.k8s.io` (kubectl ≥ 1.30's exec), translated to
//!   SPDY for the runtime, which predates v5.
//!
//! Paths carry the pod's UID (`/exec/<ns>/<pod>/<uid>/<container>`), so a pod recreated
//! under the same name is never confused with the one the server checked.

pub mod exec_v5;
pub mod logs;
pub mod runtime_proxy;

use std::convert::Infallible;
use std::sync::Arc;

use apimachinery::status::ApiError;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;

use crate::Shared;
use crate::cri::api;
use crate::pods::spec;

/// Response bodies of the streaming API.
pub type Body = BoxBody<Bytes, Infallible>;

/// The query of a request, decoded.
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean parameter (`true` or `1`).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// The pod a request is about.
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// Answers one request from the API server.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match parts.as_slice() {
        ["containerLogs", namespace, name, uid, container] => {
            let pod = PodRef {
                namespace,
                name,
                uid,
            };
            logs::serve(&shared, &pod, container, &query).await
        }
        [op @ ("exec" | "attach"), namespace, name, uid, container] => {
            let pod = PodRef {
                namespace,
                name,
                uid,
            };
            runtime_proxy::exec_or_attach(&shared, req, &pod, container, op == &"exec", &query)
                .await
        }
        ["portForward", namespace, name, uid] => {
            let pod = PodRef {
                namespace,
                name,
                uid,
            };
            runtime_proxy::port_forward(&shared, req, &pod, &query).await
        }
        _ => Err(ApiError::no_route()),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// A `Status` response.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = http::StatusCode::from_u16(e.code).unwrap_or_default();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The runtime containers of a pod's container, newest attempt first.
async fn attempts(
    shared: &Shared,
    pod: &PodRef<'_>,
    container: &str,
) -> Result<Vec<api::Container>, ApiError> {
    let mut found: Vec<api::Container> = shared
        .cri
        .pod_containers(pod.uid)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .filter(|c| c.labels.get(spec::CONTAINER_NAME).map(String::as_str) == Some(container))
        .collect();
    found.sort_by_key(|c| {
        std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
    });
    Ok(found)
}

/// The running runtime container of a pod's container (400 when it is not running, as
/// kubelet refuses to exec into a stopped container).
async fn running_container(
    shared: &Shared,
    pod: &PodRef<'_>,
    container: &str,
) -> Result<String, ApiError> {
    attempts(shared, pod, container)
        .await?
        .into_iter()
        .find(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .map(|c| c.id)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "container {container:?} in pod {:?} is not running",
                pod.name
            ))
        })
}
