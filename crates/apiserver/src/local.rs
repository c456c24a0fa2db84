//! In-process clients: a kube-rs [`kube::Client`] whose transport is the API server's own
//! request pipeline, with no socket and no TLS.
//!
//! The built-in controllers and the scheduler use it (DESIGN.md, decision 2): they are written
//! against kube-rs like any operator, yet their requests pass the same authorization,
//! admission, validation and strategy code as a request over HTTPS.

use std::convert::Infallible;
use std::sync::Arc;

use crate::authn::Identity;
use crate::request::DEFAULT_CLUSTER;
use crate::server::ApiServer;

/// A client for cluster `cluster` acting as `identity`.
pub fn client(server: Arc<ApiServer>, cluster: &str, identity: Identity) -> kube::Client {
    // Hosted clusters are addressed by a path prefix, as over HTTPS.
    let prefix: Arc<str> = if cluster == DEFAULT_CLUSTER {
        Arc::from("")
    } else {
        Arc::from(format!("/clusters/{cluster}"))
    };
    let service = tower::service_fn(move |mut req: http::Request<kube::client::Body>| {
        let server = server.clone();
        let identity = identity.clone();
        let prefix = prefix.clone();
        async move {
            if !prefix.is_empty() {
                let path_and_query = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                if let Ok(uri) = format!("{prefix}{path_and_query}").parse() {
                    *req.uri_mut() = uri;
                }
            }
            Ok::<_, Infallible>(server.handle(req, Some(identity)).await)
        }
    });
    kube::Client::new(service, "default")
}
