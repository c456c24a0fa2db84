//! The CronJob controller, as upstream's `pkg/controller/cronjob` (the v2 controller): at
//! each time the schedule names, a Job `<cronjob>-<minutes since the epoch>` is created from
//! the template, subject to `suspend`, `startingDeadlineSeconds` and the
//! `concurrencyPolicy`; finished Jobs beyond the history limits are deleted. The loop is
//! requeued exactly at the next scheduled time instead of polling.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::Context;
use crate::cron::Schedule;
use crate::pods::{controller_ref, is_controlled_by};
use crate::workloads::{
    Error, Expectations, Result, Written, controller_key, event, informer, is_already_exists,
    is_not_found, key_of, now, run_loop,
};

/// Annotation on a CronJob's Jobs with the time they were scheduled for (RFC 3339, in the
/// CronJob's time zone).
pub(crate) const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this are reported, as upstream does.
const TOO_MANY_MISSED: i64 = 100;

struct State {
    client: kube::Client,
    jobs: Store<Job>,
    recorder: Recorder,
    expectations: Expectations,
    written: Written,
}

/// Runs the CronJob loop.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (cronjobs, cronjob_events) = informer(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    );
    let (jobs, job_events) = informer(Api::<Job>::all(client.clone()), watcher::Config::default());
    let state = Arc::new(State {
        client,
        jobs,
        recorder: ctx.recorder("cronjob-controller"),
        expectations: Expectations::default(),
        written: Written::default(),
    });
    let queue = futures::stream::select(
        cronjob_events.map(|cj| ObjectRef::from_obj(cj.as_ref())),
        job_events.filter_map(|job| std::future::ready(controller_key::<CronJob>(&job.metadata))),
    );
    run_loop("cronjob", cronjobs, queue, state, reconcile).await;
    Ok(())
}

/// The schedule of a CronJob, in its `timeZone` (or the controller's local zone).
pub(crate) fn schedule_of(cj: &CronJob) -> Result<Schedule, String> {
    let spec = cj.spec.as_ref().ok_or("no spec")?;
    let tz = match &spec.time_zone {
        Some(name) => {
            TimeZone::get(name).map_err(|e| format!("invalid timeZone: {name:?}: {e}"))?
        }
        None => TimeZone::system(),
    };
    Schedule::parse(&spec.schedule, tz)
        .map_err(|e| format!("unparseable schedule: {:?} : {e}", spec.schedule))
}

/// The most recent time at or before `now` the schedule named and that has not been acted
/// on, with how many such times were missed (upstream's `mostRecentScheduleTime`).
pub(crate) fn most_recent_schedule_time(
    schedule: &Schedule,
    earliest: Timestamp,
    starting_deadline_seconds: Option<i64>,
    now: Timestamp,
) -> (Option<Timestamp>, i64) {
    let mut earliest = earliest;
    if let Some(deadline) = starting_deadline_seconds {
        let scheduling_deadline =
            Timestamp::from_second(now.as_second() - deadline).unwrap_or(earliest);
        if scheduling_deadline > earliest {
            earliest = scheduling_deadline;
        }
    }
    let Some(t1) = schedule.next(earliest).filter(|t| *t <= now) else {
        return (None, 0);
    };
    let Some(t2) = schedule.next(t1).filter(|t| *t <= now) else {
        return (Some(t1), 1);
    };
    // Many missed times: jump close to now by the interval of the first two, then walk.
    let interval = (t2.as_second() - t1.as_second()).max(1);
    let missed = (now.as_second() - t1.as_second()) / interval + 1;
    let mut t = if missed > 3 {
        let skip = (missed - 2) * interval;
        Timestamp::from_second(t1.as_second() + skip - interval).unwrap_or(t1)
    } else {
        t1
    };
    let mut most_recent = t1;
    for _ in 0..100_000 {
        match schedule.next(t) {
            Some(next) if next <= now => {
                most_recent = next;
                t = next;
            }
            _ => break,
        }
    }
    (Some(most_recent.max(t2)), missed)
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`.
pub(crate) fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in `tz`, as Go's `time.RFC3339` prints it (`Z` for UTC).
fn rfc3339(t: Timestamp, tz: &TimeZone) -> String {
    let zoned = t.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

fn job_finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

async fn reconcile(cj: Arc<CronJob>, state: Arc<State>) -> Result<Action> {
    let key = key_of(cj.as_ref());
    if cj.metadata.deletion_timestamp.is_some() {
        state.expectations.clear(&key);
        return Ok(Action::await_change());
    }
    if state.written.is_stale(&key, cj.as_ref()) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    state.jobs.wait_until_ready().await.ok();
    let spec = cj
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("cronjob has no spec".into()))?;
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(state.client.clone(), &ns);
    let owned: Vec<Arc<Job>> = state
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| is_controlled_by(&j.metadata, &uid))
        .collect();
    let names: HashSet<String> = owned.iter().map(|j| j.name_any()).collect();
    state.expectations.satisfied(&key, |token| {
        token
            .strip_prefix("create/")
            .is_none_or(|name| names.contains(name))
    });
    let old_status = cj.status.clone().unwrap_or_default();
    let mut status = old_status.clone();

    // The active list: owned unfinished Jobs, plus Jobs just created that the cache has not
    // shown yet.
    let previously_active: HashSet<String> = old_status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    let mut active: Vec<ObjectReference> = Vec::new();
    for job in &owned {
        match job_finished(job) {
            None => active.push(job_ref(job)),
            Some(condition) => {
                if previously_active.contains(&job.name_any()) {
                    event(
                        &state.recorder,
                        cj.as_ref(),
                        false,
                        "SawCompletedJob",
                        format!(
                            "Saw completed job: {}, condition: {condition}",
                            job.name_any()
                        ),
                    );
                }
            }
        }
    }
    for reference in old_status.active.iter().flatten() {
        let name = reference.name.clone().unwrap_or_default();
        if !names.contains(&name)
            && state
                .expectations
                .is_pending(&key, &format!("create/{name}"))
        {
            active.push(reference.clone());
        }
    }
    active.sort_by(|a, b| a.name.cmp(&b.name));
    status.active = (!active.is_empty()).then_some(active);
    let last_success = owned
        .iter()
        .filter(|j| job_finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max();
    if let Some(t) = last_success
        && status
            .last_successful_time
            .as_ref()
            .is_none_or(|old| old.0 < t)
    {
        status.last_successful_time = Some(Time(t));
    }
    cleanup_history(&state, &cj, &owned, &jobs_api).await?;

    if spec.suspend == Some(true) {
        write_status(&state, &cj, &key, &old_status, status).await?;
        return Ok(Action::await_change());
    }
    let schedule = match schedule_of(&cj) {
        Ok(s) => s,
        Err(message) => {
            let reason = if message.starts_with("invalid timeZone") {
                "UnknownTimeZone"
            } else {
                "UnparseableSchedule"
            };
            event(&state.recorder, cj.as_ref(), true, reason, message);
            write_status(&state, &cj, &key, &old_status, status).await?;
            return Ok(Action::await_change());
        }
    };
    let now = now();
    let earliest = status
        .last_schedule_time
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    let (scheduled, missed) =
        most_recent_schedule_time(&schedule, earliest, spec.starting_deadline_seconds, now);
    let requeue = next_requeue(&schedule, now);
    let Some(scheduled) = scheduled else {
        write_status(&state, &cj, &key, &old_status, status).await?;
        return Ok(requeue);
    };
    if missed > TOO_MANY_MISSED {
        event(
            &state.recorder,
            cj.as_ref(),
            true,
            "TooManyMissedTimes",
            format!(
                "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
            ),
        );
    }
    let tz = schedule.time_zone().clone();
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled.as_second() + deadline < now.as_second()
    {
        event(
            &state.recorder,
            cj.as_ref(),
            false,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                rfc3339(scheduled, &tz)
            ),
        );
        write_status(&state, &cj, &key, &old_status, status).await?;
        return Ok(requeue);
    }
    let name = job_name(&cj.name_any(), scheduled);
    let already = names.contains(&name)
        || status
            .active
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(name.as_str()))
        || status
            .last_schedule_time
            .as_ref()
            .is_some_and(|t| t.0 >= scheduled);
    if already {
        write_status(&state, &cj, &key, &old_status, status).await?;
        return Ok(requeue);
    }
    let running = status.active.clone().unwrap_or_default();
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !running.is_empty() => {
            event(
                &state.recorder,
                cj.as_ref(),
                false,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            );
            write_status(&state, &cj, &key, &old_status, status).await?;
            return Ok(requeue);
        }
        Some("Replace") => {
            for reference in &running {
                let old = reference.name.clone().unwrap_or_default();
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..Default::default()
                };
                match jobs_api.delete(&old, &params).await {
                    Ok(_) => event(
                        &state.recorder,
                        cj.as_ref(),
                        false,
                        "SuccessfulDelete",
                        format!("Deleted job {old}"),
                    ),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            status.active = None;
        }
        _ => {}
    }
    let job = job_from_template(&cj, &name, scheduled, &tz)?;
    let created = match jobs_api.create(&PostParams::default(), &job).await {
        Ok(created) => {
            event(
                &state.recorder,
                cj.as_ref(),
                false,
                "SuccessfulCreate",
                format!("Created job {name}"),
            );
            state.expectations.expect(&key, format!("create/{name}"));
            created
        }
        Err(e) if is_already_exists(&e) => {
            let existing = jobs_api.get(&name).await?;
            if !is_controlled_by(&existing.metadata, &uid) {
                write_status(&state, &cj, &key, &old_status, status).await?;
                return Ok(requeue);
            }
            existing
        }
        Err(e) => {
            event(
                &state.recorder,
                cj.as_ref(),
                true,
                "FailedCreate",
                format!("Error creating job: {e}"),
            );
            return Err(e.into());
        }
    };
    let mut active = status.active.take().unwrap_or_default();
    if !active.iter().any(|r| r.name == created.metadata.name) {
        active.push(job_ref(&created));
    }
    status.active = Some(active);
    status.last_schedule_time = Some(Time(scheduled));
    write_status(&state, &cj, &key, &old_status, status).await?;
    Ok(next_requeue(&schedule, now))
}

/// Requeue just after the next scheduled time.
fn next_requeue(schedule: &Schedule, now: Timestamp) -> Action {
    match schedule.next(now) {
        Some(next) => {
            let wait = next.duration_since(now);
            let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
            Action::requeue(wait + Duration::from_millis(100))
        }
        None => Action::await_change(),
    }
}

/// The Job for one scheduled time (upstream's `getJobFromTemplate2`).
pub(crate) fn job_from_template(
    cj: &CronJob,
    name: &str,
    scheduled: Timestamp,
    tz: &TimeZone,
) -> Result<Job> {
    let spec = cj
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid("cronjob has no spec".into()))?;
    let template = &spec.job_template;
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339(scheduled, tz));
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cj.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    })
}

/// Deletes the oldest finished Jobs beyond the history limits.
async fn cleanup_history(
    state: &State,
    cj: &CronJob,
    owned: &[Arc<Job>],
    api: &Api<Job>,
) -> Result<()> {
    let spec = cj.spec.as_ref();
    let limits = [
        (
            "Complete",
            spec.and_then(|s| s.successful_jobs_history_limit),
        ),
        ("Failed", spec.and_then(|s| s.failed_jobs_history_limit)),
    ];
    for (condition, limit) in limits {
        let Some(limit) = limit else { continue };
        let mut finished: Vec<&Arc<Job>> = owned
            .iter()
            .filter(|j| job_finished(j) == Some(condition))
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect();
        let limit = usize::try_from(limit.max(0)).unwrap_or(0);
        if finished.len() <= limit {
            continue;
        }
        finished.sort_by_key(|j| {
            let start = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            (start.is_some(), start, j.name_any())
        });
        let excess = finished.len() - limit;
        for job in &finished[..excess] {
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            match api.delete(&job.name_any(), &params).await {
                Ok(_) => event(
                    &state.recorder,
                    cj,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted job {}", job.name_any()),
                ),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

async fn write_status(
    state: &State,
    cj: &CronJob,
    key: &str,
    old: &CronJobStatus,
    status: CronJobStatus,
) -> Result<()> {
    let normalize = |s: &CronJobStatus| {
        let mut s = s.clone();
        for r in s.active.iter_mut().flatten() {
            r.resource_version = None;
        }
        if s.active.as_ref().is_some_and(Vec::is_empty) {
            s.active = None;
        }
        s
    };
    if normalize(old) == normalize(&status) {
        return Ok(());
    }
    let api: Api<CronJob> =
        Api::namespaced(state.client.clone(), &cj.namespace().unwrap_or_default());
    let mut updated = cj.clone();
    updated.metadata.managed_fields = None;
    updated.status = Some(status);
    let written = api
        .replace_status(&cj.name_any(), &PostParams::default(), &updated)
        .await?;
    state.written.record(key, &written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn most_recent_unmet_time() {
        let every_minute = Schedule::parse("*/1 * * * *", TimeZone::UTC).unwrap();
        let check = |earliest: &str, deadline: Option<i64>, now: &str| {
            let (t, missed) =
                most_recent_schedule_time(&every_minute, ts(earliest), deadline, ts(now));
            (t.map(|t| t.to_string()), missed)
        };
        assert_eq!(
            check("2024-01-01T00:00:10Z", None, "2024-01-01T00:00:50Z"),
            (None, 0)
        );
        assert_eq!(
            check("2024-01-01T00:00:10Z", None, "2024-01-01T00:01:05Z"),
            (Some("2024-01-01T00:01:00Z".into()), 1)
        );
        assert_eq!(
            check("2024-01-01T00:00:10Z", None, "2024-01-01T00:05:05Z"),
            (Some("2024-01-01T00:05:00Z".into()), 5)
        );
        // A day of missed minutes: the most recent one, found without walking them all.
        assert_eq!(
            check("2024-01-01T00:00:00Z", None, "2024-01-02T00:00:30Z"),
            (Some("2024-01-02T00:00:00Z".into()), 1440)
        );
        // The starting deadline moves the earliest time up.
        assert_eq!(
            check("2024-01-01T00:00:00Z", Some(90), "2024-01-02T00:00:30Z"),
            (Some("2024-01-02T00:00:00Z".into()), 1)
        );
        // Irregular schedules are walked exactly.
        let irregular = Schedule::parse("30 6-16/4 * * 1-5", TimeZone::UTC).unwrap();
        let (t, _) = most_recent_schedule_time(
            &irregular,
            ts("2024-01-01T00:00:00Z"),
            None,
            ts("2024-01-03T12:00:00Z"),
        );
        assert_eq!(t.unwrap().to_string(), "2024-01-03T10:30:00Z");
    }

    #[test]
    fn names_and_timestamps() {
        assert_eq!(
            job_name("hello", ts("2024-01-01T00:01:00Z")),
            "hello-28401121"
        );
        assert_eq!(
            rfc3339(ts("2024-01-01T00:01:00Z"), &TimeZone::UTC),
            "2024-01-01T00:01:00Z"
        );
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(
            rfc3339(ts("2024-01-01T00:01:00Z"), &tokyo),
            "2024-01-01T09:01:00+09:00"
        );
    }
}
