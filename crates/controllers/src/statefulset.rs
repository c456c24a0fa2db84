//! The StatefulSet controller, as upstream's `pkg/controller/statefulset`: pods with stable
//! names `<set>-<ordinal>`, hostnames under the governing Service, and their own
//! PersistentVolumeClaims `<claim>-<set>-<ordinal>`; created in order and removed in
//! reverse order (OrderedReady) or all at once (Parallel); templates recorded as
//! ControllerRevisions and rolled out from the highest ordinal down to the partition,
//! one pod at a time, or left to the user (OnDelete).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, StatefulSet, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use crate::Context;
use crate::controller_revision::{self, Wanted};
use crate::pods::{controller_ref, is_available, is_ready, pod_from_template};
use crate::workloads::{
    Error, Result, Written, claim, event, informer, is_already_exists, is_not_found, key_of, now,
    owners_to_sync, patch_params, run_loop,
};

/// Pod label with the pod's own name, for per-pod Services.
pub(crate) const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Pod label with the pod's ordinal.
pub(crate) const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Pod label with the name of the revision the pod was made from.
pub(crate) const REVISION_LABEL: &str = "controller-revision-hash";

struct State {
    client: kube::Client,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    revisions: Store<ControllerRevision>,
    recorder: Recorder,
    written: Written,
}

/// Runs the StatefulSet loop.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (sets, set_events) = informer(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (claims, claim_events) = informer(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let (revisions, revision_events) = informer(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
    );
    let state = Arc::new(State {
        client,
        pods,
        claims,
        revisions,
        recorder: ctx.recorder("statefulset-controller"),
        written: Written::default(),
    });
    let sets_for_pods = sets.clone();
    let pod_keys = pod_events.flat_map(move |pod| {
        let keys = owners_to_sync(pod.as_ref(), &sets_for_pods, |s: &StatefulSet| {
            s.spec.as_ref().map(|s| &s.selector)
        });
        futures::stream::iter(keys)
    });
    let revision_keys = revision_events.filter_map(|r| {
        std::future::ready(crate::workloads::controller_key::<StatefulSet>(&r.metadata))
    });
    // Claims only need to be in the cache; their events matter for nothing else.
    let claim_keys = claim_events.filter_map(|_| std::future::ready(None));
    let queue = futures::stream::select(
        futures::stream::select(
            set_events.map(|s| ObjectRef::from_obj(s.as_ref())),
            pod_keys,
        ),
        futures::stream::select(revision_keys, claim_keys),
    );
    run_loop("statefulset", sets, queue, state, reconcile).await;
    Ok(())
}

/// `<set>-<ordinal>` → ordinal, for pods of `set`.
fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok().filter(|o: &i32| *o >= 0)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_created(pod: &Pod) -> bool {
    !phase(pod).is_empty() || pod.metadata.uid.is_some()
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_failed_or_succeeded(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded")
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

fn running_and_available(pod: &Pod, min_ready: i32, at: jiff::Timestamp) -> bool {
    phase(pod) == "Running" && is_available(pod, min_ready, at)
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// `<claim>-<set>-<ordinal>`.
pub(crate) fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// The pod for `ordinal` from `template` (upstream's `newVersionedStatefulSetPod`).
fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set_name = set.name_any();
    let name = format!("{set_name}-{ordinal}");
    let mut pod = pod_from_template(template, controller_ref(set));
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = set.namespace();
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let spec = set.spec.as_ref();
    let pod_spec = pod.spec.get_or_insert_with(Default::default);
    pod_spec.hostname = Some(name.clone());
    if let Some(service) = spec
        .and_then(|s| s.service_name.as_deref())
        .filter(|s| !s.is_empty())
    {
        pod_spec.subdomain = Some(service.into());
    }
    for claim in spec
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let claim_template = claim.name_any();
        let volume = Volume {
            name: claim_template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&claim_template, &set_name, ordinal),
                read_only: None,
            }),
            ..Default::default()
        };
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        match volumes.iter_mut().find(|v| v.name == claim_template) {
            Some(existing) => *existing = volume,
            None => volumes.push(volume),
        }
    }
    pod
}

/// Whether the pod carries the identity its ordinal gives it.
fn identity_matches(set: &StatefulSet, pod: &Pod, ordinal: i32) -> bool {
    let name = format!("{}-{ordinal}", set.name_any());
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let service = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .unwrap_or("");
    let spec = pod.spec.as_ref();
    label(POD_NAME_LABEL) == Some(name.as_str())
        && label(POD_INDEX_LABEL) == Some(ordinal.to_string().as_str())
        && spec.and_then(|s| s.hostname.as_deref()) == Some(name.as_str())
        && (service.is_empty() || spec.and_then(|s| s.subdomain.as_deref()) == Some(service))
}

async fn reconcile(set: Arc<StatefulSet>, state: Arc<State>) -> Result<Action> {
    let key = key_of(set.as_ref());
    if state.written.is_stale(&key, set.as_ref()) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let spec = set
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("statefulset has no spec".into()))?;
    state.pods.wait_until_ready().await.ok();
    state.revisions.wait_until_ready().await.ok();
    state.claims.wait_until_ready().await.ok();
    let ns = set.namespace().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(state.client.clone(), &ns);
    let candidates = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()));
    let pods = claim(&pods_api, set.as_ref(), &spec.selector, candidates).await?;
    let revisions_api: Api<ControllerRevision> = Api::namespaced(state.client.clone(), &ns);
    let revisions = controller_revision::owned(&state.revisions, set.as_ref());
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let old_status = set.status.clone().unwrap_or_default();
    let (update_revision, collision_count) = controller_revision::ensure(
        &revisions_api,
        Wanted {
            owner: set.as_ref(),
            template: &spec.template,
            extra_labels: BTreeMap::new(),
            collision_count: old_status.collision_count,
        },
        &revisions,
    )
    .await?;
    let update_name = update_revision.name_any();
    let current_revision = old_status
        .current_revision
        .as_ref()
        .and_then(|name| {
            revisions
                .iter()
                .find(|r| r.metadata.name.as_ref() == Some(name))
        })
        .cloned()
        .unwrap_or_else(|| update_revision.clone());
    let current_name = current_revision.name_any();
    let current_template = controller_revision::template_of(&current_revision)
        .unwrap_or_else(|| spec.template.clone());

    let mut sync = Sync {
        set: &set,
        spec: &spec,
        state: &state,
        pods_api,
        claims_api: Api::namespaced(state.client.clone(), &ns),
        update_template: spec.template.clone(),
        current_template,
        update_name: update_name.clone(),
        current_name: current_name.clone(),
        now: now(),
        wait: None,
    };
    let replicas = sync.run(&pods).await?;

    // Status over what exists now.
    let pods_now: Vec<&Pod> = replicas.iter().map(AsRef::as_ref).collect();
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count,
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        conditions: old_status.conditions.clone(),
        ..Default::default()
    };
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut replicas_count = 0;
    for pod in &pods_now {
        if !is_created(pod) {
            continue;
        }
        replicas_count += 1;
        if running_and_ready(pod) {
            status.ready_replicas = Some(status.ready_replicas.unwrap_or(0) + 1);
            if running_and_available(pod, min_ready, sync.now) {
                status.available_replicas = Some(status.available_replicas.unwrap_or(0) + 1);
            } else if let Some(since) = crate::pods::ready_since(pod) {
                let left = i64::from(min_ready) - (sync.now.as_second() - since.as_second());
                let left = Duration::from_secs(u64::try_from(left.max(0)).unwrap_or(0) + 1);
                sync.wait = Some(sync.wait.map_or(left, |w| w.min(left)));
            }
        }
        if !is_terminating(pod) {
            if revision_of(pod) == Some(current_name.as_str()) {
                status.current_replicas = Some(status.current_replicas.unwrap_or(0) + 1);
            }
            if revision_of(pod) == Some(update_name.as_str()) {
                status.updated_replicas = Some(status.updated_replicas.unwrap_or(0) + 1);
            }
        }
    }
    status.replicas = replicas_count;
    // A finished rolling update makes the update revision current.
    let wanted = spec.replicas.unwrap_or(1);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        != Some("OnDelete");
    if rolling
        && status.updated_replicas.unwrap_or(0) == wanted
        && status.ready_replicas.unwrap_or(0) == wanted
        && status.replicas == wanted
    {
        status.current_revision = Some(update_name.clone());
        status.current_replicas = status.updated_replicas;
    }
    // History: keep revisions in use and `revisionHistoryLimit` others.
    let live: HashSet<String> = pods_now
        .iter()
        .filter_map(|p| revision_of(p).map(str::to_owned))
        .chain([current_name.clone(), update_name.clone()])
        .chain(status.current_revision.clone())
        .collect();
    let mut history = controller_revision::owned(&state.revisions, set.as_ref());
    history.retain(|r| r.metadata.name.as_ref() != Some(&update_name));
    controller_revision::truncate(
        &revisions_api,
        &history,
        spec.revision_history_limit.unwrap_or(10),
        |r| live.contains(&r.name_any()),
    )
    .await?;
    write_status(&state, &set, &key, &old_status, status).await?;
    Ok(sync.wait.map_or_else(Action::await_change, Action::requeue))
}

/// One sync of one StatefulSet's pods and claims.
struct Sync<'a> {
    set: &'a StatefulSet,
    spec: &'a StatefulSetSpec,
    state: &'a State,
    pods_api: Api<Pod>,
    claims_api: Api<PersistentVolumeClaim>,
    update_template: PodTemplateSpec,
    current_template: PodTemplateSpec,
    update_name: String,
    current_name: String,
    now: jiff::Timestamp,
    /// When to look again (pods becoming available).
    wait: Option<Duration>,
}

impl Sync<'_> {
    fn monotonic(&self) -> bool {
        self.spec.pod_management_policy.as_deref() != Some("Parallel")
    }

    fn start_ordinal(&self) -> i32 {
        self.spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
    }

    fn partition(&self) -> Option<i32> {
        let strategy = self.spec.update_strategy.as_ref()?;
        if strategy.type_.as_deref() == Some("OnDelete") {
            return None;
        }
        Some(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.partition)
                .unwrap_or(0),
        )
    }

    fn min_ready(&self) -> i32 {
        self.spec.min_ready_seconds.unwrap_or(0)
    }

    fn healthy(&self, pod: &Pod) -> bool {
        running_and_ready(pod)
            && running_and_available(pod, self.min_ready(), self.now)
            && !is_terminating(pod)
    }

    /// The pod an ordinal should get now: from the current revision below the partition
    /// (or below the current replicas), from the update revision otherwise.
    fn versioned_pod(&self, ordinal: i32) -> Pod {
        let index = ordinal - self.start_ordinal();
        let use_current = match self
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
        {
            Some("OnDelete") => false,
            _ => self.partition().is_some_and(|p| index < p),
        };
        if use_current && self.current_name != self.update_name {
            new_pod(
                self.set,
                &self.current_template,
                &self.current_name,
                ordinal,
            )
        } else {
            new_pod(self.set, &self.update_template, &self.update_name, ordinal)
        }
    }

    /// Converges the pods; returns the pods that exist afterwards as far as this sync knows.
    async fn run(&mut self, pods: &[Arc<Pod>]) -> Result<Vec<Arc<Pod>>> {
        let set_name = self.set.name_any();
        let replica_count = usize::try_from(self.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        let start = self.start_ordinal();
        let mut replicas: Vec<Option<Arc<Pod>>> = vec![None; replica_count];
        let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
        for pod in pods {
            let Some(ordinal) = ordinal_of(&set_name, &pod.name_any()) else {
                continue;
            };
            let index = usize::try_from(ordinal - start)
                .ok()
                .filter(|i| *i < replica_count);
            match index {
                Some(i) => replicas[i] = Some(pod.clone()),
                None => condemned.push((ordinal, pod.clone())),
            }
        }
        condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        let mut existing: Vec<Arc<Pod>> = pods.to_vec();
        let monotonic = self.monotonic();
        self.update_claim_owners(&replicas, &condemned).await?;

        // The first unhealthy pod, which is allowed to be removed while others wait.
        let first_unhealthy = replicas
            .iter()
            .flatten()
            .chain(condemned.iter().map(|(_, p)| p))
            .find(|p| !self.healthy(p))
            .map(|p| p.metadata.uid.clone());

        for (i, slot) in replicas.iter_mut().enumerate() {
            let ordinal = start + i32::try_from(i).unwrap_or(0);
            if let Some(pod) = slot.as_ref()
                && is_failed_or_succeeded(pod)
                && !is_terminating(pod)
            {
                let reason = if phase(pod) == "Failed" {
                    "failed"
                } else {
                    "succeeded"
                };
                tracing::debug!(pod = %pod.name_any(), reason, "recreating stateful pod");
                self.delete_pod(pod).await?;
                if monotonic {
                    return Ok(existing);
                }
                continue;
            }
            let Some(pod) = slot.clone() else {
                let pod = self.versioned_pod(ordinal);
                self.create_claims(ordinal).await?;
                match self.pods_api.create(&PostParams::default(), &pod).await {
                    Ok(created) => {
                        event(
                            &self.state.recorder,
                            self.set,
                            false,
                            "SuccessfulCreate",
                            format!(
                                "create Pod {} in StatefulSet {set_name} successful",
                                created.name_any()
                            ),
                        );
                        let created = Arc::new(created);
                        existing.push(created.clone());
                        *slot = Some(created);
                    }
                    // The cache is behind: the pod is there.
                    Err(e) if is_already_exists(&e) => {
                        self.wait = Some(Duration::from_secs(1));
                        return Ok(existing);
                    }
                    Err(e) => {
                        event(
                            &self.state.recorder,
                            self.set,
                            true,
                            "FailedCreate",
                            format!(
                                "create Pod {} in StatefulSet {set_name} failed error: {e}",
                                pod.name_any()
                            ),
                        );
                        return Err(e.into());
                    }
                }
                if monotonic {
                    return Ok(existing);
                }
                continue;
            };
            if is_terminating(&pod) {
                if monotonic {
                    return Ok(existing);
                }
                continue;
            }
            if monotonic && !running_and_ready(&pod) {
                return Ok(existing);
            }
            if monotonic && !running_and_available(&pod, self.min_ready(), self.now) {
                self.wait = Some(self.wait.unwrap_or(Duration::from_secs(1)));
                return Ok(existing);
            }
            if !identity_matches(self.set, &pod, ordinal) {
                self.fix_identity(&pod, ordinal).await?;
            }
        }

        for (_, pod) in &condemned {
            if is_terminating(pod) {
                if monotonic {
                    return Ok(existing);
                }
                continue;
            }
            let unhealthy_first = first_unhealthy.as_ref() == Some(&pod.metadata.uid);
            if monotonic && !self.healthy(pod) && !unhealthy_first {
                return Ok(existing);
            }
            self.delete_pod(pod).await?;
            if monotonic {
                return Ok(existing);
            }
        }

        // Rolling update: from the highest ordinal down to the partition, one at a time.
        let Some(partition) = self.partition() else {
            return Ok(existing);
        };
        let floor = usize::try_from(partition.max(0)).unwrap_or(0);
        for i in (floor..replicas.len()).rev() {
            let Some(pod) = replicas[i].as_ref() else {
                return Ok(existing);
            };
            if revision_of(pod) != Some(self.update_name.as_str()) && !is_terminating(pod) {
                self.delete_pod(pod).await?;
                return Ok(existing);
            }
            if !self.healthy(pod) {
                return Ok(existing);
            }
        }
        Ok(existing)
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pods_api.delete(&pod.name_any(), &params).await {
            Ok(_) => {
                event(
                    &self.state.recorder,
                    self.set,
                    false,
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {} in StatefulSet {} successful",
                        pod.name_any(),
                        self.set.name_any()
                    ),
                );
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            // The cached pod was replaced already.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the ordinal's missing claims.
    async fn create_claims(&self, ordinal: i32) -> Result<()> {
        let set_name = self.set.name_any();
        for template in self.spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(&template.name_any(), &set_name, ordinal);
            let cached = self
                .state
                .claims
                .get(&ObjectRef::new(&name).within(&self.set.namespace().unwrap_or_default()));
            if let Some(existing) = cached {
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(Error::Invalid(format!("pvc {name} is being deleted")));
                }
                continue;
            }
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(self.spec.selector.match_labels.clone().unwrap_or_default());
            let mut owners = Vec::new();
            if self.retention("whenDeleted") == "Delete" {
                owners.push(set_owner(self.set));
            }
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: self.set.namespace(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: (!owners.is_empty()).then_some(owners),
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            match self.claims_api.create(&PostParams::default(), &claim).await {
                Ok(_) => event(
                    &self.state.recorder,
                    self.set,
                    false,
                    "SuccessfulCreate",
                    format!(
                        "create Claim {name} Pod {set_name}-{ordinal} in StatefulSet {set_name} success"
                    ),
                ),
                Err(e) if is_already_exists(&e) => {}
                Err(e) => {
                    event(
                        &self.state.recorder,
                        self.set,
                        true,
                        "FailedCreate",
                        format!(
                            "create Claim {name} for Pod {set_name}-{ordinal} in StatefulSet {set_name} failed error: {e}"
                        ),
                    );
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn retention(&self, which: &str) -> &str {
        let policy = self.spec.persistent_volume_claim_retention_policy.as_ref();
        let value = match which {
            "whenDeleted" => policy.and_then(|p| p.when_deleted.as_deref()),
            _ => policy.and_then(|p| p.when_scaled.as_deref()),
        };
        value.unwrap_or("Retain")
    }

    /// Points claims' owner references where the retention policy says: the set (deleted
    /// with it) and, for condemned ordinals, the pod (deleted with it when scaled down).
    async fn update_claim_owners(
        &self,
        replicas: &[Option<Arc<Pod>>],
        condemned: &[(i32, Arc<Pod>)],
    ) -> Result<()> {
        let templates = self.spec.volume_claim_templates.clone().unwrap_or_default();
        if templates.is_empty() {
            return Ok(());
        }
        let set_name = self.set.name_any();
        let ns = self.set.namespace().unwrap_or_default();
        let set_uid = self.set.metadata.uid.clone().unwrap_or_default();
        let pods = replicas
            .iter()
            .flatten()
            .map(|p| (p.clone(), false))
            .chain(condemned.iter().map(|(_, p)| (p.clone(), true)));
        for (pod, is_condemned) in pods {
            let Some(ordinal) = ordinal_of(&set_name, &pod.name_any()) else {
                continue;
            };
            let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
            for template in &templates {
                let name = claim_name(&template.name_any(), &set_name, ordinal);
                let Some(claim) = self.state.claims.get(&ObjectRef::new(&name).within(&ns)) else {
                    continue;
                };
                let refs = claim.metadata.owner_references.clone().unwrap_or_default();
                let mut wanted: Vec<OwnerReference> = refs
                    .iter()
                    .filter(|r| r.uid != set_uid && !(r.kind == "Pod" && r.api_version == "v1"))
                    .cloned()
                    .collect();
                if self.retention("whenDeleted") == "Delete" {
                    wanted.push(set_owner(self.set));
                }
                if is_condemned && self.retention("whenScaled") == "Delete" {
                    wanted.push(OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: pod.name_any(),
                        uid: pod_uid.clone(),
                        controller: Some(false),
                        block_owner_deletion: Some(true),
                    });
                }
                // Keep references to pods other than this one's current incarnation out.
                let same = wanted.len() == refs.len()
                    && wanted.iter().all(|w| refs.iter().any(|r| r.uid == w.uid));
                if same {
                    continue;
                }
                let patch = json!({"metadata": {
                    "ownerReferences": wanted,
                    "resourceVersion": claim.metadata.resource_version,
                }});
                match self
                    .claims_api
                    .patch(&name, &patch_params(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Restores a pod's identity labels, hostname and subdomain.
    async fn fix_identity(&self, pod: &Pod, ordinal: i32) -> Result<()> {
        let name = format!("{}-{ordinal}", self.set.name_any());
        let mut labels = serde_json::Map::new();
        labels.insert(POD_NAME_LABEL.into(), json!(name));
        labels.insert(POD_INDEX_LABEL.into(), json!(ordinal.to_string()));
        let patch = json!({"metadata": {"labels": labels}});
        let result = self
            .pods_api
            .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The owner reference a retained-with-the-set claim gets (not a controller reference, as
/// upstream: the claim is not managed by the set).
fn set_owner(set: &StatefulSet) -> OwnerReference {
    let mut reference = controller_ref(set);
    reference.controller = Some(false);
    reference
}

async fn write_status(
    state: &State,
    set: &StatefulSet,
    key: &str,
    old: &StatefulSetStatus,
    status: StatefulSetStatus,
) -> Result<()> {
    if *old == status {
        return Ok(());
    }
    let api: Api<StatefulSet> =
        Api::namespaced(state.client.clone(), &set.namespace().unwrap_or_default());
    let mut updated = set.clone();
    updated.metadata.managed_fields = None;
    updated.status = Some(status);
    let written = api
        .replace_status(&set.name_any(), &PostParams::default(), &updated)
        .await?;
    state.written.record(key, &written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web-1", "web-1-3"), Some(3));
        assert_eq!(claim_name("data", "web", 2), "data-web-2");
    }

    #[test]
    fn pods_get_their_identity() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
            },
        }))
        .unwrap();
        let template = set.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&set, &template, "web-abc", 2);
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.clone().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volume = &spec.volumes.unwrap()[0];
        assert_eq!(volume.name, "data");
        assert_eq!(
            volume.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-web-2"
        );
        assert!(identity_matches(&set, &pod, 2));
        assert!(!identity_matches(&set, &pod, 3));
    }
}
