//! The pod's status as kubelet computes it from what the runtime reports: container
//! states, phase, conditions and addresses.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::cri::api;

/// What the agent knows of one container of the pod.
#[derive(Clone, Debug, Default)]
pub struct ContainerView {
    /// The container's name in the spec.
    pub name: String,
    /// The image the spec asks for.
    pub image: String,
    /// The newest runtime container of this name, if any.
    pub latest: Option<api::ContainerStatus>,
    /// The one before it (the source of `lastState`).
    pub previous: Option<api::ContainerStatus>,
    /// Why the container is waiting (image pull failure, back-off, config error), when the
    /// agent holds it back.
    pub waiting: Option<(String, String)>,
    /// Termination messages by runtime container id.
    pub messages: Vec<(String, String)>,
    /// The readiness probe's (or, without one, the start's) verdict.
    pub ready: bool,
    /// Whether the startup probe (if any) has passed.
    pub started: bool,
}

/// What the agent knows of the pod.
#[derive(Clone, Debug, Default)]
pub struct PodView {
    /// The sandbox is up with its network.
    pub sandbox_ready: bool,
    /// The pod's IP, once the sandbox has one.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
    /// The runtime's name (`containerd`), the scheme of container IDs.
    pub runtime: String,
    /// Init containers, in spec order.
    pub init: Vec<ContainerView>,
    /// Regular containers, in spec order.
    pub containers: Vec<ContainerView>,
    /// Set once a pod of restartPolicy Never/OnFailure has finished for good.
    pub terminal_phase: Option<&'static str>,
}

fn time_from_nanos(nanos: i64) -> Option<Value> {
    if nanos <= 0 {
        return None;
    }
    let ts = jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok()?;
    serde_json::to_value(Time(ts)).ok()
}

fn now() -> Value {
    serde_json::to_value(Time(jiff::Timestamp::now())).unwrap_or(Value::Null)
}

fn terminated(runtime: &str, c: &api::ContainerStatus, message: Option<&str>) -> Value {
    let reason = if !c.reason.is_empty() && c.reason != "Completed" && c.reason != "Error" {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    let mut t = json!({
        "exitCode": c.exit_code,
        "reason": reason,
        "containerID": format!("{runtime}://{}", c.id),
    });
    if let Some(started) = time_from_nanos(c.started_at) {
        t["startedAt"] = started;
    }
    if let Some(finished) = time_from_nanos(c.finished_at) {
        t["finishedAt"] = finished;
    }
    let message = message
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .or_else(|| (!c.message.is_empty()).then(|| c.message.clone()));
    if let Some(m) = message {
        t["message"] = json!(m);
    }
    t
}

fn is_state(c: &api::ContainerStatus, state: api::ContainerState) -> bool {
    c.state == state as i32
}

fn message_for<'a>(view: &'a ContainerView, id: &str) -> Option<&'a str> {
    view.messages
        .iter()
        .find(|(cid, _)| cid == id)
        .map(|(_, m)| m.as_str())
}

/// A container's status entry.
pub fn container_status(runtime: &str, view: &ContainerView, default_waiting: &str) -> Value {
    let restart_count = view
        .latest
        .as_ref()
        .and_then(|c| c.annotations.get(super::spec::RESTART_COUNT))
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    let mut status = json!({
        "name": view.name,
        "image": view.image,
        "imageID": "",
        "restartCount": restart_count,
        "ready": false,
        "started": false,
    });
    let mut last_state = json!({});
    if let Some(prev) = &view.previous
        && is_state(prev, api::ContainerState::ContainerExited)
    {
        last_state = json!({"terminated": terminated(runtime, prev, message_for(view, &prev.id))});
    }
    let state = match (&view.latest, &view.waiting) {
        (Some(latest), waiting) => {
            status["containerID"] = json!(format!("{runtime}://{}", latest.id));
            status["imageID"] = json!(latest.image_ref);
            let running = is_state(latest, api::ContainerState::ContainerRunning);
            let exited = is_state(latest, api::ContainerState::ContainerExited);
            match waiting {
                Some((reason, message)) if !running => {
                    if exited {
                        last_state = json!({"terminated": terminated(
                            runtime, latest, message_for(view, &latest.id))});
                    }
                    json!({"waiting": {"reason": reason, "message": message}})
                }
                _ if running => {
                    status["ready"] = json!(view.ready);
                    status["started"] = json!(view.started);
                    let mut r = json!({});
                    if let Some(t) = time_from_nanos(latest.started_at) {
                        r["startedAt"] = t;
                    }
                    json!({"running": r})
                }
                _ if exited => {
                    json!({"terminated": terminated(runtime, latest, message_for(view, &latest.id))})
                }
                _ => json!({"waiting": {"reason": "ContainerCreating"}}),
            }
        }
        (None, Some((reason, message))) => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        (None, None) => json!({"waiting": {"reason": default_waiting}}),
    };
    status["state"] = state;
    status["lastState"] = last_state;
    status
}

/// Whether a container has exited for good under the pod's restart policy.
fn finished(view: &ContainerView, restart_policy: &str) -> Option<i32> {
    let latest = view.latest.as_ref()?;
    if !is_state(latest, api::ContainerState::ContainerExited) {
        return None;
    }
    match restart_policy {
        "Never" => Some(latest.exit_code),
        "OnFailure" if latest.exit_code == 0 => Some(0),
        _ => None,
    }
}

/// The pod's phase, from its containers, as kubelet's getPhase decides it.
pub fn phase(pod: &Pod, view: &PodView) -> &'static str {
    if let Some(p) = view.terminal_phase {
        return p;
    }
    let restart_policy = restart_policy(pod);
    // Init containers: a failure that will not be retried fails the pod; anything else
    // not yet done keeps it Pending.
    for init in &view.init {
        let Some(latest) = &init.latest else {
            return "Pending";
        };
        if is_state(latest, api::ContainerState::ContainerExited) {
            if latest.exit_code == 0 {
                continue;
            }
            if restart_policy == "Never" {
                return "Failed";
            }
        }
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.containers {
        match &c.latest {
            Some(l) if is_state(l, api::ContainerState::ContainerRunning) => running += 1,
            Some(l) if is_state(l, api::ContainerState::ContainerExited) => {
                stopped += 1;
                if l.exit_code == 0 {
                    succeeded += 1;
                }
            }
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy {
            "Always" => "Running",
            "OnFailure" if stopped != succeeded => "Running",
            _ if stopped == succeeded => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

/// Whether every container of the pod has finished for good.
pub fn all_finished(pod: &Pod, view: &PodView) -> bool {
    let policy = restart_policy(pod);
    if policy == "Always" {
        return false;
    }
    let init_failed = policy == "Never"
        && view.init.iter().any(|i| {
            i.latest.as_ref().is_some_and(|l| {
                is_state(l, api::ContainerState::ContainerExited) && l.exit_code != 0
            })
        });
    init_failed
        || (!view.containers.is_empty()
            && view
                .containers
                .iter()
                .all(|c| finished(c, policy).is_some()))
}

/// The pod's restartPolicy (default Always).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// The whole status subresource body.
pub fn pod_status(pod: &Pod, view: &PodView) -> Value {
    let phase = phase(pod, view);
    let init_done = view.init.iter().all(|i| {
        i.latest
            .as_ref()
            .is_some_and(|l| is_state(l, api::ContainerState::ContainerExited) && l.exit_code == 0)
    });
    let init_statuses: Vec<Value> = view
        .init
        .iter()
        .map(|c| container_status(&view.runtime, c, "PodInitializing"))
        .collect();
    let default_waiting = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<Value> = view
        .containers
        .iter()
        .map(|c| container_status(&view.runtime, c, default_waiting))
        .collect();
    let terminal = phase == "Succeeded" || phase == "Failed";
    let unready: Vec<&str> = view
        .containers
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| s["ready"] != json!(true))
        .map(|(c, _)| c.name.as_str())
        .collect();
    let unfinished_init: Vec<&str> = view
        .init
        .iter()
        .filter(|i| {
            !i.latest.as_ref().is_some_and(|l| {
                is_state(l, api::ContainerState::ContainerExited) && l.exit_code == 0
            })
        })
        .map(|i| i.name.as_str())
        .collect();
    let previous = pod.status.clone().unwrap_or_default();
    let old_conditions = previous.conditions.unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: Option<String>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = old_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .unwrap_or_else(now);
        let mut c = json!({"type": type_, "status": status, "lastProbeTime": null,
                           "lastTransitionTime": since});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    };
    let containers_ready = unready.is_empty() && !terminal;
    let (ready_reason, ready_message) = if terminal {
        (Some("PodCompleted".to_owned()), None)
    } else if !unready.is_empty() {
        (
            Some("ContainersNotReady".to_owned()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    } else {
        (None, None)
    };
    let (init_reason, init_message) = if init_done || terminal && unfinished_init.is_empty() {
        (None, None)
    } else if terminal {
        (Some("PodCompleted".to_owned()), None)
    } else {
        (
            Some("ContainersNotInitialized".to_owned()),
            Some(format!(
                "containers with incomplete status: [{}]",
                unfinished_init.join(" ")
            )),
        )
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", view.sandbox_ready, None, None),
        condition("Initialized", init_done, init_reason, init_message),
        condition(
            "Ready",
            containers_ready,
            ready_reason.clone(),
            ready_message.clone(),
        ),
        condition(
            "ContainersReady",
            containers_ready,
            ready_reason,
            ready_message,
        ),
        condition("PodScheduled", true, None, None),
    ];
    let start_time = previous
        .start_time
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .unwrap_or_else(now);
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": start_time,
        "qosClass": qos_class(pod),
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(ip) = &view.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

/// The pod's QoS class: Guaranteed when every container's requests equal its limits for
/// cpu and memory, BestEffort when none sets any, else Burstable.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let mut requests = r.requests.unwrap_or_default();
        for (k, v) in &limits {
            requests.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for res in ["cpu", "memory"] {
            if requests.contains_key(res) || limits.contains_key(res) {
                any = true;
            }
            let same = match (requests.get(res), limits.get(res)) {
                (Some(q), Some(l)) => {
                    apimachinery::quantity::parse(&q.0).ok()
                        == apimachinery::quantity::parse(&l.0).ok()
                }
                _ => false,
            };
            if !same {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32, attempt: u32) -> api::ContainerStatus {
        api::ContainerStatus {
            id: format!("c{attempt}"),
            state: api::ContainerState::ContainerExited as i32,
            exit_code: code,
            started_at: 1_700_000_000_000_000_000,
            finished_at: 1_700_000_001_000_000_000,
            annotations: [(
                super::super::spec::RESTART_COUNT.to_owned(),
                attempt.to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    fn running(attempt: u32) -> api::ContainerStatus {
        api::ContainerStatus {
            state: api::ContainerState::ContainerRunning as i32,
            ..exited(0, attempt)
        }
    }

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({"spec": {"restartPolicy": policy,
            "containers": [{"name": "a"}]}}))
        .unwrap()
    }

    fn view(latest: Option<api::ContainerStatus>) -> PodView {
        PodView {
            containers: vec![ContainerView {
                name: "a".into(),
                latest,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn phases() {
        let check = |policy: &str, latest: Option<api::ContainerStatus>, expected: &str| {
            assert_eq!(phase(&pod(policy), &view(latest)), expected, "{policy}");
        };
        check("Always", None, "Pending");
        check("Always", Some(running(0)), "Running");
        check("Always", Some(exited(1, 3)), "Running");
        check("Never", Some(exited(0, 0)), "Succeeded");
        check("Never", Some(exited(2, 0)), "Failed");
        check("OnFailure", Some(exited(2, 0)), "Running");
        check("OnFailure", Some(exited(0, 0)), "Succeeded");
    }

    #[test]
    fn back_off_shows_waiting_with_the_last_termination() {
        let v = ContainerView {
            name: "a".into(),
            latest: Some(exited(1, 2)),
            waiting: Some(("CrashLoopBackOff".into(), "back-off 20s".into())),
            ..Default::default()
        };
        let s = container_status("containerd", &v, "ContainerCreating");
        assert_eq!(s["restartCount"], 2);
        assert_eq!(s["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(s["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(s["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(s["containerID"], "containerd://c2");
    }
}
