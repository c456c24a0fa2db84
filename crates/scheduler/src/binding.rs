//! Binding: PreBind (claims waiting for their first consumer learn the node), then a
//! POST of a core/v1 `Binding` to `pods/<name>/binding`, run in a background
//! task per pod so that the next pod is scheduled while the binding is in flight. On
//! failure the assumed pod is forgotten and the pod backs off for another attempt.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::Semaphore;

use crate::cache::{Cache, lock};
use crate::queue::{QueuedPod, SchedulingQueue};
use crate::report::{Events, Nomination, update_condition};

/// Bindings in flight at once; the scheduling loop waits for a slot (backpressure when
/// the API server is slower than the scheduler).
pub const MAX_IN_FLIGHT: usize = 256;

/// What a binding task needs.
#[derive(Clone)]
pub struct Binder {
    /// Client for the binding requests.
    pub client: Client,
    /// The cache holding the assumed pod.
    pub cache: Arc<Mutex<Cache>>,
    /// The queue the pod returns to on failure.
    pub queue: Arc<SchedulingQueue>,
    /// Event publisher.
    pub events: Events,
    /// Slots for bindings in flight.
    pub slots: Arc<Semaphore>,
}

impl Binder {
    /// Binds `pod` (assumed on `node`) in the background, after annotating the
    /// `claims` (namespace, name) that wait for their first consumer with the node
    /// (VolumeBinding's PreBind).
    pub async fn spawn(&self, pod: QueuedPod, node: String, claims: Vec<(String, String)>) {
        let permit = match self.slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let this = self.clone();
        tokio::spawn(async move {
            // A claim that cannot be annotated (deleted meanwhile, say) is a failure
            // to retry, never mistaken for the pod being bound or gone.
            let (result, pre_bound) =
                match crate::volumes::annotate_selected_node(&this.client, &claims, &node).await {
                    Ok(()) => (bind(&this.client, &pod.info.pod, &node).await, true),
                    Err(e) => (Err(e), false),
                };
            drop(permit);
            let key = &pod.info.key;
            match result {
                Ok(()) => {
                    this.queue.done(key);
                    this.events.scheduled(&pod.info.pod, &node);
                }
                Err(e) => {
                    lock(&this.cache).forget(&pod.info.uid);
                    let already_bound = pre_bound
                        && matches!(&e, kube::Error::Api(s) if s.code == 409 || s.code == 404);
                    if already_bound {
                        // Bound by someone else or deleted: the informer brings the truth.
                        this.queue.done(key);
                        return;
                    }
                    tracing::warn!(pod = %key, node = %node, error = %e, "binding failed");
                    let message = format!("Binding rejected: {e}");
                    this.events.failed_scheduling(&pod.info.pod, &message);
                    if let Err(e) = update_condition(
                        &this.client,
                        &pod.info.pod,
                        "SchedulerError",
                        &message,
                        &Nomination::Keep,
                    )
                    .await
                    {
                        tracing::debug!(pod = %key, error = %e, "could not update the PodScheduled condition");
                    }
                    this.queue.requeue_backoff(&pod);
                }
            }
        });
    }
}

/// POSTs the binding of `pod` to `node`.
pub async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let binding = Binding {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.create_subresource::<_, serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        &binding,
    )
    .await
    .map(|_| ())
}
