//! `kumo up` end to end: the one-process cluster comes up with its node Ready, runs a
//! Deployment of the built-in web image, and a pod reaches it by Service name through the
//! cluster DNS and the proxy's rules. On the way, the streaming API through the agent's
//! tunnel: `kubectl logs` (-f, --tail, --timestamps), `exec` (stdin, exit codes, a TTY),
//! `cp` both ways and `port-forward`, and kube-rs's logs, exec with stdin and
//! port-forward.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The built-in images (`agent::images::WEB_IMAGE`, `BUSYBOX_IMAGE`) and the web page.
const WEB_IMAGE: &str = "kumo.local/web:1";
const BUSYBOX_IMAGE: &str = "kumo.local/busybox:1";
const WEB_PAGE: &str = "<h1>Hello from kumo</h1>";

/// The test's pod bridge and network, apart from a real `kumo up`'s kumo0 and 10.42/16.
const BRIDGE: &str = "kumoup0";
const POD_CIDR: &str = "10.199.0.0/24";
const CLUSTER_CIDR: &str = "10.199.0.0/16";

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
        all.push((pid, ppid, String::from_utf8_lossy(&cmdline).into_owned()));
    }
    all
}

fn installed(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(binary).is_file()))
        || Path::new("/usr/sbin").join(binary).is_file()
}

/// A running `kumo up` in its own process group. Dropping it stops the group and removes
/// what the node left on the host: shims, mounts, the bridge and the nftables tables.
struct Up {
    dir: tempfile::TempDir,
    child: Option<Child>,
    cache: tempfile::TempDir,
}

impl Up {
    fn start() -> anyhow::Result<Self> {
        // Short path: containerd's socket path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new().prefix("kup").tempdir_in("/tmp")?;
        let port = e2e::free_port()?;
        let child = Command::new(e2e::kumo_bin())
            .args(["up", "--data-dir"])
            .arg(dir.path().join("d"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--bridge", BRIDGE, "--pod-cidr", POD_CIDR])
            .args(["--cluster-cidr", CLUSTER_CIDR])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr"))?)
            .process_group(0)
            .spawn()
            .context("starting kumo up")?;
        Ok(Self {
            dir,
            child: Some(child),
            cache: tempfile::tempdir()?,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("d")
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// Waits for the line kumo up prints once the node is Ready.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let want = format!(
            "kubeconfig: {}",
            self.data_dir().join("admin.kubeconfig").display()
        );
        let deadline = Instant::now() + timeout;
        while !self.stdout().lines().any(|l| l == want) {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("kumo up exited with {status}:\n{}", self.stdout());
            }
            if Instant::now() > deadline {
                bail!("no {want:?} within {timeout:?}:\n{}", self.stdout());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl_stdin(args, "")
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.data_dir().join("admin.kubeconfig"))
            .env("KUBECACHEDIR", self.cache.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Polls kubectl's answer until `check` holds.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        args: &[&str],
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.kubectl(args).unwrap_or_else(|e| e.to_string());
            if check(&last) {
                return Ok(last);
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {timeout:?}; last: {last}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM to the group, SIGKILL after 20 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
    }

    /// What a node leaves when its pods were not all removed: containerd shims (their
    /// command lines name the data dir) with the containers under them, the pods' network
    /// namespaces, mounts under the data dir; and always the bridge and the proxy's
    /// nftables tables.
    fn clean_host(&self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let processes = processes();
        let mut doomed: Vec<u32> = processes
            .iter()
            .filter(|(pid, _, cmdline)| cmdline.contains(&dir) && *pid != std::process::id())
            .map(|(pid, _, _)| *pid)
            .collect();
        // The shims' descendants: the containers' processes.
        let mut next = 0;
        while next < doomed.len() {
            let parent = doomed[next];
            doomed.extend(
                processes
                    .iter()
                    .filter(|(_, ppid, _)| *ppid == parent)
                    .map(|(pid, _, _)| *pid),
            );
            next += 1;
        }
        for pid in &doomed {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // Pod namespaces of this node: CNI's, holding an address of the test's pod subnet.
        let prefix = POD_CIDR.trim_end_matches("0/24");
        for entry in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let addresses = Command::new("ip")
                .args(["netns", "exec", &name, "ip", "-4", "-o", "addr"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if name.starts_with("cni-") && addresses.contains(&format!("inet {prefix}")) {
                let _ = Command::new("ip").args(["netns", "delete", &name]).status();
            }
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.reverse();
        for mount in mounts {
            let _ = Command::new("umount").args(["-l", mount]).status();
        }
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(Command::new("ip").args(["link", "delete", BRIDGE]));
        // The proxy's tables are named after the bridge (kumo up removes them on exit).
        quiet(Command::new("nft").args(["delete", "table", "ip", BRIDGE]));
        quiet(Command::new("nft").args(["delete", "table", "ip6", BRIDGE]));
    }
    /// Prints kumo up's output and the end of its log.
    fn dump(&self) {
        let stderr = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        eprintln!(
            "--- kumo up stdout ---\n{}\n--- stderr (tail) ---\n{tail}",
            self.stdout()
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        self.stop();
        self.clean_host();
    }
}

#[test]
fn up_serves_a_deployment_by_service_name() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["containerd", "runc", "nft", "kubectl"]
        .into_iter()
        .filter(|b| !installed(b))
        .collect();
    if !missing.is_empty() || !Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!(
            "SKIPPED: kumo up needs containerd, runc, nft, kubectl and the CNI plugins (missing: {missing:?}; apt-get install containerd runc containernetworking-plugins busybox-static nftables)"
        );
        return Ok(());
    }
    let mut up = Up::start()?;
    let result = scenario(&mut up);
    if result.is_err() {
        up.dump();
    }
    result
}

fn scenario(up: &mut Up) -> anyhow::Result<()> {
    up.wait_ready(Duration::from_secs(40))?;
    assert!(
        up.stdout().contains(" is Ready"),
        "progress lines: {}",
        up.stdout()
    );
    up.kubectl(&["get", "service", "kube-dns", "-n", "kube-system"])?;

    // `kubectl create deployment`, with a short grace period: the test removes its pods
    // before stopping the node.
    let manifest = up.kubectl(&[
        "create",
        "deployment",
        "web",
        &format!("--image={WEB_IMAGE}"),
        "--dry-run=client",
        "-o",
        "json",
    ])?;
    let mut deployment: serde_json::Value = serde_json::from_str(&manifest)?;
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1.into();
    up.kubectl_stdin(&["create", "-f", "-"], &deployment.to_string())?;
    up.wait_for(
        "web pod Running",
        Duration::from_secs(30),
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ],
        |phases| phases.trim() == "Running",
    )?;
    streaming(up)?;
    up.kubectl(&["expose", "deployment", "web", "--port", "80"])?;

    // By name: resolv.conf points at the kube-dns ClusterIP, which the proxy sends to the
    // DNS server on the node; `web` then resolves to the web Service's ClusterIP. Retries
    // cover the proxy's rules catching up with the new Service.
    // The short name and the fully qualified one (search domains, then the exact name).
    let script = "for i in $(seq 1 20); do wget -qO- http://web && wget -qO- http://web.default.svc.cluster.local && exit 0; sleep 0.5; done; exit 1";
    up.kubectl(&[
        "run",
        "client",
        &format!("--image={BUSYBOX_IMAGE}"),
        "--restart=Never",
        "--",
        "sh",
        "-c",
        script,
    ])?;
    let phase = up.wait_for(
        "client pod finished",
        Duration::from_secs(30),
        &["get", "pod", "client", "-o", "jsonpath={.status.phase}"],
        |phase| matches!(phase.trim(), "Succeeded" | "Failed"),
    )?;
    let log = up.kubectl(&["logs", "client"])?;
    assert_eq!(phase.trim(), "Succeeded", "client log:\n{log}");
    assert!(log.contains(WEB_PAGE), "client log:\n{log}");

    node_ports_and_readiness(up)?;

    // Remove the pods while the node runs, so the agent tears their sandboxes down.
    up.kubectl(&["delete", "deployment", "web"])?;
    up.kubectl(&["delete", "pod", "client", "ready", "--grace-period=1"])?;
    up.wait_for(
        "pods gone",
        Duration::from_secs(20),
        &["get", "pods", "-o", "name"],
        |pods| pods.trim().is_empty(),
    )?;
    // The proxy's tables are named after the node's bridge, and go when kumo up stops.
    let tables = || -> anyhow::Result<String> {
        let out = Command::new("nft").args(["list", "tables"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let table = format!("table ip {BRIDGE}\n");
    assert!(tables()?.contains(&table), "{}", tables()?);
    up.stop();
    assert!(!tables()?.contains(&table), "{}", tables()?);
    Ok(())
}

/// kubectl's and kube-rs's streaming commands against the web pod and a short-lived one.
fn streaming(up: &Up) -> anyhow::Result<()> {
    let pod = up.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    let pod = pod.trim();

    // exec: output, exit codes, stdin to its end (v5's close signal), a TTY.
    let out = up.kubectl(&["exec", pod, "--", "echo", "hello from exec"])?;
    assert_eq!(out.trim(), "hello from exec");
    // ServiceAccount admission mounted the API credentials where in-cluster clients look.
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let namespace = up.kubectl(&["exec", pod, "--", "cat", &format!("{sa}/namespace")])?;
    assert_eq!(namespace, "default");
    let ca = up.kubectl(&["exec", pod, "--", "cat", &format!("{sa}/ca.crt")])?;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let token = up.kubectl(&["exec", pod, "--", "cat", &format!("{sa}/token")])?;
    let review = up.kubectl_stdin(
        // Without --validate=false kubectl wants the protobuf OpenAPI v2 document for
        // kinds with no PATCH (reviews), which kumo does not serve.
        &[
            "create",
            "--validate=false",
            "-o",
            "jsonpath={.status.user.username}",
            "-f",
            "-",
        ],
        &serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        })
        .to_string(),
    )?;
    assert_eq!(review, "system:serviceaccount:default:default");
    let failed = Command::new("kubectl")
        .args(["exec", pod, "--", "sh", "-c", "echo oops >&2; exit 3"])
        .env("KUBECONFIG", up.data_dir().join("admin.kubeconfig"))
        .env("KUBECACHEDIR", up.cache.path())
        .output()?;
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("oops"));
    let input = "0123456789".repeat(20_000);
    let out = up.kubectl_stdin(
        &[
            "exec",
            "-i",
            pod,
            "--",
            "sh",
            "-c",
            "cat > /tmp/in; wc -c < /tmp/in",
        ],
        &input,
    )?;
    assert_eq!(out.trim(), input.len().to_string());
    let tty = scripted_tty(
        up,
        &format!("kubectl exec -it {pod} -- sh -c 'tty; echo done'"),
    )?;
    assert!(tty.contains("/dev/pts/") && tty.contains("done"), "{tty}");

    // cp both ways (tar over exec).
    let local = up.dir.path().join("to-pod.txt");
    let content = "copied with kubectl cp\n".repeat(1000);
    std::fs::write(&local, &content)?;
    up.kubectl(&[
        "cp",
        &local.to_string_lossy(),
        &format!("default/{pod}:/tmp/copied.txt"),
    ])?;
    let back = up.dir.path().join("from-pod.txt");
    up.kubectl(&[
        "cp",
        &format!("default/{pod}:/tmp/copied.txt"),
        &back.to_string_lossy(),
    ])?;
    assert_eq!(std::fs::read_to_string(&back)?, content);

    // port-forward: kubectl picks a local port and prints it. Its output goes to a file:
    // it prints a line per connection, and a closed pipe would kill it.
    let printed = up.dir.path().join("port-forward.out");
    let mut forward = Command::new("kubectl")
        .args(["port-forward", &format!("pod/{pod}"), ":80"])
        .env("KUBECONFIG", up.data_dir().join("admin.kubeconfig"))
        .env("KUBECACHEDIR", up.cache.path())
        .stdout(std::fs::File::create(&printed)?)
        .stderr(Stdio::null())
        .spawn()?;
    let forwarded = (|| -> anyhow::Result<()> {
        // "Forwarding from 127.0.0.1:PORT -> 80"
        let deadline = Instant::now() + Duration::from_secs(15);
        let port = loop {
            let out = std::fs::read_to_string(&printed)?;
            let port = out
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|a| a.rsplit(':').next())
                .map(str::to_owned);
            match port {
                Some(p) if out.contains('\n') => break p,
                _ if Instant::now() > deadline => bail!("port-forward printed {out:?}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        for _ in 0..3 {
            let page = http_get(&format!("127.0.0.1:{port}"))?;
            assert!(page.contains(WEB_PAGE), "{page}");
        }
        Ok(())
    })();
    let _ = forward.kill();
    let _ = forward.wait();
    forwarded?;

    // logs: follow until the container exits, tail, timestamps.
    up.kubectl(&[
        "run",
        "ticker",
        &format!("--image={BUSYBOX_IMAGE}"),
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo tick $i; sleep 0.5; done",
    ])?;
    let followed = up.wait_for(
        "kubectl logs -f ticker",
        Duration::from_secs(30),
        &["logs", "-f", "ticker"],
        |out| out.contains("tick 1"),
    )?;
    let ticks: Vec<&str> = followed.lines().collect();
    assert_eq!(ticks, ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"]);
    assert_eq!(
        up.kubectl(&["logs", "ticker", "--tail=2"])?,
        "tick 4\ntick 5\n"
    );
    let stamped = up.kubectl(&["logs", "ticker", "--timestamps"])?;
    let first = stamped.lines().next().unwrap_or_default();
    let (time, text) = first.split_once(' ').unwrap_or_default();
    assert!(
        time.parse::<jiff::Timestamp>().is_ok() && text == "tick 1",
        "{stamped}"
    );
    let refused = up.kubectl(&["logs", "ticker", "--previous"]).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("previous terminated container"),
        "{refused}"
    );
    up.kubectl(&["delete", "pod", "ticker", "--grace-period=1"])?;

    kube_rs_flows(up, pod)?;
    python_flows(up, pod)
}

/// The Python client (which CI installs) against the same pod: exec with stdin, logs and
/// port-forward over its WebSocket protocols.
fn python_flows(up: &Up, pod: &str) -> anyhow::Result<()> {
    let script = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream, portforward
config.load_kube_config()
v1 = client.CoreV1Api()
pod = sys.argv[1]
r = stream(v1.connect_get_namespaced_pod_exec, pod, "default", command=["cat"],
           stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
r.write_stdin("from python\n")
echoed = ""
for _ in range(20):
    r.update(timeout=0.5)
    echoed += r.read_stdout() if r.peek_stdout() else ""
    if echoed:
        break
r.close()
assert echoed == "from python\n", repr(echoed)
v1.read_namespaced_pod_log(pod, "default")
pf = portforward(v1.connect_get_namespaced_pod_portforward, pod, "default", ports="80")
s = pf.socket(80)
s.setblocking(True)
s.settimeout(10)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
page = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    page += chunk
assert b"Hello from kumo" in page, page
print("python ok")
"#;
    let out = Command::new("python3")
        .args(["-c", script, pod])
        .env("KUBECONFIG", up.data_dir().join("admin.kubeconfig"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if String::from_utf8_lossy(&out.stderr).contains("No module named 'kubernetes'") {
        eprintln!("SKIPPED the Python client's streaming checks: pip install kubernetes");
        return Ok(());
    }
    assert!(
        stdout.contains("python ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs `command` with a pseudo-terminal as its stdin and stdout (util-linux `script`).
fn scripted_tty(up: &Up, command: &str) -> anyhow::Result<String> {
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("KUBECONFIG", up.data_dir().join("admin.kubeconfig"))
        .env("KUBECACHEDIR", up.cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The terminal stays open (stdin held) until the command ends on its own.
    let _stdin = child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{command}: no exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An HTTP/1.0 GET of `/` at `address`: the whole answer.
fn http_get(address: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// kube-rs against the same pod: await a condition, logs, exec with stdin (closed at its
/// end), port-forward.
fn kube_rs_flows(up: &Up, pod: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, AttachParams, LogParams};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(up.data_dir().join("admin.kubeconfig"))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let pods: Api<Pod> = Api::default_namespaced(kube::Client::try_from(config)?);
        let running = kube::runtime::wait::await_condition(
            pods.clone(),
            pod,
            kube::runtime::conditions::is_pod_running(),
        );
        tokio::time::timeout(Duration::from_secs(10), running).await??;

        let log = pods.logs(pod, &LogParams::default()).await?;
        assert!(log.is_empty() || log.ends_with('\n'), "{log:?}");

        let params = AttachParams::default()
            .stdin(true)
            .stdout(true)
            .stderr(false);
        let mut attached = pods.exec(pod, ["sh", "-c", "tr a-z A-Z"], &params).await?;
        let mut stdin = attached.stdin().context("exec stdin")?;
        let mut stdout = attached.stdout().context("exec stdout")?;
        stdin.write_all(b"shout from kube-rs\n").await?;
        // Shutting the writer down ends stdin (v5's close signal); a dropped half does not.
        stdin.shutdown().await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), stdout.read_to_string(&mut out)).await??;
        assert_eq!(out, "SHOUT FROM KUBE-RS\n");
        tokio::time::timeout(Duration::from_secs(10), attached.join()).await??;

        let mut forwarder = pods.portforward(pod, &[80]).await?;
        let mut stream = forwarder.take_stream(80).context("port 80's stream")?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
            .await?;
        let mut page = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut page)).await??;
        assert!(String::from_utf8_lossy(&page).contains(WEB_PAGE));
        drop(stream);
        forwarder.abort();
        anyhow::Ok(())
    })
}

/// A NodePort answers on the node's address and follows the Deployment's scale (refused
/// at zero); a readiness failure takes the pod out of its Service's endpoints quickly.
fn node_ports_and_readiness(up: &Up) -> anyhow::Result<()> {
    up.kubectl(&[
        "expose",
        "deployment",
        "web",
        "--type=NodePort",
        "--port=80",
        "--name=web-np",
    ])?;
    let node_port = up.kubectl(&[
        "get",
        "svc",
        "web-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ])?;
    let node_ip = up.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ])?;
    let address = format!("{node_ip}:{node_port}");
    let serves = || http_get(&address).is_ok_and(|page| page.contains(WEB_PAGE));
    anyhow::ensure!(
        e2e::eventually(Duration::from_secs(15), serves),
        "NodePort {address} never served the page"
    );
    up.kubectl(&["scale", "deployment", "web", "--replicas=0"])?;
    let refused = || {
        matches!(
            std::net::TcpStream::connect_timeout(&address.parse().expect("address"), Duration::from_secs(1)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    };
    anyhow::ensure!(
        e2e::eventually(Duration::from_secs(30), refused),
        "NodePort {address} still accepts connections with no endpoints"
    );
    up.kubectl(&["scale", "deployment", "web", "--replicas=1"])?;
    anyhow::ensure!(
        e2e::eventually(Duration::from_secs(30), serves),
        "NodePort {address} did not come back after scaling up"
    );

    // Readiness: probed every second, out after one failure.
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ready", "labels": {"app": "ready"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", "touch /tmp/ready; exec sleep 3600"],
                "readinessProbe": {
                    "exec": {"command": ["cat", "/tmp/ready"]},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }],
        },
    });
    up.kubectl_stdin(&["create", "-f", "-"], &pod.to_string())?;
    up.kubectl(&["expose", "pod", "ready", "--port=80"])?;
    let endpoint_ready = || {
        up.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=ready",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ])
        .unwrap_or_default()
    };
    anyhow::ensure!(
        e2e::eventually(Duration::from_secs(30), || endpoint_ready() == "true"),
        "the ready pod's endpoint never became ready"
    );
    up.kubectl(&["exec", "ready", "--", "rm", "/tmp/ready"])?;
    let failed = Instant::now();
    anyhow::ensure!(
        e2e::eventually(Duration::from_secs(10), || endpoint_ready() == "false"),
        "the endpoint stayed ready after the probe failed"
    );
    // One probe period to notice, then status → EndpointSlice; kubectl's own polling
    // adds to what is measured here.
    let took = failed.elapsed();
    eprintln!("readiness failure to endpoint not ready: {took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    Ok(())
}
