//! The Endpoints controller, as upstream's `pkg/controller/endpoint`: for every Service with
//! a selector, an Endpoints object of the same name listing the selected pods' addresses,
//! ready ones in `addresses` and the others in `notReadyAddresses`, grouped into subsets by
//! the ports they offer.
//!
//! Services without a selector are left alone (their Endpoints belong to the user). When a
//! Service goes, the Endpoints this controller wrote for it go too. The pod helpers shared
//! with the EndpointSlice controller (which pods belong in a Service's endpoints, how a
//! named target port resolves) live here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{self, Action, ReconcileRequest, trigger_self, trigger_with};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, watcher};

use crate::{Context, FIELD_MANAGER};

/// Annotation with the time of the last change that led to this Endpoints' content.
pub(crate) const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Annotation set when the addresses were cut to [`MAX_ADDRESSES`].
const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// Label marking the endpoints of a headless Service.
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's cap on addresses in one Endpoints object.
const MAX_ADDRESSES: usize = 1000;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// An API call failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// A cache's writer went away (the loop is stopping).
    #[error("informer cache stopped")]
    CacheStopped,
}

impl From<reflector::store::WriterDropped> for Error {
    fn from(_: reflector::store::WriterDropped) -> Self {
        Error::CacheStopped
    }
}

/// Runs the loop until it fails.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let deleted_services: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (services, service_events) = {
        let deleted = deleted_services.clone();
        let (reader, writer) = reflector::store();
        let stream = reflector::reflector(
            writer,
            watcher(
                Api::<Service>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        )
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(svc)) = event {
                deleted.lock().unwrap().insert(key_of(svc));
            }
        })
        .touched_objects();
        (reader, stream)
    };
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()));
    let (endpoints, endpoints_events) = informer(Api::<Endpoints>::all(client.clone()));
    let state = Arc::new(State {
        ctx,
        services: services.clone(),
        pods,
        endpoints: endpoints.clone(),
        deleted_services,
        backoff: ErrorBackoff::default(),
    });
    let pod_mapper = {
        let services = services.clone();
        let endpoints = endpoints.clone();
        move |pod: Pod| {
            let mut keys = services_selecting(&services, &pod);
            // A pod whose labels changed is still listed by its former Services.
            for ep in endpoints.state() {
                if ep.namespace() == pod.namespace() && lists_pod(&ep, &pod) {
                    keys.push(
                        ObjectRef::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()),
                    );
                }
            }
            keys.sort_by(|a, b| a.name.cmp(&b.name));
            keys.dedup();
            keys.into_iter().map(ReconcileRequest::from)
        }
    };
    let queue = futures::stream::select_all([
        trigger_self(service_events, ()).boxed(),
        trigger_with(pod_events, pod_mapper).boxed(),
        trigger_with(endpoints_events, |ep: Endpoints| {
            Some(ReconcileRequest::from(
                ObjectRef::<Service>::new(&ep.name_any())
                    .within(&ep.namespace().unwrap_or_default()),
            ))
        })
        .boxed(),
    ]);
    let results = applier(
        |svc, state: Arc<State>| Box::pin(reconcile(svc, state)),
        |svc, error, state| {
            let delay = state.backoff.failed(&key_of(svc.as_ref()));
            tracing::debug!(service = %key_of(svc.as_ref()), %error, "endpoints sync failed");
            Action::requeue(delay)
        },
        state.clone(),
        services,
        queue,
        controller::Config::default(),
    );
    results
        .for_each(|result| {
            let state = state.clone();
            async move {
                match result {
                    Ok(_) => {}
                    Err(controller::Error::ObjectNotFound(gone)) => {
                        if let Err(e) = remove_orphan(&state, &gone.name, gone.namespace.as_deref()).await {
                            tracing::debug!(error = %e, name = %gone.name, "removing endpoints of a deleted service");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "endpoints controller"),
                }
            }
        })
        .await;
    Ok(())
}

struct State {
    ctx: Context,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    /// Services seen deleted whose Endpoints may still need deleting.
    deleted_services: Arc<Mutex<HashSet<String>>>,
    backoff: ErrorBackoff,
}

async fn reconcile(svc: Arc<Service>, state: Arc<State>) -> Result<Action, Error> {
    state.pods.wait_until_ready().await?;
    state.endpoints.wait_until_ready().await?;
    let key = key_of(svc.as_ref());
    let Some(selector) = selector_of(&svc) else {
        state.backoff.succeeded(&key);
        return Ok(Action::await_change());
    };
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let pods: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(&namespace) && selects(selector, p))
        .collect();
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate_unready = spec.publish_not_ready_addresses == Some(true);
    let (subsets, truncated) = subsets_for(&svc, &pods, tolerate_unready);
    let mut labels = svc.labels().clone();
    if is_headless(&svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    let existing = state
        .endpoints
        .get(&ObjectRef::new(&name).within(&namespace));
    if let Some(current) = &existing {
        let over_capacity = current
            .annotations()
            .get(OVER_CAPACITY_ANNOTATION)
            .is_some_and(|v| v == "truncated");
        if same_subsets(current.subsets.as_deref().unwrap_or_default(), &subsets)
            && current.labels() == &labels
            && over_capacity == truncated
        {
            state.backoff.succeeded(&key);
            return Ok(Action::await_change());
        }
    }
    let mut annotations = existing
        .as_ref()
        .map(|e| e.annotations().clone())
        .unwrap_or_default();
    annotations.insert(
        TRIGGER_TIME_ANNOTATION.into(),
        trigger_time(&svc, &pods).to_string(),
    );
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    let desired = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            resource_version: existing.as_ref().and_then(|e| e.resource_version()),
            ..existing
                .as_ref()
                .map(|e| e.metadata.clone())
                .unwrap_or_default()
        },
        subsets: if subsets.is_empty() {
            None
        } else {
            Some(subsets)
        },
    };
    let api = Api::<Endpoints>::namespaced(state.ctx.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match existing {
        None => {
            api.create(&params, &desired).await?;
        }
        Some(_) => {
            api.replace(&name, &params, &desired).await?;
        }
    }
    state.backoff.succeeded(&key);
    Ok(Action::await_change())
}

/// Deletes the Endpoints `name` when its Service is gone and the Endpoints were written by
/// this controller or belonged to a Service seen deleted.
async fn remove_orphan(state: &State, name: &str, namespace: Option<&str>) -> Result<(), Error> {
    state.services.wait_until_ready().await?;
    state.endpoints.wait_until_ready().await?;
    let namespace = namespace.unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let service_ref = ObjectRef::<Service>::new(name).within(namespace);
    if state.services.get(&service_ref).is_some() {
        return Ok(());
    }
    let was_deleted = state.deleted_services.lock().unwrap().remove(&key);
    let Some(ep) = state.endpoints.get(&ObjectRef::new(name).within(namespace)) else {
        return Ok(());
    };
    if !was_deleted && !ep.annotations().contains_key(TRIGGER_TIME_ANNOTATION) {
        return Ok(());
    }
    let api = Api::<Endpoints>::namespaced(state.ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The subsets for `svc` over `pods` (already selected), packed as upstream's
/// `RepackSubsets` does, and whether addresses were dropped to stay under the cap.
fn subsets_for(
    svc: &Service,
    pods: &[Arc<Pod>],
    tolerate_unready: bool,
) -> (Vec<EndpointSubset>, bool) {
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    // For every port (None: a headless service without ports), the addresses offering it
    // and whether each is ready.
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddressKey, (EndpointAddress, bool)>> =
        BTreeMap::new();
    let headless_without_ports = ports.is_empty() && is_headless(svc);
    for pod in pods {
        if !belongs_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname_for(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_reference(pod)),
        };
        let ready = tolerate_unready || crate::pods::is_ready(pod);
        let address_key = (ip, pod.uid().unwrap_or_default());
        if headless_without_ports {
            by_port
                .entry(None)
                .or_default()
                .insert(address_key.clone(), (address.clone(), ready));
        }
        for port in &ports {
            let Some(number) = find_port(pod, port) else {
                continue;
            };
            let endpoint_port = EndpointPort {
                name: port.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: port.app_protocol.clone(),
            };
            by_port
                .entry(Some(PortOrd(endpoint_port)))
                .or_default()
                .insert(address_key.clone(), (address.clone(), ready));
        }
    }
    // Ports offered by exactly the same addresses (with the same readiness) share a subset.
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, PortGroup> = BTreeMap::new();
    for (port, addresses) in by_port {
        let set_key: Vec<(AddressKey, bool)> = addresses
            .iter()
            .map(|(k, (_, ready))| (k.clone(), *ready))
            .collect();
        let entry = groups
            .entry(set_key)
            .or_insert_with(|| (Vec::new(), addresses.into_values().collect()));
        if let Some(PortOrd(p)) = port {
            entry.0.push(p);
        }
    }
    let mut remaining = MAX_ADDRESSES;
    let mut truncated = false;
    let mut subsets: Vec<EndpointSubset> = Vec::new();
    for (_, (ports, addresses)) in groups {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for (address, is_ready) in addresses {
            if is_ready {
                ready.push(address);
            } else {
                not_ready.push(address);
            }
        }
        let total = ready.len() + not_ready.len();
        if total > remaining {
            truncated = true;
            ready.truncate(remaining);
            not_ready.truncate(remaining - ready.len());
        }
        remaining -= ready.len() + not_ready.len();
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    (subsets, truncated)
}

type AddressKey = (String, String);
/// The ports a set of addresses offers, and the addresses with their readiness.
type PortGroup = (Vec<EndpointPort>, Vec<(EndpointAddress, bool)>);
type PortKey = Option<PortOrd>;

/// An endpoint port ordered by name, port number and protocol.
#[derive(Clone, Debug)]
struct PortOrd(EndpointPort);

impl PartialEq for PortOrd {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for PortOrd {}

impl PortOrd {
    fn key(&self) -> (Option<&str>, i32, Option<&str>, Option<&str>) {
        (
            self.0.name.as_deref(),
            self.0.port,
            self.0.protocol.as_deref(),
            self.0.app_protocol.as_deref(),
        )
    }
}

impl PartialOrd for PortOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PortOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// Whether two subset lists are the same, ignoring the resourceVersion of target refs.
fn same_subsets(current: &[EndpointSubset], desired: &[EndpointSubset]) -> bool {
    fn normal(subsets: &[EndpointSubset]) -> serde_json::Value {
        let mut v = serde_json::to_value(subsets).unwrap_or_default();
        if let Some(subsets) = v.as_array_mut() {
            for subset in subsets {
                for key in ["addresses", "notReadyAddresses"] {
                    if let Some(addresses) = subset.get_mut(key).and_then(|a| a.as_array_mut()) {
                        for a in addresses {
                            if let Some(r) = a.get_mut("targetRef").and_then(|r| r.as_object_mut())
                            {
                                r.remove("resourceVersion");
                            }
                        }
                    }
                }
            }
        }
        v
    }
    normal(current) == normal(desired)
}

/// The time of the latest change among the Service and its pods, for the trigger-time
/// annotation.
pub(crate) fn trigger_time(svc: &Service, pods: &[Arc<Pod>]) -> jiff::Timestamp {
    let mut latest = svc
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    for pod in pods {
        let times = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.type_ == "Ready")
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .chain(pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .chain(pod.metadata.deletion_timestamp.as_ref().map(|t| t.0));
        for t in times {
            latest = latest.max(t);
        }
    }
    latest
}

/// Whether `ep` lists `pod` (by UID) among its addresses.
fn lists_pod(ep: &Endpoints, pod: &Pod) -> bool {
    let uid = pod.uid();
    ep.subsets.iter().flatten().any(|s| {
        s.addresses
            .iter()
            .flatten()
            .chain(s.not_ready_addresses.iter().flatten())
            .any(|a| a.target_ref.as_ref().and_then(|r| r.uid.clone()) == uid)
    })
}

/// An informer: a cache of every `K` and the stream of objects that changed (including
/// deleted ones), to be merged into a loop's queue.
pub(crate) fn informer<K>(
    api: Api<K>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    (reader, stream)
}

pub(crate) use crate::workloads::key_of;

/// Per-key exponential backoff for failed reconciles: 500 ms doubling up to a minute,
/// forgotten after a success.
#[derive(Default)]
pub(crate) struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Records a failure of `key` and returns how long to wait before the next attempt.
    pub(crate) fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap();
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let millis = 500u64.saturating_mul(1 << (*n - 1).min(7));
        Duration::from_millis(millis.min(60_000))
    }

    /// Forgets the failures of `key`.
    pub(crate) fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap();
        if !failures.is_empty() {
            failures.remove(key);
        }
    }
}

/// The Service's selector when it selects pods (nil and empty select none here, as the
/// API round trip upstream turns an empty selector into nil).
pub(crate) fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

/// Whether every pair of `selector` is among the pod's labels.
pub(crate) fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.labels();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Services (from the cache) in the pod's namespace whose selector picks it.
pub(crate) fn services_selecting(services: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let namespace = pod.namespace();
    services
        .state()
        .into_iter()
        .filter(|s| s.namespace() == namespace)
        .filter(|s| selector_of(s).is_some_and(|sel| selects(sel, pod)))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// Whether the Service is headless (`clusterIP: None`).
pub(crate) fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Upstream's `ShouldPodBeInEndpoints`: not finished, has an IP, and not being deleted
/// unless terminating pods are included.
pub(crate) fn belongs_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if pod_ipv4(pod).is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod's IPv4 address, if it has one.
pub(crate) fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    status
        .pod_ip
        .as_deref()
        .into_iter()
        .chain(listed)
        .find(|ip| !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
}

/// The hostname a pod gets in a Service's endpoints: its `spec.hostname` when its
/// subdomain is the Service's name.
pub(crate) fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.namespace() == svc.namespace())
    .then(|| hostname.to_owned())
}

/// A reference to the pod for `targetRef`.
pub(crate) fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: pod.metadata.name.clone(),
        uid: pod.uid(),
        ..Default::default()
    }
}

/// Upstream's `FindPort`: the pod's port number for a Service port. A number is used as
/// is; a name is looked up among the ports of the pod's containers (and restartable init
/// containers) with the same protocol.
pub(crate) fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}
