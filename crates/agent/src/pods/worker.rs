//! One pod's worker: kubelet's SyncPod. Each pass compares the pod's spec with what the
//! runtime has, takes the next steps (sandbox, init containers in order, containers,
//! restarts with back-off, probe-driven kills), and writes the status when it changed.
//! Deletion stops the containers with the grace period and then finishes the API deletion.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::watch;
use tokio::time::Instant;

use super::probes::{self, Tracker, Verdict};
use super::spec::{self, ContainerInputs, SandboxInputs};
use super::status::{self, ContainerView, PodView};
use super::{Error, PodContext, Result, Update, volumes};
use crate::Shared;
use crate::cri::{CallExt, api};

/// How often API-backed volumes (ConfigMaps, Secrets, downward API) are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(60);

/// Kubelet's per-container exponential back-off.
#[derive(Debug)]
struct Backoff {
    delay: Duration,
    updated: Instant,
    /// What the last attempt failed with, shown while backing off (image pulls).
    last_error: String,
}

/// The grace period of a pod removed from the API before its containers stopped (a
/// force deletion): kubelet still gives such containers this small grace before the kill.
const FORCED_GRACE: i64 = 1;

/// The longest a postStart hook may run: upstream sets none, but one hook that never
/// returns must not wedge the pod's worker forever.
const POST_START_LIMIT: Duration = Duration::from_secs(600);

pub struct Worker {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    uid: String,
    pod_dir: PathBuf,
    log_dir: PathBuf,
    backoff: HashMap<String, Backoff>,
    waiting: HashMap<String, (String, String)>,
    trackers: HashMap<String, Tracker>,
    messages: HashMap<String, String>,
    last_status: Option<serde_json::Value>,
    volumes_refreshed: Option<Instant>,
    token_renew_at: Option<jiff::Timestamp>,
    terminal: Option<&'static str>,
    sandbox_stopped: bool,
}

/// The outcome of one pass.
enum Flow {
    /// Sync again after this long (or on a change of the pod).
    Again(Duration),
    /// The pod is gone; the worker ends.
    Done,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, pod: Arc<Pod>) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod_dir = volumes::pod_dir(&shared.config.data_dir, &uid);
        let log_dir = shared.config.data_dir.join("pods").join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            uid
        ));
        // A pod that finished before an agent restart stays finished.
        let terminal = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => Some("Succeeded"),
            Some("Failed") => Some("Failed"),
            _ => None,
        };
        Self {
            shared,
            pod,
            uid,
            pod_dir,
            log_dir,
            backoff: HashMap::new(),
            waiting: HashMap::new(),
            trackers: HashMap::new(),
            messages: HashMap::new(),
            last_status: None,
            volumes_refreshed: None,
            token_renew_at: None,
            terminal,
            sandbox_stopped: false,
        }
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// Syncs the pod until it is gone.
    pub async fn run(mut self, mut updates: watch::Receiver<Update>) {
        loop {
            let update = updates.borrow_and_update().clone();
            let gone = match update {
                Update::Pod(pod) => {
                    if pod.metadata.resource_version != self.pod.metadata.resource_version {
                        self.pod = pod;
                    }
                    false
                }
                Update::Gone => true,
            };
            let flow = if gone {
                self.terminate(&mut updates, true).await;
                Ok(Flow::Done)
            } else if self.pod.metadata.deletion_timestamp.is_some() {
                self.terminate(&mut updates, false).await;
                self.finish_deletion().await.map(|()| Flow::Done)
            } else {
                self.sync().await
            };
            let wait = match flow {
                Ok(Flow::Done) => return,
                Ok(Flow::Again(wait)) => wait,
                Err(e) => {
                    tracing::warn!(pod = %self.name(), namespace = %self.namespace(), error = %e, "syncing pod");
                    self.shared.config.sync_interval
                }
            };
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Publishes an event about the pod (in the background: events never hold a pod up).
    fn event(&self, warning: bool, reason: &str, action: &str, note: String) {
        use kube::runtime::events::{Event, EventType};
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: self.pod.metadata.name.clone(),
            namespace: self.pod.metadata.namespace.clone(),
            uid: self.pod.metadata.uid.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        let recorder = self.shared.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing event");
            }
        });
    }

    fn context<'a>(&'a self, pod_ip: &'a str) -> PodContext<'a> {
        PodContext {
            pod: &self.pod,
            client: &self.shared.client,
            node_name: &self.shared.config.node_name,
            host_ip: &self.shared.facts.host_ip,
            pod_ip,
            node_cpu_millis: self.shared.facts.cpu_millis,
            node_memory_bytes: self.shared.facts.memory_bytes,
            node_storage_bytes: self.shared.facts.storage_bytes,
        }
    }

    async fn sync(&mut self) -> Result<Flow> {
        let cri = self.shared.cri.clone();
        let sandboxes = cri.sandboxes(&[(spec::POD_UID, &self.uid)]).await?;
        let ready = sandboxes
            .iter()
            .filter(|s| s.state == api::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at)
            .cloned();
        if self.terminal.is_some() {
            // Finished pods keep their containers' records but not their sandbox.
            if let Some(sandbox) = &ready {
                cri.stop_sandbox(&sandbox.id).await?;
            }
            self.sandbox_stopped = true;
            let view = self.observe(None, None).await?;
            self.post_status(&view).await?;
            return Ok(Flow::Again(Duration::from_secs(30)));
        }
        let sandbox = match ready {
            Some(s) => s,
            None => match self.run_sandbox(&sandboxes).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %e, "creating the pod sandbox");
                    let view = self.observe(None, None).await?;
                    self.post_status(&view).await?;
                    return Ok(Flow::Again(self.shared.config.sync_interval * 2));
                }
            },
        };
        let sandbox_status = cri.sandbox_status(&sandbox.id).await?;
        let pod_ip = sandbox_status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| {
                if self.host_network() {
                    self.shared.facts.host_ip.clone()
                } else {
                    String::new()
                }
            });
        self.write_etc_hosts(&pod_ip)?;
        if let Err(e) = self.refresh_volumes(&pod_ip).await {
            tracing::warn!(pod = %self.name(), error = %e, "refreshing volumes");
        }

        let mut wake = Instant::now() + self.shared.config.sync_interval;
        let view = self.observe(Some(&sandbox), Some(&pod_ip)).await?;
        self.step_containers(&sandbox, &view, &pod_ip, &mut wake)
            .await?;
        let view = self.observe(Some(&sandbox), Some(&pod_ip)).await?;
        if status::all_finished(&self.pod, &view) {
            self.terminal = Some(status::phase(&self.pod, &view));
            // Computed before the sandbox stops, so the final status has the pod IP.
            let mut final_view = view.clone();
            final_view.terminal_phase = self.terminal;
            final_view.sandbox_ready = false;
            cri.stop_sandbox(&sandbox.id).await?;
            self.post_status(&final_view).await?;
            return Ok(Flow::Again(Duration::from_secs(30)));
        }
        self.post_status(&view).await?;
        Ok(Flow::Again(
            wake.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        ))
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    fn spec_containers(&self) -> (Vec<Container>, Vec<Container>) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        (spec.init_containers.unwrap_or_default(), spec.containers)
    }

    /// Starts init containers in order, then the containers; restarts, kills and holds
    /// back per restart policy, back-off and probes.
    async fn step_containers(
        &mut self,
        sandbox: &api::PodSandbox,
        view: &PodView,
        pod_ip: &str,
        wake: &mut Instant,
    ) -> Result<()> {
        let policy = status::restart_policy(&self.pod).to_owned();
        let (init_containers, containers) = self.spec_containers();
        for (container, seen) in init_containers.iter().zip(&view.init) {
            match &seen.latest {
                None => {
                    self.start(sandbox, container, 0, pod_ip).await?;
                    return Ok(());
                }
                Some(latest) if latest.state == api::ContainerState::ContainerRunning as i32 => {
                    return Ok(());
                }
                Some(latest) if latest.state == api::ContainerState::ContainerExited as i32 => {
                    if latest.exit_code == 0 {
                        continue;
                    }
                    if policy != "Never" {
                        self.restart(sandbox, container, latest, pod_ip, wake)
                            .await?;
                    }
                    return Ok(());
                }
                Some(latest) => {
                    // Created but never started: start failed; retry with back-off.
                    self.restart(sandbox, container, latest, pod_ip, wake)
                        .await?;
                    return Ok(());
                }
            }
        }
        for (container, seen) in containers.iter().zip(&view.containers) {
            match &seen.latest {
                None => self.start(sandbox, container, 0, pod_ip).await?,
                Some(latest) if latest.state == api::ContainerState::ContainerRunning as i32 => {
                    let hash = latest.annotations.get(spec::CONTAINER_HASH);
                    if hash.is_some_and(|h| *h != spec::container_hash(container)) {
                        tracing::info!(pod = %self.name(), container = %container.name, "container spec changed; replacing it");
                        self.kill(container, &latest.id, None).await?;
                        continue;
                    }
                    let tracker = self
                        .trackers
                        .entry(container.name.clone())
                        .or_insert_with(|| Tracker::new(&latest.id, container));
                    if tracker.container_id != latest.id {
                        *tracker = Tracker::new(&latest.id, container);
                    }
                    let target = probes::Target {
                        cri: &self.shared.cri,
                        container_id: &latest.id,
                        pod_ip,
                        container,
                    };
                    let verdict = tracker.tick(&target).await;
                    if let Some(due) = tracker.next_due(container) {
                        *wake = (*wake).min(due);
                    }
                    if let Verdict::Kill(reason) = verdict {
                        tracing::info!(pod = %self.name(), container = %container.name, %reason, "killing container");
                        self.event(false, "Killing", "Killing", reason);
                        let grace = probe_grace(container);
                        self.kill(container, &latest.id, grace).await?;
                    }
                }
                Some(latest) => {
                    let exited = latest.state == api::ContainerState::ContainerExited as i32;
                    let restart = match policy.as_str() {
                        "Always" => true,
                        "OnFailure" => !exited || latest.exit_code != 0,
                        _ => !exited,
                    };
                    if restart {
                        self.restart(sandbox, container, latest, pod_ip, wake)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Restarts a dead container unless it is in back-off (then it waits, as
    /// CrashLoopBackOff).
    async fn restart(
        &mut self,
        sandbox: &api::PodSandbox,
        container: &Container,
        latest: &api::ContainerStatus,
        pod_ip: &str,
        wake: &mut Instant,
    ) -> Result<()> {
        let config = &self.shared.config;
        let finished_ago = if latest.finished_at > 0 {
            let now = jiff::Timestamp::now().as_nanosecond();
            Duration::from_nanos((now - i128::from(latest.finished_at)).max(0) as u64)
        } else {
            Duration::ZERO
        };
        if let Some(entry) = self.backoff.get(&container.name)
            && entry.updated.elapsed() <= config.backoff_max * 2
            && finished_ago < entry.delay
        {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                entry.delay.as_secs(),
                container.name,
                self.name(),
                self.namespace(),
                self.uid
            );
            let entering = self
                .waiting
                .get(&container.name)
                .is_none_or(|(reason, _)| reason != "CrashLoopBackOff");
            if entering {
                self.event(
                    true,
                    "BackOff",
                    "Restarting",
                    format!("Back-off restarting failed container {}", container.name),
                );
            }
            self.waiting
                .insert(container.name.clone(), ("CrashLoopBackOff".into(), message));
            *wake = (*wake).min(Instant::now() + (entry.delay - finished_ago));
            return Ok(());
        }
        let delay = match self.backoff.get(&container.name) {
            Some(entry) if entry.updated.elapsed() <= config.backoff_max * 2 => {
                (entry.delay * 2).min(config.backoff_max)
            }
            _ => config.backoff_initial,
        };
        self.backoff.insert(
            container.name.clone(),
            Backoff {
                delay,
                updated: Instant::now(),
                last_error: String::new(),
            },
        );
        let attempt = latest
            .annotations
            .get(spec::RESTART_COUNT)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        self.start(sandbox, container, attempt, pod_ip).await
    }

    /// Stops a running container (SIGTERM, then SIGKILL after the grace period).
    async fn kill(&self, container: &Container, id: &str, grace: Option<i64>) -> Result<()> {
        let grace = grace.unwrap_or_else(|| self.grace_period());
        self.run_pre_stop(container, id, grace).await;
        self.shared.cri.stop_container(id, grace).await?;
        Ok(())
    }

    fn grace_period(&self) -> i64 {
        self.pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0)
    }

    /// Runs the preStop hook, bounded by the grace period; its failure does not stop the
    /// kill.
    async fn run_pre_stop(&self, container: &Container, id: &str, grace: i64) {
        let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
        else {
            return;
        };
        let timeout = Duration::from_secs(grace.max(1) as u64);
        if let Err(message) = self.run_hook(hook, container, id, timeout).await {
            self.event(
                true,
                "FailedPreStopHook",
                "Killing",
                format!("PreStopHook failed: {message}"),
            );
        }
    }

    /// Runs a lifecycle hook (exec, HTTP GET or sleep) within `timeout`.
    async fn run_hook(
        &self,
        hook: &k8s_openapi::api::core::v1::LifecycleHandler,
        container: &Container,
        id: &str,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        let seconds = timeout.as_secs().max(1) as i64;
        let run = async {
            if let Some(exec) = &hook.exec {
                let command = exec.command.clone().unwrap_or_default();
                let response = self
                    .shared
                    .cri
                    .exec_sync(id, command.clone(), seconds)
                    .await
                    .map_err(|e| e.message())?;
                if response.exit_code != 0 {
                    let output = String::from_utf8_lossy(&response.stdout).into_owned()
                        + &String::from_utf8_lossy(&response.stderr);
                    return Err(format!(
                        "Exec lifecycle hook ({command:?}) for Container {:?} in Pod {:?} failed - error: command exited with {}, message: {:?}",
                        container.name,
                        self.name(),
                        response.exit_code,
                        output.trim()
                    ));
                }
                Ok(())
            } else if let Some(http) = &hook.http_get {
                let probe = k8s_openapi::api::core::v1::Probe {
                    http_get: Some(http.clone()),
                    timeout_seconds: Some(seconds as i32),
                    ..Default::default()
                };
                let pod_ip = self
                    .pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default();
                let target = probes::Target {
                    cri: &self.shared.cri,
                    container_id: id,
                    pod_ip: &pod_ip,
                    container,
                };
                probes::run(&probe, &target).await.map_err(|e| {
                    format!(
                        "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {e}",
                        http.path.as_deref().unwrap_or("/"),
                        container.name,
                        self.name()
                    )
                })
            } else if let Some(sleep) = &hook.sleep {
                tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
                Ok(())
            } else {
                Err("the hook has no handler".into())
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err(format!("the hook did not finish within {timeout:?}")))
    }

    /// Pulls the image if the policy says so, creates and starts a container.
    async fn start(
        &mut self,
        sandbox: &api::PodSandbox,
        container: &Container,
        attempt: u32,
        pod_ip: &str,
    ) -> Result<()> {
        if let Err((reason, message)) = self.ensure_image(container).await {
            self.waiting
                .insert(container.name.clone(), (reason, message));
            return Ok(());
        }
        let config = match self.container_config(container, attempt, pod_ip).await {
            Ok(c) => c,
            Err(Error::Config(message)) => {
                self.event(true, "Failed", "Creating", format!("Error: {message}"));
                self.waiting.insert(
                    container.name.clone(),
                    ("CreateContainerConfigError".into(), message),
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let sandbox_config =
            self.sandbox_config(sandbox.metadata.as_ref().map_or(0, |m| m.attempt));
        let created = self
            .shared
            .cri
            .runtime
            .clone()
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox.id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .call("CreateContainer");
        let id = match created {
            Ok(r) => r.container_id,
            Err(e) => {
                self.event(
                    true,
                    "Failed",
                    "Creating",
                    format!("Error: {}", e.message()),
                );
                self.waiting.insert(
                    container.name.clone(),
                    ("CreateContainerError".into(), e.message()),
                );
                return Ok(());
            }
        };
        self.event(
            false,
            "Created",
            "Creating",
            format!("Created container {}", container.name),
        );
        let started = self
            .shared
            .cri
            .runtime
            .clone()
            .start_container(api::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .call("StartContainer");
        if let Err(e) = started {
            self.event(
                true,
                "Failed",
                "Starting",
                format!("Error: {}", e.message()),
            );
            self.waiting.insert(
                container.name.clone(),
                ("RunContainerError".into(), e.message()),
            );
            return Ok(());
        }
        tracing::info!(pod = %self.name(), namespace = %self.namespace(), container = %container.name, attempt, id = %id, "started container");
        self.event(
            false,
            "Started",
            "Starting",
            format!("Started container {}", container.name),
        );
        self.waiting.remove(&container.name);
        self.trackers.remove(&container.name);
        self.remove_old_containers(&container.name, attempt).await;
        // postStart runs before the pod moves on (kubelet blocks the same way); a failed
        // hook kills the container, and the restart policy decides what follows.
        if let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            && let Err(message) = self.run_hook(hook, container, &id, POST_START_LIMIT).await
        {
            self.event(
                true,
                "FailedPostStartHook",
                "Starting",
                format!("PostStartHook failed: {message}"),
            );
            if let Err(e) = self.kill(container, &id, None).await {
                tracing::warn!(pod = %self.name(), container = %container.name, error = %e, "killing after a failed postStart hook");
            }
        }
        Ok(())
    }

    /// Keeps the newest dead container of a name (for lastState and previous logs), removes
    /// older ones, as kubelet's container garbage collection does.
    async fn remove_old_containers(&mut self, name: &str, attempt: u32) {
        let Ok(all) = self.shared.cri.pod_containers(&self.uid).await else {
            return;
        };
        for c in all {
            let same = c.labels.get(spec::CONTAINER_NAME).map(String::as_str) == Some(name);
            let old = c.metadata.as_ref().is_some_and(|m| m.attempt + 1 < attempt);
            if same
                && old
                && c.state != api::ContainerState::ContainerRunning as i32
                && self.shared.cri.remove_container(&c.id).await.is_ok()
            {
                self.messages.remove(&c.id);
            }
        }
    }

    /// Makes the image present per imagePullPolicy; `Err((reason, message))` holds the
    /// container back.
    async fn ensure_image(&mut self, container: &Container) -> Result<(), (String, String)> {
        let image = container.image.clone().unwrap_or_default();
        let policy = container.image_pull_policy.clone().unwrap_or_else(|| {
            let tag = image.rsplit('/').next().unwrap_or("");
            if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let cri = self.shared.cri.clone();
        let present = cri.image_status(&image).await.ok().flatten().is_some();
        match policy.as_str() {
            "Never" if !present => {
                return Err((
                    "ErrImageNeverPull".into(),
                    format!("Container image {image:?} is not present with pull policy of Never"),
                ));
            }
            "Never" => return Ok(()),
            "IfNotPresent" if present => {
                self.event(
                    false,
                    "Pulled",
                    "Pulling",
                    format!("Container image {image:?} already present on machine"),
                );
                return Ok(());
            }
            _ => {}
        }
        let key = format!("image:{}", container.name);
        if let Some(entry) = self.backoff.get(&key)
            && entry.updated.elapsed() < entry.delay
        {
            // The last pull error stays visible while backing off, as kubelet shows it.
            return Err((
                "ImagePullBackOff".into(),
                format!(
                    "Back-off pulling image {image:?}: ErrImagePull: {}",
                    entry.last_error
                ),
            ));
        }
        self.event(
            false,
            "Pulling",
            "Pulling",
            format!("Pulling image {image:?}"),
        );
        let started = Instant::now();
        match self.pull(&image).await {
            Ok(_) => {
                self.backoff.remove(&key);
                self.event(
                    false,
                    "Pulled",
                    "Pulling",
                    format!(
                        "Successfully pulled image {image:?} in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(())
            }
            Err(e) => {
                let config = &self.shared.config;
                let delay = self.backoff.get(&key).map_or(config.backoff_initial, |b| {
                    (b.delay * 2).min(config.backoff_max)
                });
                let message = format!("failed to pull image {image:?}: {}", e.message());
                self.backoff.insert(
                    key,
                    Backoff {
                        delay,
                        updated: Instant::now(),
                        last_error: message.clone(),
                    },
                );
                self.event(
                    true,
                    "Failed",
                    "Pulling",
                    format!("Failed to pull image {image:?}: {}", e.message()),
                );
                Err(("ErrImagePull".into(), message))
            }
        }
    }

    /// Pulls with each matching imagePullSecret credential in turn (anonymously when none
    /// matches), as kubelet does; the last failure is the answer.
    async fn pull(&self, image: &str) -> std::result::Result<String, crate::cri::Error> {
        let secrets = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        let credentials = if secrets.is_empty() {
            Vec::new()
        } else {
            super::pull_secrets::credentials(&self.shared.client, self.namespace(), &secrets, image)
                .await
        };
        if credentials.is_empty() {
            return self.shared.cri.pull_image(image, None).await;
        }
        let mut last = None;
        for auth in credentials {
            match self.shared.cri.pull_image(image, Some(auth)).await {
                Ok(reference) => return Ok(reference),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one credential was tried"))
    }

    async fn container_config(
        &self,
        container: &Container,
        attempt: u32,
        pod_ip: &str,
    ) -> Result<api::ContainerConfig> {
        let ctx = self.context(pod_ip);
        let env = super::env::container_env(&ctx, container).await?;
        let defined: std::collections::BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let spec = self.pod.spec.clone().unwrap_or_default();
        let volumes_list = spec.volumes.clone().unwrap_or_default();
        let mut mounts = volumes::container_mounts(
            &self.pod_dir,
            &volumes_list,
            container.volume_mounts.as_deref().unwrap_or_default(),
            &defined,
        )?;
        if !self.host_network() && !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            mounts.push(api::Mount {
                container_path: "/etc/hosts".into(),
                host_path: self.pod_dir.join("etc-hosts").display().to_string(),
                ..Default::default()
            });
        }
        let message_dir = self.pod_dir.join("containers").join(&container.name);
        std::fs::create_dir_all(&message_dir).map_err(|source| Error::Io {
            path: message_dir.clone(),
            source,
        })?;
        let message_file = message_dir.join(format!(
            "{attempt}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::write(&message_file, b"")
            .and_then(|()| {
                std::fs::set_permissions(
                    &message_file,
                    std::os::unix::fs::PermissionsExt::from_mode(0o666),
                )
            })
            .map_err(|source| Error::Io {
                path: message_file.clone(),
                source,
            })?;
        spec::container_config(
            container,
            &ContainerInputs {
                pod: &self.pod,
                node_name: &self.shared.config.node_name,
                attempt,
                env,
                mounts,
                termination_message_host_path: &message_file,
                node_memory_bytes: self.shared.facts.memory_bytes,
            },
        )
    }

    fn sandbox_config(&self, attempt: u32) -> api::PodSandboxConfig {
        spec::sandbox_config(
            &self.pod,
            &SandboxInputs {
                node_name: &self.shared.config.node_name,
                attempt,
                log_directory: self.log_dir.clone(),
                dns: self.dns_config(),
            },
        )
    }

    /// The pod's resolv.conf, per dnsPolicy: the cluster DNS with the search path of
    /// the namespace, or the node's own resolver.
    fn dns_config(&self) -> api::DnsConfig {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let config = &self.shared.config;
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let mut dns = api::DnsConfig::default();
        let cluster = matches!(policy, "ClusterFirst" | "ClusterFirstWithHostNet")
            && !config.cluster_dns.is_empty();
        if cluster {
            let domain = &config.cluster_domain;
            dns.servers = config.cluster_dns.clone();
            dns.searches = vec![
                format!("{}.svc.{domain}", self.namespace()),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            dns.options = vec!["ndots:5".into()];
        } else if policy != "None" {
            let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            for line in resolv.lines() {
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("nameserver") => dns.servers.extend(words.next().map(str::to_owned)),
                    Some("search") => dns.searches.extend(words.map(str::to_owned)),
                    Some("options") => dns.options.extend(words.map(str::to_owned)),
                    _ => {}
                }
            }
        }
        if let Some(extra) = spec.dns_config {
            dns.servers.extend(extra.nameservers.unwrap_or_default());
            dns.searches.extend(extra.searches.unwrap_or_default());
            for option in extra.options.unwrap_or_default() {
                let name = option.name.unwrap_or_default();
                dns.options.push(match option.value {
                    Some(v) => format!("{name}:{v}"),
                    None => name,
                });
            }
        }
        dns
    }

    /// Sets up volumes and runs a new sandbox; older sandboxes of the pod are stopped.
    async fn run_sandbox(&mut self, sandboxes: &[api::PodSandbox]) -> Result<api::PodSandbox> {
        let cri = self.shared.cri.clone();
        for old in sandboxes {
            if old.state == api::PodSandboxState::SandboxReady as i32 {
                cri.stop_sandbox(&old.id).await?;
            }
        }
        std::fs::create_dir_all(&self.log_dir).map_err(|source| Error::Io {
            path: self.log_dir.clone(),
            source,
        })?;
        if let Err(e) = self.refresh_volumes("").await {
            let message = e.to_string();
            let note = format!("MountVolume.SetUp failed: {message}");
            self.event(true, "FailedMount", "Mounting", note);
            for c in self.pod.spec.iter().flat_map(|s| s.containers.iter()) {
                self.waiting.insert(
                    c.name.clone(),
                    (
                        "ContainerCreating".into(),
                        format!("MountVolume.SetUp failed: {message}"),
                    ),
                );
            }
            return Err(e);
        }
        let attempt = sandboxes
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        let config = self.sandbox_config(attempt);
        let id = cri
            .runtime
            .clone()
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .call("RunPodSandbox")?
            .pod_sandbox_id;
        tracing::info!(pod = %self.name(), namespace = %self.namespace(), sandbox = %id, "started pod sandbox");
        self.volumes_refreshed = None;
        cri.sandboxes(&[(spec::POD_UID, &self.uid)])
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::config("the new sandbox is not listed"))
    }

    /// Sets up volumes on first use; refreshes API-backed contents now and then and
    /// before projected tokens expire.
    async fn refresh_volumes(&mut self, pod_ip: &str) -> Result<()> {
        let due = self
            .volumes_refreshed
            .is_none_or(|t| t.elapsed() >= VOLUME_REFRESH)
            || self
                .token_renew_at
                .is_some_and(|t| jiff::Timestamp::now() >= t);
        if !due {
            return Ok(());
        }
        let ctx = self.context(pod_ip);
        let renew = volumes::set_up(&ctx, &self.pod_dir).await?;
        self.token_renew_at = renew;
        self.volumes_refreshed = Some(Instant::now());
        Ok(())
    }

    /// The pod's /etc/hosts, as kubelet writes it.
    fn write_etc_hosts(&self, pod_ip: &str) -> Result<()> {
        if self.host_network() {
            return Ok(());
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        let hostname = spec
            .hostname
            .clone()
            .unwrap_or_else(|| self.name().to_owned());
        let mut hosts = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        if !pod_ip.is_empty() {
            match &spec.subdomain {
                Some(sub) if !sub.is_empty() => hosts.push_str(&format!(
                    "{pod_ip}\t{hostname}.{sub}.{}.svc.{}\t{hostname}\n",
                    self.namespace(),
                    self.shared.config.cluster_domain
                )),
                _ => hosts.push_str(&format!("{pod_ip}\t{hostname}\n")),
            }
        }
        let aliases = spec.host_aliases.unwrap_or_default();
        if !aliases.is_empty() {
            hosts.push_str("\n# Entries added by HostAliases.\n");
            for alias in aliases {
                hosts.push_str(&format!(
                    "{}\t{}\n",
                    alias.ip,
                    alias.hostnames.unwrap_or_default().join("\t")
                ));
            }
        }
        let path = self.pod_dir.join("etc-hosts");
        if std::fs::read_to_string(&path).is_ok_and(|h| h == hosts) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.pod_dir)
            .and_then(|()| std::fs::write(&path, hosts))
            .map_err(|source| Error::Io { path, source })
    }

    /// What the runtime has for each of the pod's containers.
    async fn observe(
        &mut self,
        sandbox: Option<&api::PodSandbox>,
        pod_ip: Option<&str>,
    ) -> Result<PodView> {
        let cri = self.shared.cri.clone();
        let all = cri.pod_containers(&self.uid).await?;
        let (init_containers, containers) = self.spec_containers();
        let mut view = PodView {
            sandbox_ready: sandbox.is_some() && !self.sandbox_stopped,
            pod_ip: pod_ip
                .filter(|ip| !ip.is_empty())
                .map(str::to_owned)
                .or_else(|| self.pod.status.as_ref().and_then(|s| s.pod_ip.clone())),
            host_ip: self.shared.facts.host_ip.clone(),
            runtime: self.shared.facts.runtime_name.clone(),
            terminal_phase: self.terminal,
            ..Default::default()
        };
        for (list, out) in [
            (&init_containers, &mut view.init),
            (&containers, &mut view.containers),
        ] {
            for container in list.iter() {
                let mut of_name: Vec<&api::Container> = all
                    .iter()
                    .filter(|c| c.labels.get(spec::CONTAINER_NAME) == Some(&container.name))
                    .collect();
                of_name.sort_by_key(|c| {
                    (
                        std::cmp::Reverse(c.metadata.as_ref().map_or(0, |m| m.attempt)),
                        std::cmp::Reverse(c.created_at),
                    )
                });
                let latest = match of_name.first() {
                    Some(c) => Some(cri.container_status(&c.id).await?),
                    None => None,
                };
                let previous = match of_name.get(1) {
                    Some(c) => Some(cri.container_status(&c.id).await?),
                    None => None,
                };
                let mut item = ContainerView {
                    name: container.name.clone(),
                    image: container.image.clone().unwrap_or_default(),
                    waiting: self.waiting.get(&container.name).cloned(),
                    ..Default::default()
                };
                for c in latest.iter().chain(previous.iter()) {
                    if c.state == api::ContainerState::ContainerExited as i32 {
                        let message = match self.messages.get(&c.id) {
                            Some(m) => m.clone(),
                            None => {
                                let m = termination_message(c, &self.log_dir);
                                self.messages.insert(c.id.clone(), m.clone());
                                m
                            }
                        };
                        item.messages.push((c.id.clone(), message));
                    }
                }
                if let Some(l) = &latest
                    && l.state == api::ContainerState::ContainerRunning as i32
                {
                    item.waiting = None;
                    match self.trackers.get(&container.name) {
                        Some(t) if t.container_id == l.id => {
                            item.ready = t.ready;
                            item.started = t.started;
                        }
                        _ => {
                            let t = Tracker::new(&l.id, container);
                            item.ready = t.ready;
                            item.started = t.started;
                        }
                    }
                }
                item.latest = latest;
                item.previous = previous;
                out.push(item);
            }
        }
        Ok(view)
    }

    /// Writes the status subresource when it changed.
    async fn post_status(&mut self, view: &PodView) -> Result<()> {
        let status = status::pod_status(&self.pod, view);
        if self.last_status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), self.namespace());
        let patched = api
            .patch_status(
                self.name(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await;
        tracing::debug!(pod = %self.name(), ok = patched.is_ok(), "posted status");
        match patched {
            Ok(pod) => {
                self.pod = Arc::new(pod);
                self.last_status = Some(status);
                Ok(())
            }
            // Deleted meanwhile: the watch will say so.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::Api(e)),
        }
    }

    /// Stops every container of the pod with the grace period, then the sandbox, and
    /// removes the runtime objects and the pod's directory. `gone` says the pod has left
    /// the API already (force-deleted). While containers stop, a newer version of the pod
    /// with a shorter `deletionGracePeriodSeconds` (a second, shorter delete) or the pod's
    /// removal cuts the wait short, as kubelet's pod worker cancels a termination under
    /// way when the grace period shrinks.
    async fn terminate(&mut self, updates: &mut watch::Receiver<Update>, gone: bool) {
        let mut grace = self.grace_period();
        if gone {
            grace = grace.min(FORCED_GRACE);
        }
        let mut deadline = Instant::now() + Duration::from_secs(grace as u64);
        let hooks_run = std::sync::Mutex::new(HashSet::new());
        loop {
            let stopping = self.stop_containers(deadline, &hooks_run);
            let shorter = tokio::select! {
                () = stopping => break,
                shorter = shorter_grace(updates, grace) => shorter,
            };
            // The stops under way are dropped (their CRI calls cancelled); the next pass
            // asks again with the earlier deadline, and containerd sends the SIGKILL
            // when that one passes.
            let (new_grace, pod) = shorter;
            tracing::info!(pod = %self.name(), namespace = %self.namespace(), from = grace, to = new_grace, "grace period shortened");
            grace = new_grace;
            deadline = deadline.min(Instant::now() + Duration::from_secs(grace as u64));
            if let Some(pod) = pod {
                self.pod = pod;
            }
        }
        remove_pod(&self.shared, &self.uid).await;
        tracing::info!(pod = %self.name(), namespace = %self.namespace(), "pod terminated");
    }

    /// One pass at stopping the running containers by `deadline`: preStop hooks (once per
    /// container, recorded in `hooks_run`), then SIGTERM and SIGKILL when the deadline
    /// passes.
    async fn stop_containers(
        &self,
        deadline: Instant,
        hooks_run: &std::sync::Mutex<HashSet<String>>,
    ) {
        let cri = self.shared.cri.clone();
        let containers = cri.pod_containers(&self.uid).await.unwrap_or_default();
        let (init_containers, spec_containers) = self.spec_containers();
        let stops = containers
            .iter()
            .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
            .map(|c| {
                let name = c
                    .labels
                    .get(spec::CONTAINER_NAME)
                    .cloned()
                    .unwrap_or_default();
                let spec_container = spec_containers
                    .iter()
                    .chain(init_containers.iter())
                    .find(|s| s.name == name)
                    .cloned();
                let id = c.id.clone();
                let first_pass = hooks_run
                    .lock()
                    .map(|mut run| run.insert(id.clone()))
                    .unwrap_or(false);
                async move {
                    if first_pass {
                        self.event(
                            false,
                            "Killing",
                            "Killing",
                            format!("Stopping container {name}"),
                        );
                        if let Some(container) = spec_container {
                            self.run_pre_stop(&container, &id, seconds_until(deadline))
                                .await;
                        }
                    }
                    let timeout = seconds_until(deadline);
                    if let Err(e) = self.shared.cri.stop_container(&id, timeout).await {
                        tracing::warn!(container = %id, error = %e, "stopping container");
                    }
                }
            });
        futures::future::join_all(stops).await;
    }

    /// Deletes the pod object now that its containers are stopped (grace period 0, only
    /// this incarnation of the pod), as kubelet does.
    async fn finish_deletion(&self) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), self.namespace());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(self.name(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(Error::Api(e)),
        }
    }
}

/// The grace period a probe asks for when it kills (probe-level
/// terminationGracePeriodSeconds), if any.
fn probe_grace(container: &Container) -> Option<i64> {
    [&container.liveness_probe, &container.startup_probe]
        .into_iter()
        .flatten()
        .find_map(|p| p.termination_grace_period_seconds)
}

/// Whole seconds left until `deadline`, rounded up (CRI timeouts are seconds).
fn seconds_until(deadline: Instant) -> i64 {
    let left = deadline.saturating_duration_since(Instant::now());
    left.as_millis().div_ceil(1000) as i64
}

/// Waits for an update that shortens a termination's grace period below `grace`: a
/// version of the pod with a shorter `deletionGracePeriodSeconds`, or its removal from
/// the API. Returns the new period and the newer pod, if there is one.
async fn shorter_grace(
    updates: &mut watch::Receiver<Update>,
    grace: i64,
) -> (i64, Option<Arc<Pod>>) {
    loop {
        if updates.changed().await.is_err() {
            // The agent is shutting down: let the stops under way finish.
            return std::future::pending().await;
        }
        let shorter = match &*updates.borrow_and_update() {
            Update::Gone => (FORCED_GRACE < grace).then_some((FORCED_GRACE, None)),
            Update::Pod(pod) => pod
                .metadata
                .deletion_grace_period_seconds
                .map(|g| g.max(0))
                .filter(|g| *g < grace)
                .map(|g| (g, Some(pod.clone()))),
        };
        if let Some(shorter) = shorter {
            return shorter;
        }
    }
}

/// Stops and removes every sandbox of a pod and removes its directories.
pub async fn remove_pod(shared: &Shared, uid: &str) {
    let cri = &shared.cri;
    match cri.sandboxes(&[(spec::POD_UID, uid)]).await {
        Ok(sandboxes) => {
            for sandbox in sandboxes {
                if let Err(e) = cri.stop_sandbox(&sandbox.id).await {
                    tracing::warn!(sandbox = %sandbox.id, error = %e, "stopping sandbox");
                }
                if let Err(e) = cri.remove_sandbox(&sandbox.id).await {
                    tracing::warn!(sandbox = %sandbox.id, error = %e, "removing sandbox");
                }
            }
        }
        Err(e) => tracing::warn!(%uid, error = %e, "listing sandboxes"),
    }
    let pods = shared.config.data_dir.join("pods");
    volumes::tear_down(&volumes::pod_dir(&shared.config.data_dir, uid));
    if let Ok(entries) = std::fs::read_dir(&pods) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(&format!("_{uid}")) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The termination message of an exited container: the file it wrote, or with
/// FallbackToLogsOnError and a failure, the end of its log.
fn termination_message(status: &api::ContainerStatus, log_dir: &Path) -> String {
    const MAX_BYTES: usize = 4096;
    let from_file = status
        .annotations
        .get(spec::TERMINATION_MESSAGE_HOST_PATH)
        .and_then(|p| std::fs::read(p).ok())
        .map(|mut b| {
            b.truncate(MAX_BYTES);
            String::from_utf8_lossy(&b).into_owned()
        })
        .unwrap_or_default();
    let fallback = status
        .annotations
        .get(spec::TERMINATION_MESSAGE_POLICY)
        .is_some_and(|p| p == "FallbackToLogsOnError");
    if !from_file.is_empty() || !fallback || status.exit_code == 0 {
        return from_file;
    }
    let path = if status.log_path.starts_with('/') {
        PathBuf::from(&status.log_path)
    } else {
        log_dir.join(&status.log_path)
    };
    log_tail(&path, 80, 2048)
}

/// The last `lines` lines (at most `max_bytes`) of a CRI log file's contents: each line
/// is `<time> <stream> <P|F> <content>`; partial lines are joined.
pub fn log_tail(path: &Path, lines: usize, max_bytes: usize) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    let mut partial = String::new();
    for record in raw.lines().filter_map(crate::streaming::logs::parse_record) {
        partial.push_str(record.content);
        if !record.partial {
            out.push(std::mem::take(&mut partial));
        }
    }
    let start = out.len().saturating_sub(lines);
    let mut text = out[start..].join("\n");
    if text.len() > max_bytes {
        let mut cut = text.len() - max_bytes;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = text[cut..].to_owned();
    }
    text
}
