//! An example operator written with kube-rs, the way users write theirs for kumo.
//!
//! A `WebServer` (example.kumo.dev/v1) asks for `replicas` web servers serving `content` on
//! `port`. The operator reconciles each one into three objects it owns: a ConfigMap holding
//! the page, a Deployment of busybox httpd serving it, and a Service in front. It reports the
//! Deployment's ready replicas in the WebServer's status. Children carry a controller owner
//! reference, so deleting the WebServer deletes them (the garbage collector's job).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The field manager of everything this operator writes.
pub const MANAGER: &str = "webserver-operator";

/// The desired state of a WebServer.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "example.kumo.dev",
    version = "v1",
    kind = "WebServer",
    namespaced,
    status = "WebServerStatus",
    shortname = "ws",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.port"}"#,
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WebServerSpec {
    /// How many web servers.
    pub replicas: i32,
    /// The page they serve at `/`.
    pub content: String,
    /// The port the Service and the servers listen on.
    #[serde(default = "default_port")]
    pub port: i32,
}

fn default_port() -> i32 {
    8080
}

/// What the operator observed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebServerStatus {
    /// Replicas of the current Deployment.
    pub replicas: i32,
    /// Replicas that are ready.
    pub ready_replicas: i32,
}

/// Reconcile failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The WebServer lacks a namespace or uid (never the case for stored objects).
    #[error("WebServer is missing {0}")]
    Incomplete(&'static str),
}

/// Shared state of the reconcilers.
pub struct Context {
    /// Client for the cluster.
    pub client: Client,
}

/// Runs the operator until the future is dropped.
pub async fn run(client: Client) {
    let webservers: Api<WebServer> = Api::all(client.clone());
    let config = watcher::Config::default();
    Controller::new(webservers, config.clone())
        .owns(Api::<Deployment>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), config)
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(webserver = %object.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

fn owner_reference(ws: &WebServer) -> Result<OwnerReference, Error> {
    ws.controller_owner_ref(&())
        .ok_or(Error::Incomplete("a uid"))
}

fn labels(ws: &WebServer) -> serde_json::Value {
    json!({
        "app.kubernetes.io/name": "webserver",
        "app.kubernetes.io/instance": ws.name_any(),
        "app.kubernetes.io/managed-by": MANAGER,
    })
}

/// The three children of a WebServer, as server-side apply configurations.
pub fn children(ws: &WebServer) -> Result<(ConfigMap, Deployment, Service), Error> {
    let name = ws.name_any();
    let owner = owner_reference(ws)?;
    let labels = labels(ws);
    let port = ws.spec.port;
    let config_map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-content"), "labels": labels, "ownerReferences": [owner]},
        "data": {"index.html": ws.spec.content},
    }))
    .map_err(|_| Error::Incomplete("a valid spec"))?;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
        "spec": {
            "replicas": ws.spec.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name, "app.kubernetes.io/name": "webserver"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "httpd",
                        "image": "busybox:1.36",
                        "command": ["httpd", "-f", "-p", port.to_string(), "-h", "/www"],
                        "ports": [{"name": "http", "containerPort": port}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                        "volumeMounts": [{"name": "content", "mountPath": "/www"}],
                    }],
                    "volumes": [{"name": "content", "configMap": {"name": format!("{name}-content")}}],
                },
            },
        },
    }))
    .map_err(|_| Error::Incomplete("a valid spec"))?;
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
        "spec": {
            "selector": {"app.kubernetes.io/instance": name, "app.kubernetes.io/name": "webserver"},
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }))
    .map_err(|_| Error::Incomplete("a valid spec"))?;
    Ok((config_map, deployment, service))
}

/// Brings one WebServer's children in line with its spec and reports their readiness.
async fn reconcile(ws: Arc<WebServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = ws.namespace().ok_or(Error::Incomplete("a namespace"))?;
    let name = ws.name_any();
    let apply = PatchParams::apply(MANAGER).force();
    let (config_map, deployment, service) = children(&ws)?;
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &format!("{name}-content"),
            &apply,
            &Patch::Apply(&config_map),
        )
        .await?;
    let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace)
        .patch(&name, &apply, &Patch::Apply(&deployment))
        .await?;
    Api::<Service>::namespaced(ctx.client.clone(), &namespace)
        .patch(&name, &apply, &Patch::Apply(&service))
        .await?;

    let observed = deployment.status.unwrap_or_default();
    let status = WebServerStatus {
        replicas: observed.replicas.unwrap_or(0),
        ready_replicas: observed.ready_replicas.unwrap_or(0),
    };
    if ws.status.as_ref() != Some(&status) {
        Api::<WebServer>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    // Changes to the children wake the reconciler; the requeue is only a safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_ws: Arc<WebServer>, _error: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(5))
}
