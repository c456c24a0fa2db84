//! The DaemonSet controller, as upstream's `pkg/controller/daemon`: one pod on every node
//! the pod fits (node name, node selector, required node affinity, taints against the
//! pod's tolerations plus the ones every daemon pod gets), pinned to its node by a required
//! node affinity on `metadata.name` so that the scheduler binds it there; templates kept
//! as ControllerRevisions and rolled out node by node within `maxUnavailable` (or by
//! surging a new pod next to the old one within `maxSurge`), or on deletion (OnDelete).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::Context;
use crate::controller_revision::{self, Wanted};
use crate::pods::{controller_ref, is_available, is_ready, pod_from_template};
use crate::workloads::{
    Error, Expectations, Result, Written, claim, event, informer, is_not_found, key_of, now,
    owners_to_sync, run_loop,
};

/// Label on daemon pods and revisions with the template's hash.
pub(crate) const HASH_LABEL: &str = "controller-revision-hash";
/// Deprecated label with the template generation, still set as upstream does.
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// How many pods one sync creates or deletes at most.
const BURST: usize = 250;

struct State {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    recorder: Recorder,
    expectations: Expectations,
    written: Written,
}

/// Runs the DaemonSet loop.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (sets, set_events) = informer(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (nodes, node_events) =
        informer(Api::<Node>::all(client.clone()), watcher::Config::default());
    let (revisions, revision_events) = informer(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
    );
    let state = Arc::new(State {
        client,
        pods,
        nodes,
        revisions,
        recorder: ctx.recorder("daemonset-controller"),
        expectations: Expectations::default(),
        written: Written::default(),
    });
    let sets_for_pods = sets.clone();
    let pod_keys = pod_events.flat_map(move |pod| {
        let keys = owners_to_sync(pod.as_ref(), &sets_for_pods, |s: &DaemonSet| {
            s.spec.as_ref().map(|s| &s.selector)
        });
        futures::stream::iter(keys)
    });
    // A node change can change where every DaemonSet should run.
    let sets_for_nodes = sets.clone();
    let node_keys = node_events.flat_map(move |_| {
        let keys: Vec<_> = sets_for_nodes
            .state()
            .iter()
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        futures::stream::iter(keys)
    });
    let revision_keys = revision_events.filter_map(|r| {
        std::future::ready(crate::workloads::controller_key::<DaemonSet>(&r.metadata))
    });
    let queue = futures::stream::select(
        futures::stream::select(
            set_events.map(|s| ObjectRef::from_obj(s.as_ref())),
            pod_keys,
        ),
        futures::stream::select(node_keys, revision_keys),
    );
    run_loop("daemonset", sets, queue, state, reconcile).await;
    Ok(())
}

/// The tolerations every daemon pod gets (upstream's `AddOrUpdateDaemonPodTolerations`), so
/// that it keeps running through node conditions that evict or keep away other pods.
pub(crate) fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let toleration = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        // Replace a toleration for the same key and effect (upstream's AddOrUpdate).
        match tolerations
            .iter_mut()
            .find(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect))
        {
            Some(existing) => *existing = toleration,
            None => tolerations.push(toleration),
        }
    }
}

/// Pins a pod to `node` with a required node affinity on `metadata.name`, keeping the
/// terms' label expressions (upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub(crate) fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let field = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![field.clone()]);
    }
}

/// The node a daemon pod is for: its `nodeName`, or the node its affinity pins it to.
pub(crate) fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = &spec.node_name {
        return Some(node.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|term| {
        term.match_fields.iter().flatten().find_map(|f| {
            let values = f.values.as_deref().unwrap_or_default();
            (f.key == "metadata.name" && f.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node satisfies a node selector's terms (any term; all requirements in one).
fn node_selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.name_any();
    selector.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                let value = (r.key == "metadata.name").then_some(name.as_str());
                requirement_matches(r, value)
            })
    })
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|t| crate::node_lifecycle::tolerates(t, taint))
}

/// Upstream's `NodeShouldRunDaemonPod`: whether a new daemon pod should run on `node`, and
/// whether an existing one may keep running (only untolerated NoExecute taints evict).
pub(crate) fn should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    if let Some(name) = &spec.node_name
        && *name != node.name_any()
    {
        return (false, false);
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|selector| node_selector_matches(selector, node));
    if !selector_ok || !affinity_ok {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let mut run = true;
    let mut keep = true;
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
    {
        if taint.effect == "PreferNoSchedule" || tolerates(tolerations, taint) {
            continue;
        }
        run = false;
        if taint.effect == "NoExecute" {
            keep = false;
        }
    }
    (run, keep)
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// An integer or percentage of `total`, rounded up (upstream's scaled value with round-up).
fn scaled(value: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(percent) => {
                    let v = (percent * i64::from(total) + 99) / 100;
                    i32::try_from(v).unwrap_or(i32::MAX)
                }
                None => s.parse().unwrap_or(default),
            }
        }
    }
}

/// The daemon pods of one node, split by revision.
#[derive(Default)]
struct NodePods {
    new: Vec<Arc<Pod>>,
    old: Vec<Arc<Pod>>,
}

async fn reconcile(ds: Arc<DaemonSet>, state: Arc<State>) -> Result<Action> {
    let key = key_of(ds.as_ref());
    if state.written.is_stale(&key, ds.as_ref()) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let spec = ds
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("daemonset has no spec".into()))?;
    for ready in [
        state.pods.wait_until_ready().await,
        state.nodes.wait_until_ready().await,
    ] {
        ready.ok();
    }
    state.revisions.wait_until_ready().await.ok();
    let ns = ds.namespace().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(state.client.clone(), &ns);
    let candidates = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()));
    let pods = claim(&pods_api, ds.as_ref(), &spec.selector, candidates).await?;
    if ds.metadata.deletion_timestamp.is_some() {
        state.expectations.clear(&key);
        return Ok(Action::await_change());
    }
    // History: the revision of the current template, the newest.
    let revisions_api: Api<ControllerRevision> = Api::namespaced(state.client.clone(), &ns);
    let revisions = controller_revision::owned(&state.revisions, ds.as_ref());
    let old_status = ds.status.clone().unwrap_or_default();
    let data = controller_revision::template_patch(&spec.template);
    let hash = controller_revision::hash(&data, old_status.collision_count);
    let (current, collision_count) = controller_revision::ensure(
        &revisions_api,
        Wanted {
            owner: ds.as_ref(),
            template: &spec.template,
            extra_labels: BTreeMap::from([(HASH_LABEL.to_owned(), hash.clone())]),
            collision_count: old_status.collision_count,
        },
        &revisions,
    )
    .await?;
    let hash = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .cloned()
        .unwrap_or(hash);

    let by_uid: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    let names: HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
    let satisfied = state.expectations.satisfied(&key, |token| {
        if let Some(name) = token.strip_prefix("create/") {
            names.contains(name)
        } else if let Some(uid) = token.strip_prefix("delete/") {
            !by_uid.contains(uid)
                || pods.iter().any(|p| {
                    p.metadata.uid.as_deref() == Some(uid)
                        && p.metadata.deletion_timestamp.is_some()
                })
        } else {
            true
        }
    });

    let now = now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_spec = spec.template.spec.clone().unwrap_or_default();
    let mut with_tolerations = template_spec.clone();
    add_daemon_tolerations(&mut with_tolerations);
    let nodes = state.nodes.state();
    let mut per_node: BTreeMap<String, NodePods> = BTreeMap::new();
    for pod in &pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = target_node(pod) else {
            continue;
        };
        let entry = per_node.entry(node).or_default();
        if hash_of(pod) == Some(hash.as_str()) {
            entry.new.push(pod.clone());
        } else {
            entry.old.push(pod.clone());
        }
    }
    let max_surge_value = spec
        .update_strategy
        .as_ref()
        .filter(|s| s.type_.as_deref() != Some("OnDelete"))
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.as_ref());
    let mut to_create: Vec<String> = Vec::new();
    let mut to_delete: Vec<Arc<Pod>> = Vec::new();
    let mut should_run_nodes: Vec<String> = Vec::new();
    let mut misscheduled = 0;
    let mut wait: Option<Duration> = None;
    for node in &nodes {
        let name = node.name_any();
        let (run, keep) = should_run(&with_tolerations, node);
        let node_pods = per_node.remove(&name).unwrap_or_default();
        let all: Vec<Arc<Pod>> = node_pods
            .new
            .iter()
            .chain(node_pods.old.iter())
            .cloned()
            .collect();
        if run {
            should_run_nodes.push(name.clone());
        }
        if !run && !all.is_empty() {
            misscheduled += 1;
        }
        if !keep {
            to_delete.extend(all);
            continue;
        }
        // Failed pods are replaced.
        let (failed, running): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|p| phase(p) == "Failed");
        if !failed.is_empty() {
            event(
                &state.recorder,
                ds.as_ref(),
                true,
                "FailedDaemonPod",
                format!(
                    "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                    ns,
                    failed[0].name_any()
                ),
            );
            to_delete.extend(failed);
        }
        if running.is_empty() {
            if run {
                to_create.push(name.clone());
            }
            continue;
        }
        // More than one pod: keep the oldest (one per revision while surging).
        let mut running = running;
        running.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let surging = scaled(max_surge_value, 1, 0) > 0;
        let mut kept_new = false;
        let mut kept_old = false;
        for pod in running {
            let is_new = hash_of(&pod) == Some(hash.as_str());
            let keep_it = if surging {
                if is_new {
                    !std::mem::replace(&mut kept_new, true)
                } else {
                    !std::mem::replace(&mut kept_old, true)
                }
            } else {
                let first = !kept_new && !kept_old;
                kept_new = true;
                first
            };
            if !keep_it {
                to_delete.push(pod);
            }
        }
    }

    // Rolling update over the nodes that should run the daemon.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        != Some("OnDelete");
    if rolling && satisfied {
        let desired = i32::try_from(should_run_nodes.len()).unwrap_or(i32::MAX);
        let ru = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let max_surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired, 0);
        let mut max_unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired, 1);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let deleting: HashSet<String> = to_delete
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let node_pods = |node: &str| -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
            let pods_here: Vec<_> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) != "Failed")
                .filter(|p| !deleting.contains(p.metadata.uid.as_deref().unwrap_or_default()))
                .filter(|p| target_node(p).as_deref() == Some(node))
                .cloned()
                .collect();
            pods_here
                .into_iter()
                .partition(|p| hash_of(p) == Some(hash.as_str()))
        };
        let available = |p: &Pod| is_available(p, min_ready, now);
        if max_surge == 0 {
            let mut unavailable = 0;
            let mut replace_now = Vec::new();
            let mut candidates = Vec::new();
            for node in &should_run_nodes {
                let (new, old) = node_pods(node);
                if new.len() > 1 || old.len() > 1 {
                    unavailable += 1;
                    continue;
                }
                match (new.first(), old.first()) {
                    (None, None) | (Some(_), Some(_)) => unavailable += 1,
                    (Some(new), None) => {
                        if !available(new) {
                            unavailable += 1;
                        }
                    }
                    (None, Some(old)) => {
                        if !available(old) {
                            replace_now.push(old.clone());
                        } else if unavailable < max_unavailable {
                            candidates.push(old.clone());
                        }
                    }
                }
            }
            let remaining = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
            to_delete.extend(replace_now);
            to_delete.extend(candidates.into_iter().take(remaining));
        } else {
            let mut surged = 0;
            let mut allowed = Vec::new();
            let mut candidates = Vec::new();
            for node in &should_run_nodes {
                let (new, old) = node_pods(node);
                if new.len() > 1 || old.len() > 1 {
                    surged += 1;
                    continue;
                }
                match (new.first(), old.first()) {
                    (_, None) => {}
                    (None, Some(old)) => {
                        if !available(old) {
                            allowed.push(node.clone());
                        } else if surged < max_surge {
                            candidates.push(node.clone());
                        }
                    }
                    (Some(new), Some(old)) => {
                        if available(new) {
                            to_delete.push(old.clone());
                        } else {
                            surged += 1;
                        }
                    }
                }
            }
            let remaining = usize::try_from((max_surge - surged).max(0)).unwrap_or(0);
            to_create.extend(allowed);
            to_create.extend(candidates.into_iter().take(remaining));
        }
    }

    if satisfied {
        sync_nodes(&state, &ds, &key, &pods_api, &to_create, &to_delete, &hash).await?;
    } else {
        wait = Some(Duration::from_secs(1));
    }

    // Status.
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count,
        number_misscheduled: misscheduled,
        desired_number_scheduled: i32::try_from(should_run_nodes.len()).unwrap_or(i32::MAX),
        conditions: old_status.conditions.clone(),
        ..Default::default()
    };
    for node in &should_run_nodes {
        let mut here: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| target_node(p).as_deref() == Some(node.as_str()))
            .collect();
        if here.is_empty() {
            continue;
        }
        here.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        status.current_number_scheduled += 1;
        let pod = here[0];
        if is_ready(pod) {
            status.number_ready += 1;
            if is_available(pod, min_ready, now) {
                status.number_available = Some(status.number_available.unwrap_or(0) + 1);
            } else if let Some(since) = crate::pods::ready_since(pod) {
                let left = i64::from(min_ready) - (now.as_second() - since.as_second());
                let left = Duration::from_secs(u64::try_from(left.max(0)).unwrap_or(0) + 1);
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
        }
        if here.iter().any(|p| hash_of(p) == Some(hash.as_str())) {
            status.updated_number_scheduled =
                Some(status.updated_number_scheduled.unwrap_or(0) + 1);
        }
    }
    let unavailable = status.desired_number_scheduled - status.number_available.unwrap_or(0);
    status.number_unavailable = (unavailable > 0).then_some(unavailable);
    // Old revisions beyond the history limit, unless a pod still uses them.
    let in_use: HashSet<String> = pods
        .iter()
        .filter_map(|p| hash_of(p).map(str::to_owned))
        .collect();
    let mut history = controller_revision::owned(&state.revisions, ds.as_ref());
    history.retain(|r| r.metadata.name != current.metadata.name);
    controller_revision::truncate(
        &revisions_api,
        &history,
        spec.revision_history_limit.unwrap_or(10),
        |r| {
            r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(HASH_LABEL))
                .is_some_and(|h| in_use.contains(h))
        },
    )
    .await?;
    write_status(&state, &ds, &key, &old_status, status).await?;
    Ok(wait.map_or_else(Action::await_change, Action::requeue))
}

/// Creates daemon pods for `nodes` and deletes `pods`.
async fn sync_nodes(
    state: &State,
    ds: &DaemonSet,
    key: &str,
    api: &Api<Pod>,
    nodes: &[String],
    pods: &[Arc<Pod>],
    hash: &str,
) -> Result<()> {
    let spec = ds
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid("daemonset has no spec".into()))?;
    let mut seen = HashSet::new();
    let deletions = pods
        .iter()
        .filter(|p| seen.insert(p.metadata.uid.clone()))
        .take(BURST)
        .map(|pod| async move {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            state.expectations.expect(key, format!("delete/{uid}"));
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&pod.name_any(), &params).await {
                Ok(_) => {
                    event(
                        &state.recorder,
                        ds,
                        false,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pod.name_any()),
                    );
                    Ok(())
                }
                Err(e) if is_not_found(&e) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => {
                    state.expectations.forget(key, &format!("delete/{uid}"));
                    Err(Error::from(e))
                }
            }
        });
    let creations = nodes.iter().take(BURST).map(|node| async move {
        let mut pod = pod_from_template(&spec.template, controller_ref(ds));
        pod.metadata.namespace = ds.namespace();
        pod.metadata.generate_name = Some(format!("{}-", ds.name_any()));
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(HASH_LABEL.into(), hash.into());
        if let Some(generation) = ds.metadata.generation {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
        }
        let pod_spec = pod.spec.get_or_insert_with(Default::default);
        add_daemon_tolerations(pod_spec);
        pin_to_node(pod_spec, node);
        match api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                state
                    .expectations
                    .expect(key, format!("create/{}", created.name_any()));
                event(
                    &state.recorder,
                    ds,
                    false,
                    "SuccessfulCreate",
                    format!("Created pod: {}", created.name_any()),
                );
                Ok(())
            }
            Err(e) => {
                event(
                    &state.recorder,
                    ds,
                    true,
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                Err(Error::from(e))
            }
        }
    });
    let deleted = futures::future::join_all(deletions).await;
    let created = futures::future::join_all(creations).await;
    deleted
        .into_iter()
        .chain(created)
        .collect::<Result<Vec<()>>>()?;
    Ok(())
}

async fn write_status(
    state: &State,
    ds: &DaemonSet,
    key: &str,
    old: &DaemonSetStatus,
    status: DaemonSetStatus,
) -> Result<()> {
    if *old == status {
        return Ok(());
    }
    let api: Api<DaemonSet> =
        Api::namespaced(state.client.clone(), &ds.namespace().unwrap_or_default());
    let mut updated = ds.clone();
    updated.metadata.managed_fields = None;
    updated.status = Some(status);
    let written = api
        .replace_status(&ds.name_any(), &PostParams::default(), &updated)
        .await?;
    state.written.record(key, &written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
            "spec": {"taints": taints.iter().map(|(k, e)| json!({"key": k, "effect": e})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn daemon_spec(extra: serde_json::Value) -> PodSpec {
        let mut spec: PodSpec =
            serde_json::from_value(json!({"containers": [{"name": "c"}]})).unwrap();
        if let Some(selector) = extra.get("nodeSelector") {
            spec.node_selector = serde_json::from_value(selector.clone()).unwrap();
        }
        if let Some(affinity) = extra.get("affinity") {
            spec.affinity = serde_json::from_value(affinity.clone()).unwrap();
        }
        if extra.get("hostNetwork").is_some() {
            spec.host_network = Some(true);
        }
        add_daemon_tolerations(&mut spec);
        spec
    }

    #[test]
    fn where_daemons_run() {
        let plain = daemon_spec(json!({}));
        assert_eq!(should_run(&plain, &node("a", &[], &[])), (true, true));
        // Default tolerations cover node conditions.
        let cordoned = node(
            "a",
            &[],
            &[("node.kubernetes.io/unschedulable", "NoSchedule")],
        );
        assert_eq!(should_run(&plain, &cordoned), (true, true));
        let not_ready = node("a", &[], &[("node.kubernetes.io/not-ready", "NoExecute")]);
        assert_eq!(should_run(&plain, &not_ready), (true, true));
        // Other taints: NoSchedule keeps new pods away, NoExecute evicts.
        assert_eq!(
            should_run(&plain, &node("a", &[], &[("dedicated", "NoSchedule")])),
            (false, true)
        );
        assert_eq!(
            should_run(&plain, &node("a", &[], &[("dedicated", "NoExecute")])),
            (false, false)
        );
        assert_eq!(
            should_run(&plain, &node("a", &[], &[("soft", "PreferNoSchedule")])),
            (true, true)
        );
        let net = node(
            "a",
            &[],
            &[("node.kubernetes.io/network-unavailable", "NoSchedule")],
        );
        assert_eq!(should_run(&plain, &net), (false, true));
        assert_eq!(
            should_run(&daemon_spec(json!({"hostNetwork": true})), &net),
            (true, true)
        );
        // Node selector and required affinity.
        let selective = daemon_spec(json!({"nodeSelector": {"role": "edge"}}));
        assert_eq!(
            should_run(&selective, &node("a", &[("role", "edge")], &[])),
            (true, true)
        );
        assert_eq!(
            should_run(&selective, &node("a", &[("role", "core")], &[])),
            (false, false)
        );
        let affine = daemon_spec(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1", "z2"]}]}]
            }}}}),
        );
        assert!(should_run(&affine, &node("a", &[("zone", "z2")], &[])).0);
        assert!(!should_run(&affine, &node("a", &[("zone", "z3")], &[])).0);
    }

    #[test]
    fn pods_are_pinned_by_affinity() {
        let mut spec = daemon_spec(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]
            }}}}),
        );
        pin_to_node(&mut spec, "n1");
        let pod = Pod {
            spec: Some(spec.clone()),
            ..Default::default()
        };
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        let term = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(term.match_expressions.as_ref().unwrap()[0].key, "zone");
        let tolerations = spec.tolerations.unwrap();
        assert_eq!(tolerations.len(), 6);
        assert!(
            tolerations
                .iter()
                .all(|t| t.operator.as_deref() == Some("Exists"))
        );
    }

    #[test]
    fn scaled_values() {
        assert_eq!(scaled(None, 10, 1), 1);
        assert_eq!(scaled(Some(&IntOrString::Int(3)), 10, 1), 3);
        assert_eq!(scaled(Some(&IntOrString::String("25%".into())), 10, 1), 3);
        assert_eq!(scaled(Some(&IntOrString::String("0%".into())), 10, 1), 0);
    }
}
