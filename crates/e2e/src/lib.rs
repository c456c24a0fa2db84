//! Test harness: starts a real `kumo server` on a loopback port in a temporary data dir,
//! and drives it with the installed kubectl, kube-rs and the Python client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

static BIN_OVERRIDE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes [`kumo_bin`] return `path` (benchmarks use the release build).
pub fn set_kumo_bin(path: &Path) {
    let _ = BIN_OVERRIDE.set(path.to_owned());
}

/// The kumo binary under test: `KUMO_BIN`, or the workspace's debug build.
pub fn kumo_bin() -> PathBuf {
    if let Some(p) = BIN_OVERRIDE.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("KUMO_BIN") {
        return PathBuf::from(p);
    }
    // Test binaries live in <target>/<profile>/deps; the kumo binary one level up.
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
        && profile_dir.join("kumo").exists()
    {
        return profile_dir.join("kumo");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug/kumo")
}

/// A running `kumo server` with its own data dir; killed on drop.
pub struct Kumo {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    extra_args: Vec<String>,
    cache_dir: tempfile::TempDir,
}

impl Kumo {
    /// Starts a server on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut kumo = Self {
            dir,
            child: None,
            url: format!("https://127.0.0.1:{port}"),
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            cache_dir: tempfile::tempdir()?,
        };
        kumo.spawn()?;
        Ok(kumo)
    }

    fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap_or("0")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = kumo_bin();
        if !bin.exists() {
            bail!(
                "{} does not exist: build it first (cargo build -p kumo) or set KUMO_BIN",
                bin.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))?;
        let child = Command::new(&bin)
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port()))
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the server answers an authenticated request.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("kumo server exited with {status}; log:\n{}", self.log());
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl_raw(&["get", "--raw", "/readyz"])?;
                if out.status.success() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("kumo server did not become ready; log:\n{}", self.log())
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    /// A kubeconfig for `user` in `groups` (at most one: see `pki::issue_client`), with a
    /// client certificate signed by the cluster CA in `DIR/pki`.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let pki = self.data_dir().join("pki");
        let ca = apiserver::pki::CertKey {
            cert_pem: std::fs::read_to_string(pki.join("ca.crt"))?,
            key_pem: std::fs::read_to_string(pki.join("ca.key"))?,
        };
        let client = apiserver::pki::issue_client(&ca, user, groups)?;
        let config = apiserver::pki::kubeconfig("kumo", &self.url, &ca.cert_pem, user, &client);
        let path = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "_")));
        std::fs::write(&path, config)?;
        Ok(path)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL (no chance to clean up).
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data dir.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Starts the server again after [`Kumo::kill9`].
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }

    /// A kubectl command with this server's kubeconfig and a fresh cache dir.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.cache_dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        cmd
    }

    fn kubectl_raw(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.kubectl_cmd(args).stdin(Stdio::null()).output()?)
    }

    /// Runs kubectl and returns stdout; fails with stderr when kubectl fails.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl_raw(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn kubectl_fails(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl_raw(args)?;
        if out.status.success() {
            bail!(
                "kubectl {} succeeded but should have failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Runs kubectl with `stdin` as input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `kumo hollow-nodes --kubeconfig <admin> ARGS…` and waits until the nodes it
    /// registers are Ready. The nodes stop renewing their Leases when the guard is dropped.
    pub fn hollow_nodes(&self, args: &[&str]) -> anyhow::Result<HollowNodes> {
        let log_path = self
            .dir
            .path()
            .join(format!("hollow-{}.log", rand::random::<u32>()));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(kumo_bin())
            .arg("hollow-nodes")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting kumo hollow-nodes")?;
        let mut nodes = HollowNodes { child, log_path };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = nodes.child.try_wait()? {
                bail!("kumo hollow-nodes exited with {status}: {}", nodes.log());
            }
            if nodes.log().contains("hollow nodes registered") {
                return Ok(nodes);
            }
            if Instant::now() > deadline {
                bail!("hollow nodes did not register: {}", nodes.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A kube-rs client for the admin user.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_for(&self.kubeconfig()).await
    }
}

/// Running hollow nodes (`kumo hollow-nodes`); dropping this stops them (SIGKILL), after
/// which they no longer renew their Leases.
pub struct HollowNodes {
    child: Child,
    log_path: PathBuf,
}

impl HollowNodes {
    /// What the hollow nodes logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

impl Drop for Kumo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- kumo server log ---\n{}", self.log());
        }
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
