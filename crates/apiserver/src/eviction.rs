//! The `pods/eviction` subresource, as upstream's `pkg/registry/core/pod/storage/eviction.go`:
//! a pod is deleted only if the PodDisruptionBudget that covers it allows one more
//! disruption, which is taken from the budget's status with a compare-and-swap before the
//! pod goes.
//!
//! Finished, pending and already deleted pods are evicted without looking at budgets; a
//! pod covered by more than one budget cannot be evicted (500, as upstream); a budget with
//! no disruption left answers 429 TooManyRequests, which `kubectl drain` retries.

use apimachinery::object::{ObjectExt, now};
use apimachinery::selector::label::LabelSelector;
use apimachinery::status::{ApiError, StatusCause};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::query::Query;
use crate::resource::{Reply, Scope};

/// The message of the 429 answer when a budget allows no disruption.
pub const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";
/// The cause reason upstream gives with [`VIOLATION`].
const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";
/// How many times a budget update that lost a race is retried.
const BUDGET_RETRIES: usize = 8;
/// Upstream refuses evictions while this many evictions wait for the controller.
const MAX_DISRUPTED_PODS: usize = 2000;

/// POST of an `Eviction` for the pod `pods.name`.
pub async fn evict(pods: &Scope<'_>, query: &Query, eviction: Value) -> Result<Reply, ApiError> {
    let name = pods
        .name
        .clone()
        .ok_or_else(|| ApiError::method_not_allowed("an eviction needs a pod name"))?;
    let api_version = eviction.get("apiVersion").and_then(Value::as_str);
    if !matches!(api_version, None | Some("policy/v1" | "policy/v1beta1"))
        || !matches!(
            eviction.get("kind").and_then(Value::as_str),
            None | Some("Eviction")
        )
    {
        return Err(ApiError::bad_request(format!(
            "the body of an eviction must be a policy/v1 Eviction, not {} {}",
            api_version.unwrap_or(""),
            eviction.get("kind").and_then(Value::as_str).unwrap_or("")
        )));
    }
    if eviction.name() != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let mut options = match eviction.get("deleteOptions") {
        None | Some(Value::Null) => json!({}),
        Some(o @ Value::Object(_)) => o.clone(),
        Some(_) => return Err(ApiError::bad_request("deleteOptions must be an object")),
    };
    let dry_run = query.get_all("dryRun") == ["All"]
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    let pod = pods.get().await?;
    if can_ignore_budgets(&pod) {
        return delete_pod(pods, query, &pod, options, dry_run).await;
    }
    let budgets = budgets_for(pods, &pod).await?;
    let budget = match budgets.as_slice() {
        [] => return delete_pod(pods, query, &pod, options, dry_run).await,
        [one] => one.clone(),
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let status_int = |b: &Value, field: &str| {
        b.pointer(&format!("/status/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    if !is_ready(&pod) {
        // An unready pod does not count as healthy: evicting it costs the budget nothing
        // when the budget is met, or always with the AlwaysAllow policy. The pod must not
        // have turned ready meanwhile, hence the resourceVersion precondition.
        let healthy_enough = status_int(&budget, "currentHealthy")
            >= status_int(&budget, "desiredHealthy")
            && status_int(&budget, "desiredHealthy") > 0;
        let always_allow = budget
            .pointer("/spec/unhealthyPodEvictionPolicy")
            .and_then(Value::as_str)
            == Some("AlwaysAllow");
        if healthy_enough || always_allow {
            options["preconditions"]["resourceVersion"] = json!(pod.resource_version());
            return delete_pod(pods, query, &pod, options, dry_run).await;
        }
    }
    take_disruption(pods, budget, &name, dry_run).await?;
    delete_pod(pods, query, &pod, options, dry_run).await
}

/// Upstream's `canIgnorePDB`: finished or pending pods, and pods already being deleted.
fn can_ignore_budgets(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod.meta_str("deletionTimestamp").is_some()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The budgets in the pod's namespace whose selector matches it; a budget with a missing
/// or empty selector matches nothing here.
async fn budgets_for(pods: &Scope<'_>, pod: &Value) -> Result<Vec<Value>, ApiError> {
    let budgets = budget_scope(pods, None)?;
    let (items, _) = budgets.list(&Query::default()).await?;
    let items = items.into_iter().map(std::sync::Arc::unwrap_or_clone);
    let labels = pod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok(items
        .into_iter()
        .filter(|b| {
            let Some(selector) = b.pointer("/spec/selector").filter(|s| !s.is_null()) else {
                return false;
            };
            match LabelSelector::from_json(selector) {
                Ok(sel) => !sel.is_empty() && sel.matches(&labels),
                Err(_) => false,
            }
        })
        .collect())
}

/// A scope over the PodDisruptionBudgets of the pod's namespace (or their status).
fn budget_scope<'a>(pods: &Scope<'a>, status_of: Option<&str>) -> Result<Scope<'a>, ApiError> {
    let kind = pods
        .cp
        .registry()
        .by_kind("policy", "PodDisruptionBudget")
        .ok_or_else(ApiError::no_route)?;
    Ok(Scope {
        cp: pods.cp,
        kind,
        namespace: pods.namespace.clone(),
        name: status_of.map(str::to_owned),
        subresource: status_of.map(|_| "status".to_owned()),
        duplicates: Vec::new(),
        custom: None,
        manager: pods.manager.clone(),
    })
}

/// Upstream's `checkAndDecrement`: takes one disruption from the budget's status and
/// records the pod in `disruptedPods`, retrying with a fresh budget when the
/// compare-and-swap loses a race.
async fn take_disruption(
    pods: &Scope<'_>,
    mut budget: Value,
    pod_name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let budget_name = budget.name().to_owned();
    let status = budget_scope(pods, Some(&budget_name))?;
    for attempt in 0..BUDGET_RETRIES {
        if attempt > 0 {
            budget = status.get().await?;
        }
        let generation = budget
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let observed = budget
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if observed < generation {
            let mut e = ApiError::too_many_requests(VIOLATION, 10);
            e.details.causes.push(StatusCause::new(
                DISRUPTION_BUDGET_CAUSE,
                "",
                format!(
                    "The disruption budget {budget_name} is still being processed by the server."
                ),
            ));
            return Err(e);
        }
        let allowed = budget
            .pointer("/status/disruptionsAllowed")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let forbidden = |why: &str| {
            ApiError::forbidden(format!(
                "poddisruptionbudget.policy \"{budget_name}\" is forbidden: {why}"
            ))
        };
        if allowed < 0 {
            return Err(forbidden("pdb disruptions allowed is negative"));
        }
        let disrupted = budget
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(forbidden(
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            let mut e = ApiError::too_many_requests(VIOLATION, 0);
            e.details.retry_after_seconds = None;
            let healthy = budget
                .pointer("/status/currentHealthy")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let desired = budget
                .pointer("/status/desiredHealthy")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            e.details.causes.push(StatusCause::new(
                DISRUPTION_BUDGET_CAUSE,
                "",
                format!(
                    "The disruption budget {budget_name} needs {desired} healthy pods and has {healthy} currently"
                ),
            ));
            return Err(e);
        }
        if dry_run {
            return Ok(());
        }
        let mut updated = budget.clone();
        updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if allowed - 1 == 0 {
            set_insufficient(&mut updated);
        }
        if !updated["status"]["disruptedPods"].is_object() {
            updated["status"]["disruptedPods"] = json!({});
        }
        updated["status"]["disruptedPods"][pod_name] = json!(now());
        match status.update(&Query::default(), updated).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        "policy",
        "poddisruptionbudgets",
        &budget_name,
        "too many concurrent evictions; try again",
    ))
}

/// Sets the DisruptionAllowed condition to False (InsufficientPods) after the last
/// allowed disruption was taken.
fn set_insufficient(budget: &mut Value) {
    let generation = budget.pointer("/status/observedGeneration").cloned();
    let mut conditions: Vec<Value> = budget
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let unchanged = conditions
        .iter()
        .any(|c| c["type"] == "DisruptionAllowed" && c["status"] == "False");
    if unchanged {
        return;
    }
    conditions.retain(|c| c["type"] != "DisruptionAllowed");
    let mut condition = json!({
        "type": "DisruptionAllowed",
        "status": "False",
        "reason": "InsufficientPods",
        "message": "",
        "lastTransitionTime": now(),
    });
    if let Some(g) = generation.filter(|g| !g.is_null()) {
        condition["observedGeneration"] = g;
    }
    conditions.push(condition);
    budget["status"]["conditions"] = json!(conditions);
}

/// Marks the pod with the DisruptionTarget condition, then deletes it with `options`.
async fn delete_pod(
    pods: &Scope<'_>,
    query: &Query,
    pod: &Value,
    mut options: Value,
    dry_run: bool,
) -> Result<Reply, ApiError> {
    if !dry_run && let Some(rv) = mark_disruption_target(pods, pod, &options).await? {
        // The condition moved the resourceVersion a caller's precondition refers to.
        if options
            .pointer("/preconditions/resourceVersion")
            .is_some_and(|v| !v.is_null())
        {
            options["preconditions"]["resourceVersion"] = json!(rv);
        }
    }
    let body = Bytes::from(serde_json::to_vec(&options).unwrap_or_default());
    pods.delete(query, &body).await?;
    Ok(Reply {
        code: 201,
        body: json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }),
        warnings: Vec::new(),
    })
}

/// Adds `DisruptionTarget: True` (EvictionByEvictionAPI) to the pod's conditions, checking
/// the caller's preconditions against the latest pod. Returns the new resourceVersion, or
/// `None` when the condition was already there.
async fn mark_disruption_target(
    pods: &Scope<'_>,
    pod: &Value,
    options: &Value,
) -> Result<Option<String>, ApiError> {
    let status = Scope {
        cp: pods.cp,
        kind: pods.kind.clone(),
        namespace: pods.namespace.clone(),
        name: pods.name.clone(),
        subresource: Some("status".into()),
        duplicates: Vec::new(),
        custom: None,
        manager: pods.manager.clone(),
    };
    let name = pod.name().to_owned();
    let mut latest = pod.clone();
    for attempt in 0..BUDGET_RETRIES {
        if attempt > 0 {
            latest = pods.get().await?;
        }
        let precondition = |field: &str| {
            options
                .pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        if let Some(uid) = precondition("uid")
            && uid != latest.uid()
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    latest.uid()
                ),
            ));
        }
        if let Some(rv) = precondition("resourceVersion")
            && rv != latest.resource_version()
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    latest.resource_version()
                ),
            ));
        }
        let mut conditions: Vec<Value> = latest
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True")
        {
            return Ok(None);
        }
        conditions.retain(|c| c["type"] != "DisruptionTarget");
        conditions.push(json!({
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting",
            "lastProbeTime": null,
            "lastTransitionTime": now(),
        }));
        let mut updated = latest.clone();
        updated["status"]["conditions"] = json!(conditions);
        match status.update(&Query::default(), updated).await {
            Ok(reply) => {
                return Ok(Some(reply.body.resource_version().to_owned()));
            }
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        "",
        "pods",
        &name,
        "too many concurrent writes; try again",
    ))
}
