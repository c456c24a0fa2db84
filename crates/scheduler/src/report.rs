//! What the scheduler tells users: Events (`Scheduled`, `FailedScheduling`, `Preempted`)
//! published by a background task so that scheduling never waits for them, and the pod's
//! `PodScheduled` condition and `nominatedNodeName`.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde_json::json;
use tokio::sync::mpsc;

/// The scheduler's name: its Events' reporting controller and the `schedulerName` of the
/// pods it schedules.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Events waiting to be published; beyond this, new ones are dropped (as upstream's
/// broadcaster drops events when its queue is full).
const EVENT_BUFFER: usize = 8192;
/// Events published at once.
const EVENT_CONCURRENCY: usize = 16;

/// Distinct FailedScheduling messages remembered for aggregation; beyond this the
/// memory starts afresh.
const MAX_AGGREGATED: usize = 4096;

/// Pod uid, reason and message of an event.
type AggregationKey = (String, String, String);

/// A handle to the background task that publishes Events.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<(Event, ObjectReference)>,
}

impl Events {
    /// Starts the publishing task.
    ///
    /// A repeated event (same pod, reason and message) becomes a series on the first one
    /// (kubectl shows `x3 over 2m`), while a new message makes a new event, like
    /// upstream's event correlator; kube-rs's `Recorder` aggregates by reason alone, so
    /// each distinct message gets its own recorder.
    pub fn start(client: Client) -> Self {
        let (tx, rx) = mpsc::channel::<(Event, ObjectReference)>(EVENT_BUFFER);
        let recorders: Arc<std::sync::Mutex<HashMap<AggregationKey, Recorder>>> = Arc::default();
        tokio::spawn(
            tokio_stream_of(rx).for_each_concurrent(EVENT_CONCURRENCY, move |(event, reference)| {
                let recorder = {
                    let mut map = recorders.lock().unwrap_or_else(|e| e.into_inner());
                    if map.len() >= MAX_AGGREGATED {
                        map.clear();
                    }
                    let key = (
                        reference.uid.clone().unwrap_or_default(),
                        event.reason.clone(),
                        event.note.clone().unwrap_or_default(),
                    );
                    map.entry(key)
                        .or_insert_with(|| new_recorder(&client))
                        .clone()
                };
                async move {
                    if let Err(e) = recorder.publish(&event, &reference).await {
                        tracing::debug!(error = %e, reason = %event.reason, "could not publish event");
                    }
                }
            }),
        );
        Self { tx }
    }

    fn send(&self, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        let mut reference = pod.object_ref(&());
        // The pod's version does not matter to the event (and would defeat aggregation).
        reference.resource_version = None;
        if self.tx.try_send((event, reference)).is_err() {
            tracing::debug!(reason, "event queue full; event dropped");
        }
    }

    /// `Scheduled`: "Successfully assigned ns/pod to node".
    pub fn scheduled(&self, pod: &Pod, node: &str) {
        let note = format!(
            "Successfully assigned {}/{} to {node}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        self.send(pod, EventType::Normal, "Scheduled", "Binding", note);
    }

    /// `FailedScheduling` with the fit error's message.
    pub fn failed_scheduling(&self, pod: &Pod, message: &str) {
        self.send(
            pod,
            EventType::Warning,
            "FailedScheduling",
            "Scheduling",
            message.to_owned(),
        );
    }

    /// `Preempted` on a victim.
    pub fn preempted(&self, victim: &Pod, preemptor_uid: &str, node: &str) {
        self.send(
            victim,
            EventType::Normal,
            "Preempted",
            "Preempting",
            format!("Preempted by pod {preemptor_uid} on node {node}"),
        );
    }
}

fn new_recorder(client: &Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: SCHEDULER_NAME.into(),
            instance: None,
        },
    )
}

fn tokio_stream_of<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// How the pod's `nominatedNodeName` should change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nomination {
    /// Leave it.
    Keep,
    /// Set it to this node.
    Set(String),
    /// Clear it.
    Clear,
}

/// Sets the pod's `PodScheduled` condition to False with `reason` and `message`, and
/// its nomination, unless they already say so.
pub async fn update_condition(
    client: &Client,
    pod: &Arc<Pod>,
    reason: &str,
    message: &str,
    nomination: &Nomination,
) -> Result<(), kube::Error> {
    let status = pod.status.as_ref();
    let current = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    let nominated = status
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    let condition_same = current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
    });
    let nomination_same = match nomination {
        Nomination::Keep => true,
        Nomination::Set(n) => nominated == Some(n.as_str()),
        Nomination::Clear => nominated.is_none(),
    };
    if condition_same && nomination_same {
        return Ok(());
    }
    let transition = match current {
        Some(c) if c.status == "False" => c.last_transition_time.clone().map(|t| t.0),
        _ => None,
    }
    .unwrap_or_else(jiff::Timestamp::now);
    let mut patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition.to_string(),
    }]}});
    match nomination {
        Nomination::Keep => {}
        Nomination::Set(n) => patch["status"]["nominatedNodeName"] = json!(n),
        Nomination::Clear => patch["status"]["nominatedNodeName"] = json!(null),
    }
    // Only onto the version that was scheduled: a pod bound meanwhile must not get an
    // Unschedulable condition back. On a conflict, once more onto the current version if
    // the pod is still pending.
    patch["metadata"] = json!({"resourceVersion": pod.metadata.resource_version});
    match patch_status(client, pod, &patch).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let api: Api<Pod> = Api::namespaced(
                client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let current = api
                .get(pod.metadata.name.as_deref().unwrap_or_default())
                .await?;
            let pending = current
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty);
            if !pending || current.metadata.uid != pod.metadata.uid {
                return Ok(());
            }
            patch["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
            match patch_status(client, pod, &patch).await {
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                other => other,
            }
        }
        other => other,
    }
}

/// Clears `nominatedNodeName` of a pod whose nomination preemption made void.
pub async fn clear_nomination(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    patch_status(client, pod, &json!({"status": {"nominatedNodeName": null}})).await
}

/// Marks a victim of preemption with the `DisruptionTarget` condition.
pub async fn mark_disruption_target(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    let patch = json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "PreemptionByScheduler",
        "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
        "lastTransitionTime": jiff::Timestamp::now().to_string(),
    }]}});
    patch_status(client, pod, &patch).await
}

async fn patch_status(
    client: &Client,
    pod: &Pod,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
