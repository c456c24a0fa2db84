//! The CRI v1 client: the runtime and image services of a container runtime (containerd)
//! over gRPC on a Unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1 as api;

/// Largest gRPC message accepted: lists of many containers are bigger than tonic's 4 MiB
/// default (kubelet allows 16 MiB).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Failures talking to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be dialled.
    #[error("connecting to the CRI socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// A call failed.
    #[error("CRI {call}: {status}")]
    Call {
        call: &'static str,
        #[source]
        status: Box<tonic::Status>,
    },
}

impl Error {
    /// The gRPC code of a failed call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Call { status, .. } => Some(status.code()),
            Error::Connect { .. } => None,
        }
    }

    /// The runtime's message of a failed call.
    pub fn message(&self) -> String {
        match self {
            Error::Call { status, .. } => status.message().to_owned(),
            other => other.to_string(),
        }
    }
}

/// Turns a tonic result into ours, naming the call.
pub trait CallExt<T> {
    /// Names the failed call.
    fn call(self, call: &'static str) -> Result<T, Error>;
}

impl<T> CallExt<T> for Result<tonic::Response<T>, tonic::Status> {
    fn call(self, call: &'static str) -> Result<T, Error> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| Error::Call {
                call,
                status: Box::new(status),
            })
    }
}

/// A connection to a CRI runtime. Cheap to clone: the clients share one HTTP/2 channel.
#[derive(Clone, Debug)]
pub struct Cri {
    /// The runtime service (sandboxes, containers, exec).
    pub runtime: RuntimeServiceClient<Channel>,
    /// The image service (pull, status, list).
    pub images: ImageServiceClient<Channel>,
    socket: PathBuf,
}

impl Cri {
    /// Dials the runtime's socket.
    pub async fn connect(socket: &Path) -> Result<Self, Error> {
        let path = socket.to_owned();
        // The URI is ignored: every connection goes to the socket.
        let channel = Endpoint::from_static("http://cri.local")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| Error::Connect {
                path: socket.to_owned(),
                source,
            })?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            images: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
            socket: socket.to_owned(),
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime's name and version (`containerd`, `1.6.20`).
    pub async fn version(&self) -> Result<api::VersionResponse, Error> {
        self.runtime
            .clone()
            .version(api::VersionRequest {
                version: "v1".into(),
            })
            .await
            .call("Version")
    }

    /// The runtime's conditions (RuntimeReady, NetworkReady).
    pub async fn status(&self) -> Result<api::RuntimeStatus, Error> {
        Ok(self
            .runtime
            .clone()
            .status(api::StatusRequest { verbose: false })
            .await
            .call("Status")?
            .status
            .unwrap_or_default())
    }

    /// Tells the runtime the node's pod CIDRs (comma-separated), as kubelet does once its
    /// Node has them: a runtime with a CNI config template writes the pod network from it.
    pub async fn update_runtime_config(&self, pod_cidrs: &str) -> Result<(), Error> {
        self.runtime
            .clone()
            .update_runtime_config(api::UpdateRuntimeConfigRequest {
                runtime_config: Some(api::RuntimeConfig {
                    network_config: Some(api::NetworkConfig {
                        pod_cidr: pod_cidrs.to_owned(),
                    }),
                }),
            })
            .await
            .call("UpdateRuntimeConfig")?;
        Ok(())
    }

    /// Every sandbox carrying all of `labels`.
    pub async fn sandboxes(&self, labels: &[(&str, &str)]) -> Result<Vec<api::PodSandbox>, Error> {
        let filter = api::PodSandboxFilter {
            label_selector: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        };
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .call("ListPodSandbox")?
            .items)
    }

    /// Every container of a sandbox.
    pub async fn containers(&self, sandbox_id: &str) -> Result<Vec<api::Container>, Error> {
        let filter = api::ContainerFilter {
            pod_sandbox_id: sandbox_id.to_owned(),
            ..Default::default()
        };
        Ok(self
            .runtime
            .clone()
            .list_containers(api::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .call("ListContainers")?
            .containers)
    }

    /// Every container of a pod, in all its sandboxes.
    pub async fn pod_containers(&self, pod_uid: &str) -> Result<Vec<api::Container>, Error> {
        let filter = api::ContainerFilter {
            label_selector: [(crate::pods::spec::POD_UID.to_owned(), pod_uid.to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        Ok(self
            .runtime
            .clone()
            .list_containers(api::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .call("ListContainers")?
            .containers)
    }

    /// A container's full status.
    pub async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, Error> {
        Ok(self
            .runtime
            .clone()
            .container_status(api::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await
            .call("ContainerStatus")?
            .status
            .unwrap_or_default())
    }

    /// A sandbox's status (network, state).
    pub async fn sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, Error> {
        Ok(self
            .runtime
            .clone()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: false,
            })
            .await
            .call("PodSandboxStatus")?
            .status
            .unwrap_or_default())
    }

    /// Stops a container, giving it `timeout_seconds` after SIGTERM before SIGKILL.
    pub async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), Error> {
        self.runtime
            .clone()
            .stop_container(api::StopContainerRequest {
                container_id: id.to_owned(),
                timeout: timeout_seconds,
            })
            .await
            .call("StopContainer")
            .map(drop)
    }

    /// Removes a stopped container.
    pub async fn remove_container(&self, id: &str) -> Result<(), Error> {
        self.runtime
            .clone()
            .remove_container(api::RemoveContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .call("RemoveContainer")
            .map(drop)
    }

    /// Stops a sandbox and every container in it, and tears its network down.
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), Error> {
        self.runtime
            .clone()
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .call("StopPodSandbox")
            .map(drop)
    }

    /// Removes a stopped sandbox and its containers.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), Error> {
        self.runtime
            .clone()
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .call("RemovePodSandbox")
            .map(drop)
    }

    /// Runs a command in a container and waits for it (at most `timeout_seconds`, 0 for no
    /// limit).
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> Result<api::ExecSyncResponse, Error> {
        self.runtime
            .clone()
            .exec_sync(api::ExecSyncRequest {
                container_id: container_id.to_owned(),
                cmd,
                timeout: timeout_seconds,
            })
            .await
            .call("ExecSync")
    }

    /// The image's status, or `None` when the runtime does not have it.
    pub async fn image_status(&self, image: &str) -> Result<Option<api::Image>, Error> {
        Ok(self
            .images
            .clone()
            .image_status(api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .call("ImageStatus")?
            .image)
    }

    /// Pulls an image (with registry credentials, if given); returns its reference.
    pub async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
    ) -> Result<String, Error> {
        Ok(self
            .images
            .clone()
            .pull_image(api::PullImageRequest {
                image: Some(api::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                auth,
                ..Default::default()
            })
            .await
            .call("PullImage")?
            .image_ref)
    }
}
