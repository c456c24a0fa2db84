//! The Job, TTL-after-finished and CronJob loops on an in-process cluster with hollow
//! nodes and the scheduler: hollow pods exit when their annotations say so.

mod common;

use std::time::Duration;

use common::{Cluster, Options, wait_for};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn cluster() -> Cluster {
    let cluster = Cluster::start_with(Options {
        scheduler: true,
        hollow_nodes: 2,
    })
    .await;
    // Start once every hollow node is registered, so no pod waits for a node to appear.
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    wait_for(Duration::from_secs(10), "hollow nodes", || async {
        let n = nodes_api.list(&Default::default()).await.ok()?.items.len();
        (n == 2).then_some(())
    })
    .await;
    cluster
}

/// A Job whose pods exit after `exit_after` seconds with `exit_code`.
fn job(name: &str, exit_after: u32, exit_code: i32, spec: Value) -> Job {
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": {
                    "hollow.kumo.dev/exit-after-seconds": exit_after.to_string(),
                    "hollow.kumo.dev/exit-code": exit_code.to_string(),
                }},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                },
            },
        },
    });
    merge(&mut job["spec"], spec);
    serde_json::from_value(job).expect("job")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn wait_condition(api: &Api<Job>, name: &str, type_: &str, timeout: u64) -> Job {
    wait_for(
        Duration::from_secs(timeout),
        &format!("job {name} condition {type_}"),
        || async {
            let job = api.get(name).await.ok()?;
            condition(&job, type_).map(|_| job)
        },
    )
    .await
}

async fn job_pods(client: &kube::Client, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    pods.list(&lp).await.expect("list pods").items
}

#[tokio::test]
async fn job_runs_to_completion() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"completions": 3, "parallelism": 2});
    jobs.create(&PostParams::default(), &job("done", 1, 0, spec))
        .await
        .unwrap();
    let done = wait_condition(&jobs, "done", "Complete", 25).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.succeeded, Some(3));
    assert_eq!(status.failed.unwrap_or(0), 0);
    assert_eq!(status.active.unwrap_or(0), 0);
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    let uncounted = status.uncounted_terminated_pods.unwrap_or_default();
    assert!(uncounted.succeeded.unwrap_or_default().is_empty());
    assert_eq!(
        condition(&done, "SuccessCriteriaMet"),
        Some((
            "CompletionsReached".into(),
            "Reached expected number of succeeded pods".into()
        ))
    );
    assert_eq!(
        condition(&done, "Complete").unwrap().0,
        "CompletionsReached"
    );

    let uid = done.metadata.uid.clone().unwrap();
    let pods = job_pods(&cluster.client, "done").await;
    assert_eq!(pods.len(), 3, "one pod per completion");
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("done-") && name.len() == "done-".len() + 5,
            "{name}"
        );
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(labels["batch.kubernetes.io/job-name"], "done");
        assert_eq!(labels["job-name"], "done");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
        assert_eq!(owner.uid, uid);
        assert!(
            pod.metadata
                .finalizers
                .as_ref()
                .is_none_or(|f| f.is_empty()),
            "tracking finalizer removed from {name}"
        );
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded")
        );
    }
}

#[tokio::test]
async fn failing_job_stops_at_backoff_limit() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("fails", 0, 1, json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    // Two failures, with the 10 s backoff between them.
    let failed = wait_condition(&jobs, "fails", "Failed", 28).await;
    let status = failed.status.clone().unwrap();
    assert_eq!(status.failed, Some(2));
    assert_eq!(status.succeeded.unwrap_or(0), 0);
    assert_eq!(
        condition(&failed, "Failed"),
        Some((
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into()
        ))
    );
    assert_eq!(
        condition(&failed, "FailureTarget").unwrap().0,
        "BackoffLimitExceeded"
    );
    assert!(status.completion_time.is_none());
    let pods = job_pods(&cluster.client, "fails").await;
    assert_eq!(pods.len(), 2, "no pod after the limit");
    // The replacement waited for the backoff delay.
    let mut created: Vec<_> = pods
        .iter()
        .map(|p| p.metadata.creation_timestamp.clone().unwrap().0)
        .collect();
    created.sort();
    let gap = created[1].as_second() - created[0].as_second();
    assert!(gap >= 9, "replacement created {gap} s after the first pod");
}

#[tokio::test]
async fn indexed_job_completes_every_index() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"});
    jobs.create(&PostParams::default(), &job("idx", 1, 0, spec))
        .await
        .unwrap();
    let done = wait_condition(&jobs, "idx", "Complete", 25).await;
    let status = done.status.unwrap();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));
    let mut indexes = Vec::new();
    for pod in job_pods(&cluster.client, "idx").await {
        let index =
            pod.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"]
                .clone();
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"],
            index
        );
        let name = pod.metadata.name.clone().unwrap();
        assert!(name.starts_with(&format!("idx-{index}-")), "{name}");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname, Some(format!("idx-{index}")));
        let env = spec.containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"));
        indexes.push(index);
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
}

#[tokio::test]
async fn active_deadline_fails_the_job_and_stops_its_pods() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"activeDeadlineSeconds": 2, "parallelism": 2, "completions": 2});
    jobs.create(&PostParams::default(), &job("slow", 600, 0, spec))
        .await
        .unwrap();
    let failed = wait_condition(&jobs, "slow", "Failed", 20).await;
    assert_eq!(
        condition(&failed, "Failed"),
        Some((
            "DeadlineExceeded".into(),
            "Job was active longer than specified deadline".into()
        ))
    );
    let status = failed.status.unwrap();
    assert_eq!(status.active.unwrap_or(0), 0);
    assert_eq!(status.failed, Some(2), "the stopped pods count as failed");
    wait_for(Duration::from_secs(10), "slow's pods deleted", || async {
        job_pods(&cluster.client, "slow")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn pod_failure_policy_fails_the_job_at_once() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({
        "backoffLimit": 6,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        ]},
    });
    jobs.create(&PostParams::default(), &job("policy", 0, 42, spec))
        .await
        .unwrap();
    let failed = wait_condition(&jobs, "policy", "Failed", 15).await;
    let (reason, message) = condition(&failed, "Failed").unwrap();
    assert_eq!(reason, "PodFailurePolicy");
    assert!(
        message.starts_with("Container main for pod default/policy-")
            && message.ends_with("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );
    assert_eq!(failed.status.unwrap().failed, Some(1));
}

#[tokio::test]
async fn suspended_job_waits_then_runs() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("later", 0, 0, json!({"suspend": true})),
    )
    .await
    .unwrap();
    let suspended = wait_condition(&jobs, "later", "Suspended", 10).await;
    assert_eq!(
        condition(&suspended, "Suspended").unwrap().0,
        "JobSuspended"
    );
    assert!(suspended.status.unwrap().start_time.is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(job_pods(&cluster.client, "later").await.is_empty());
    jobs.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    let done = wait_condition(&jobs, "later", "Complete", 15).await;
    let resumed = done
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Suspended")
        .cloned();
    assert!(resumed.is_none_or(|c| c.status == "False"));
}

#[tokio::test]
async fn finished_job_is_deleted_after_its_ttl() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("ttl", 0, 0, json!({"ttlSecondsAfterFinished": 1})),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(20), "job ttl deleted", || async {
        jobs.get_opt("ttl")
            .await
            .ok()
            .and_then(|j| j.is_none().then_some(()))
    })
    .await;
}

#[tokio::test]
async fn cronjob_creates_jobs_and_keeps_history() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "*/1 * * * *",
            "suspend": true,
            "successfulJobsHistoryLimit": 1,
            "jobTemplate": {
                "metadata": {"labels": {"from": "tick"}},
                "spec": job("unused", 0, 0, json!({})).spec,
            },
        },
    }))
    .unwrap();
    cronjobs.create(&PostParams::default(), &cj).await.unwrap();
    // Pretend the last run was three minutes ago, so that a run is due now.
    let now = jiff::Timestamp::now();
    let last = jiff::Timestamp::from_second((now.as_second() / 60 - 3) * 60).unwrap();
    cronjobs
        .patch_status(
            "tick",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": last.to_string()}})),
        )
        .await
        .unwrap();
    cronjobs
        .patch(
            "tick",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    // The most recent missed time is run (once), not every missed minute.
    let job = wait_for(Duration::from_secs(10), "cronjob's job", || async {
        let list = jobs
            .list(&ListParams::default().labels("from=tick"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    let annotations = job.metadata.annotations.clone().unwrap();
    let scheduled: jiff::Timestamp = annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .parse()
        .unwrap();
    let minutes = scheduled.as_second() / 60;
    assert_eq!(scheduled.as_second() % 60, 0);
    assert!(minutes == now.as_second() / 60 || minutes == now.as_second() / 60 + 1);
    assert_eq!(
        job.metadata.name.clone().unwrap(),
        format!("tick-{minutes}")
    );
    assert_eq!(job.metadata.labels.as_ref().unwrap()["from"], "tick");
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("CronJob", Some(true))
    );
    let cj = wait_for(Duration::from_secs(15), "last successful time", || async {
        let cj = cronjobs.get("tick").await.ok()?;
        let status = cj.status.clone()?;
        (status.last_successful_time.is_some() && status.active.is_none_or(|a| a.is_empty()))
            .then_some(cj)
    })
    .await;
    let status = cj.status.unwrap();
    assert_eq!(status.last_schedule_time.unwrap().0, scheduled);
    let owned = jobs
        .list(&ListParams::default().labels("from=tick"))
        .await
        .unwrap()
        .items;
    assert_eq!(
        owned.len(),
        1,
        "only the most recent missed run was started"
    );
}

#[tokio::test]
async fn deleting_a_job_releases_its_tracked_pods() {
    let cluster = cluster().await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("gone", 600, 0, json!({"parallelism": 2, "completions": 2})),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(10), "gone's pods running", || async {
        let pods = job_pods(&cluster.client, "gone").await;
        let running = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == 2).then_some(())
    })
    .await;
    let tracked = job_pods(&cluster.client, "gone").await;
    assert!(tracked.iter().all(|p| {
        p.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "batch.kubernetes.io/job-tracking"))
    }));
    jobs.delete("gone", &kube::api::DeleteParams::background())
        .await
        .unwrap();
    // The garbage collector deletes the pods; the Job loop lets go of their finalizer.
    wait_for(Duration::from_secs(20), "gone's pods deleted", || async {
        job_pods(&cluster.client, "gone")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}
