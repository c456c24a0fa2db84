//! The EndpointSlice controller, as upstream's `pkg/controller/endpointslice`: for every
//! Service with a selector, `discovery.k8s.io/v1` EndpointSlices (IPv4) listing the selected
//! pods with their ready, serving and terminating conditions, node, zone and pod reference.
//!
//! Endpoints are grouped by the ports they resolve to (named target ports may differ from
//! pod to pod), at most [`MAX_ENDPOINTS_PER_SLICE`] to a slice. Existing slices are updated
//! in place: kept endpoints stay where they are, new ones fill free room before a new slice
//! is made, and emptied slices are deleted. A Service with no endpoints keeps one empty
//! placeholder slice. Slices are owned by their Service, so the garbage collector deletes
//! them with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::applier;
use kube::runtime::controller::{self, Action, ReconcileRequest, trigger_self, trigger_with};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;

use crate::endpoints::{
    Error, ErrorBackoff, HEADLESS_LABEL, TRIGGER_TIME_ANNOTATION, belongs_in_endpoints, find_port,
    hostname_for, informer, is_headless, key_of, pod_ipv4, pod_reference, selector_of, selects,
    services_selecting, trigger_time,
};
use crate::{Context, FIELD_MANAGER};

/// Label naming the Service a slice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`LABEL_MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How long a write this loop made may take to show up in its cache before it stops
/// waiting for it.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the loop until it fails.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (services, service_events) = informer(Api::<Service>::all(client.clone()));
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()));
    let (slices, slice_events) = informer(Api::<EndpointSlice>::all(client.clone()));
    let (nodes, node_events) = informer(Api::<Node>::all(client.clone()));
    let state = Arc::new(State {
        ctx,
        pods,
        slices: slices.clone(),
        nodes,
        expectations: Mutex::default(),
        backoff: ErrorBackoff::default(),
    });
    let pod_mapper = {
        let services = services.clone();
        let slices = slices.clone();
        move |pod: Pod| {
            let mut keys = services_selecting(&services, &pod);
            // A pod whose labels changed is still listed in its former Services' slices.
            let uid = pod.uid();
            for slice in slices.state() {
                if slice.namespace() == pod.namespace()
                    && slice
                        .endpoints
                        .iter()
                        .any(|e| e.target_ref.as_ref().and_then(|r| r.uid.clone()) == uid)
                    && let Some(service) = service_of(&slice)
                {
                    keys.push(service);
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
        trigger_with(slice_events, |slice: EndpointSlice| {
            service_of(&slice).map(ReconcileRequest::from)
        })
        .boxed(),
        // Nodes only feed the zone cache.
        trigger_with(node_events, |_: Node| None::<ReconcileRequest<Service>>).boxed(),
    ]);
    applier(
        |svc, state: Arc<State>| Box::pin(reconcile(svc, state)),
        |svc, error, state| {
            let key = key_of(svc.as_ref());
            tracing::debug!(service = %key, %error, "endpointslice sync failed");
            Action::requeue(state.backoff.failed(&key))
        },
        state,
        services,
        queue,
        controller::Config::default(),
    )
    .for_each(|_| std::future::ready(()))
    .await;
    Ok(())
}

struct State {
    ctx: Context,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    /// Per Service, the writes not yet seen in the slice cache.
    expectations: Mutex<HashMap<String, Pending>>,
    backoff: ErrorBackoff,
}

/// Writes this loop made that its cache has not shown yet.
#[derive(Default)]
struct Pending {
    /// Slices written, with the resourceVersion the write returned.
    written: Vec<(String, String)>,
    /// Slices deleted.
    deleted: Vec<String>,
    since: Option<Instant>,
}

impl State {
    /// Whether the slice cache reflects every write made for `key`.
    fn caught_up(&self, key: &str, namespace: &str) -> bool {
        let mut expectations = self.expectations.lock().unwrap();
        let Some(pending) = expectations.get(key) else {
            return true;
        };
        let expired = pending
            .since
            .is_some_and(|t| t.elapsed() > EXPECTATION_TIMEOUT);
        let seen = |name: &str| self.slices.get(&ObjectRef::new(name).within(namespace));
        let written_seen = pending.written.iter().all(|(name, rv)| {
            seen(name).is_some_and(|s| {
                let cached = s.resource_version().unwrap_or_default();
                match (cached.parse::<u64>(), rv.parse::<u64>()) {
                    (Ok(c), Ok(w)) => c >= w,
                    _ => &cached == rv,
                }
            })
        });
        let deleted_seen = pending.deleted.iter().all(|name| seen(name).is_none());
        if expired || (written_seen && deleted_seen) {
            expectations.remove(key);
            return true;
        }
        false
    }

    fn expect(&self, key: &str, written: Vec<(String, String)>, deleted: Vec<String>) {
        if written.is_empty() && deleted.is_empty() {
            return;
        }
        self.expectations.lock().unwrap().insert(
            key.to_owned(),
            Pending {
                written,
                deleted,
                since: Some(Instant::now()),
            },
        );
    }
}

/// The Service a slice belongs to, by its owner reference or its service-name label.
fn service_of(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let namespace = slice.namespace().unwrap_or_default();
    if slice.labels().get(LABEL_MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    let owner = crate::pods::controller_of(&slice.metadata)
        .filter(|r| r.kind == "Service")
        .map(|r| r.name.clone());
    let name = owner.or_else(|| slice.labels().get(LABEL_SERVICE_NAME).cloned())?;
    Some(ObjectRef::new(&name).within(&namespace))
}

async fn reconcile(svc: Arc<Service>, state: Arc<State>) -> Result<Action, Error> {
    state.pods.wait_until_ready().await?;
    state.slices.wait_until_ready().await?;
    state.nodes.wait_until_ready().await?;
    let key = key_of(svc.as_ref());
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let spec = svc.spec.clone().unwrap_or_default();
    let Some(selector) = selector_of(&svc) else {
        state.backoff.succeeded(&key);
        return Ok(Action::await_change());
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        state.backoff.succeeded(&key);
        return Ok(Action::await_change());
    }
    if !state.caught_up(&key, &namespace) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let pods: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(&namespace) && selects(selector, p))
        .filter(|p| belongs_in_endpoints(p, true))
        .collect();
    // The desired endpoints, grouped by the ports they offer.
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    let mut sorted_pods = pods.clone();
    sorted_pods.sort_by_key(|p| p.name_any());
    for pod in &sorted_pods {
        let Some(ip) = pod_ipv4(pod) else { continue };
        let ports: Vec<EndpointPort> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|port| {
                Some(EndpointPort {
                    name: Some(port.name.clone().unwrap_or_default()),
                    port: Some(find_port(pod, port)?),
                    protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: port.app_protocol.clone(),
                })
            })
            .collect();
        let serving = publish_not_ready || crate::pods::is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let zone = node_name
            .as_ref()
            .and_then(|n| state.nodes.get(&ObjectRef::new(n)))
            .and_then(|n| n.labels().get(ZONE_LABEL).cloned())
            .filter(|z| !z.is_empty());
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname_for(pod, &svc),
            node_name,
            target_ref: Some(pod_reference(pod)),
            zone,
            ..Default::default()
        };
        groups
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    let labels = slice_labels(&svc);
    let mut annotations = BTreeMap::new();
    annotations.insert(
        TRIGGER_TIME_ANNOTATION.to_owned(),
        trigger_time(&svc, &pods).to_string(),
    );
    let mut existing: Vec<Arc<EndpointSlice>> = state
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(&namespace)
                && s.labels().get(LABEL_SERVICE_NAME) == Some(&name)
                && s.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
        })
        .collect();
    existing.sort_by_key(|s| s.name_any());
    let plan = plan(&existing, groups, &labels);
    let api = Api::<EndpointSlice>::namespaced(state.ctx.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut written = Vec::new();
    let mut deleted = Vec::new();
    let result = async {
        for mut slice in plan.update {
            let mut slice_annotations = slice.annotations().clone();
            slice_annotations.extend(annotations.clone());
            slice.metadata.annotations = Some(slice_annotations);
            let stored = api.replace(&slice.name_any(), &params, &slice).await?;
            written.push((
                stored.name_any(),
                stored.resource_version().unwrap_or_default(),
            ));
        }
        for (ports, endpoints) in plan.create {
            let slice = EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(slice_prefix(&name)),
                    namespace: Some(namespace.clone()),
                    labels: Some(labels.clone()),
                    annotations: Some(annotations.clone()),
                    owner_references: Some(vec![crate::pods::controller_ref(svc.as_ref())]),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(ports),
            };
            let stored = api.create(&params, &slice).await?;
            written.push((
                stored.name_any(),
                stored.resource_version().unwrap_or_default(),
            ));
        }
        for slice_name in plan.delete {
            match api.delete(&slice_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
            deleted.push(slice_name);
        }
        Ok::<(), kube::Error>(())
    }
    .await;
    state.expect(&key, written, deleted);
    result?;
    state.backoff.succeeded(&key);
    Ok(Action::await_change())
}

/// What to write to make the slices match.
#[derive(Debug, Default)]
struct Plan {
    /// Existing slices with new content.
    update: Vec<EndpointSlice>,
    /// New slices: ports and endpoints.
    create: Vec<(Vec<EndpointPort>, Vec<Endpoint>)>,
    /// Slices to delete, by name.
    delete: Vec<String>,
}

/// Upstream's reconciler in outline: per port group, existing slices keep the endpoints
/// still wanted (updated), new endpoints fill slices with room before new slices are made,
/// emptied slices and slices of port groups no longer wanted are deleted. With no
/// endpoints at all one empty placeholder slice remains.
fn plan(
    existing: &[Arc<EndpointSlice>],
    groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)>,
    labels: &BTreeMap<String, String>,
) -> Plan {
    let mut plan = Plan::default();
    if groups.is_empty() {
        let placeholder = existing.iter().find(|s| s.endpoints.is_empty());
        match placeholder {
            Some(keep) => {
                let ports_empty = keep.ports.as_ref().is_none_or(Vec::is_empty);
                if !ports_empty || keep.labels() != labels {
                    let mut slice = (**keep).clone();
                    slice.ports = Some(Vec::new());
                    slice.metadata.labels = Some(labels.clone());
                    plan.update.push(slice);
                }
            }
            None => plan.create.push((Vec::new(), Vec::new())),
        }
        let keep_name = placeholder.map(|s| s.name_any());
        plan.delete = existing
            .iter()
            .map(|s| s.name_any())
            .filter(|n| Some(n) != keep_name.as_ref())
            .collect();
        return plan;
    }
    let mut used: HashSet<String> = HashSet::new();
    for (key, (ports, desired)) in groups {
        let mut in_group: Vec<EndpointSlice> = existing
            .iter()
            .filter(|s| {
                s.address_type == "IPv4" && ports_key(s.ports.as_deref().unwrap_or_default()) == key
            })
            .filter(|s| !s.endpoints.is_empty() || s.ports.as_ref().is_some_and(|p| !p.is_empty()))
            .map(|s| (**s).clone())
            .collect();
        let mut wanted: BTreeMap<(String, String), Endpoint> = desired
            .iter()
            .map(|e| (endpoint_key(e), e.clone()))
            .collect();
        let order: Vec<(String, String)> = desired.iter().map(endpoint_key).collect();
        let mut changed: Vec<bool> = Vec::new();
        for slice in &mut in_group {
            used.insert(slice.name_any());
            let before = slice.endpoints.clone();
            slice.endpoints = before
                .iter()
                .filter_map(|e| wanted.remove(&endpoint_key(e)))
                .collect();
            changed.push(
                slice.endpoints != before
                    || slice.labels() != labels
                    || slice.ports.as_deref().unwrap_or_default() != ports.as_slice(),
            );
            slice.ports = Some(ports.clone());
        }
        let mut leftover: Vec<Endpoint> = order.iter().filter_map(|k| wanted.remove(k)).collect();
        // Fill slices being updated anyway first, then the fullest others.
        let mut fill_order: Vec<usize> = (0..in_group.len()).collect();
        fill_order.sort_by_key(|&i| (!changed[i], std::cmp::Reverse(in_group[i].endpoints.len())));
        for i in fill_order {
            if leftover.is_empty() {
                break;
            }
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(in_group[i].endpoints.len());
            if room == 0 {
                continue;
            }
            let take = room.min(leftover.len());
            in_group[i].endpoints.extend(leftover.drain(..take));
            changed[i] = true;
        }
        while !leftover.is_empty() {
            let take = MAX_ENDPOINTS_PER_SLICE.min(leftover.len());
            plan.create
                .push((ports.clone(), leftover.drain(..take).collect()));
        }
        for (slice, changed) in in_group.into_iter().zip(changed) {
            if slice.endpoints.is_empty() {
                plan.delete.push(slice.name_any());
            } else if changed {
                let mut slice = slice;
                slice.metadata.labels = Some(labels.clone());
                plan.update.push(slice);
            }
        }
    }
    for slice in existing {
        let name = slice.name_any();
        if !used.contains(&name) && !plan.delete.contains(&name) {
            plan.delete.push(name);
        }
    }
    plan
}

/// A port group's identity: its ports, sorted.
fn ports_key(ports: &[EndpointPort]) -> String {
    let mut keys: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.as_deref().unwrap_or("TCP"),
                p.app_protocol.as_deref().unwrap_or_default()
            )
        })
        .collect();
    keys.sort();
    keys.join(",")
}

/// An endpoint's identity: its first address and its pod's UID.
fn endpoint_key(e: &Endpoint) -> (String, String) {
    (
        e.addresses.first().cloned().unwrap_or_default(),
        e.target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

/// The Service's labels plus the slice labels.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.remove(LABEL_SERVICE_NAME);
    labels.remove(LABEL_MANAGED_BY);
    labels.insert(LABEL_SERVICE_NAME.into(), svc.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// `generateName` of a Service's slices: `<service>-`, shortened so that the generated
/// name stays a valid name.
fn slice_prefix(service: &str) -> String {
    let mut prefix: String = service.chars().take(57).collect();
    prefix.push('-');
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;

    fn endpoint(ip: &str) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            target_ref: Some(ObjectReference {
                uid: Some(format!("uid-{ip}")),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(n: i32) -> EndpointPort {
        EndpointPort {
            name: Some(String::new()),
            port: Some(n),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }
    }

    fn slice(name: &str, ports: Vec<EndpointPort>, eps: Vec<Endpoint>) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::new()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps,
            ports: Some(ports),
        })
    }

    fn group(
        ports: Vec<EndpointPort>,
        eps: Vec<Endpoint>,
    ) -> BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> {
        let mut groups = BTreeMap::new();
        groups.insert(ports_key(&ports), (ports, eps));
        groups
    }

    #[test]
    fn new_service_gets_slices_of_at_most_a_hundred() {
        let eps: Vec<Endpoint> = (0..250)
            .map(|i| endpoint(&format!("10.0.{}.{}", i / 200, i % 200)))
            .collect();
        let plan = plan(&[], group(vec![port(80)], eps), &BTreeMap::new());
        let sizes: Vec<usize> = plan.create.iter().map(|(_, e)| e.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert!(plan.update.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn updates_in_place() {
        let existing = [slice(
            "s-1",
            vec![port(80)],
            vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
        )];
        // One endpoint goes, one comes: the same slice is updated, nothing created.
        let plan = plan(
            &existing,
            group(
                vec![port(80)],
                vec![endpoint("10.0.0.2"), endpoint("10.0.0.3")],
            ),
            &BTreeMap::new(),
        );
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.len(), 1);
        let ips: Vec<&str> = plan.update[0]
            .endpoints
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.3"]);
        // Nothing changed: nothing to do.
        let plan2 = plan_same(&existing);
        assert!(plan2.update.is_empty() && plan2.create.is_empty() && plan2.delete.is_empty());
    }

    fn plan_same(existing: &[Arc<EndpointSlice>]) -> Plan {
        plan(
            existing,
            group(vec![port(80)], existing[0].endpoints.clone()),
            &BTreeMap::new(),
        )
    }

    #[test]
    fn port_change_replaces_slices_and_empty_service_keeps_a_placeholder() {
        let existing = [slice("s-1", vec![port(80)], vec![endpoint("10.0.0.1")])];
        let plan1 = plan(
            &existing,
            group(vec![port(8080)], vec![endpoint("10.0.0.1")]),
            &BTreeMap::new(),
        );
        assert_eq!(plan1.create.len(), 1);
        assert_eq!(plan1.delete, ["s-1"]);
        let plan2 = plan(&existing, BTreeMap::new(), &BTreeMap::new());
        assert_eq!(plan2.create, vec![(vec![], vec![])]);
        assert_eq!(plan2.delete, ["s-1"]);
        let placeholder = [slice("p", vec![], vec![])];
        let plan3 = plan(&placeholder, BTreeMap::new(), &BTreeMap::new());
        assert!(plan3.create.is_empty() && plan3.delete.is_empty() && plan3.update.is_empty());
        // Endpoints arrive: the placeholder goes, a real slice comes.
        let plan4 = plan(
            &placeholder,
            group(vec![port(80)], vec![endpoint("10.0.0.1")]),
            &BTreeMap::new(),
        );
        assert_eq!(plan4.create.len(), 1);
        assert_eq!(plan4.delete, ["p"]);
    }
}
