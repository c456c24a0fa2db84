//! Jobs, CronJobs, StatefulSets and DaemonSets driven by the installed kubectl against a real
//! `kumo server` with hollow nodes, whose pods exit when their annotations say so.

use std::time::Duration;

use e2e::{Kumo, eventually};

const JOBS: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: done
spec:
  completions: 2
  parallelism: 2
  template:
    metadata:
      annotations:
        hollow.kumo.dev/exit-after-seconds: "1"
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
---
apiVersion: batch/v1
kind: Job
metadata:
  name: fails
spec:
  backoffLimit: 1
  template:
    metadata:
      annotations:
        hollow.kumo.dev/exit-after-seconds: "0"
        hollow.kumo.dev/exit-code: "3"
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
"#;

fn jsonpath(kumo: &Kumo, args: &[&str], path: &str) -> String {
    let output = format!("jsonpath={path}");
    let mut all = args.to_vec();
    all.extend(["-o", output.as_str()]);
    kumo.kubectl(&all).expect("kubectl get")
}

fn words(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn job_completes_and_failing_job_stops_at_backoff_limit() {
    let kumo = Kumo::start().expect("kumo");
    let _nodes = kumo.hollow_nodes(&["--count", "2"]).expect("hollow nodes");
    kumo.kubectl_stdin(&["apply", "-f", "-"], JOBS)
        .expect("apply jobs");
    let out = kumo
        .kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/done",
            "--timeout=30s",
        ])
        .expect("job completes");
    assert!(out.contains("job.batch/done condition met"), "{out}");
    assert_eq!(
        jsonpath(&kumo, &["get", "job", "done"], "{.status.succeeded}"),
        "2"
    );
    let pods = jsonpath(
        &kumo,
        &["get", "pods", "-l", "batch.kubernetes.io/job-name=done"],
        "{.items[*].status.phase}",
    );
    assert_eq!(words(&pods), ["Succeeded", "Succeeded"]);

    // Two failures (the second after the 10 s backoff), then no more.
    let out = kumo
        .kubectl(&[
            "wait",
            "--for=condition=failed",
            "job/fails",
            "--timeout=40s",
        ])
        .expect("job fails");
    assert!(out.contains("condition met"), "{out}");
    assert_eq!(
        jsonpath(&kumo, &["get", "job", "fails"], "{.status.failed}"),
        "2"
    );
    let reason = jsonpath(
        &kumo,
        &["get", "job", "fails"],
        r#"{.status.conditions[?(@.type=="Failed")].reason}"#,
    );
    assert_eq!(reason, "BackoffLimitExceeded");
    let pods = jsonpath(
        &kumo,
        &["get", "pods", "-l", "job-name=fails"],
        "{.items[*].metadata.name}",
    );
    assert_eq!(words(&pods).len(), 2, "{pods}");
    let table = kumo.kubectl(&["get", "jobs"]).expect("get jobs");
    assert!(table.contains("done"), "{table}");
}

const CRONJOB: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "*/1 * * * *"
  timeZone: Etc/UTC
  jobTemplate:
    spec:
      template:
        metadata:
          annotations:
            hollow.kumo.dev/exit-after-seconds: "0"
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: busybox
"#;

#[test]
fn job_from_cronjob_runs_and_the_schedule_fires() {
    let kumo = Kumo::start().expect("kumo");
    let _nodes = kumo.hollow_nodes(&["--count", "1"]).expect("hollow nodes");
    kumo.kubectl_stdin(&["apply", "-f", "-"], CRONJOB)
        .expect("apply cronjob");
    let out = kumo
        .kubectl(&["create", "job", "manual", "--from=cronjob/tick"])
        .expect("create job from cronjob");
    assert!(out.contains("job.batch/manual created"), "{out}");
    kumo.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/manual",
        "--timeout=30s",
    ])
    .expect("manual job completes");
    let annotation = jsonpath(
        &kumo,
        &["get", "job", "manual"],
        r#"{.metadata.annotations.cronjob\.kubernetes\.io/instantiate}"#,
    );
    assert_eq!(annotation, "manual");
    // The next minute boundary runs a Job named after the scheduled minute.
    assert!(
        eventually(Duration::from_secs(70), || {
            let names = jsonpath(&kumo, &["get", "jobs"], "{.items[*].metadata.name}");
            names.split_whitespace().any(|n| {
                n.strip_prefix("tick-")
                    .is_some_and(|m| m.parse::<u64>().is_ok())
            })
        }),
        "no scheduled job"
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            !jsonpath(
                &kumo,
                &["get", "cronjob", "tick"],
                "{.status.lastScheduleTime}",
            )
            .is_empty()
        }),
        "lastScheduleTime not set"
    );
}

const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: 3
  serviceName: web
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: main
        image: busybox
"#;

#[test]
fn statefulset_scales_in_order() {
    let kumo = Kumo::start().expect("kumo");
    let _nodes = kumo.hollow_nodes(&["--count", "2"]).expect("hollow nodes");
    kumo.kubectl_stdin(&["apply", "-f", "-"], STATEFULSET)
        .expect("apply statefulset");
    let out = kumo
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=60s"])
        .expect("rollout status");
    assert!(
        out.contains("roll out complete") || out.contains("rolling update complete"),
        "{out}"
    );
    let pods = jsonpath(
        &kumo,
        &["get", "pods", "-l", "app=web"],
        "{.items[*].metadata.name}",
    );
    assert_eq!(words(&pods), ["web-0", "web-1", "web-2"]);
    let hostname = jsonpath(
        &kumo,
        &["get", "pod", "web-1"],
        "{.spec.hostname}.{.spec.subdomain}",
    );
    assert_eq!(hostname, "web-1.web");
    // Scale down: the highest ordinals go.
    kumo.kubectl(&["scale", "statefulset", "web", "--replicas=1"])
        .expect("scale down");
    assert!(
        eventually(Duration::from_secs(20), || {
            let pods = jsonpath(
                &kumo,
                &["get", "pods", "-l", "app=web"],
                "{.items[*].metadata.name}",
            );
            words(&pods) == ["web-0"]
        }),
        "scale down"
    );
    assert!(eventually(Duration::from_secs(10), || {
        jsonpath(
            &kumo,
            &["get", "statefulset", "web"],
            "{.status.replicas}/{.status.readyReplicas}",
        ) == "1/1"
    }));
    // Scale up again: the same names come back.
    kumo.kubectl(&["scale", "statefulset", "web", "--replicas=2"])
        .expect("scale up");
    kumo.kubectl(&["rollout", "status", "statefulset/web", "--timeout=30s"])
        .expect("rollout status after scale up");
    let pods = jsonpath(
        &kumo,
        &["get", "pods", "-l", "app=web"],
        "{.items[*].metadata.name}",
    );
    assert_eq!(words(&pods), ["web-0", "web-1"]);
}

const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: main
        image: busybox
"#;

#[test]
fn daemonset_lands_on_every_node() {
    let kumo = Kumo::start().expect("kumo");
    let _nodes = kumo.hollow_nodes(&["--count", "3"]).expect("hollow nodes");
    kumo.kubectl_stdin(&["apply", "-f", "-"], DAEMONSET)
        .expect("apply daemonset");
    let out = kumo
        .kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])
        .expect("rollout status");
    assert!(out.contains("successfully rolled out"), "{out}");
    let nodes = jsonpath(
        &kumo,
        &["get", "pods", "-l", "app=agent"],
        "{.items[*].spec.nodeName}",
    );
    assert_eq!(words(&nodes), ["hollow-0", "hollow-1", "hollow-2"]);
    let status = jsonpath(
        &kumo,
        &["get", "daemonset", "agent"],
        "{.status.desiredNumberScheduled}/{.status.numberReady}/{.status.updatedNumberScheduled}",
    );
    assert_eq!(status, "3/3/3");
    // A new template rolls out to every node.
    kumo.kubectl(&["set", "env", "daemonset/agent", "MODE=two"])
        .expect("set env");
    kumo.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"])
        .expect("rollout status after update");
    let history = kumo
        .kubectl(&["rollout", "history", "daemonset/agent"])
        .expect("rollout history");
    assert!(history.contains('1') && history.contains('2'), "{history}");
}
