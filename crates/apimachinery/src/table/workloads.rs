//! Printers for workloads: Pods, Deployments, ReplicaSets, StatefulSets, DaemonSets,
//! ReplicationControllers, Jobs, CronJobs, ControllerRevisions, PodDisruptionBudgets and
//! HorizontalPodAutoscalers.

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::fields::{
    age, arr, at, bool_word, container_cells, format_label_selector, format_labels, get, i64_at,
    int_or_string, is_deleting, label_selector_string, name, obj, opt_bool, opt_i64, opt_str,
    parse_time, since, str_at, text,
};
use super::{AGE, CONTAINERS, IMAGES, NAME, Printer, col, human_signed_duration, wide};

/// The printer for a workload kind, if `group`/`kind` is one.
pub(crate) fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("", "Pod") => &POD,
        ("apps", "Deployment") => &DEPLOYMENT,
        ("apps", "ReplicaSet") => &REPLICA_SET,
        ("apps", "StatefulSet") => &STATEFUL_SET,
        ("apps", "DaemonSet") => &DAEMON_SET,
        ("apps", "ControllerRevision") => &CONTROLLER_REVISION,
        ("", "ReplicationController") => &REPLICATION_CONTROLLER,
        ("batch", "Job") => &JOB,
        ("batch", "CronJob") => &CRON_JOB,
        ("policy", "PodDisruptionBudget") => &POD_DISRUPTION_BUDGET,
        ("autoscaling", "HorizontalPodAutoscaler") => &HORIZONTAL_POD_AUTOSCALER,
        _ => return None,
    })
}

static POD: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Ready",
            "string",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        col(
            "Status",
            "string",
            "The aggregate status of the containers in this pod.",
        ),
        col(
            "Restarts",
            "string",
            "Container restarts in this pod, and how long ago the last one was.",
        ),
        AGE,
        wide("IP", "string", "The pod's primary IP address."),
        wide("Node", "string", "The node the pod is bound to."),
        wide(
            "Nominated Node",
            "string",
            "The node the scheduler nominated while preempting for this pod.",
        ),
        wide(
            "Readiness Gates",
            "string",
            "Readiness gates whose condition is True, out of all gates.",
        ),
    ],
    cells: pod_cells,
};

/// Per-pod state gathered while walking container statuses.
struct PodTally {
    restarts: i64,
    ready: i64,
    last_restart: Option<Timestamp>,
}

impl PodTally {
    /// Records a container's restart count and last termination time.
    fn count_restarts(&mut self, status: &Value) {
        self.restarts += i64_at(status, &["restartCount"]);
        if let Some(finished) = parse_time(get(status, &["lastState", "terminated", "finishedAt"]))
        {
            self.last_restart = Some(
                self.last_restart
                    .map_or(finished, |last| last.max(finished)),
            );
        }
    }
}

/// The pod's Ready, Status and Restarts as upstream's `printPod` derives them.
fn pod_status(pod: &Value, now: Timestamp) -> (String, String, String) {
    let phase = str_at(pod, &["status", "phase"]);
    let status_reason = str_at(pod, &["status", "reason"]);
    let mut reason = if status_reason.is_empty() {
        phase.to_owned()
    } else {
        status_reason.to_owned()
    };
    let conditions = arr(pod, &["status", "conditions"]);
    if conditions.iter().any(|condition| {
        str_at(condition, &["type"]) == "PodScheduled"
            && str_at(condition, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_owned();
    }

    let init_specs = arr(pod, &["spec", "initContainers"]);
    let restartable: HashMap<&str, bool> = init_specs
        .iter()
        .map(|container| {
            (
                str_at(container, &["name"]),
                str_at(container, &["restartPolicy"]) == "Always",
            )
        })
        .collect();
    let mut total = arr(pod, &["spec", "containers"]).len() as i64;
    total += restartable.values().filter(|always| **always).count() as i64;

    let mut tally = PodTally {
        restarts: 0,
        ready: 0,
        last_restart: None,
    };
    let mut sidecars = PodTally {
        restarts: 0,
        ready: 0,
        last_restart: None,
    };
    let mut initializing = false;
    for (index, status) in arr(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        tally.count_restarts(status);
        let is_sidecar = restartable
            .get(str_at(status, &["name"]))
            .copied()
            .unwrap_or(false);
        if is_sidecar {
            sidecars.count_restarts(status);
        }
        let terminated = obj(status, &["state", "terminated"]);
        let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
        if terminated.is_some() && i64_at(status, &["state", "terminated", "exitCode"]) == 0 {
            continue;
        }
        if is_sidecar && opt_bool(status, &["started"]) == Some(true) {
            if opt_bool(status, &["ready"]) == Some(true) {
                tally.ready += 1;
            }
            continue;
        }
        if terminated.is_some() {
            let terminated_reason = str_at(status, &["state", "terminated", "reason"]);
            let signal = i64_at(status, &["state", "terminated", "signal"]);
            reason = if !terminated_reason.is_empty() {
                format!("Init:{terminated_reason}")
            } else if signal != 0 {
                format!("Init:Signal:{signal}")
            } else {
                format!(
                    "Init:ExitCode:{}",
                    i64_at(status, &["state", "terminated", "exitCode"])
                )
            };
        } else if obj(status, &["state", "waiting"]).is_some()
            && !waiting_reason.is_empty()
            && waiting_reason != "PodInitializing"
        {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{index}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized = conditions.iter().any(|condition| {
        str_at(condition, &["type"]) == "Initialized" && str_at(condition, &["status"]) == "True"
    });
    if !initializing || initialized {
        tally.restarts = sidecars.restarts;
        tally.last_restart = sidecars.last_restart;
        let mut has_running = false;
        for status in arr(pod, &["status", "containerStatuses"]).iter().rev() {
            tally.count_restarts(status);
            let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
            let terminated = obj(status, &["state", "terminated"]);
            let terminated_reason = str_at(status, &["state", "terminated", "reason"]);
            if obj(status, &["state", "waiting"]).is_some() && !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if terminated.is_some() && !terminated_reason.is_empty() {
                reason = terminated_reason.to_owned();
            } else if terminated.is_some() {
                let signal = i64_at(status, &["state", "terminated", "signal"]);
                reason = if signal != 0 {
                    format!("Signal:{signal}")
                } else {
                    format!(
                        "ExitCode:{}",
                        i64_at(status, &["state", "terminated", "exitCode"])
                    )
                };
            } else if opt_bool(status, &["ready"]) == Some(true)
                && obj(status, &["state", "running"]).is_some()
            {
                has_running = true;
                tally.ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|condition| {
                str_at(condition, &["type"]) == "Ready" && str_at(condition, &["status"]) == "True"
            });
            reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
        }
    }

    if is_deleting(pod) && status_reason == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if is_deleting(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts = match tally.last_restart {
        Some(last) if tally.restarts != 0 => {
            format!(
                "{} ({} ago)",
                tally.restarts,
                human_signed_duration(now.duration_since(last))
            )
        }
        _ => tally.restarts.to_string(),
    };
    (format!("{}/{total}", tally.ready), reason, restarts)
}

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let (ready, status, restarts) = pod_status(pod, now);
    let pod_ip = arr(pod, &["status", "podIPs"])
        .first()
        .map(|entry| str_at(entry, &["ip"]))
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    let none_if_empty = |value: &str| {
        if value.is_empty() {
            "<none>".to_owned()
        } else {
            value.to_owned()
        }
    };

    let gates = arr(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let conditions = arr(pod, &["status", "conditions"]);
        let true_gates = gates
            .iter()
            .filter(|gate| {
                let wanted = str_at(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|condition| str_at(condition, &["type"]) == wanted)
                    .is_some_and(|condition| str_at(condition, &["status"]) == "True")
            })
            .count();
        format!("{true_gates}/{}", gates.len())
    };

    vec![
        text(name(pod)),
        text(ready),
        text(status),
        text(restarts),
        age(pod, now),
        text(none_if_empty(pod_ip)),
        text(none_if_empty(str_at(pod, &["spec", "nodeName"]))),
        text(none_if_empty(str_at(pod, &["status", "nominatedNodeName"]))),
        text(readiness_gates),
    ]
}

/// The row `conditions` upstream attaches to finished pods (`Completed` for Succeeded/Failed).
pub(crate) fn pod_row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_at(pod, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

/// `spec.replicas`, defaulted to 1 as the v1 APIs default it.
fn replicas(object: &Value) -> i64 {
    opt_i64(object, &["spec", "replicas"]).unwrap_or(1)
}

static DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Ready pods out of desired replicas."),
        col(
            "Up-to-date",
            "string",
            "Pods updated to the latest template.",
        ),
        col(
            "Available",
            "string",
            "Pods available to serve (ready for at least minReadySeconds).",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "Label selector of the pods the deployment manages.",
        ),
    ],
    cells: deployment_cells,
};

fn deployment_cells(deployment: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(at(deployment, &["spec", "template", "spec"]));
    let selector = label_selector_string(get(deployment, &["spec", "selector"]))
        .unwrap_or_else(|()| "<invalid>".into());
    vec![
        text(name(deployment)),
        text(format!(
            "{}/{}",
            i64_at(deployment, &["status", "readyReplicas"]),
            replicas(deployment)
        )),
        Value::from(i64_at(deployment, &["status", "updatedReplicas"])),
        Value::from(i64_at(deployment, &["status", "availableReplicas"])),
        age(deployment, now),
        containers,
        images,
        text(selector),
    ]
}

static REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Desired number of replicas."),
        col("Current", "integer", "Number of replicas that exist."),
        col("Ready", "integer", "Number of ready replicas."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "Label selector of the pods the replica set manages.",
        ),
    ],
    cells: replica_set_cells,
};

fn replica_set_cells(replica_set: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(at(replica_set, &["spec", "template", "spec"]));
    vec![
        text(name(replica_set)),
        Value::from(replicas(replica_set)),
        Value::from(i64_at(replica_set, &["status", "replicas"])),
        Value::from(i64_at(replica_set, &["status", "readyReplicas"])),
        age(replica_set, now),
        containers,
        images,
        text(format_label_selector(get(
            replica_set,
            &["spec", "selector"],
        ))),
    ]
}

static REPLICATION_CONTROLLER: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Desired number of replicas."),
        col("Current", "integer", "Number of replicas that exist."),
        col("Ready", "integer", "Number of ready replicas."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "Label selector of the pods the controller manages.",
        ),
    ],
    cells: replication_controller_cells,
};

fn replication_controller_cells(controller: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(at(controller, &["spec", "template", "spec"]));
    vec![
        text(name(controller)),
        Value::from(replicas(controller)),
        Value::from(i64_at(controller, &["status", "replicas"])),
        Value::from(i64_at(controller, &["status", "readyReplicas"])),
        age(controller, now),
        containers,
        images,
        text(format_labels(obj(controller, &["spec", "selector"]))),
    ]
}

static STATEFUL_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Ready pods out of desired replicas."),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    cells: stateful_set_cells,
};

fn stateful_set_cells(stateful_set: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(at(stateful_set, &["spec", "template", "spec"]));
    vec![
        text(name(stateful_set)),
        text(format!(
            "{}/{}",
            i64_at(stateful_set, &["status", "readyReplicas"]),
            replicas(stateful_set)
        )),
        age(stateful_set, now),
        containers,
        images,
    ]
}

static DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            "Number of nodes that should run the daemon pod.",
        ),
        col(
            "Current",
            "integer",
            "Number of nodes running at least one daemon pod.",
        ),
        col(
            "Ready",
            "integer",
            "Number of nodes whose daemon pod is ready.",
        ),
        col(
            "Up-to-date",
            "integer",
            "Number of nodes running the updated daemon pod.",
        ),
        col(
            "Available",
            "integer",
            "Number of nodes whose daemon pod is available.",
        ),
        col(
            "Node Selector",
            "string",
            "Node selector of the pod template.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "Label selector of the pods the daemon set manages.",
        ),
    ],
    cells: daemon_set_cells,
};

fn daemon_set_cells(daemon_set: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(at(daemon_set, &["spec", "template", "spec"]));
    let status = |field: &str| Value::from(i64_at(daemon_set, &["status", field]));
    vec![
        text(name(daemon_set)),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        text(format_labels(obj(
            daemon_set,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        age(daemon_set, now),
        containers,
        images,
        text(format_label_selector(get(
            daemon_set,
            &["spec", "selector"],
        ))),
    ]
}

static JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Status of the job."),
        col(
            "Completions",
            "string",
            "Succeeded pods out of desired completions.",
        ),
        col("Duration", "string", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "Label selector of the job's pods."),
    ],
    cells: job_cells,
};

/// Whether the job's first condition of `type_` has status True (upstream's `hasJobCondition`).
fn has_job_condition(job: &Value, type_: &str) -> bool {
    arr(job, &["status", "conditions"])
        .iter()
        .find(|condition| str_at(condition, &["type"]) == type_)
        .is_some_and(|condition| str_at(condition, &["status"]) == "True")
}

fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = i64_at(job, &["status", "succeeded"]);
    let completions = match opt_i64(job, &["spec", "completions"]) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match opt_i64(job, &["spec", "parallelism"]).unwrap_or(0) {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = parse_time(get(job, &["status", "startTime"]));
    let completion = parse_time(get(job, &["status", "completionTime"]));
    let duration = match (start, completion) {
        (None, _) => String::new(),
        (Some(start), None) => human_signed_duration(now.duration_since(start)),
        (Some(start), Some(completion)) => human_signed_duration(completion.duration_since(start)),
    };
    let status = if has_job_condition(job, "Complete") {
        "Complete"
    } else if has_job_condition(job, "Failed") {
        "Failed"
    } else if is_deleting(job) {
        "Terminating"
    } else if has_job_condition(job, "Suspended") {
        "Suspended"
    } else if has_job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (containers, images) = container_cells(at(job, &["spec", "template", "spec"]));
    vec![
        text(name(job)),
        text(status),
        text(completions),
        text(duration),
        age(job, now),
        containers,
        images,
        text(format_label_selector(get(job, &["spec", "selector"]))),
    ]
}

static CRON_JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Schedule", "string", "The schedule in Cron format."),
        col(
            "Timezone",
            "string",
            "The time zone the schedule is read in.",
        ),
        col("Suspend", "boolean", "Whether new runs are suspended."),
        col("Active", "integer", "Number of running jobs."),
        col(
            "Last Schedule",
            "string",
            "Time since a job was last scheduled.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "Label selector of the jobs' pods."),
    ],
    cells: cron_job_cells,
};

fn cron_job_cells(cron_job: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = match get(cron_job, &["status", "lastScheduleTime"]) {
        Some(value) if !value.is_null() => since(Some(value), now),
        _ => "<none>".to_owned(),
    };
    let job_spec = at(cron_job, &["spec", "jobTemplate", "spec"]);
    let (containers, images) = container_cells(at(job_spec, &["template", "spec"]));
    vec![
        text(name(cron_job)),
        text(str_at(cron_job, &["spec", "schedule"])),
        text(opt_str(cron_job, &["spec", "timeZone"]).unwrap_or("<none>")),
        // The v1 API defaults `suspend` to false.
        text(bool_word(Some(
            opt_bool(cron_job, &["spec", "suspend"]).unwrap_or(false),
        ))),
        Value::from(arr(cron_job, &["status", "active"]).len() as i64),
        text(last_schedule),
        age(cron_job, now),
        containers,
        images,
        text(format_label_selector(get(job_spec, &["selector"]))),
    ]
}

static CONTROLLER_REVISION: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Controller",
            "string",
            "The controller that owns this revision.",
        ),
        col("Revision", "string", "The revision number."),
        AGE,
    ],
    cells: controller_revision_cells,
};

fn controller_revision_cells(revision: &Value, now: Timestamp) -> Vec<Value> {
    let controller = arr(revision, &["metadata", "ownerReferences"])
        .iter()
        .find(|owner| opt_bool(owner, &["controller"]) == Some(true))
        .map_or_else(
            || "<none>".to_owned(),
            |owner| {
                let api_version = str_at(owner, &["apiVersion"]);
                let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
                let kind = str_at(owner, &["kind"]);
                let owner_name = str_at(owner, &["name"]);
                match (kind.is_empty(), group.is_empty()) {
                    (true, true) => owner_name.to_owned(),
                    (_, true) => format!("{}/{owner_name}", kind.to_lowercase()),
                    (_, false) => format!(
                        "{}.{}/{owner_name}",
                        kind.to_lowercase(),
                        group.to_lowercase()
                    ),
                }
            },
        );
    vec![
        text(name(revision)),
        text(controller),
        Value::from(i64_at(revision, &["revision"])),
        age(revision, now),
    ]
}

static POD_DISRUPTION_BUDGET: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Min Available",
            "string",
            "The minimum number of pods that must be available.",
        ),
        col(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable.",
        ),
        col(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        AGE,
    ],
    cells: pod_disruption_budget_cells,
};

fn pod_disruption_budget_cells(budget: &Value, now: Timestamp) -> Vec<Value> {
    let bound = |field: &str| match get(budget, &["spec", field]) {
        Some(value) if !value.is_null() => int_or_string(value),
        _ => "N/A".to_owned(),
    };
    vec![
        text(name(budget)),
        text(bound("minAvailable")),
        text(bound("maxUnavailable")),
        Value::from(i64_at(budget, &["status", "disruptionsAllowed"])),
        age(budget, now),
    ]
}

static HORIZONTAL_POD_AUTOSCALER: Printer = Printer {
    columns: &[
        NAME,
        col("Reference", "string", "The scaled resource, as kind/name."),
        col(
            "Targets",
            "string",
            "Current and target values of the metrics.",
        ),
        col(
            "MinPods",
            "string",
            "Lower limit for the number of replicas.",
        ),
        col(
            "MaxPods",
            "string",
            "Upper limit for the number of replicas.",
        ),
        col("Replicas", "string", "Current number of replicas."),
        AGE,
    ],
    cells: horizontal_pod_autoscaler_cells,
};

/// A metric value as text: a quantity string, or `fallback` when missing.
fn metric_value(value: Option<&Value>, fallback: &str) -> String {
    match value {
        Some(Value::String(quantity)) => quantity.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => fallback.to_owned(),
    }
}

/// A utilization percentage as text, or `fallback` when missing.
fn percent(value: Option<i64>, fallback: &str) -> String {
    value.map_or_else(|| fallback.to_owned(), |percent| format!("{percent}%"))
}

/// One autoscaling/v2 metric as upstream's `formatHPAMetrics` shows it.
fn format_metric(spec: &Value, status: Option<&Value>) -> String {
    const UNKNOWN: &str = "<unknown>";
    let current = |source: &str, field: &str| {
        status.and_then(|status| get(status, &[source, "current", field]))
    };
    let has_status = |source: &str| status.and_then(|status| obj(status, &[source])).is_some();
    match str_at(spec, &["type"]) {
        source_type @ ("External" | "Object") => {
            let source = if source_type == "External" {
                "external"
            } else {
                "object"
            };
            if let Some(target) =
                get(spec, &[source, "target", "averageValue"]).filter(|value| !value.is_null())
            {
                let current = metric_value(current(source, "averageValue"), UNKNOWN);
                format!("{current}/{} (avg)", metric_value(Some(target), ""))
            } else {
                let current = if has_status(source) {
                    metric_value(current(source, "value"), "0")
                } else {
                    UNKNOWN.into()
                };
                format!(
                    "{current}/{}",
                    metric_value(get(spec, &[source, "target", "value"]), "0")
                )
            }
        }
        "Pods" => {
            let current = if has_status("pods") {
                metric_value(current("pods", "averageValue"), "0")
            } else {
                UNKNOWN.into()
            };
            format!(
                "{current}/{}",
                metric_value(get(spec, &["pods", "target", "averageValue"]), "0")
            )
        }
        source_type @ ("Resource" | "ContainerResource") => {
            let source = if source_type == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let resource = str_at(spec, &[source, "name"]);
            if let Some(target) =
                get(spec, &[source, "target", "averageValue"]).filter(|value| !value.is_null())
            {
                let current = if has_status(source) {
                    metric_value(current(source, "averageValue"), "0")
                } else {
                    UNKNOWN.into()
                };
                format!("{resource}: {current}/{}", metric_value(Some(target), ""))
            } else {
                let current = percent(
                    current(source, "averageUtilization").and_then(Value::as_i64),
                    UNKNOWN,
                );
                let target = percent(
                    opt_i64(spec, &[source, "target", "averageUtilization"]),
                    "<auto>",
                );
                format!("{resource}: {current}/{target}")
            }
        }
        _ => "<unknown type>".to_owned(),
    }
}

/// The Targets cell: up to two metrics, then `+ N more...`.
fn hpa_targets(autoscaler: &Value) -> String {
    let specs = arr(autoscaler, &["spec", "metrics"]);
    if specs.is_empty() {
        // autoscaling/v1 objects have one CPU target; the API defaults a missing target (and a
        // missing v2 metrics list) to 80% CPU utilization.
        let target = opt_i64(autoscaler, &["spec", "targetCPUUtilizationPercentage"]).unwrap_or(80);
        let current = percent(
            opt_i64(autoscaler, &["status", "currentCPUUtilizationPercentage"]),
            "<unknown>",
        );
        return format!("cpu: {current}/{target}%");
    }
    let statuses = arr(autoscaler, &["status", "currentMetrics"]);
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(index, spec)| format_metric(spec, statuses.get(index)))
        .collect();
    const MAX: usize = 2;
    if list.len() > MAX {
        format!("{} + {} more...", list[..MAX].join(", "), list.len() - MAX)
    } else {
        list.join(", ")
    }
}

fn horizontal_pod_autoscaler_cells(autoscaler: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(autoscaler, &["spec", "scaleTargetRef", "kind"]),
        str_at(autoscaler, &["spec", "scaleTargetRef", "name"])
    );
    // The API defaults minReplicas to 1.
    let min_pods = opt_i64(autoscaler, &["spec", "minReplicas"]).unwrap_or(1);
    vec![
        text(name(autoscaler)),
        text(reference),
        text(hpa_targets(autoscaler)),
        text(min_pods.to_string()),
        Value::from(i64_at(autoscaler, &["spec", "maxReplicas"])),
        Value::from(i64_at(autoscaler, &["status", "currentReplicas"])),
        age(autoscaler, now),
    ]
}
