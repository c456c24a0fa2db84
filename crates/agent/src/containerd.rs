//! A private containerd, as k3s runs one: its config, state, sockets and CNI configuration
//! live under the agent's data directory, so it never disturbs a system containerd. The
//! agent starts it, restarts it when it dies, and stops it on exit (containers keep running
//! in their shims and are recovered by the next containerd).
//!
//! Images are imported with `ctr images import`. CRI has no import call, and importing
//! through containerd's own gRPC API means re-implementing what ctr's client library does:
//! streaming blobs into the content store under a lease, setting the garbage-collection
//! labels that tie index, manifest, config and layers together, creating the image record
//! and unpacking every layer through the snapshot and diff services. ctr ships with
//! containerd and does exactly that, so the agent calls it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::cri::Cri;
use crate::images::{self, OciArchive};

/// The containerd namespace CRI keeps its images and containers in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Failures of the private containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file under the data directory could not be written.
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The containerd binary could not be started.
    #[error("starting {binary}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// containerd did not answer CRI calls in time.
    #[error("containerd did not become ready within {seconds} s; its log: {log}")]
    NotReady { seconds: u64, log: String },
    /// `ctr images import` failed.
    #[error("importing {image}: {message}")]
    Import { image: String, message: String },
    /// A CRI call failed.
    #[error(transparent)]
    Cri(#[from] crate::cri::Error),
    /// Building a built-in image failed.
    #[error(transparent)]
    Image(#[from] images::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run the private containerd.
#[derive(Clone, Debug)]
pub struct Config {
    /// Everything lives under this directory.
    pub dir: PathBuf,
    /// The pod network handed out by host-local, written when containerd starts. Empty:
    /// none until the agent tells the runtime its Node's podCIDR (CRI
    /// `UpdateRuntimeConfig`, as kubelet does), which containerd writes from the template
    /// ([`Config::cni_template`]).
    pub pod_cidr: String,
    /// The Linux bridge the pods' veths join.
    pub bridge: String,
    /// The image every sandbox runs.
    pub sandbox_image: String,
    /// The containerd binary.
    pub containerd_binary: PathBuf,
    /// Where the CNI plugins are installed.
    pub cni_bin_dir: PathBuf,
    /// Registry mirrors: pulls of images of the host (`kumo.local`) go to the endpoint
    /// (`http://127.0.0.1:5000`).
    pub registry_mirrors: Vec<(String, String)>,
}

impl Config {
    /// Defaults for a data directory: Debian's binary and CNI plugins, bridge `kumo0`, the
    /// pod network from the Node's podCIDR, the built-in pause image.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            pod_cidr: String::new(),
            bridge: "kumo0".into(),
            sandbox_image: images::PAUSE_IMAGE.into(),
            containerd_binary: "containerd".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            registry_mirrors: Vec::new(),
        }
    }

    /// The CRI (and containerd API) socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// Where containerd keeps its persistent data (content, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Where containerd keeps its runtime state (task bundles, sandbox files).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// containerd's config.toml.
    pub fn config_toml(&self) -> String {
        let dir = self.dir.display();
        format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # Never below containerd's own OOM score: lowering it needs CAP_SYS_RESOURCE, which
  # containerd may lack (in a container, for example).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{dir}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{dir}/cni"
    conf_template = "{dir}/cni-template.json"
"#,
            socket = self.socket().display(),
            sandbox_image = self.sandbox_image,
            cni_bin = self.cni_bin_dir.display(),
        ) + &self.mirrors_toml()
    }

    fn mirrors_toml(&self) -> String {
        self.registry_mirrors
            .iter()
            .map(|(host, endpoint)| {
                format!(
                    "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.{host:?}]\n    endpoint = [{endpoint:?}]\n"
                )
            })
            .collect()
    }

    /// The CNI network of [`Config::pod_cidr`]: a bridge with host-local addresses from
    /// the pod CIDR and portmap for hostPorts. (containerd brings each sandbox's loopback
    /// up itself with the `loopback` plugin from the same directory.)
    pub fn cni_conflist(&self) -> String {
        let default_route = if self.pod_cidr.contains(':') {
            "::/0"
        } else {
            "0.0.0.0/0"
        };
        let network = self.cni_network(
            serde_json::json!([[{"subnet": self.pod_cidr}]]),
            serde_json::json!([{"dst": default_route}]),
        );
        serde_json::to_string_pretty(&network).expect("conflist serializes")
    }

    /// The same network as a template of containerd's CRI plugin (Go text/template), which
    /// containerd fills with the pod CIDRs and default routes kubelet's
    /// `UpdateRuntimeConfig` hands it.
    pub fn cni_template(&self) -> String {
        const RANGES: &str = "@RANGES@";
        const ROUTES: &str = "@ROUTES@";
        let network = self.cni_network(RANGES.into(), ROUTES.into());
        serde_json::to_string_pretty(&network)
            .expect("template serializes")
            .replace(
                &format!("{RANGES:?}"),
                r#"[{{range $i, $range := .PodCIDRRanges}}{{if $i}}, {{end}}[{"subnet": "{{$range}}"}]{{end}}]"#,
            )
            .replace(
                &format!("{ROUTES:?}"),
                r#"[{{range $i, $route := .Routes}}{{if $i}}, {{end}}{"dst": "{{$route}}"}{{end}}]"#,
            )
    }

    /// The network's name is the bridge's, which no other pod network on the host has.
    fn cni_network(
        &self,
        ranges: serde_json::Value,
        routes: serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.bridge,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": ranges,
                        "routes": routes,
                        "dataDir": self.dir.join("cni-ipam").display().to_string(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        })
    }
}

/// The file containerd writes the pod network to from its template (its fixed name), and
/// where a network known at start is written too.
pub const CNI_CONFLIST: &str = "10-containerd-net.conflist";

/// A running private containerd, restarted when it dies. Dropping it stops containerd
/// (SIGTERM); the containers it ran keep running.
pub struct Containerd {
    config: Config,
    pid: Arc<AtomicI32>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Containerd {
    /// Writes the configuration, starts containerd and waits until CRI answers.
    pub async fn start(config: Config) -> Result<Self> {
        write(&config.dir.join("config.toml"), &config.config_toml())?;
        write(
            &config.dir.join("cni-template.json"),
            &config.cni_template(),
        )?;
        let cni_dir = config.dir.join("cni");
        // Before 2026-11 the network was written as 10-kumo.conflist.
        let _ = std::fs::remove_file(cni_dir.join("10-kumo.conflist"));
        if config.pod_cidr.is_empty() {
            // A network from an earlier run may be for another CIDR; containerd renders
            // the template only while it has none, so it goes until the agent says.
            let _ = std::fs::remove_file(cni_dir.join(CNI_CONFLIST));
        } else {
            write(&cni_dir.join(CNI_CONFLIST), &config.cni_conflist())?;
        }
        let child = spawn(&config)?;
        let pid = Arc::new(AtomicI32::new(child.id().map(|p| p as i32).unwrap_or(0)));
        let supervisor = tokio::spawn(supervise(config.clone(), child, pid.clone()));
        let containerd = Self {
            config,
            pid,
            supervisor,
        };
        containerd.wait_ready(Duration::from_secs(60)).await?;
        Ok(containerd)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.config.socket()
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.log_path()).unwrap_or_default()
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(cri) = Cri::connect(&self.socket()).await
                && cri.version().await.is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::NotReady {
                    seconds: timeout.as_secs(),
                    log: tail(&self.log(), 2000),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops containerd and waits (up to 10 s) for it to exit.
    pub fn stop(&self) {
        self.supervisor.abort();
        let pid = self.pid.swap(0, Ordering::SeqCst);
        if pid > 0 {
            terminate(pid, Duration::from_secs(10));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, contents));
    result.map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

fn spawn(config: &Config) -> Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.log_path())
        .map_err(|source| Error::Write {
            path: config.log_path(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| Error::Write {
        path: config.log_path(),
        source,
    })?;
    tokio::process::Command::new(&config.containerd_binary)
        .arg("--config")
        .arg(config.dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|source| Error::Spawn {
            binary: config.containerd_binary.display().to_string(),
            source,
        })
}

/// Restarts containerd whenever it exits, waiting longer after each quick death.
async fn supervise(config: Config, mut child: tokio::process::Child, pid: Arc<AtomicI32>) {
    let mut delay = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let status = child.wait().await;
        tracing::warn!(?status, "containerd exited; restarting it");
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_millis(500);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
        match spawn(&config) {
            Ok(next) => {
                pid.store(next.id().map(|p| p as i32).unwrap_or(0), Ordering::SeqCst);
                child = next;
            }
            Err(e) => {
                tracing::error!(error = %e, "restarting containerd");
                pid.store(0, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// SIGTERM, then SIGKILL when the process has not exited after `grace`.
pub(crate) fn terminate(pid: i32, grace: Duration) {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

/// Whether a process exists and has not exited (a zombie counts as exited).
fn alive(pid: rustix::process::Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn tail(s: &str, n: usize) -> String {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_owned()
}

/// Imports an OCI archive into the runtime at `socket` (in CRI's namespace, unpacked for
/// the overlayfs snapshotter).
pub async fn import_archive(socket: &Path, file: &Path) -> Result<()> {
    let output = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", CRI_NAMESPACE, "images", "import"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Import {
            image: file.display().to_string(),
            message: format!("running ctr: {e}"),
        })?;
    if !output.status.success() {
        return Err(Error::Import {
            image: file.display().to_string(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Imports each archive the runtime does not have yet; archives are written to `dir`
/// first. Returns the names imported.
pub async fn ensure_images(cri: &Cri, dir: &Path, archives: &[OciArchive]) -> Result<Vec<String>> {
    let mut imported = Vec::new();
    for archive in archives {
        if cri.image_status(&archive.name).await?.is_some() {
            continue;
        }
        let file = dir.join(archive.file_name());
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&file, &archive.bytes))
            .map_err(|source| Error::Write {
                path: file.clone(),
                source,
            })?;
        import_archive(cri.socket(), &file).await?;
        imported.push(archive.name.clone());
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_lives_under_the_data_dir() {
        let mut config = Config::new(Path::new("/data/containerd"));
        config.pod_cidr = "10.99.3.0/24".into();
        let toml = config.config_toml();
        assert!(toml.contains(r#"root = "/data/containerd/root""#));
        assert!(toml.contains(r#"address = "/data/containerd/containerd.sock""#));
        assert!(toml.contains(r#"sandbox_image = "kumo.local/pause:1""#));
        assert!(toml.contains(r#"conf_dir = "/data/containerd/cni""#));
        assert!(toml.contains(r#"conf_template = "/data/containerd/cni-template.json""#));
        config.registry_mirrors = vec![("kumo.local".into(), "http://127.0.0.1:5000".into())];
        assert!(config.config_toml().ends_with(
            "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"kumo.local\"]\n    endpoint = [\"http://127.0.0.1:5000\"]\n"
        ));
        let conflist: serde_json::Value = serde_json::from_str(&config.cni_conflist()).unwrap();
        let bridge = &conflist["plugins"][0];
        assert_eq!(bridge["bridge"], "kumo0");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.99.3.0/24");
        assert_eq!(conflist["plugins"][1]["type"], "portmap");
        assert_eq!(conflist["name"], "kumo0");
        // The template, filled as Go's text/template would for one range, is the same.
        let filled = config
            .cni_template()
            .replace(
                r#"{{range $i, $range := .PodCIDRRanges}}{{if $i}}, {{end}}[{"subnet": "{{$range}}"}]{{end}}"#,
                r#"[{"subnet": "10.99.3.0/24"}]"#,
            )
            .replace(
                r#"{{range $i, $route := .Routes}}{{if $i}}, {{end}}{"dst": "{{$route}}"}{{end}}"#,
                r#"{"dst": "0.0.0.0/0"}"#,
            );
        let filled: serde_json::Value = serde_json::from_str(&filled).unwrap();
        assert_eq!(filled, conflist);
    }
}
