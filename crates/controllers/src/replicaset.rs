//! The ReplicaSet loop (upstream `pkg/controller/replicaset`) and the replica-keeping core it
//! shares with the ReplicationController loop: claim the pods a selector matches (adopt
//! orphans, release pods that stopped matching), create or delete pods until `spec.replicas`
//! run, and publish the counts in status.
//!
//! The core is generic over [`ReplicaKind`]; `replication_controller` implements it for
//! core/v1 ReplicationControllers. The informer and queue plumbing at the bottom of this file
//! ([`informer`], [`triggers`], [`drive`], [`Backoff`], [`Events`]) is shared with the
//! Deployment loop.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt, stream};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodSpec, PodStatus, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ApplierConfig};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, applier, reflector as reflect};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pods::{controller_of, controller_ref, is_active, is_available, is_ready, ready_since};
use crate::workloads::selector_matches;
use crate::{Context, FIELD_MANAGER};

/// Runs the ReplicaSet loop.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    run_replicas::<ReplicaSet>(ctx).await
}

/// Most pods one sync creates or deletes, as upstream's `BurstReplicas`.
const BURST_REPLICAS: usize = 500;

/// How long unobserved creates or deletes hold back the next sync, as upstream's
/// `ExpectationsTimeout`.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Annotation that orders pods for scale-down (lower cost goes first).
const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A kind that keeps a number of pods from a template running: ReplicaSet or
/// ReplicationController.
pub(crate) trait ReplicaKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// Reporting component of the loop's events, as upstream names it.
    const COMPONENT: &'static str;
    /// Whether the selector matches `labels` (a missing selector matches nothing).
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool;
    /// `spec.replicas` (default 1).
    fn spec_replicas(&self) -> i32;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// `spec.template`.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The status in the shape both kinds share.
    fn replica_status(&self) -> ReplicaStatus;
    /// Replaces the status.
    fn set_replica_status(&mut self, status: ReplicaStatus);
}

/// The status fields ReplicaSets and ReplicationControllers share.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ReplicaStatus {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
    pub conditions: Vec<ReplicaCondition>,
}

/// A status condition in the shape both kinds share.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReplicaCondition {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<Time>,
}

/// Zero is how upstream leaves an `omitempty` count out.
pub(crate) fn nonzero<T: Default + PartialEq>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

impl ReplicaKind for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| selector_matches(&s.selector, Some(labels)))
    }

    fn spec_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn replica_status(&self) -> ReplicaStatus {
        let s = self.status.clone().unwrap_or_default();
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| ReplicaCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_transition_time: c.last_transition_time,
                })
                .collect(),
        }
    }

    fn set_replica_status(&mut self, status: ReplicaStatus) {
        let conditions: Vec<ReplicaSetCondition> = status
            .conditions
            .into_iter()
            .map(|c| ReplicaSetCondition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_transition_time: c.last_transition_time,
            })
            .collect();
        self.status = Some(ReplicaSetStatus {
            replicas: status.replicas,
            fully_labeled_replicas: nonzero(status.fully_labeled_replicas),
            ready_replicas: nonzero(status.ready_replicas),
            available_replicas: nonzero(status.available_replicas),
            observed_generation: nonzero(status.observed_generation),
            conditions: (!conditions.is_empty()).then_some(conditions),
            terminating_replicas: None,
        });
    }
}

/// Why a sync failed; the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A request to the API server failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// An informer cache stopped.
    #[error("informer cache closed")]
    CacheClosed,
    /// Pods could not be created or deleted (the message is the API's).
    #[error("{0}")]
    ManageReplicas(String),
    /// Adoption was refused because the owner changed.
    #[error("{0}")]
    CannotAdopt(String),
}

/// The message of an API error (the `Status` message, as upstream's `err.Error()` prints it).
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// The HTTP code of an API error.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

struct Core<K: ReplicaKind> {
    ctx: Context,
    pods: Store<Pod>,
    owners: Store<K>,
    expectations: Arc<Expectations>,
    backoff: Backoff,
    events: Events,
}

/// Runs the replica-keeping loop for kind `K`.
pub(crate) async fn run_replicas<K: ReplicaKind>(ctx: Context) -> anyhow::Result<()> {
    let expectations = Arc::new(Expectations::default());
    let (owners, owner_events) = informer::<K>(&ctx.client, |_| {}, |_, _| {});
    let observer = expectations.clone();
    let (pods, pod_events) = informer::<Pod>(&ctx.client, slim_pod, move |event, before| {
        observe_pod(&observer, before, event);
    });

    let forget = expectations.clone();
    let owner_triggers = triggers(owner_events, move |event| match event {
        Event::Apply(o) | Event::InitApply(o) => vec![ObjectRef::from_obj(&o)],
        Event::Delete(o) => {
            forget.forget(&o.uid().unwrap_or_default());
            Vec::new()
        }
        Event::Init | Event::InitDone => Vec::new(),
    });
    let owners_for_pods = owners.clone();
    let pod_triggers = triggers(pod_events, move |event| match event {
        Event::Apply(p) | Event::InitApply(p) => owners_of_pod::<K>(&owners_for_pods, &p, true),
        Event::Delete(p) => owners_of_pod::<K>(&owners_for_pods, &p, false),
        Event::Init | Event::InitDone => Vec::new(),
    });

    let core = Arc::new(Core {
        events: Events::new(&ctx, K::COMPONENT),
        ctx,
        pods,
        owners: owners.clone(),
        expectations,
        backoff: Backoff::default(),
    });
    drive(
        K::COMPONENT,
        owners,
        stream::select(owner_triggers, pod_triggers),
        core,
        reconcile::<K>,
        |owner: Arc<K>, _error: &Error, core: Arc<Core<K>>| {
            Action::requeue(core.backoff.next(&backoff_key(&*owner)))
        },
    )
    .await
}

/// Which owners a pod event concerns: its controller if that is a `K`, else (for a live
/// orphan) every `K` in the namespace whose selector matches it.
fn owners_of_pod<K: ReplicaKind>(owners: &Store<K>, pod: &Pod, alive: bool) -> Vec<ObjectRef<K>> {
    let namespace = pod.namespace().unwrap_or_default();
    match controller_of(&pod.metadata) {
        Some(r) if r.kind == K::kind(&()) && api_group(&r.api_version) == K::group(&()) => {
            vec![ObjectRef::new(&r.name).within(&namespace)]
        }
        Some(_) => Vec::new(),
        None if alive && pod.metadata.deletion_timestamp.is_none() => owners
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == Some(&namespace) && o.selects(pod.labels()))
            .map(|o| ObjectRef::from_obj(&**o))
            .collect(),
        None => Vec::new(),
    }
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub(crate) fn api_group(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

/// Records what a pod event tells the expectations of its controller: a new pod is an
/// observed creation, a pod gone or being deleted an observed deletion. `before` is the cache
/// as it was before this event.
fn observe_pod(expectations: &Expectations, before: &Store<Pod>, event: &Event<Pod>) {
    let (pod, deleted) = match event {
        Event::Apply(p) | Event::InitApply(p) => (p, false),
        Event::Delete(p) => (p, true),
        Event::Init | Event::InitDone => return,
    };
    let Some(owner) = controller_of(&pod.metadata) else {
        return;
    };
    let name = pod.name_any();
    if deleted || pod.metadata.deletion_timestamp.is_some() {
        expectations.deletion_observed(&owner.uid, &name);
    } else if before.get(&ObjectRef::from_obj(pod)).is_none() {
        expectations.creation_observed(&owner.uid);
    }
}

/// Keeps only what the replica loops read from a pod, to keep the cache small.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k == POD_DELETION_COST);
    }
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    pod.spec = Some(PodSpec {
        node_name,
        ..Default::default()
    });
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            conditions: status
                .conditions
                .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect()),
            container_statuses: status.container_statuses,
            init_container_statuses: status.init_container_statuses,
            ..Default::default()
        });
    }
}

fn backoff_key<K: Resource>(obj: &K) -> String {
    obj.meta().uid.clone().unwrap_or_default()
}

/// One sync of one ReplicaSet or ReplicationController, as upstream's `syncReplicaSet`.
async fn reconcile<K: ReplicaKind>(owner: Arc<K>, core: Arc<Core<K>>) -> Result<Action, Error> {
    core.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheClosed)?;
    let namespace = owner.namespace().unwrap_or_default();
    let uid = owner.uid().unwrap_or_default();
    let now = jiff::Timestamp::now();

    let pods_cache = core.pods.clone();
    let expectations_wait = core.expectations.pending(&uid, |pod_name| {
        pods_cache
            .get(&ObjectRef::new(pod_name).within(&namespace))
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    });

    let active: Vec<Arc<Pod>> = core
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()) && is_active(p))
        .collect();
    let claimed = claim_pods(&core, &owner, active).await?;

    let mut manage_error = None;
    if expectations_wait.is_none() && owner.meta().deletion_timestamp.is_none() {
        manage_error = manage_replicas(&core, &owner, &claimed).await.err();
    }

    let status = calculate_status(&*owner, &claimed, manage_error.as_ref(), now);
    update_status(&core.ctx.client, &*owner, status).await?;
    if let Some(e) = manage_error {
        return Err(e);
    }
    core.backoff.reset(&uid);

    // Come back when a pod that is ready becomes available, or when unobserved writes time out.
    let min_ready = owner.min_ready_seconds();
    let mut requeue = expectations_wait;
    if min_ready > 0 {
        for pod in &claimed {
            if let Some(since) = ready_since(pod)
                && !is_available(pod, min_ready, now)
            {
                let at = since.as_second() + i64::from(min_ready);
                let wait = Duration::from_millis(
                    u64::try_from((at * 1000 - now.as_millisecond()).max(0)).unwrap_or(0) + 100,
                );
                requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
            }
        }
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Adopts matching orphans and releases owned pods that stopped matching; returns the pods
/// the owner controls afterwards, as upstream's `ClaimPods`.
async fn claim_pods<K: ReplicaKind>(
    core: &Core<K>,
    owner: &K,
    active: Vec<Arc<Pod>>,
) -> Result<Vec<Arc<Pod>>, Error> {
    let uid = owner.uid().unwrap_or_default();
    let namespace = owner.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(core.ctx.client.clone(), &namespace);
    let owner_deleting = owner.meta().deletion_timestamp.is_some();
    let mut claimed = Vec::new();
    let mut adoption_checked = false;
    let mut first_error = None;
    for pod in active {
        let matches = owner.selects(pod.labels());
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    claimed.push(pod);
                } else if !owner_deleting && let Err(e) = release(&api, &pod, &uid).await {
                    first_error.get_or_insert(e);
                }
            }
            Some(_) => {}
            None => {
                if !matches || owner_deleting || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if !adoption_checked {
                    can_adopt(&core.ctx.client, owner).await?;
                    adoption_checked = true;
                }
                match adopt(&api, &pod, owner).await {
                    Ok(()) => claimed.push(pod),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

/// Refuses adoption when the owner, read fresh from the API, is gone or being deleted.
pub(crate) async fn can_adopt<K>(client: &Client, owner: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let fresh = api.get(&owner.name_any()).await?;
    if fresh.uid() != owner.uid() {
        return Err(Error::CannotAdopt(format!(
            "original {} {}/{} is gone: got uid {}, wanted {}",
            K::kind(&()),
            owner.namespace().unwrap_or_default(),
            owner.name_any(),
            fresh.uid().unwrap_or_default(),
            owner.uid().unwrap_or_default()
        )));
    }
    if fresh.meta().deletion_timestamp.is_some() {
        return Err(Error::CannotAdopt(format!(
            "{} {}/{} has just been deleted at {:?}",
            K::kind(&()),
            owner.namespace().unwrap_or_default(),
            owner.name_any(),
            fresh.meta().deletion_timestamp
        )));
    }
    Ok(())
}

/// Sets `owner` as the controller of `child` (strategic merge on ownerReferences, with the
/// child's uid as precondition).
pub(crate) async fn adopt<C, K>(api: &Api<C>, child: &C, owner: &K) -> Result<(), Error>
where
    C: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    K: Resource<DynamicType = ()>,
{
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": [controller_ref(owner)],
            "uid": child.uid(),
        }
    });
    api.patch(&child.name_any(), &patch_params(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}

/// Removes the owner reference to `owner_uid` from `child`; a child that is gone or changed
/// is not an error.
pub(crate) async fn release<C>(api: &Api<C>, child: &C, owner_uid: &str) -> Result<(), Error>
where
    C: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
            "uid": child.uid(),
        }
    });
    match api
        .patch(&child.name_any(), &patch_params(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if matches!(api_code(&e), Some(404 | 409 | 422)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates or deletes pods so that `spec.replicas` run, as upstream's `manageReplicas`.
async fn manage_replicas<K: ReplicaKind>(
    core: &Core<K>,
    owner: &K,
    pods: &[Arc<Pod>],
) -> Result<(), Error> {
    let wanted = usize::try_from(owner.spec_replicas().max(0)).unwrap_or(0);
    let uid = owner.uid().unwrap_or_default();
    let namespace = owner.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(core.ctx.client.clone(), &namespace);
    let reference = owner.object_ref(&());
    if pods.len() < wanted {
        let count = (wanted - pods.len()).min(BURST_REPLICAS);
        let Some(template) = owner.template() else {
            return Err(Error::ManageReplicas("spec.template is missing".into()));
        };
        let template_labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
        if template_labels.is_none_or(BTreeMap::is_empty) {
            return Err(Error::ManageReplicas(
                "unable to create pods, no labels".into(),
            ));
        }
        core.expectations.expect_creations(&uid, count);
        let mut pod = crate::pods::pod_from_template(template, controller_ref(owner));
        pod.metadata.generate_name = Some(format!("{}-", owner.name_any()));
        let pod = &pod;
        let api = &api;
        let reference = &reference;
        let created = slow_start_batch(count, |_| async move {
            match api.create(&post_params(), pod).await {
                Ok(created) => {
                    core.events.publish(
                        reference.clone(),
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", created.name_any()),
                    );
                    Ok(true)
                }
                Err(e) if namespace_terminating(&e) => Ok(false),
                Err(e) => {
                    let message = api_message(&e);
                    core.events.publish(
                        reference.clone(),
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {message}"),
                    );
                    Err(Error::ManageReplicas(message))
                }
            }
        })
        .await;
        let (successes, error) = created;
        // Creates never attempted (or failed) will not be observed.
        for _ in successes..count {
            core.expectations.creation_observed(&uid);
        }
        return error.map_or(Ok(()), Err);
    }
    if pods.len() > wanted {
        let count = (pods.len() - wanted).min(BURST_REPLICAS);
        let related = related_pods(core, owner);
        let victims = pods_to_delete(pods, &related, count, jiff::Timestamp::now());
        core.expectations
            .expect_deletions(&uid, victims.iter().map(|p| p.name_any()).collect());
        let results = futures::future::join_all(victims.iter().map(|pod| {
            let api = &api;
            let reference = reference.clone();
            let uid = &uid;
            async move {
                let name = pod.name_any();
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        core.events.publish(
                            reference,
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!("Deleted pod: {name}"),
                        );
                        Ok(())
                    }
                    Err(e) => {
                        core.expectations.deletion_observed(uid, &name);
                        if api_code(&e) == Some(404) {
                            return Ok(());
                        }
                        let message = api_message(&e);
                        core.events.publish(
                            reference,
                            EventType::Warning,
                            "FailedDelete",
                            format!("Error deleting: {message}"),
                        );
                        Err(Error::ManageReplicas(message))
                    }
                }
            }
        }))
        .await;
        return results
            .into_iter()
            .collect::<Result<Vec<()>, Error>>()
            .map(|_| ());
    }
    Ok(())
}

fn namespace_terminating(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => {
            status.code == 403 && status.message.contains("because it is being terminated")
        }
        _ => false,
    }
}

/// Runs `count` calls of `f` in batches of 1, 2, 4, … and stops after the first batch with a
/// failure, as upstream's `slowStartBatch`. Returns the successes (`Ok(true)`) and the first
/// error.
async fn slow_start_batch<F, Fut>(count: usize, f: F) -> (usize, Option<Error>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<bool, Error>>,
{
    let mut successes = 0;
    let mut started = 0;
    let mut batch = 1;
    while started < count {
        let size = batch.min(count - started);
        let results = futures::future::join_all((started..started + size).map(&f)).await;
        started += size;
        let mut error = None;
        for result in results {
            match result {
                Ok(true) => successes += 1,
                Ok(false) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if error.is_some() {
            return (successes, error);
        }
        batch *= 2;
    }
    (successes, None)
}

/// Active pods of every sibling under the same controller (for a ReplicaSet of a Deployment:
/// the pods of all the Deployment's ReplicaSets), used to spread scale-down across nodes.
fn related_pods<K: ReplicaKind>(core: &Core<K>, owner: &K) -> Vec<Arc<Pod>> {
    let namespace = owner.namespace();
    let own_uid = owner.uid().unwrap_or_default();
    let mut uids: HashSet<String> = HashSet::from([own_uid]);
    if let Some(parent) = controller_of(owner.meta()) {
        for sibling in core.owners.state() {
            if sibling.namespace() == namespace
                && controller_of(sibling.meta()).is_some_and(|r| r.uid == parent.uid)
            {
                uids.insert(sibling.uid().unwrap_or_default());
            }
        }
    }
    core.pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace() == namespace
                && is_active(p)
                && controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid))
        })
        .collect()
}

/// The `count` pods to delete first, as upstream's `getPodsToDelete` and
/// `ActivePodsWithRanks`: unscheduled before scheduled, Pending before Unknown before Running,
/// not ready before ready, lower deletion cost first, pods doubled up on a node first, ready
/// for less time first, more restarts first, newer first.
pub(crate) fn pods_to_delete(
    pods: &[Arc<Pod>],
    related: &[Arc<Pod>],
    count: usize,
    now: jiff::Timestamp,
) -> Vec<Arc<Pod>> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related {
        *on_node.entry(node_name(pod)).or_default() += 1;
    }
    let mut ranked: Vec<(usize, &Arc<Pod>)> = pods
        .iter()
        .map(|p| (on_node.get(node_name(p)).copied().unwrap_or(0), p))
        .collect();
    if count < pods.len() {
        ranked.sort_by(|(rank_a, a), (rank_b, b)| deletion_order(a, *rank_a, b, *rank_b, now));
    }
    ranked
        .into_iter()
        .take(count)
        .map(|(_, p)| p.clone())
        .collect()
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.annotations()
        .get(POD_DELETION_COST)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> (i32, i32) {
    let status = pod.status.as_ref();
    let max = |statuses: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
        statuses
            .into_iter()
            .flatten()
            .map(|c| c.restart_count)
            .max()
            .unwrap_or(0)
    };
    (
        max(status.and_then(|s| s.container_statuses.as_ref())),
        max(status.and_then(|s| s.init_container_statuses.as_ref())),
    )
}

/// Orders two timestamps so the more recent goes first; the zero (epoch) time goes first of all.
fn newer_first(
    a: jiff::Timestamp,
    b: jiff::Timestamp,
    pod_a: &Pod,
    pod_b: &Pod,
    now: jiff::Timestamp,
) -> Ordering {
    let zero = jiff::Timestamp::UNIX_EPOCH;
    if a == b {
        return Ordering::Equal;
    }
    if a == zero || b == zero {
        return if a == zero {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // Upstream's LogarithmicScaleDown: compare the log2 of the ages, then break ties by uid.
    let rank = |t: jiff::Timestamp| {
        let age = now.as_nanosecond() - t.as_nanosecond();
        if age > 0 {
            (age as f64).log2() as i64
        } else {
            -1
        }
    };
    match rank(a).cmp(&rank(b)) {
        Ordering::Equal => pod_a.uid().cmp(&pod_b.uid()),
        other => other,
    }
}

fn deletion_order(
    a: &Pod,
    rank_a: usize,
    b: &Pod,
    rank_b: usize,
    now: jiff::Timestamp,
) -> Ordering {
    let (node_a, node_b) = (node_name(a), node_name(b));
    if node_a != node_b && (node_a.is_empty() || node_b.is_empty()) {
        return if node_a.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    phase_ordinal(a)
        .cmp(&phase_ordinal(b))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| rank_b.cmp(&rank_a))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            (Some(ta), Some(tb)) => newer_first(ta, tb, a, b, now),
            _ => Ordering::Equal,
        })
        .then_with(|| max_restarts(b).cmp(&max_restarts(a)))
        .then_with(|| {
            let created = |p: &Pod| {
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0)
            };
            newer_first(created(a), created(b), a, b, now)
        })
}

/// The status a sync publishes, as upstream's `calculateStatus`.
fn calculate_status<K: ReplicaKind>(
    owner: &K,
    pods: &[Arc<Pod>],
    manage_error: Option<&Error>,
    now: jiff::Timestamp,
) -> ReplicaStatus {
    let template_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = owner.min_ready_seconds();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let mut status = owner.replica_status();
    status.replicas = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    status.fully_labeled_replicas = count(&|p| {
        template_labels
            .iter()
            .all(|(k, v)| p.labels().get(k) == Some(v))
    });
    status.ready_replicas = count(&|p| is_ready(p));
    status.available_replicas = count(&|p| is_available(p, min_ready, now));
    status.observed_generation = owner.meta().generation.unwrap_or(0);
    let has_failure = status
        .conditions
        .iter()
        .any(|c| c.type_ == "ReplicaFailure");
    match manage_error {
        Some(e) if !has_failure => {
            let diff = pods.len() as i64 - i64::from(owner.spec_replicas());
            let reason = match diff.cmp(&0) {
                Ordering::Less => Some("FailedCreate".to_owned()),
                Ordering::Greater => Some("FailedDelete".to_owned()),
                Ordering::Equal => None,
            };
            status.conditions.push(ReplicaCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason,
                message: Some(e.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => status.conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    status
}

/// Writes `status` unless the object already has it; retries once on a conflict.
async fn update_status<K: ReplicaKind>(
    client: &Client,
    owner: &K,
    status: ReplicaStatus,
) -> Result<(), Error> {
    if owner.replica_status() == status {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let mut object = owner.clone();
    for attempt in 0..2 {
        object.set_replica_status(status.clone());
        match api
            .replace_status(&object.name_any(), &post_params(), &object)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if attempt == 0 && api_code(&e) == Some(409) => {
                object = api.get(&owner.name_any()).await?;
                if object.uid() != owner.uid() {
                    return Ok(());
                }
            }
            Err(e) if api_code(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Per-owner record of creates and deletes issued but not yet seen in the cache, as
/// upstream's `ControllerExpectations`: while one is pending, the owner is not synced again,
/// so a slow cache never causes extra pods.
#[derive(Default)]
pub(crate) struct Expectations {
    by_owner: Mutex<HashMap<String, Expectation>>,
}

struct Expectation {
    creates: usize,
    deletes: HashSet<String>,
    set_at: Instant,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        self.by_owner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `None` when the owner may be synced; otherwise how long until the expectation expires.
    /// Expected deletions of pods `present` no longer reports are counted as observed.
    pub(crate) fn pending(&self, owner: &str, present: impl Fn(&str) -> bool) -> Option<Duration> {
        let mut map = self.lock();
        let expectation = map.get_mut(owner)?;
        expectation.deletes.retain(|name| present(name));
        let age = expectation.set_at.elapsed();
        if (expectation.creates == 0 && expectation.deletes.is_empty())
            || age >= EXPECTATIONS_TIMEOUT
        {
            map.remove(owner);
            return None;
        }
        Some(EXPECTATIONS_TIMEOUT - age)
    }

    /// Expects `count` new pods of `owner`.
    pub(crate) fn expect_creations(&self, owner: &str, count: usize) {
        self.lock().insert(
            owner.to_owned(),
            Expectation {
                creates: count,
                deletes: HashSet::new(),
                set_at: Instant::now(),
            },
        );
    }

    /// Expects the pods named `names` of `owner` to go.
    pub(crate) fn expect_deletions(&self, owner: &str, names: HashSet<String>) {
        self.lock().insert(
            owner.to_owned(),
            Expectation {
                creates: 0,
                deletes: names,
                set_at: Instant::now(),
            },
        );
    }

    /// One expected pod of `owner` appeared (or will never be created).
    pub(crate) fn creation_observed(&self, owner: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.creates = e.creates.saturating_sub(1);
        }
    }

    /// The pod `name` of `owner` is gone or being deleted.
    pub(crate) fn deletion_observed(&self, owner: &str, name: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.deletes.remove(name);
        }
    }

    /// Drops what is recorded for a deleted owner.
    pub(crate) fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }
}

/// Per-key retry delays: 10 ms doubling up to a minute, reset by a successful sync.
#[derive(Default)]
pub(crate) struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before retrying `key` after one more failure.
    pub(crate) fn next(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key.to_owned()).or_default();
        let delay = Duration::from_millis(10u64.saturating_mul(1 << (*n).min(13)));
        *n += 1;
        delay.min(Duration::from_secs(60))
    }

    /// Forgets the failures of `key`.
    pub(crate) fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// Events of one loop, published in the background. Each event is a new object (the
/// kube-rs recorder's series would keep the first message of a reason), and, as upstream's
/// spam filter, each object gets a burst of 25 events and then one per five minutes.
pub(crate) struct Events {
    ctx: Context,
    component: &'static str,
    filter: SpamFilter,
}

/// Per-object token buckets, as upstream's `EventSourceObjectSpamFilter`.
#[derive(Default)]
struct SpamFilter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Events an object may get at once.
const EVENT_BURST: f64 = 25.0;
/// Seconds per event once the burst is spent.
const EVENT_REFILL_SECONDS: f64 = 300.0;

impl Events {
    /// Events reported by `component`.
    pub(crate) fn new(ctx: &Context, component: &'static str) -> Self {
        Self {
            ctx: ctx.clone(),
            component,
            filter: SpamFilter::default(),
        }
    }

    /// Publishes an event about `regarding`, unless the object had too many lately.
    pub(crate) fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        if !self
            .filter
            .admit(regarding.uid.as_deref().unwrap_or_default())
        {
            return;
        }
        let recorder = self.ctx.recorder(self.component);
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &regarding).await {
                tracing::debug!(error = %e, "publishing event failed");
            }
        });
    }
}

impl SpamFilter {
    /// Takes a token for the object with `uid`, if it has one.
    fn admit(&self, uid: &str) -> bool {
        let now = Instant::now();
        let refill = |(tokens, at): (f64, Instant)| {
            (tokens + at.elapsed().as_secs_f64() / EVENT_REFILL_SECONDS).min(EVENT_BURST)
        };
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 1024 {
            buckets.retain(|_, bucket| refill(*bucket) < EVENT_BURST);
        }
        let bucket = buckets.entry(uid.to_owned()).or_insert((EVENT_BURST, now));
        let tokens = refill(*bucket);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            return false;
        }
        *bucket = (tokens - 1.0, now);
        true
    }
}

/// Parameters of a create or update by the built-in loops.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Parameters of a patch by the built-in loops.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Watches every `K` in the cluster into a cache. `slim` trims each object before it is
/// cached; `observe` sees each event with the cache as it was before the event. Returns the
/// cache and the event stream (which must be polled for the cache to fill).
pub(crate) fn informer<K>(
    client: &Client,
    slim: fn(&mut K),
    observe: impl Fn(&Event<K>, &Store<K>) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let before = store.clone();
    let events = watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map_ok(move |event| event.modify(slim))
        .inspect_ok(move |event| observe(event, &before));
    (store, reflect(writer, events))
}

/// Maps each watch event to the objects to reconcile.
pub(crate) fn triggers<K, T>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    map: impl Fn(Event<K>) -> Vec<ObjectRef<T>> + Send + 'static,
) -> impl Stream<Item = Result<ObjectRef<T>, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
    T: Resource<DynamicType = ()> + Send + 'static,
{
    events
        .map_ok(move |event| stream::iter(map(event).into_iter().map(Ok)))
        .try_flatten()
}

/// Runs `reconcile` over the objects `queue` names (deduplicated, one at a time per object,
/// retried after `error_policy`'s delay) until the queue ends.
pub(crate) async fn drive<K, C, R, Fut, P>(
    name: &str,
    store: Store<K>,
    queue: impl Stream<Item = Result<ObjectRef<K>, watcher::Error>> + Send + 'static,
    ctx: Arc<C>,
    reconcile: R,
    error_policy: P,
) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
    P: Fn(Arc<K>, &Error, Arc<C>) -> Action,
{
    use kube::runtime::controller::Error as ControllerError;
    applier(
        reconcile_boxed(reconcile),
        error_policy,
        ctx,
        store,
        queue,
        ApplierConfig::default(),
    )
    .for_each(|result| async move {
        match result {
            Ok(_) => {}
            Err(ControllerError::ReconcilerFailed(Error::Api(e), obj)) if api_code(&e) == Some(409) => {
                tracing::debug!(controller = name, object = %obj, "conflict; retrying");
            }
            Err(ControllerError::ReconcilerFailed(e, obj)) => {
                tracing::info!(controller = name, object = %obj, error = %e, "sync failed; retrying");
            }
            Err(ControllerError::ObjectNotFound(_)) => {}
            Err(e) => tracing::warn!(controller = name, error = %e, "controller queue error"),
        }
    })
    .await;
    Ok(())
}

/// A sync in flight.
type SyncFuture = std::pin::Pin<Box<dyn Future<Output = Result<Action, Error>> + Send>>;

/// Runs each sync on its own task, so that a panic fails that sync instead of the loop.
fn reconcile_boxed<K, C, R, Fut>(reconcile: R) -> impl FnMut(Arc<K>, Arc<C>) -> SyncFuture
where
    K: Send + Sync + 'static,
    C: Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    move |obj, ctx| {
        let task = tokio::spawn(reconcile(obj, ctx));
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(Error::ManageReplicas(format!("sync panicked: {e}"))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodCondition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|at| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(jiff::Timestamp::from_second(at).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn deletion_prefers_unscheduled_pending_unready_then_newest() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let pods = vec![
            pod("old-ready", "n1", "Running", Some(1000), 100),
            pod("new-ready", "n2", "Running", Some(999_000), 998_000),
            pod("unready", "n1", "Running", None, 200),
            pod("pending", "n2", "Pending", None, 300),
            pod("unscheduled", "", "Pending", None, 50),
        ];
        let order = pods_to_delete(&pods, &pods, 4, now);
        assert_eq!(
            names(&order),
            ["unscheduled", "pending", "unready", "new-ready"]
        );
        assert_eq!(
            names(&pods_to_delete(&pods, &pods, 2, now)),
            ["unscheduled", "pending"]
        );
    }

    #[test]
    fn deletion_prefers_doubled_up_nodes() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let a = pod("a", "n1", "Running", Some(1000), 100);
        let b = pod("b", "n2", "Running", Some(1000), 100);
        let c = pod("c", "n2", "Running", Some(1000), 100);
        let order = pods_to_delete(&[a.clone(), b.clone()], &[a, b, c], 1, now);
        assert_eq!(names(&order), ["b"]);
    }

    #[test]
    fn expectations_hold_until_observed() {
        let e = Expectations::default();
        assert_eq!(e.pending("rs", |_| true), None);
        e.expect_creations("rs", 2);
        assert!(e.pending("rs", |_| true).is_some());
        e.creation_observed("rs");
        assert!(e.pending("rs", |_| true).is_some());
        e.creation_observed("rs");
        assert_eq!(e.pending("rs", |_| true), None);
        e.expect_deletions("rs", HashSet::from(["a".to_owned(), "b".to_owned()]));
        e.deletion_observed("rs", "a");
        assert!(e.pending("rs", |_| true).is_some());
        // b no longer in the cache counts as observed.
        assert_eq!(e.pending("rs", |name| name != "b"), None);
    }

    #[test]
    fn spam_filter_allows_a_burst_per_object() {
        let filter = SpamFilter::default();
        for _ in 0..25 {
            assert!(filter.admit("a"));
        }
        assert!(!filter.admit("a"));
        assert!(filter.admit("b"));
    }

    #[tokio::test]
    async fn slow_start_stops_after_a_failed_batch() {
        let calls = Mutex::new(0);
        let (ok, err) = slow_start_batch(10, |i| {
            *calls.lock().unwrap() += 1;
            async move {
                if i == 4 {
                    Err(Error::ManageReplicas("quota".into()))
                } else {
                    Ok(true)
                }
            }
        })
        .await;
        // Batches 1, 2, 4: the third batch (items 3..7) holds the failure.
        assert_eq!(*calls.lock().unwrap(), 7);
        assert_eq!(ok, 6);
        assert!(err.is_some());
    }
}
