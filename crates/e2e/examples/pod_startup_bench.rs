//! Node-agent benchmark (issue 6): pod start-up latency through `kumo up`, from the create
//! to the pod Running with its container ready as a watch sees it, against raw CRI starts
//! on a containerd of the same kind in the same run; then the idle memory of `kumo up` and
//! of its containerd.
//!
//! Baseline: the bench starts a private containerd itself (the agent's config, CNI bridge
//! network and built-in images) and, from `--concurrency` tasks, runs RunPodSandbox,
//! CreateContainer and StartContainer for each of `--pods` pods with the configs the agent
//! sends (busybox `sleep 3600`); then it removes every sandbox and stops that containerd.
//!
//! kumo: a release `kumo up` on a temporary data directory and loopback port. The same
//! number of tasks each create a pod (through the scheduler, as a user would) and wait
//! for the watch to show it Running, then create the next. The pods are deleted, and
//! after `--idle-seconds` of quiet VmRSS of `kumo up` and of its containerd is read.
//!
//! Needs root, containerd, runc, ctr, the CNI plugins, busybox-static and nft.
//! Run: `cargo build --release -p kumo && cargo run --release -p e2e --example pod_startup_bench -- --pods 100`
//! (flags: `--pods N` (default 100), `--concurrency N` (default 4), `--idle-seconds N`
//! (default 20)).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::containerd::{self, Containerd};
use agent::cri::{CallExt, Cri, api};
use agent::images::BUSYBOX_IMAGE;
use agent::pods::spec;
use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::oneshot;

/// The baseline's pod network, apart from a real `kumo up`'s kumo0 and 10.42/16, the e2e
/// test's kumoup0 and 10.199/16, and the agent tests' kumot* and 10.201/16.
const BASELINE_BRIDGE: &str = "kumobb0";
const BASELINE_CIDR: &str = "10.196.0.0/24";
/// The benchmarked `kumo up`'s pod network.
const UP_BRIDGE: &str = "kumobu0";
const UP_POD_CIDR: &str = "10.197.0.0/24";
const UP_CLUSTER_CIDR: &str = "10.197.0.0/16";

const LABEL_KEY: &str = "bench";
const LABEL_VALUE: &str = "pod-startup";
const COMMAND: [&str; 2] = ["sleep", "3600"];

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// p50, p99 and max of a set of durations.
fn summary(mut all: Vec<Duration>) -> (Duration, Duration, Duration) {
    all.sort();
    (
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or_default(),
    )
}

fn print_summary(what: &str, all: &[Duration]) -> (Duration, Duration) {
    let (p50, p99, max) = summary(all.to_vec());
    println!(
        "{what:<34} p50 {:>7}  p99 {:>7}  max {:>7}",
        ms(p50),
        ms(p99),
        ms(max)
    );
    (p50, p99)
}

/// The same pod in both parts: busybox sleeping, a short grace period (sleep as PID 1
/// ignores SIGTERM).
fn pod_json(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {LABEL_KEY: LABEL_VALUE}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "command": COMMAND}],
        },
    })
}

fn run(cmd: &mut Command) {
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Every process: pid, parent pid and command line.
fn processes() -> Vec<(u32, u32, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent pid follows the parenthesised command name, which may hold spaces.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        all.push((
            pid,
            ppid,
            String::from_utf8_lossy(&cmdline).replace('\0', " "),
        ));
    }
    all
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Removes what a node under `dir` may leave on the host: processes naming the directory
/// (containerd, shims) with their descendants, CNI network namespaces holding an address of
/// the pod network, mounts under the directory, and the bridge.
fn clean_host(dir: &Path, bridge: &str, pod_cidr: &str) {
    let dir = dir.to_string_lossy().into_owned();
    let all = processes();
    let me = std::process::id();
    let mut doomed: Vec<u32> = all
        .iter()
        .filter(|(pid, _, cmdline)| cmdline.contains(&dir) && *pid != me)
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut next = 0;
    while next < doomed.len() {
        let parent = doomed[next];
        doomed.extend(
            all.iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(pid, _, _)| *pid),
        );
        next += 1;
    }
    for pid in &doomed {
        run(Command::new("kill").args(["-KILL", &pid.to_string()]));
    }
    let prefix = format!("inet {}", pod_cidr.trim_end_matches("0/24"));
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("cni-") {
            continue;
        }
        let addresses = Command::new("ip")
            .args(["netns", "exec", &name, "ip", "-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if addresses.contains(&prefix) {
            run(Command::new("ip").args(["netns", "delete", &name]));
        }
    }
    for mount in agent::pods::volumes::mounts_under(Path::new(&dir))
        .into_iter()
        .rev()
    {
        run(Command::new("umount").arg("-l").arg(mount));
    }
    run(Command::new("ip").args(["link", "delete", bridge]));
}

/// One raw start: the three CRI calls and their sum.
struct RawStart {
    sandbox: Duration,
    create: Duration,
    start: Duration,
}

/// The baseline's containerd and directory; dropping it stops containerd and cleans up.
struct Baseline {
    dir: tempfile::TempDir,
    containerd: Option<Containerd>,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(containerd) = self.containerd.take() {
            containerd.stop();
        }
        clean_host(self.dir.path(), BASELINE_BRIDGE, BASELINE_CIDR);
    }
}

/// The cluster DNS configuration the agent gives ClusterFirst pods of `default`.
fn dns_config() -> api::DnsConfig {
    api::DnsConfig {
        servers: vec!["10.43.0.10".into()],
        searches: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ],
        options: vec!["ndots:5".into()],
    }
}

/// Starts one pod through raw CRI calls with the configs the agent would send.
async fn raw_start(cri: &Cri, dir: &Path, i: usize) -> anyhow::Result<RawStart> {
    let name = format!("raw-{i}");
    let uid = format!("00000000-0000-4000-8000-{:012}", i);
    let mut pod = pod_json(&name);
    pod["metadata"]["uid"] = uid.clone().into();
    let pod: Pod = serde_json::from_value(pod)?;
    let log_dir = dir.join("pods").join(format!("default_{name}_{uid}"));
    std::fs::create_dir_all(&log_dir)?;
    let message = dir.join("pods").join(&uid).join("termination-log");
    std::fs::create_dir_all(message.parent().context("a parent")?)?;
    std::fs::write(&message, "")?;
    let sandbox_config = spec::sandbox_config(
        &pod,
        &spec::SandboxInputs {
            node_name: "bench",
            attempt: 0,
            log_directory: log_dir,
            dns: dns_config(),
        },
    );
    let container = &pod.spec.as_ref().context("a spec")?.containers[0];
    let config = spec::container_config(
        container,
        &spec::ContainerInputs {
            pod: &pod,
            node_name: "bench",
            attempt: 0,
            env: Vec::new(),
            mounts: Vec::new(),
            termination_message_host_path: &message,
            node_memory_bytes: 24 << 30,
        },
    )?;

    let t0 = Instant::now();
    let sandbox_id = cri
        .runtime
        .clone()
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .call("RunPodSandbox")?
        .pod_sandbox_id;
    let t1 = Instant::now();
    let container_id = cri
        .runtime
        .clone()
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id,
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .call("CreateContainer")?
        .container_id;
    let t2 = Instant::now();
    cri.runtime
        .clone()
        .start_container(api::StartContainerRequest { container_id })
        .await
        .call("StartContainer")?;
    let t3 = Instant::now();
    Ok(RawStart {
        sandbox: t1 - t0,
        create: t2 - t1,
        start: t3 - t2,
    })
}

/// Runs `count` jobs from `concurrency` tasks, each taking the next index when done.
async fn closed_loop<T, F, Fut>(count: usize, concurrency: usize, job: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return anyhow::Ok(done);
                }
                done.push(job(i).await?);
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// The baseline: raw CRI starts on a containerd the bench runs, then their removal.
async fn baseline(pods: usize, concurrency: usize) -> anyhow::Result<Vec<RawStart>> {
    // Short path: containerd's socket path must fit in a sockaddr_un.
    let mut bench = Baseline {
        dir: tempfile::Builder::new().prefix("psb").tempdir_in("/tmp")?,
        containerd: None,
    };
    let dir = bench.dir.path().to_owned();
    let mut config = containerd::Config::new(&dir.join("containerd"));
    config.bridge = BASELINE_BRIDGE.into();
    config.pod_cidr = BASELINE_CIDR.into();
    let started = Containerd::start(config).await?;
    let cri = Cri::connect(&started.socket()).await?;
    bench.containerd = Some(started);
    let archives = agent::images::build_all(Path::new(agent::images::DEFAULT_BUSYBOX))?;
    containerd::ensure_images(&cri, &dir.join("images"), &archives).await?;

    let work = {
        let cri = cri.clone();
        let dir = dir.join("agent");
        closed_loop(pods, concurrency, move |i| {
            let cri = cri.clone();
            let dir = dir.clone();
            async move { raw_start(&cri, &dir, i).await }
        })
    };
    let starts = tokio::time::timeout(Duration::from_secs(600), work)
        .await
        .context("raw starts did not finish within 10 minutes")?;

    // Remove every sandbox, whatever happened above.
    let removal = async {
        let sandboxes = cri.sandboxes(&[]).await?;
        futures::stream::iter(sandboxes)
            .for_each_concurrent(concurrency, |s| {
                let cri = cri.clone();
                async move {
                    let _ = cri.stop_sandbox(&s.id).await;
                    let _ = cri.remove_sandbox(&s.id).await;
                }
            })
            .await;
        anyhow::Ok(cri.sandboxes(&[]).await?.len())
    };
    let removal_started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(180), removal).await {
        Ok(Ok(0)) => println!(
            "baseline: removed the sandboxes in {:.1} s",
            removal_started.elapsed().as_secs_f64()
        ),
        Ok(Ok(left)) => eprintln!("baseline: {left} sandboxes left after removal"),
        Ok(Err(e)) => eprintln!("baseline: removing sandboxes: {e:#}"),
        Err(_) => eprintln!("baseline: removing sandboxes took over 3 minutes"),
    }
    drop(bench);
    starts
}

/// A running `kumo up` in its own process group. Dropping it stops the group and removes
/// what the node left on the host.
struct Up {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Up {
    fn start(bin: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("psk").tempdir_in("/tmp")?;
        let port = e2e::free_port()?;
        let child = Command::new(bin)
            .args(["up", "--data-dir"])
            .arg(dir.path().join("d"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--bridge", UP_BRIDGE, "--pod-cidr", UP_POD_CIDR])
            .args(["--cluster-cidr", UP_CLUSTER_CIDR])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr"))?)
            .process_group(0)
            .spawn()
            .context("starting kumo up")?;
        Ok(Self {
            dir,
            child: Some(child),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("d").join("admin.kubeconfig")
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr_tail(&self) -> String {
        let stderr = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits for the line kumo up prints once the node is Ready.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let want = format!("kubeconfig: {}", self.kubeconfig().display());
        let deadline = Instant::now() + timeout;
        while !self.stdout().lines().any(|l| l == want) {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "kumo up exited with {status}:\n{}\n{}",
                    self.stdout(),
                    self.stderr_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "node not Ready within {timeout:?}:\n{}\n{}",
                    self.stdout(),
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The private containerd kumo up runs as its child.
    fn containerd_pid(&self) -> Option<u32> {
        let me = self.pid();
        processes()
            .into_iter()
            .find(|(_, ppid, cmdline)| *ppid == me && cmdline.starts_with("containerd "))
            .map(|(pid, _, _)| pid)
    }

    /// SIGTERM to the group, SIGKILL after 20 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        run(Command::new("kill").args(["-TERM", "--", &group]));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        run(Command::new("kill").args(["-KILL", "--", &group]));
        let _ = child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.stop();
        clean_host(self.dir.path(), UP_BRIDGE, UP_POD_CIDR);
        // kumo up removes its proxy table on a clean exit; this covers a killed one. The
        // table is named after the bridge (see `proxy::table_for_bridge`).
        run(Command::new("nft").args(["delete", "table", "ip", UP_BRIDGE]));
        run(Command::new("nft").args(["delete", "table", "ip6", UP_BRIDGE]));
    }
}

/// When the watch first saw a pod bound to the node, and Running with its containers ready.
struct Seen {
    scheduled: Instant,
    running: Instant,
}

/// Pods waiting for the watch, by name.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Seen>>>>;

fn is_running(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    status.phase.as_deref() == Some("Running")
        && !containers.is_empty()
        && containers
            .iter()
            .all(|c| c.ready && c.started == Some(true))
}

/// Watches the bench's pods and reports each one's first Running to its waiter. Returns
/// the watch's task once the watch has its initial list.
async fn watch_pods(
    pods: Api<Pod>,
    waiting: Waiting,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (listed, listed_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let config = watcher::Config::default().labels(&format!("{LABEL_KEY}={LABEL_VALUE}"));
        let mut events = watcher(pods, config).default_backoff().boxed();
        let mut listed = Some(listed);
        let mut scheduled: HashMap<String, Instant> = HashMap::new();
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let pod = match event {
                Ok(watcher::Event::InitDone) => {
                    if let Some(listed) = listed.take() {
                        let _ = listed.send(());
                    }
                    continue;
                }
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("watch: {e}");
                    continue;
                }
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                scheduled.entry(name.clone()).or_insert(now);
            }
            if is_running(&pod)
                && let Some(waiter) = waiting.lock().expect("lock").remove(&name)
            {
                let _ = waiter.send(Seen {
                    scheduled: scheduled.get(&name).copied().unwrap_or(now),
                    running: now,
                });
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), listed_rx)
        .await
        .context("the pod watch did not list within 30 s")??;
    Ok(task)
}

/// One pod through kumo: create to scheduled, and create to Running.
struct KumoStart {
    create_call: Duration,
    scheduled: Duration,
    running: Duration,
}

/// Creates one pod and waits for the watch to see it Running.
async fn kumo_start(pods: &Api<Pod>, waiting: &Waiting, i: usize) -> anyhow::Result<KumoStart> {
    let name = format!("pod-{i}");
    let pod: Pod = serde_json::from_value(pod_json(&name))?;
    let (tx, rx) = oneshot::channel();
    waiting.lock().expect("lock").insert(name.clone(), tx);
    let t0 = Instant::now();
    pods.create(&PostParams::default(), &pod).await?;
    let create_call = t0.elapsed();
    let seen = tokio::time::timeout(Duration::from_secs(120), rx)
        .await
        .with_context(|| format!("pod {name} not Running within 120 s"))??;
    Ok(KumoStart {
        create_call,
        scheduled: seen.scheduled - t0,
        running: seen.running - t0,
    })
}

/// Polls until `check` holds, for at most `timeout`.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pods through `kumo up`, then its idle memory.
async fn through_kumo(
    up: &mut Up,
    pods_count: usize,
    concurrency: usize,
    idle: Duration,
) -> anyhow::Result<Vec<KumoStart>> {
    let ready_started = Instant::now();
    up.wait_ready(Duration::from_secs(120))?;
    println!(
        "kumo up: node Ready {:.1} s after start",
        ready_started.elapsed().as_secs_f64()
    );
    if let Some(bytes) = rss(up.pid()) {
        println!("kumo up: VmRSS at Ready {}", mib(bytes));
    }
    let client = e2e::client_for(&up.kubeconfig()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Pods are admitted only once their namespace's default ServiceAccount exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait_until(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || {
            let accounts = accounts.clone();
            async move { Ok(accounts.get_opt("default").await?.is_some()) }
        },
    )
    .await?;

    let waiting: Waiting = Arc::default();
    let watch = watch_pods(pods.clone(), waiting.clone()).await?;
    let work = {
        let pods = pods.clone();
        closed_loop(pods_count, concurrency, move |i| {
            let pods = pods.clone();
            let waiting = waiting.clone();
            async move { kumo_start(&pods, &waiting, i).await }
        })
    };
    let started = Instant::now();
    let starts = tokio::time::timeout(Duration::from_secs(900), work)
        .await
        .context("pods did not all start within 15 minutes")??;
    watch.abort();
    println!(
        "kumo: {pods_count} pods Running in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let selector = format!("{LABEL_KEY}={LABEL_VALUE}");
    let deleting = Instant::now();
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&selector),
    )
    .await?;
    wait_until("the pods gone", Duration::from_secs(300), || {
        let pods = pods.clone();
        let selector = selector.clone();
        async move {
            Ok(pods
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .is_empty())
        }
    })
    .await?;
    println!(
        "kumo: {pods_count} pods deleted and gone in {:.1} s",
        deleting.elapsed().as_secs_f64()
    );

    tokio::time::sleep(idle).await;
    let kumo_rss = rss(up.pid()).context("reading VmRSS of kumo up")?;
    let containerd_rss = up
        .containerd_pid()
        .and_then(rss)
        .context("reading VmRSS of kumo up's containerd")?;
    let verdict = |bytes: u64| {
        if bytes <= 100 << 20 {
            "target ≤ 100 MB met"
        } else {
            "over the 100 MB target"
        }
    };
    println!(
        "idle VmRSS after {} s: kumo up {} ({}), its containerd {}, together {} ({})",
        idle.as_secs(),
        mib(kumo_rss),
        verdict(kumo_rss),
        mib(containerd_rss),
        mib(kumo_rss + containerd_rss),
        verdict(kumo_rss + containerd_rss),
    );
    Ok(starts)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let pods = arg("--pods", 100);
    let concurrency = arg("--concurrency", 4).max(1);
    let idle = Duration::from_secs(arg("--idle-seconds", 20) as u64);
    let bin = std::env::var_os("KUMO_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/kumo"),
        PathBuf::from,
    );
    if !bin.exists() {
        bail!(
            "{} does not exist: build it first (cargo build --release -p kumo) or set KUMO_BIN",
            bin.display()
        );
    }
    println!("kumo pod start-up benchmark: {pods} pods, {concurrency} at a time");
    println!("binary: {}", bin.display());

    // Baseline: raw CRI on a containerd of the bench's own.
    let raw = baseline(pods, concurrency).await?;
    let raw_total: Vec<Duration> = raw.iter().map(|r| r.sandbox + r.create + r.start).collect();
    print_summary(
        "  RunPodSandbox",
        &raw.iter().map(|r| r.sandbox).collect::<Vec<_>>(),
    );
    print_summary(
        "  CreateContainer",
        &raw.iter().map(|r| r.create).collect::<Vec<_>>(),
    );
    print_summary(
        "  StartContainer",
        &raw.iter().map(|r| r.start).collect::<Vec<_>>(),
    );
    let (raw_p50, raw_p99) = print_summary("raw CRI start (baseline)", &raw_total);

    // kumo up.
    let mut up = Up::start(&bin)?;
    let result = through_kumo(&mut up, pods, concurrency, idle).await;
    let starts = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("--- kumo up stderr (tail) ---\n{}", up.stderr_tail());
            return Err(e);
        }
    };
    drop(up);
    print_summary(
        "  create call",
        &starts.iter().map(|s| s.create_call).collect::<Vec<_>>(),
    );
    print_summary(
        "  create to bound (watch)",
        &starts.iter().map(|s| s.scheduled).collect::<Vec<_>>(),
    );
    let (p50, p99) = print_summary(
        "kumo create to Running (watch)",
        &starts.iter().map(|s| s.running).collect::<Vec<_>>(),
    );
    println!(
        "ratio to raw CRI: p50 {:.2}, p99 {:.2} (target ≤ 1.3); p99 {} (target ≤ 1 s: {})",
        p50.as_secs_f64() / raw_p50.as_secs_f64(),
        p99.as_secs_f64() / raw_p99.as_secs_f64(),
        ms(p99),
        if p99 <= Duration::from_secs(1) {
            "met"
        } else {
            "not met"
        },
    );
    Ok(())
}
