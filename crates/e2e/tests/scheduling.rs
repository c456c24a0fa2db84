//! The scheduler inside a real `kumo server`, driven with the installed kubectl, with
//! hollow nodes: taints, nodeSelector, pod anti-affinity and insufficient resources each
//! give the expected placement, or a FailedScheduling event that `kubectl describe pod`
//! shows.

use std::time::Duration;

use e2e::{Kumo, eventually};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: on-ssd}
spec:
  nodeSelector: {disk: ssd}
  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: intolerant}
spec:
  nodeSelector: {disk: ssd}
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - name: c
    image: busybox
    resources: {requests: {cpu: "64"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname
      containers: [{name: c, image: busybox}]
"#;

fn node_of(kumo: &Kumo, pod: &str) -> String {
    kumo.kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
        .unwrap_or_default()
}

/// Waits until `kubectl describe pod` shows all of `wanted`, and returns its output.
fn describe_shows(kumo: &Kumo, pod: &str, wanted: &[&str]) -> String {
    let mut out = String::new();
    let shown = eventually(Duration::from_secs(30), || {
        out = kumo.kubectl(&["describe", "pod", pod]).unwrap_or_default();
        wanted.iter().all(|w| out.contains(w))
    });
    assert!(shown, "describe pod {pod} lacks {wanted:?}:\n{out}");
    out
}

#[test]
fn placement_and_failed_scheduling_events() {
    let kumo = Kumo::start().expect("kumo");
    let _plain = kumo
        .hollow_nodes(&[
            "--count",
            "2",
            "--name-prefix",
            "plain-",
            "--labels",
            "disk=hdd",
        ])
        .expect("plain hollow nodes");
    let _gpu = kumo
        .hollow_nodes(&[
            "--count",
            "1",
            "--name-prefix",
            "gpu-",
            "--labels",
            "disk=ssd",
            "--taints",
            "dedicated=gpu:NoSchedule",
        ])
        .expect("tainted hollow node");
    kumo.kubectl_stdin(&["apply", "-f", "-"], MANIFEST)
        .expect("apply");

    // Toleration plus nodeSelector: the tainted node.
    assert!(eventually(Duration::from_secs(30), || node_of(
        &kumo, "on-ssd"
    ) == "gpu-0"));
    describe_shows(
        &kumo,
        "on-ssd",
        &[
            "Scheduled",
            "default-scheduler",
            "Successfully assigned default/on-ssd to gpu-0",
        ],
    );

    // No toleration: the only ssd node is tainted.
    describe_shows(
        &kumo,
        "intolerant",
        &[
            "FailedScheduling",
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
             2 node(s) didn't match Pod's node affinity/selector.",
        ],
    );
    assert_eq!(node_of(&kumo, "intolerant"), "");

    // More CPU than any node has.
    describe_shows(
        &kumo,
        "huge",
        &[
            "FailedScheduling",
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu.",
        ],
    );

    // Anti-affinity: one web pod per untainted node, the third waits.
    let mut placed = Vec::new();
    assert!(eventually(Duration::from_secs(30), || {
        let out = kumo
            .kubectl(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}{\"\\n\"}{end}",
            ])
            .unwrap_or_default();
        placed = out.lines().map(str::to_owned).collect();
        placed.len() == 3 && placed.iter().filter(|l| !l.ends_with('=')).count() == 2
    }));
    let mut nodes: Vec<&str> = placed
        .iter()
        .filter_map(|l| l.split_once('=').map(|(_, n)| n))
        .filter(|n| !n.is_empty())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["plain-0", "plain-1"], "{placed:?}");
    let pending = placed
        .iter()
        .find_map(|l| l.strip_suffix('='))
        .expect("a pending web pod");
    describe_shows(
        &kumo,
        pending,
        &[
            "FailedScheduling",
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
             2 node(s) didn't match pod anti-affinity rules.",
        ],
    );

    // Freeing a node lets the waiting pod in: the intolerant pod goes once the taint is
    // removed.
    kumo.kubectl(&["taint", "node", "gpu-0", "dedicated=gpu:NoSchedule-"])
        .expect("untaint");
    assert!(eventually(Duration::from_secs(30), || node_of(
        &kumo,
        "intolerant"
    ) == "gpu-0"));
}
