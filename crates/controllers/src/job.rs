//! The Job controller, as upstream's `pkg/controller/job`, and the TTL-after-finished
//! controller that deletes finished Jobs (`pkg/controller/ttlafterfinished`).
//!
//! A Job runs pods until `completions` of them succeed (NonIndexed), or until one pod per
//! completion index has (Indexed), `parallelism` at a time. Pods carry the
//! `batch.kubernetes.io/job-tracking` finalizer so that no finished pod is lost before it is
//! counted: finished pods are first recorded by uid in `status.uncountedTerminatedPods`,
//! then their finalizer is removed, then they move into `succeeded`/`failed`. Failures
//! are retried with an exponential delay up to `backoffLimit` (or `backoffLimitPerIndex`),
//! and are matched against the `podFailurePolicy`. The Job ends with `SuccessCriteriaMet`
//! or `FailureTarget` as soon as the outcome is known, and with `Complete` or `Failed` once
//! none of its pods is still terminating.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobSpec, JobStatus, PodFailurePolicyRule, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use crate::Context;
use crate::pods::{controller_ref, is_active, is_controlled_by, is_ready, pod_from_template};
use crate::workloads::{
    Error, Expectations, Result, Written, claim, controller_key, event, informer, is_not_found,
    key_of, now, patch_params, run_loop,
};

/// The finalizer on every pod of a Job until the Job has counted it.
pub(crate) const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation and label with an Indexed Job pod's completion index.
pub(crate) const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Annotation with how many times an index has failed before this pod.
const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// Annotation with how many failures of an index the pod failure policy ignored.
const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
/// The value of `spec.managedBy` meaning this controller.
const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// The first delay before recreating a failed pod; it doubles with every failure.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest delay before recreating a failed pod.
const BACKOFF_MAX: Duration = Duration::from_secs(360);
/// How many pods one sync creates or deletes at most.
const BURST: usize = 500;

/// Runs the Job and TTL-after-finished loops.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let job_loop = run_jobs(ctx.clone());
    let ttl_loop = run_ttl(ctx);
    tokio::join!(job_loop, ttl_loop);
    Ok(())
}

struct State {
    client: kube::Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    recorder: Recorder,
    /// Pod creations and deletions not yet in the cache, per Job.
    expectations: Expectations,
    /// Pods whose tracking finalizer was removed but whose cached copy still has it.
    finalizers: Expectations,
    /// The Job status this loop last wrote.
    written: Written,
    /// Failures since the last success, for the recreation delay, per Job.
    backoff: Mutex<HashMap<String, BackoffRecord>>,
}

#[derive(Clone, Copy, Debug)]
struct BackoffRecord {
    failures_after_last_success: u32,
    last_failure: jiff::Timestamp,
}

async fn run_jobs(ctx: Context) {
    let client = ctx.client.clone();
    let (jobs, job_events) = informer(Api::<Job>::all(client.clone()), watcher::Config::default());
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let state = Arc::new(State {
        client: client.clone(),
        jobs: jobs.clone(),
        pods,
        recorder: ctx.recorder("job-controller"),
        expectations: Expectations::default(),
        finalizers: Expectations::default(),
        written: Written::default(),
        backoff: Mutex::default(),
    });
    // Pods still holding the tracking finalizer with no Job to count them (the Job was
    // deleted, or orphaned them) are released here.
    let (orphans_tx, mut orphans_rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Pod>>();
    let orphan_state = state.clone();
    let orphan_worker = async move {
        while let Some(pod) = orphans_rx.recv().await {
            if let Err(e) = release_orphan(&orphan_state, &pod).await {
                tracing::debug!(pod = %pod.name_any(), error = %e, "orphan pod finalizer not removed");
            }
        }
    };
    let job_keys = job_events.map(|job| ObjectRef::from_obj(job.as_ref()));
    let jobs_for_pods = jobs.clone();
    let pod_keys = pod_events.filter_map(move |pod| {
        let key = controller_key::<Job>(&pod.metadata);
        if has_finalizer(&pod) {
            let owner_known = key
                .as_ref()
                .is_some_and(|k| jobs_for_pods.get(k).is_some_and(|j| pod_owned_by(&pod, &j)));
            if !owner_known {
                let _ = orphans_tx.send(pod.clone());
            }
        }
        std::future::ready(key)
    });
    let queue = futures::stream::select(job_keys, pod_keys);
    tokio::join!(
        run_loop("job", jobs, queue, state, reconcile),
        orphan_worker
    );
}

fn pod_owned_by(pod: &Pod, job: &Job) -> bool {
    is_controlled_by(
        &pod.metadata,
        job.metadata.uid.as_deref().unwrap_or_default(),
    )
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// Removes the tracking finalizer of a pod whose Job no longer exists (checked against the
/// API, not the cache, as upstream does).
async fn release_orphan(state: &State, pod: &Pod) -> Result<()> {
    state.jobs.wait_until_ready().await.ok();
    if let Some(owner) = crate::pods::controller_of(&pod.metadata)
        && crate::workloads::is_kind::<Job>(owner)
    {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(state.client.clone(), &ns);
        if let Some(job) = api.get_opt(&owner.name).await?
            && job.metadata.uid.as_deref() == Some(owner.uid.as_str())
            && !is_finished(&job)
            && job.metadata.deletion_timestamp.is_none()
        {
            return Ok(());
        }
    }
    remove_finalizer(&state.client, pod).await
}

/// Removes the tracking finalizer from `pod`, guarded by the resourceVersion it was read at.
async fn remove_finalizer(client: &kube::Client, pod: &Pod) -> Result<()> {
    if !has_finalizer(pod) {
        return Ok(());
    }
    let rest: Vec<&String> = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": pod.metadata.resource_version,
    }});
    match api
        .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn conditions(job: &Job) -> &[JobCondition] {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

fn has_condition(conditions: &[JobCondition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has ended: a `Complete` or `Failed` condition is true.
pub(crate) fn is_finished(job: &Job) -> bool {
    let c = conditions(job);
    has_condition(c, "Complete") || has_condition(c, "Failed")
}

fn indexed(spec: &JobSpec) -> bool {
    spec.completion_mode.as_deref() == Some("Indexed")
}

/// The pod's completion index, if it has a valid one.
fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
        .filter(|i: &i32| *i >= 0)
}

fn annotation_count(pod: &Pod, key: &str) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether failed pods are replaced only once terminal (upstream's `onlyReplaceFailedPods`).
fn only_replace_failed(spec: &JobSpec) -> bool {
    spec.pod_replacement_policy.as_deref() == Some("Failed") || spec.pod_failure_policy.is_some()
}

/// Upstream's `isPodFailed`: a Failed pod, or (unless only failed pods are replaced) a pod
/// deleted before it succeeded, so that orphaned and evicted pods count as failures.
fn counts_as_failed(pod: &Pod, spec: &JobSpec) -> bool {
    if phase(pod) == "Failed" {
        return true;
    }
    if only_replace_failed(spec) {
        return false;
    }
    pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded"
}

/// When the pod stopped: its containers' finish times, else its deletion, else now.
fn finish_time(pod: &Pod) -> jiff::Timestamp {
    let status = pod.status.as_ref();
    let finished = status
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    finished
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(now)
}

/// What the pod failure policy decided for a failed pod.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FailureAction {
    FailJob(String),
    FailIndex,
    Ignore,
    Count,
}

/// Matches a failed pod against the rules, first match wins; no match counts the failure.
fn match_failure_policy(rules: &[PodFailurePolicyRule], pod: &Pod) -> FailureAction {
    let status = pod.status.as_ref();
    let pod_name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    for (i, rule) in rules.iter().enumerate() {
        let mut matched: Option<String> = None;
        if let Some(req) = &rule.on_exit_codes {
            let containers = status.into_iter().flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            });
            for container in containers {
                if req
                    .container_name
                    .as_ref()
                    .is_some_and(|n| *n != container.name)
                {
                    continue;
                }
                let Some(code) = container
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                let listed = req.values.contains(&code);
                let hit = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                if hit {
                    matched = Some(format!(
                        "Container {} for pod {pod_name} failed with exit code {code} matching {} rule at index {i}",
                        container.name, rule.action
                    ));
                    break;
                }
            }
        }
        if let Some(patterns) = &rule.on_pod_conditions {
            let pod_conditions = status
                .and_then(|s| s.conditions.as_deref())
                .unwrap_or_default();
            for pattern in patterns {
                let want = if pattern.status.is_empty() {
                    "True"
                } else {
                    pattern.status.as_str()
                };
                if pod_conditions
                    .iter()
                    .any(|c| c.type_ == pattern.type_ && c.status == want)
                {
                    matched = Some(format!(
                        "Pod {pod_name} has condition {} matching {} rule at index {i}",
                        pattern.type_, rule.action
                    ));
                    break;
                }
            }
        }
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => FailureAction::FailJob(message),
                "FailIndex" => FailureAction::FailIndex,
                "Ignore" => FailureAction::Ignore,
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

/// Parses `status.completedIndexes`-style interval lists ("1,3-5").
pub(crate) fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    out.insert(a);
                }
            }
        }
    }
    out
}

/// Formats an index set as upstream does: ascending, consecutive runs as `a-b`.
pub(crate) fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The terminal outcome a sync decided, before or after its pods are gone.
#[derive(Clone, Debug)]
struct Outcome {
    success: bool,
    reason: String,
    message: String,
}

fn condition(type_: &str, reason: &str, message: &str, at: jiff::Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(at)),
        last_transition_time: Some(Time(at)),
    }
}

/// Sets `type_` to `status`, keeping the transition time when the status does not change.
fn set_condition(conditions: &mut Vec<JobCondition>, new: JobCondition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status
                && existing.reason == new.reason
                && existing.message == new.message
            {
                return false;
            }
            let keep_transition = existing.status == new.status;
            let transition = existing.last_transition_time.clone();
            *existing = new;
            if keep_transition {
                existing.last_transition_time = transition;
            }
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

async fn reconcile(job: Arc<Job>, state: Arc<State>) -> Result<Action> {
    let key = key_of(job.as_ref());
    let spec = job
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("job has no spec".into()))?;
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
        return Ok(Action::await_change());
    }
    // Act only on a cache at least as new as our own last status write.
    if state.written.is_stale(&key, job.as_ref()) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    state.pods.wait_until_ready().await.ok();
    let ns = job.namespace().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(state.client.clone(), &ns);
    let selector = spec.selector.clone().unwrap_or_default();
    let candidates: Vec<_> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() || is_finished(&job) {
        // Nothing left to count: let every pod of the Job go.
        let owned = candidates
            .iter()
            .filter(|p| is_controlled_by(&p.metadata, &uid) && has_finalizer(p));
        for pod in owned {
            remove_finalizer(&state.client, pod).await?;
        }
        state.expectations.clear(&key);
        state.backoff.lock().expect("backoff lock").remove(&key);
        return Ok(Action::await_change());
    }
    let pods = claim(&pods_api, job.as_ref(), &selector, candidates).await?;
    let pods_by_uid: HashMap<String, Arc<Pod>> = pods
        .iter()
        .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p.clone()))
        .collect();
    let by_name: HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
    let pods_satisfied = state.expectations.satisfied(&key, |token| {
        if let Some(name) = token.strip_prefix("create/") {
            by_name.contains(name)
        } else if let Some(uid) = token.strip_prefix("delete/") {
            pods_by_uid
                .get(uid)
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        } else {
            true
        }
    });
    // A pod whose finalizer we removed but whose cached copy still has it is skipped.
    state.finalizers.satisfied(&key, |uid| {
        pods_by_uid.get(uid).is_none_or(|p| !has_finalizer(p))
    });
    let mut sync = Sync::new(&job, &spec, &state, &key);
    sync.track(&pods).await?;
    sync.decide(&pods);
    let mut requeue = None;
    if sync.outcome.is_none() && pods_satisfied {
        requeue = sync.manage(&pods, &pods_api).await?;
    } else if sync.outcome.is_some() {
        sync.terminate_active(&pods, &pods_api).await?;
    }
    sync.finish(&pods).await?;
    let deadline_wait = sync.deadline_remaining();
    let action = [requeue, deadline_wait]
        .into_iter()
        .flatten()
        .min()
        .map_or_else(Action::await_change, Action::requeue);
    Ok(action)
}

/// One sync of one Job: the status being built and what was decided.
struct Sync<'a> {
    job: &'a Job,
    spec: &'a JobSpec,
    state: &'a State,
    key: &'a str,
    api: Api<Job>,
    status: JobStatus,
    /// Status as last written (to skip no-op writes).
    written: JobStatus,
    resource_version: Option<String>,
    uncounted_succeeded: BTreeSet<String>,
    uncounted_failed: BTreeSet<String>,
    completed_indexes: BTreeSet<i32>,
    failed_indexes: BTreeSet<i32>,
    failure_target: Option<String>,
    outcome: Option<Outcome>,
    now: jiff::Timestamp,
}

impl<'a> Sync<'a> {
    fn new(job: &'a Job, spec: &'a JobSpec, state: &'a State, key: &'a str) -> Self {
        let status = job.status.clone().unwrap_or_default();
        let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        Self {
            job,
            spec,
            state,
            key,
            api: Api::namespaced(state.client.clone(), &job.namespace().unwrap_or_default()),
            written: status.clone(),
            uncounted_succeeded: uncounted.succeeded.into_iter().flatten().collect(),
            uncounted_failed: uncounted.failed.into_iter().flatten().collect(),
            completed_indexes: parse_indexes(status.completed_indexes.as_deref().unwrap_or("")),
            failed_indexes: parse_indexes(status.failed_indexes.as_deref().unwrap_or("")),
            status,
            resource_version: job.metadata.resource_version.clone(),
            failure_target: None,
            outcome: None,
            now: now(),
        }
    }

    fn completions(&self) -> Option<i32> {
        self.spec.completions
    }

    fn index_valid(&self, index: Option<i32>) -> bool {
        index.is_some_and(|i| self.completions().is_none_or(|c| i < c))
    }

    /// Counts finished pods with the uncounted → finalizer removal → counted protocol.
    async fn track(&mut self, pods: &[Arc<Pod>]) -> Result<()> {
        let finished_target = self.existing_target();
        let rules = self
            .spec
            .pod_failure_policy
            .as_ref()
            .map(|p| p.rules.clone())
            .unwrap_or_default();
        let is_indexed = indexed(self.spec);
        let mut to_release: Vec<Arc<Pod>> = Vec::new();
        let mut needs_flush = false;
        let mut new_failures: Vec<jiff::Timestamp> = Vec::new();
        let mut new_success = false;
        for pod in pods {
            let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
            if !has_finalizer(pod) || self.state.finalizers.is_pending(self.key, &pod_uid) {
                continue;
            }
            let succeeded = phase(pod) == "Succeeded";
            let failed = counts_as_failed(pod, self.spec);
            let ending = finished_target.is_some();
            // With a failure policy a deleted pod is judged once it is terminal.
            if !rules.is_empty() && !is_terminal(pod) && !ending {
                continue;
            }
            if succeeded || failed || ending {
                to_release.push(pod.clone());
            }
            if succeeded && !self.uncounted_failed.contains(&pod_uid) {
                if is_indexed {
                    let index = completion_index(pod);
                    if self.index_valid(index) {
                        let index = index.unwrap_or_default();
                        if !self.failed_indexes.contains(&index)
                            && self.completed_indexes.insert(index)
                        {
                            needs_flush = true;
                            new_success = true;
                        }
                    }
                } else if self.uncounted_succeeded.insert(pod_uid.clone()) {
                    needs_flush = true;
                    new_success = true;
                }
            } else if failed || (ending && finished_target.as_ref().is_some_and(|o| !o.success)) {
                let index = completion_index(pod);
                if self.uncounted_failed.contains(&pod_uid)
                    || (is_indexed && !self.index_valid(index))
                {
                    continue;
                }
                let action = if phase(pod) == "Failed" && !rules.is_empty() {
                    match_failure_policy(&rules, pod)
                } else {
                    FailureAction::Count
                };
                match action {
                    FailureAction::Ignore => continue,
                    FailureAction::FailJob(message) => {
                        if self.failure_target.is_none() {
                            self.failure_target = Some(message);
                        }
                    }
                    FailureAction::FailIndex => {
                        if let Some(i) = index {
                            self.failed_indexes.insert(i);
                        }
                    }
                    FailureAction::Count => {
                        if let (Some(limit), Some(i)) = (self.spec.backoff_limit_per_index, index)
                            && annotation_count(pod, INDEX_FAILURE_COUNT) + 1 > limit
                        {
                            self.failed_indexes.insert(i);
                        }
                    }
                }
                self.uncounted_failed.insert(pod_uid);
                needs_flush = true;
                new_failures.push(finish_time(pod));
            }
        }
        self.record_backoff(new_success, &new_failures);
        if needs_flush {
            self.flush().await?;
        }
        // The uids are safely recorded: release the pods.
        let releases = to_release.iter().map(|pod| {
            let client = self.state.client.clone();
            async move { (pod.clone(), remove_finalizer(&client, pod).await) }
        });
        let mut released = HashSet::new();
        let mut first_error = None;
        for (pod, result) in join_all(releases).await {
            let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
            match result {
                Ok(()) => {
                    self.state.finalizers.expect(self.key, pod_uid.clone());
                    released.insert(pod_uid);
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        // Uids whose pods no longer hold the finalizer are counted.
        let by_uid: HashMap<&str, &Arc<Pod>> = pods
            .iter()
            .map(|p| (p.metadata.uid.as_deref().unwrap_or_default(), p))
            .collect();
        let gone = |uid: &String| {
            released.contains(uid) || by_uid.get(uid.as_str()).is_none_or(|p| !has_finalizer(p))
        };
        let succeeded: Vec<String> = self
            .uncounted_succeeded
            .iter()
            .filter(|u| gone(u))
            .cloned()
            .collect();
        let failed: Vec<String> = self
            .uncounted_failed
            .iter()
            .filter(|u| gone(u))
            .cloned()
            .collect();
        if !succeeded.is_empty() || !failed.is_empty() {
            for uid in &succeeded {
                self.uncounted_succeeded.remove(uid);
            }
            for uid in &failed {
                self.uncounted_failed.remove(uid);
            }
            let add = |v: Option<i32>, n: usize| {
                Some(v.unwrap_or(0) + i32::try_from(n).unwrap_or(i32::MAX))
            };
            if !is_indexed {
                self.status.succeeded = add(self.status.succeeded, succeeded.len());
            }
            self.status.failed = add(self.status.failed, failed.len());
        }
        if let Some(e) = first_error {
            self.flush().await?;
            return Err(e);
        }
        Ok(())
    }

    fn record_backoff(&self, new_success: bool, failures: &[jiff::Timestamp]) {
        let mut backoff = self.state.backoff.lock().expect("backoff lock");
        if new_success {
            backoff.remove(self.key);
        }
        if let Some(last) = failures.iter().max() {
            let n = u32::try_from(failures.len()).unwrap_or(u32::MAX);
            let record = backoff.entry(self.key.to_owned()).or_insert(BackoffRecord {
                failures_after_last_success: 0,
                last_failure: *last,
            });
            record.failures_after_last_success =
                record.failures_after_last_success.saturating_add(n);
            record.last_failure = record.last_failure.max(*last);
        }
    }

    /// How long until a failed pod may be recreated.
    fn backoff_remaining(&self) -> Option<Duration> {
        let backoff = self.state.backoff.lock().expect("backoff lock");
        let record = backoff.get(self.key)?;
        if record.failures_after_last_success == 0 {
            return None;
        }
        let exponent = (record.failures_after_last_success - 1).min(10);
        let delay = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX);
        let elapsed = self.now.duration_since(record.last_failure);
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
        delay.checked_sub(elapsed).filter(|d| !d.is_zero())
    }

    /// The outcome already recorded by a `FailureTarget` or `SuccessCriteriaMet` condition.
    fn existing_target(&self) -> Option<Outcome> {
        let conditions = conditions(self.job);
        let pick = |type_: &str, success: bool| {
            conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == "True")
                .map(|c| Outcome {
                    success,
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                })
        };
        pick("FailureTarget", false).or_else(|| pick("SuccessCriteriaMet", true))
    }

    fn total_failed(&self) -> i32 {
        self.status.failed.unwrap_or(0)
            + i32::try_from(self.uncounted_failed.len()).unwrap_or(i32::MAX)
    }

    fn total_succeeded(&self) -> i32 {
        if indexed(self.spec) {
            i32::try_from(self.completed_indexes.len()).unwrap_or(i32::MAX)
        } else {
            self.status.succeeded.unwrap_or(0)
                + i32::try_from(self.uncounted_succeeded.len()).unwrap_or(i32::MAX)
        }
    }

    fn suspended(&self) -> bool {
        self.spec.suspend == Some(true)
    }

    /// Decides whether the Job has succeeded or failed, and tends its start time and
    /// suspension.
    fn decide(&mut self, pods: &[Arc<Pod>]) {
        let mut conds = self.status.conditions.clone().unwrap_or_default();
        // Suspension.
        let was_suspended = has_condition(&conds, "Suspended");
        if self.suspended() && self.existing_target().is_none() {
            if !was_suspended {
                set_condition(
                    &mut conds,
                    condition("Suspended", "JobSuspended", "Job suspended", self.now),
                );
                event(
                    &self.state.recorder,
                    self.job,
                    false,
                    "Suspended",
                    "Job suspended".into(),
                );
            }
        } else if was_suspended {
            let mut resumed = condition("Suspended", "JobResumed", "Job resumed", self.now);
            resumed.status = "False".into();
            set_condition(&mut conds, resumed);
            event(
                &self.state.recorder,
                self.job,
                false,
                "Resumed",
                "Job resumed".into(),
            );
            // The active deadline counts from the resumption.
            self.status.start_time = Some(Time(self.now));
        }
        if self.status.start_time.is_none() && !self.suspended() {
            self.status.start_time = Some(Time(self.now));
        }
        self.status.conditions = Some(conds);
        let active: Vec<_> = pods.iter().filter(|p| is_active(p)).collect();
        self.outcome = self.existing_target().or_else(|| {
            if let Some(message) = self.failure_target.clone() {
                return Some(Outcome {
                    success: false,
                    reason: "PodFailurePolicy".into(),
                    message,
                });
            }
            let failure = |reason: &str, message: &str| {
                Some(Outcome {
                    success: false,
                    reason: reason.into(),
                    message: message.into(),
                })
            };
            if self.spec.backoff_limit_per_index.is_none() {
                let limit = self.spec.backoff_limit.unwrap_or(6);
                let restarts_exceeded =
                    self.restart_policy_on_failure() && restarts(&active) >= i64::from(limit);
                if self.total_failed() > limit || restarts_exceeded {
                    return failure(
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    );
                }
            }
            if self.past_deadline() {
                return failure(
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                );
            }
            if let Some(max) = self.spec.max_failed_indexes
                && i32::try_from(self.failed_indexes.len()).unwrap_or(i32::MAX) > max
            {
                return failure(
                    "MaxFailedIndexesExceeded",
                    "Job has exceeded the specified maximal number of failed indexes",
                );
            }
            if indexed(self.spec) {
                if let Some(message) = self.success_policy_met() {
                    return Some(Outcome {
                        success: true,
                        reason: "SuccessPolicy".into(),
                        message,
                    });
                }
                let completions = self.completions().unwrap_or(0);
                let done =
                    i32::try_from(self.completed_indexes.union(&self.failed_indexes).count())
                        .unwrap_or(0);
                if done >= completions {
                    if !self.failed_indexes.is_empty() {
                        return failure("FailedIndexes", "Job has failed indexes");
                    }
                    return Some(Outcome {
                        success: true,
                        reason: "CompletionsReached".into(),
                        message: "Reached expected number of succeeded pods".into(),
                    });
                }
                return None;
            }
            let succeeded = self.total_succeeded();
            let complete = match self.completions() {
                Some(c) => succeeded >= c,
                // A work queue: done once one pod succeeded and none is running.
                None => succeeded > 0 && active.is_empty(),
            };
            complete.then(|| Outcome {
                success: true,
                reason: "CompletionsReached".into(),
                message: "Reached expected number of succeeded pods".into(),
            })
        });
    }

    fn restart_policy_on_failure(&self) -> bool {
        self.spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure")
    }

    fn success_policy_met(&self) -> Option<String> {
        let policy = self.spec.success_policy.as_ref()?;
        for (i, rule) in policy.rules.iter().enumerate() {
            let wanted = rule.succeeded_indexes.as_deref().map(parse_indexes);
            let succeeded = match &wanted {
                Some(set) => set.intersection(&self.completed_indexes).count(),
                None => self.completed_indexes.len(),
            };
            let succeeded = i32::try_from(succeeded).unwrap_or(i32::MAX);
            let met = match (rule.succeeded_count, &wanted) {
                (Some(count), _) => succeeded >= count,
                (None, Some(set)) => usize::try_from(succeeded).unwrap_or(0) >= set.len(),
                (None, None) => false,
            };
            if met {
                return Some(format!("Matched rules at index {i}"));
            }
        }
        None
    }

    fn past_deadline(&self) -> bool {
        self.deadline_remaining_raw().is_some_and(|d| d <= 0)
    }

    fn deadline_remaining_raw(&self) -> Option<i64> {
        let deadline = self.spec.active_deadline_seconds?;
        if self.suspended() {
            return None;
        }
        let start = self.status.start_time.as_ref()?.0;
        Some(start.as_second() + deadline - self.now.as_second())
    }

    /// When to look again for the active deadline.
    fn deadline_remaining(&self) -> Option<Duration> {
        if self.outcome.is_some() {
            return None;
        }
        let seconds = self.deadline_remaining_raw()?;
        Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)) + Duration::from_millis(100))
    }

    /// Creates and deletes pods towards the wanted number of active pods.
    async fn manage(&mut self, pods: &[Arc<Pod>], api: &Api<Pod>) -> Result<Option<Duration>> {
        let mut active: Vec<Arc<Pod>> = pods.iter().filter(|p| is_active(p)).cloned().collect();
        if self.suspended() {
            self.delete_pods(&active, api).await?;
            return Ok(None);
        }
        let parallelism = usize::try_from(self.spec.parallelism.unwrap_or(1).max(0)).unwrap_or(0);
        let terminating = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && !is_terminal(p))
            .count();
        let blocked_by_terminating = if only_replace_failed(self.spec) {
            terminating
        } else {
            0
        };
        if indexed(self.spec) {
            return self
                .manage_indexed(pods, &mut active, parallelism, blocked_by_terminating, api)
                .await;
        }
        let succeeded = usize::try_from(self.total_succeeded().max(0)).unwrap_or(0);
        let want_active = match self.completions() {
            Some(c) => usize::try_from(c.max(0))
                .unwrap_or(0)
                .saturating_sub(succeeded)
                .min(parallelism),
            None if succeeded > 0 => active.len().min(parallelism),
            None => parallelism,
        };
        if active.len() > want_active {
            sort_for_deletion(&mut active);
            let excess = active.len() - want_active;
            self.delete_pods(&active[..excess], api).await?;
            return Ok(None);
        }
        let missing = want_active
            .saturating_sub(active.len())
            .saturating_sub(blocked_by_terminating)
            .min(BURST);
        if missing == 0 {
            return Ok(None);
        }
        if let Some(wait) = self.backoff_remaining() {
            return Ok(Some(wait));
        }
        let creations = (0..missing).map(|_| self.create_pod(None, 0, 0, api));
        first_error(join_all(creations).await)?;
        Ok(None)
    }

    async fn manage_indexed(
        &mut self,
        pods: &[Arc<Pod>],
        active: &mut [Arc<Pod>],
        parallelism: usize,
        blocked_by_terminating: usize,
        api: &Api<Pod>,
    ) -> Result<Option<Duration>> {
        let completions = self.completions().unwrap_or(0);
        // Duplicates of an index, and pods of indexes already done, are deleted.
        sort_for_deletion(active);
        active.reverse();
        let mut seen = HashSet::new();
        let mut excess = Vec::new();
        for pod in active.iter() {
            let index = completion_index(pod);
            let keep = self.index_valid(index)
                && index.is_some_and(|i| {
                    !self.completed_indexes.contains(&i) && !self.failed_indexes.contains(&i)
                })
                && seen.insert(index.unwrap_or_default());
            if !keep {
                excess.push(pod.clone());
            }
        }
        let running = seen.len();
        if running > parallelism {
            let mut keepers: Vec<_> = active
                .iter()
                .filter(|p| !excess.iter().any(|e| e.metadata.uid == p.metadata.uid))
                .cloned()
                .collect();
            keepers.sort_by_key(|p| std::cmp::Reverse(completion_index(p)));
            excess.extend(keepers.into_iter().take(running - parallelism));
        }
        if !excess.is_empty() {
            self.delete_pods(&excess, api).await?;
            return Ok(None);
        }
        let budget = parallelism
            .saturating_sub(running)
            .saturating_sub(blocked_by_terminating)
            .min(BURST);
        let wanted: Vec<i32> = (0..completions)
            .filter(|i| {
                !self.completed_indexes.contains(i)
                    && !self.failed_indexes.contains(i)
                    && !seen.contains(i)
            })
            .take(budget)
            .collect();
        if wanted.is_empty() {
            return Ok(None);
        }
        if let Some(wait) = self.backoff_remaining() {
            return Ok(Some(wait));
        }
        let creations = wanted.into_iter().map(|index| {
            // The index's failures so far, from its last failed pod.
            let (failures, ignored) = pods
                .iter()
                .filter(|p| completion_index(p) == Some(index) && !is_active(p))
                .filter(|p| counts_as_failed(p, self.spec))
                .map(|p| {
                    let ignored = self.spec.pod_failure_policy.as_ref().is_some_and(|f| {
                        match_failure_policy(&f.rules, p) == FailureAction::Ignore
                    });
                    let failures = annotation_count(p, INDEX_FAILURE_COUNT);
                    let ignored_count = annotation_count(p, INDEX_IGNORED_FAILURE_COUNT);
                    if ignored {
                        (failures, ignored_count + 1)
                    } else {
                        (failures + 1, ignored_count)
                    }
                })
                .max()
                .unwrap_or((0, 0));
            self.create_pod(Some(index), failures, ignored, api)
        });
        first_error(join_all(creations).await)?;
        Ok(None)
    }

    async fn create_pod(
        &self,
        index: Option<i32>,
        failures: i32,
        ignored: i32,
        api: &Api<Pod>,
    ) -> Result<()> {
        let job_name = self.job.name_any();
        let mut pod = pod_from_template(&self.spec.template, controller_ref(self.job));
        pod.metadata.namespace = self.job.namespace();
        pod.metadata.generate_name = Some(match index {
            Some(i) => format!("{job_name}-{i}-"),
            None => format!("{job_name}-"),
        });
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.into());
        if let Some(i) = index {
            let annotations = pod
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            if self.spec.backoff_limit_per_index.is_some() {
                annotations.insert(INDEX_FAILURE_COUNT.into(), failures.to_string());
                if ignored > 0 {
                    annotations.insert(INDEX_IGNORED_FAILURE_COUNT.into(), ignored.to_string());
                }
            }
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            if let Some(spec) = pod.spec.as_mut() {
                if spec.hostname.is_none() {
                    spec.hostname = Some(format!("{job_name}-{i}"));
                }
                let env = EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                        }),
                        ..Default::default()
                    }),
                };
                let containers = spec
                    .init_containers
                    .iter_mut()
                    .flatten()
                    .chain(spec.containers.iter_mut());
                for container in containers {
                    let vars = container.env.get_or_insert_with(Vec::new);
                    if !vars.iter().any(|v| v.name == env.name) {
                        vars.push(env.clone());
                    }
                }
            }
        }
        match api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                self.state
                    .expectations
                    .expect(self.key, format!("create/{}", created.name_any()));
                event(
                    &self.state.recorder,
                    self.job,
                    false,
                    "SuccessfulCreate",
                    format!("Created pod: {}", created.name_any()),
                );
                Ok(())
            }
            Err(e) => {
                event(
                    &self.state.recorder,
                    self.job,
                    true,
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                Err(e.into())
            }
        }
    }

    async fn delete_pods(&self, pods: &[Arc<Pod>], api: &Api<Pod>) -> Result<()> {
        let deletions = pods.iter().take(BURST).map(|pod| async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            self.state
                .expectations
                .expect(self.key, format!("delete/{uid}"));
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    event(
                        &self.state.recorder,
                        self.job,
                        false,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pod.name_any()),
                    );
                    Ok(())
                }
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => {
                    self.state
                        .expectations
                        .forget(self.key, &format!("delete/{uid}"));
                    Err(e.into())
                }
            }
        });
        first_error(join_all(deletions).await)
    }

    /// Deletes the active pods of a Job whose outcome is known.
    async fn terminate_active(&mut self, pods: &[Arc<Pod>], api: &Api<Pod>) -> Result<()> {
        let active: Vec<_> = pods.iter().filter(|p| is_active(p)).cloned().collect();
        self.delete_pods(&active, api).await
    }

    /// Writes the status: counts, conditions, and the final condition once no pod is left
    /// running or terminating.
    async fn finish(&mut self, pods: &[Arc<Pod>]) -> Result<()> {
        let active: Vec<_> = pods.iter().filter(|p| is_active(p)).collect();
        let terminating = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && !is_terminal(p))
            .count();
        self.status.active = Some(i32::try_from(active.len()).unwrap_or(i32::MAX));
        self.status.ready =
            Some(i32::try_from(active.iter().filter(|p| is_ready(p)).count()).unwrap_or(i32::MAX));
        self.status.terminating = Some(i32::try_from(terminating).unwrap_or(i32::MAX));
        if let Some(outcome) = self.outcome.clone() {
            let mut conds = self.status.conditions.clone().unwrap_or_default();
            let interim = if outcome.success {
                "SuccessCriteriaMet"
            } else {
                "FailureTarget"
            };
            if set_condition(
                &mut conds,
                condition(interim, &outcome.reason, &outcome.message, self.now),
            ) {
                tracing::debug!(job = %self.key, reason = %outcome.reason, "job outcome decided");
            }
            // Pods that did run but are not finished yet keep the Job open.
            let settled = active.is_empty()
                && terminating == 0
                && self.uncounted_failed.is_empty()
                && self.uncounted_succeeded.is_empty()
                && pods
                    .iter()
                    .all(|p| !has_finalizer(p) || self.released_in_cache(p));
            if settled {
                let (type_, event_reason, warning) = if outcome.success {
                    ("Complete", "Completed", false)
                } else {
                    ("Failed", outcome.reason.as_str(), true)
                };
                conds.retain(|c| !(c.type_ == "Suspended" && c.status == "False"));
                set_condition(
                    &mut conds,
                    condition(type_, &outcome.reason, &outcome.message, self.now),
                );
                if outcome.success {
                    self.status.completion_time = Some(Time(self.now));
                }
                let note = if outcome.success {
                    "Job completed".to_owned()
                } else {
                    outcome.message.clone()
                };
                event(&self.state.recorder, self.job, warning, event_reason, note);
            }
            self.status.conditions = Some(conds);
        }
        self.flush().await
    }

    fn released_in_cache(&self, pod: &Pod) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.state.finalizers.is_pending(self.key, uid)
    }

    /// Writes the status if it changed, guarded by the resourceVersion it was read at.
    async fn flush(&mut self) -> Result<()> {
        let uncounted = UncountedTerminatedPods {
            succeeded: Some(self.uncounted_succeeded.iter().cloned().collect()),
            failed: Some(self.uncounted_failed.iter().cloned().collect()),
        };
        self.status.uncounted_terminated_pods = Some(uncounted);
        if indexed(self.spec) {
            self.status.completed_indexes = Some(format_indexes(&self.completed_indexes));
            self.status.succeeded =
                Some(i32::try_from(self.completed_indexes.len()).unwrap_or(i32::MAX));
            if self.spec.backoff_limit_per_index.is_some() {
                self.status.failed_indexes = Some(format_indexes(&self.failed_indexes));
            }
        }
        if same_status(&self.status, &self.written) {
            return Ok(());
        }
        let mut job = self.job.clone();
        job.metadata.resource_version = self.resource_version.clone();
        job.metadata.managed_fields = None;
        job.status = Some(self.status.clone());
        let updated = self
            .api
            .replace_status(&job.name_any(), &PostParams::default(), &job)
            .await?;
        self.state.written.record(self.key, &updated);
        self.resource_version = updated.metadata.resource_version.clone();
        self.written = self.status.clone();
        Ok(())
    }
}

/// Compares statuses ignoring condition probe times and empty-versus-absent lists.
fn same_status(a: &JobStatus, b: &JobStatus) -> bool {
    let normalize = |s: &JobStatus| {
        let mut s = s.clone();
        let u = s
            .uncounted_terminated_pods
            .get_or_insert_with(Default::default);
        u.succeeded.get_or_insert_with(Vec::new);
        u.failed.get_or_insert_with(Vec::new);
        for field in [
            &mut s.active,
            &mut s.ready,
            &mut s.terminating,
            &mut s.succeeded,
            &mut s.failed,
        ] {
            field.get_or_insert(0);
        }
        s.conditions.get_or_insert_with(Vec::new);
        s
    };
    normalize(a) == normalize(b)
}

fn restarts(active: &[&Arc<Pod>]) -> i64 {
    active
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum()
}

/// Orders pods so that the cheapest to lose come first: unscheduled, pending, not ready,
/// then the most recently created (upstream's `ActivePods` ordering).
fn sort_for_deletion(pods: &mut [Arc<Pod>]) {
    pods.sort_by_key(|p| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let running = phase(p) == "Running";
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (scheduled, running, is_ready(p), std::cmp::Reverse(created))
    });
}

fn first_error(results: Vec<Result<()>>) -> Result<()> {
    results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
}

/// The TTL-after-finished loop: deletes a finished Job `ttlSecondsAfterFinished` after it
/// finished, with background propagation so that the garbage collector removes its pods.
async fn run_ttl(ctx: Context) {
    let client = ctx.client.clone();
    let (jobs, events) = informer(Api::<Job>::all(client.clone()), watcher::Config::default());
    let queue = events
        .filter(|job| {
            let wanted = job
                .spec
                .as_ref()
                .is_some_and(|s| s.ttl_seconds_after_finished.is_some())
                && is_finished(job)
                && job.metadata.deletion_timestamp.is_none();
            std::future::ready(wanted)
        })
        .map(|job| ObjectRef::from_obj(job.as_ref()));
    run_loop(
        "ttl-after-finished",
        jobs,
        queue,
        Arc::new(client),
        reconcile_ttl,
    )
    .await;
}

/// When a finished Job finished: its `Complete` or `Failed` condition's transition time.
fn finished_at(job: &Job) -> Option<jiff::Timestamp> {
    conditions(job)
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

fn ttl_remaining(job: &Job, at: jiff::Timestamp) -> Option<i64> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if !is_finished(job) || job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let finished = finished_at(job)?;
    Some(finished.as_second() + i64::from(ttl) - at.as_second())
}

async fn reconcile_ttl(job: Arc<Job>, client: Arc<kube::Client>) -> Result<Action> {
    let Some(remaining) = ttl_remaining(&job, now()) else {
        return Ok(Action::await_change());
    };
    if remaining > 0 {
        let wait = Duration::from_secs(u64::try_from(remaining).unwrap_or(0));
        return Ok(Action::requeue(wait));
    }
    // Check the live object: the TTL may have been changed since the cache saw it.
    let api: Api<Job> = Api::namespaced((*client).clone(), &job.namespace().unwrap_or_default());
    let Some(live) = api.get_opt(&job.name_any()).await? else {
        return Ok(Action::await_change());
    };
    match ttl_remaining(&live, now()) {
        Some(r) if r <= 0 => {}
        Some(r) => {
            return Ok(Action::requeue(Duration::from_secs(
                u64::try_from(r).unwrap_or(0),
            )));
        }
        None => return Ok(Action::await_change()),
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(kube::api::Preconditions {
            uid: live.metadata.uid.clone(),
            resource_version: live.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    match api.delete(&live.name_any(), &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_not_found(&e) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };

    #[test]
    fn index_sets() {
        let cases = [
            ("", ""),
            ("0", "0"),
            ("0,1,2", "0-2"),
            ("1,3-5,6,9", "1,3-6,9"),
        ];
        for (input, want) in cases {
            assert_eq!(format_indexes(&parse_indexes(input)), want, "{input}");
        }
    }

    fn failed_pod(exit_code: i32, condition: Option<&str>) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                conditions: condition.map(|c| {
                    vec![PodCondition {
                        type_: c.into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rule(action: &str, operator: &str, codes: &[i32]) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: operator.into(),
                values: codes.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    #[test]
    fn failure_policy_rules() {
        let rules = vec![
            rule("FailJob", "In", &[42]),
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
            },
            rule("Count", "NotIn", &[1]),
            rule("FailIndex", "In", &[1]),
        ];
        assert_eq!(
            match_failure_policy(&rules, &failed_pod(42, None)),
            FailureAction::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into()
            )
        );
        assert_eq!(
            match_failure_policy(&rules, &failed_pod(137, Some("DisruptionTarget"))),
            FailureAction::Ignore
        );
        assert_eq!(
            match_failure_policy(&rules, &failed_pod(3, None)),
            FailureAction::Count
        );
        assert_eq!(
            match_failure_policy(&rules, &failed_pod(1, None)),
            FailureAction::FailIndex
        );
        assert_eq!(
            match_failure_policy(&[], &failed_pod(1, None)),
            FailureAction::Count
        );
    }

    #[test]
    fn deleted_pods_count_as_failed_unless_only_failed_are_replaced() {
        let mut pod = failed_pod(0, None);
        pod.status.as_mut().unwrap().phase = Some("Running".into());
        pod.metadata.deletion_timestamp = Some(Time(now()));
        let spec = JobSpec::default();
        assert!(counts_as_failed(&pod, &spec));
        let spec = JobSpec {
            pod_replacement_policy: Some("Failed".into()),
            ..Default::default()
        };
        assert!(!counts_as_failed(&pod, &spec));
    }
}
