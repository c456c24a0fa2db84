//! The harness of the agent's tests: a real containerd with a private config, state,
//! socket and pod network under a temporary directory, the built-in images imported into
//! it, an in-process API server, and the agent running against both. Dropping it removes
//! every sandbox, stops containerd, unmounts what it left and deletes its bridge.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::containerd::{self, Containerd};
use agent::cri::Cri;
use apiserver::testing::InProcess;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

/// The node every test's agent registers.
pub const NODE: &str = "agent-test-node";

/// A test environment; `None` from [`Env::start`] means containerd is not installed.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub api: InProcess,
    pub cri: Cri,
    pub containerd: Option<Containerd>,
    pub network: NetworkSlot,
    /// The local registry serving as containerd's mirror for `kumo.local`, if started.
    pub registry: Option<Registry>,
    agent: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Debian's docker-registry on a loopback port, storing under the test's directory.
pub struct Registry {
    pub address: String,
    child: std::process::Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::spawn(dir, "registry", "")
    }

    /// A registry that answers only `users` (name and password), with HTTP basic auth
    /// checked against a bcrypt htpasswd file, as `htpasswd -B` writes it. Plain HTTP on
    /// loopback: distribution does not insist on TLS for htpasswd, and containerd speaks
    /// plain HTTP to a registry on 127.0.0.1 by default.
    pub fn start_with_htpasswd(dir: &Path, users: &[(&str, &str)]) -> anyhow::Result<Self> {
        let htpasswd = dir.join("auth-registry.htpasswd");
        let mut lines = String::new();
        for (user, password) in users {
            // The lowest cost: the test's pulls check it on every request.
            lines += &format!("{user}:{}\n", bcrypt::hash(password, 4)?);
        }
        std::fs::write(&htpasswd, lines)?;
        Self::spawn(
            dir,
            "auth-registry",
            &format!(
                "auth:\n  htpasswd:\n    realm: kumo-test\n    path: {}\n",
                htpasswd.display()
            ),
        )
    }

    /// Starts docker-registry with its config, storage and log named `name` under `dir`;
    /// `extra_config` is appended to the config (top-level YAML sections).
    fn spawn(dir: &Path, name: &str, extra_config: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n{extra_config}",
                dir.join(name).display()
            ),
        )?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let registry = Self { address, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.address).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// Pushes an image the runtime has to this registry as `repository:tag`.
    pub fn push(&self, socket: &Path, image: &str, repository: &str) -> anyhow::Result<()> {
        self.push_as(socket, image, repository, None)
    }

    /// Like [`Registry::push`], logging in as `user` (`name:password`) when given.
    pub fn push_as(
        &self,
        socket: &Path,
        image: &str,
        repository: &str,
        user: Option<&str>,
    ) -> anyhow::Result<()> {
        let target = format!("{}/{repository}", self.address);
        let ctr = |args: &[&str]| -> anyhow::Result<()> {
            let output = std::process::Command::new("ctr")
                .arg("--address")
                .arg(socket)
                .args(["--namespace", "k8s.io"])
                .args(args)
                .output()?;
            anyhow::ensure!(
                output.status.success(),
                "ctr {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(())
        };
        ctr(&["images", "tag", image, &target])?;
        let pushed = match user {
            Some(user) => ctr(&["images", "push", "--plain-http", "--user", user, &target]),
            None => ctr(&["images", "push", "--plain-http", &target]),
        };
        // Only the registry has it now (or nobody, when the push failed).
        ctr(&["images", "rm", &target])?;
        pushed
    }
}

/// A bridge name and pod subnet no other test process uses at the same time.
pub struct NetworkSlot {
    pub index: u32,
    lock: PathBuf,
}

impl NetworkSlot {
    fn take() -> anyhow::Result<Self> {
        let base = std::env::temp_dir().join("kumo-agent-test-networks");
        std::fs::create_dir_all(&base)?;
        for index in 0..200u32 {
            let lock = base.join(index.to_string());
            if std::fs::create_dir(&lock).is_err() {
                // Taken: by a live process, or left by one that died.
                let owner = std::fs::read_to_string(lock.join("pid")).unwrap_or_default();
                let alive = owner
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if alive || owner.is_empty() && lock.exists() {
                    continue;
                }
            }
            std::fs::write(lock.join("pid"), std::process::id().to_string())?;
            return Ok(Self { index, lock });
        }
        anyhow::bail!("no free test network slot")
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("kumot{}", self.index)
    }

    /// The pod subnet.
    pub fn cidr(&self) -> String {
        format!("10.201.{}.0/24", self.index)
    }
}

impl Drop for NetworkSlot {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.bridge()])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.lock);
    }
}

/// Whether Debian's docker-registry is installed (saying how to get it when not).
pub fn registry_installed() -> bool {
    let installed = std::process::Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_ok();
    if !installed {
        eprintln!("SKIPPED: docker-registry is not installed (apt-get install docker-registry)");
    }
    installed
}

/// Whether the runtime binaries are installed.
pub fn containerd_installed() -> bool {
    ["containerd", "ctr", "runc"].iter().all(|b| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(b).is_file()))
            || Path::new("/usr/sbin").join(b).is_file()
    })
}

impl Env {
    /// Starts containerd and the API server (the agent is started separately).
    pub async fn start() -> anyhow::Result<Option<Self>> {
        Self::start_with(false).await
    }

    /// Like [`Env::start`], with a local docker-registry as containerd's mirror for
    /// `kumo.local`; `None` also when docker-registry is not installed.
    pub async fn start_with_registry() -> anyhow::Result<Option<Self>> {
        if !registry_installed() {
            return Ok(None);
        }
        Self::start_with(true).await
    }

    async fn start_with(with_registry: bool) -> anyhow::Result<Option<Self>> {
        if !containerd_installed() {
            eprintln!(
                "SKIPPED: containerd, ctr or runc is not installed (apt-get install containerd runc containernetworking-plugins busybox-static)"
            );
            return Ok(None);
        }
        let _ = tracing_subscriber_init();
        let network = NetworkSlot::take()?;
        // Short path: the socket's path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new().prefix("kat").tempdir_in("/tmp")?;
        let mut config = containerd::Config::new(&dir.path().join("containerd"));
        config.bridge = network.bridge();
        config.pod_cidr = network.cidr();
        let registry = if with_registry {
            let registry = Registry::start(dir.path())?;
            config.registry_mirrors = vec![(
                "kumo.local".to_owned(),
                format!("http://{}", registry.address),
            )];
            Some(registry)
        } else {
            None
        };
        let containerd = Containerd::start(config).await?;
        let cri = Cri::connect(&containerd.socket()).await?;
        let archives = agent::images::build_all(Path::new(agent::images::DEFAULT_BUSYBOX))?;
        containerd::ensure_images(&cri, &dir.path().join("images"), &archives).await?;
        let api = InProcess::start(dir.path()).await?;
        Ok(Some(Self {
            dir,
            api,
            cri,
            containerd: Some(containerd),
            network,
            registry,
            agent: None,
        }))
    }

    /// The agent's configuration: fast back-off is not used, kubelet's defaults stay.
    pub fn agent_config(&self) -> agent::Config {
        let mut config = agent::Config::new(NODE, &self.dir.path().join("agent"));
        config.pod_cidr = Some(self.network.cidr());
        config
    }

    /// Starts the agent (with an admin client).
    pub fn start_agent(&mut self) {
        let client = self.api.client();
        let cri = self.cri.clone();
        let config = self.agent_config();
        self.agent = Some(tokio::spawn(agent::run(client, cri, config)));
    }

    /// Stops the agent as a crash would: its containers keep running.
    pub async fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.abort();
            let _ = agent.await;
        }
    }

    /// A pod API for the `default` namespace.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.api.client(), "default")
    }

    /// Creates a pod bound to the test node from JSON.
    pub async fn create_pod(&self, mut pod: serde_json::Value) -> anyhow::Result<Pod> {
        pod["apiVersion"] = "v1".into();
        pod["kind"] = "Pod".into();
        pod["spec"]["nodeName"] = NODE.into();
        let pod: Pod = serde_json::from_value(pod)?;
        Ok(self.pods().create(&PostParams::default(), &pod).await?)
    }

    /// Polls the pod until `check` holds (or fails with the last state seen).
    pub async fn wait_pod(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Pod) -> bool,
    ) -> anyhow::Result<Pod> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < timeout {
            if let Some(pod) = self.pods().get_opt(name).await?
                && {
                    let ok = check(&pod);
                    last = Some(pod.clone());
                    ok
                }
            {
                return Ok(pod);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!(
            "pod {name}: {what} not reached within {timeout:?}; last seen status: {}\ncontainerd log tail: {}",
            serde_json::to_string_pretty(&last.map(|p| (p.metadata.resource_version, p.status)))
                .unwrap_or_default(),
            self.containerd_log_tail(),
        )
    }

    /// Waits for the pod to be Running and Ready.
    pub async fn wait_ready(&self, name: &str) -> anyhow::Result<Pod> {
        self.wait_pod(name, Duration::from_secs(40), "Running and Ready", |p| {
            let status = p.status.clone().unwrap_or_default();
            status.phase.as_deref() == Some("Running")
                && status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .await
    }

    /// Runs a command in a container of the pod (by name) and returns its stdout, failing
    /// on a non-zero exit.
    pub async fn exec(&self, pod: &Pod, container: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let (code, stdout, stderr) = self.exec_status(pod, container, cmd).await?;
        anyhow::ensure!(code == 0, "{cmd:?} exited {code}: {stderr}");
        Ok(stdout)
    }

    /// Runs a command in a container; returns exit code, stdout and stderr.
    pub async fn exec_status(
        &self,
        pod: &Pod,
        container: &str,
        cmd: &[&str],
    ) -> anyhow::Result<(i32, String, String)> {
        let id = container_id(pod, container)?;
        let response = self
            .cri
            .exec_sync(&id, cmd.iter().map(|s| s.to_string()).collect(), 10)
            .await?;
        Ok((
            response.exit_code,
            String::from_utf8_lossy(&response.stdout).into_owned(),
            String::from_utf8_lossy(&response.stderr).into_owned(),
        ))
    }

    fn containerd_log_tail(&self) -> String {
        let log = self
            .containerd
            .as_ref()
            .map(|c| c.log())
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("level=error")).collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

/// The runtime id of a container from the pod's status.
pub fn container_id(pod: &Pod, container: &str) -> anyhow::Result<String> {
    let status = pod.status.clone().unwrap_or_default();
    let id = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .chain(status.init_container_statuses.unwrap_or_default())
        .find(|c| c.name == container)
        .and_then(|c| c.container_id)
        .ok_or_else(|| anyhow::anyhow!("no containerID for {container}"))?;
    Ok(id
        .split_once("://")
        .map_or(id.clone(), |(_, i)| i.to_owned()))
}

/// The status of a container of the pod.
pub fn container_status(
    pod: &Pod,
    container: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
        .cloned()
}

/// Logs of the agent in the test's output (RUST_LOG, default `agent=info`).
fn tracing_subscriber_init() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("agent=info")),
        )
        .with_test_writer()
        .try_init()
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.abort();
        }
        // Remove every sandbox (their containers and network) through CRI, on a runtime
        // of its own since drop cannot await.
        let socket = self.containerd.as_ref().map(|c| c.socket());
        if let Some(socket) = socket {
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let work = async {
                        let cri = Cri::connect(&socket).await?;
                        // Twice: a sandbox the aborted agent asked for may still be
                        // starting during the first pass.
                        for pass in 0..2 {
                            if pass > 0 {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            for sandbox in cri.sandboxes(&[]).await? {
                                let _ = cri.stop_sandbox(&sandbox.id).await;
                                let _ = cri.remove_sandbox(&sandbox.id).await;
                            }
                        }
                        anyhow::Ok(())
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(60), work).await;
                });
            });
            let _ = cleanup.join();
        }
        if let Some(containerd) = self.containerd.take() {
            containerd.stop();
        }
        for mount in agent::pods::volumes::mounts_under(self.dir.path())
            .into_iter()
            .rev()
        {
            let _ = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
