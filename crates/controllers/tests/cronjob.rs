//! CronJob `concurrencyPolicy` on an in-process cluster: what happens when a run is due
//! while the previous run's Job is still active.
//!
//! No clock is faked. The first run is made due at once by a daily schedule naming the
//! minute two minutes ago (and a `lastScheduleTime` before it); switching the schedule to
//! every minute then makes the current minute due while that Job is still active. Without
//! nodes, the Jobs' pods never run, so the Jobs stay active.

mod common;

use std::time::Duration;

use common::{Cluster, wait_for};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);
const SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A CronJob whose first run has just been made, with its Job still active.
struct FirstRun {
    cluster: Cluster,
    cronjobs: Api<CronJob>,
    jobs: Api<Job>,
    /// The CronJob's name (also the `from` label of its Jobs).
    name: String,
    /// The first run's Job.
    first: String,
    /// The time the first run was scheduled for.
    first_time: Timestamp,
}

async fn first_run(name: &str, policy: &str) -> FirstRun {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let now = Timestamp::now().as_second();
    let first_time = Timestamp::from_second((now / 60) * 60 - 120).expect("time");
    let at = first_time.to_zoned(TimeZone::UTC);
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "schedule": format!("{} {} * * *", at.minute(), at.hour()),
            "timeZone": "UTC",
            "suspend": true,
            "concurrencyPolicy": policy,
            "jobTemplate": {
                "metadata": {"labels": {"from": name}},
                "spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                }}},
            },
        },
    }))
    .expect("cronjob");
    cronjobs
        .create(&PostParams::default(), &cj)
        .await
        .expect("create cronjob");
    // The last run was before the named minute, so that minute is due now.
    let last = Timestamp::from_second(first_time.as_second() - 180).expect("time");
    cronjobs
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": last.to_string()}})),
        )
        .await
        .expect("set lastScheduleTime");
    cronjobs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .expect("resume");
    let first = format!("{name}-{}", first_time.as_second() / 60);
    wait_for(TIMEOUT, "the first run, active", || async {
        jobs.get_opt(&first).await.ok().flatten()?;
        let active = active_names(&cronjobs, name).await?;
        (active == [first.clone()]).then_some(())
    })
    .await;
    FirstRun {
        cluster,
        cronjobs,
        jobs,
        name: name.into(),
        first,
        first_time,
    }
}

impl FirstRun {
    /// Makes the current minute due while the first Job is active.
    async fn every_minute(&self) {
        self.cronjobs
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"schedule": "* * * * *"}})),
            )
            .await
            .expect("change schedule");
    }

    /// The CronJob's Jobs that are not being deleted, by name.
    async fn live_jobs(&self) -> Vec<Job> {
        let mut jobs: Vec<Job> = self
            .jobs
            .list(&ListParams::default().labels(&format!("from={}", self.name)))
            .await
            .expect("list jobs")
            .items
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect();
        jobs.sort_by_key(ResourceExt::name_any);
        jobs
    }

    async fn status(&self) -> k8s_openapi::api::batch::v1::CronJobStatus {
        self.cronjobs
            .get(&self.name)
            .await
            .expect("cronjob")
            .status
            .unwrap_or_default()
    }
}

async fn active_names(cronjobs: &Api<CronJob>, name: &str) -> Option<Vec<String>> {
    let status = cronjobs.get(name).await.ok()?.status?;
    let mut names: Vec<String> = status
        .active
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.name)
        .collect();
    names.sort();
    Some(names)
}

async fn events_of(client: &Client, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

fn scheduled_time(job: &Job) -> Timestamp {
    job.annotations()[SCHEDULED]
        .parse()
        .expect("scheduled time")
}

#[tokio::test]
async fn forbid_skips_a_run_while_the_previous_job_is_active() {
    let run = first_run("forbid", "Forbid").await;
    let client = run.cluster.client.clone();
    run.every_minute().await;
    wait_for(TIMEOUT, "JobAlreadyActive event", || async {
        events_of(&client, "forbid")
            .await
            .into_iter()
            .any(|(reason, _)| reason == "JobAlreadyActive")
            .then_some(())
    })
    .await;
    let names: Vec<String> = run.live_jobs().await.iter().map(|j| j.name_any()).collect();
    assert_eq!(
        names,
        std::slice::from_ref(&run.first),
        "no run while the first is active"
    );
    let status = run.status().await;
    assert_eq!(
        status.last_schedule_time.map(|t| t.0),
        Some(run.first_time),
        "a skipped run is not recorded as scheduled"
    );

    // Once the previous Job is gone, the due run starts.
    run.jobs
        .delete(&run.first, &DeleteParams::background())
        .await
        .expect("delete first job");
    let second = wait_for(TIMEOUT, "the skipped run to start", || async {
        let jobs = run.live_jobs().await;
        let second = jobs.into_iter().find(|j| j.name_any() != run.first)?;
        let active = active_names(&run.cronjobs, "forbid").await?;
        (active == [second.name_any()]).then_some(second)
    })
    .await;
    assert!(scheduled_time(&second) > run.first_time);
}

#[tokio::test]
async fn replace_deletes_the_active_job_and_starts_a_new_one() {
    let run = first_run("replace", "Replace").await;
    let client = run.cluster.client.clone();
    run.every_minute().await;
    let second = wait_for(TIMEOUT, "the replacing run", || async {
        let jobs = run.live_jobs().await;
        if jobs.iter().any(|j| j.name_any() == run.first) {
            return None;
        }
        let [second] = jobs.as_slice() else {
            return None;
        };
        let active = active_names(&run.cronjobs, "replace").await?;
        (active == [second.name_any()]).then(|| second.clone())
    })
    .await;
    assert!(scheduled_time(&second) > run.first_time);
    let status = run.status().await;
    assert_eq!(
        status.last_schedule_time.map(|t| t.0),
        Some(scheduled_time(&second))
    );
    let events = events_of(&client, "replace").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "SuccessfulDelete"
                && note == &format!("Deleted job {}", run.first)),
        "events: {events:?}"
    );
}

#[tokio::test]
async fn allow_runs_jobs_side_by_side() {
    let run = first_run("allow", "Allow").await;
    run.every_minute().await;
    let jobs = wait_for(TIMEOUT, "a second, overlapping run", || async {
        let jobs = run.live_jobs().await;
        let names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
        let active = active_names(&run.cronjobs, "allow").await?;
        (jobs.len() == 2 && active == names).then_some(jobs)
    })
    .await;
    assert!(jobs.iter().any(|j| j.name_any() == run.first));
    let second = jobs
        .iter()
        .find(|j| j.name_any() != run.first)
        .expect("second job");
    assert!(scheduled_time(second) > run.first_time);
    // Both are still running: the first was not touched.
    let first = run.jobs.get(&run.first).await.expect("first job");
    assert!(first.metadata.deletion_timestamp.is_none());
}
