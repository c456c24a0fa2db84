//! `kumo up` end to end: the one-process cluster comes up with its node Ready, runs a
//! Deployment of the built-in web image, and a pod reaches it by Service name through the
//! cluster DNS and the proxy's rules.

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

    /// A container's log as the agent writes it (`kubectl logs` is not served yet).
    fn container_log(&self, pod: &str, container: &str) -> String {
        let pods = self.data_dir().join("agent").join("pods");
        let prefix = format!("default_{pod}_");
        let mut log = String::new();
        for entry in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix)
                && let Ok(files) = std::fs::read_dir(entry.path().join(container))
            {
                for file in files.flatten() {
                    log += &std::fs::read_to_string(file.path()).unwrap_or_default();
                }
            }
        }
        log
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
        quiet(Command::new("nft").args(["delete", "table", "ip", "kumo"]));
        quiet(Command::new("nft").args(["delete", "table", "ip6", "kumo"]));
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

    // `kubectl create deployment`, with a short grace period: busybox's httpd ignores
    // SIGTERM, and the test removes its pods before stopping the node.
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
    up.kubectl(&["expose", "deployment", "web", "--port", "80"])?;

    // By name: resolv.conf points at the kube-dns ClusterIP, which the proxy sends to the
    // DNS server on the node; `web` then resolves to the web Service's ClusterIP. Retries
    // cover the proxy's rules catching up with the new Service.
    let script = "for i in $(seq 1 20); do wget -qO- http://web && exit 0; sleep 0.5; done; exit 1";
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
    let log = up.container_log("client", "client");
    assert_eq!(phase.trim(), "Succeeded", "client log:\n{log}");
    assert!(log.contains(WEB_PAGE), "client log:\n{log}");

    // Remove the pods while the node runs, so the agent tears their sandboxes down.
    up.kubectl(&["delete", "deployment", "web"])?;
    up.kubectl(&["delete", "pod", "client", "--grace-period=1"])?;
    up.wait_for(
        "pods gone",
        Duration::from_secs(20),
        &["get", "pods", "-o", "name"],
        |pods| pods.trim().is_empty(),
    )?;
    up.stop();
    Ok(())
}
