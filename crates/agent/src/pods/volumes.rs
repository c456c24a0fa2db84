//! Pod volumes on the node's disk, laid out as kubelet does
//! (`pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`): emptyDir (a directory, or tmpfs
//! for medium Memory), hostPath, and the API-backed volumes (configMap, secret,
//! downwardAPI, projected with service-account tokens) written with kubelet's atomic
//! writer layout, so a refresh swaps every file at once, and persistentVolumeClaim
//! (claim → bound volume → its `local` or `hostPath` directory on this node).
//!
//! A claim's volume appears in the pod directory as a symlink to the volume's directory
//! (the runtime resolves it when mounting), so removing the pod directory never touches
//! the data. Volumes of the local-path provisioner live under [`storage_dir`], which the
//! Node publishes in [`STORAGE_DIR_ANNOTATION`]; their directory is created (mode 0777,
//! as local-path does) when a pod first uses it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Secret,
    ServiceAccount, Volume, VolumeMount,
};
use kube::Api;
use kube::api::PostParams;

use super::{Error, PodContext, Result};
use crate::cri::api;

/// One file of an API-backed volume: contents and mode.
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// The Node annotation with the node's storage directory, which the local-path
/// provisioner reads (the controllers' `local_path::STORAGE_DIR_ANNOTATION`).
pub const STORAGE_DIR_ANNOTATION: &str = "kumo.dev/storage-dir";
/// The provisioner whose volumes the node creates on first use.
const LOCAL_PATH_PROVISIONER: &str = "kumo.dev/local-path";

/// Where the local-path provisioner's volumes live on this node: `DATA/storage`.
pub fn storage_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("storage")
}

/// The pod's directory: `DATA/pods/<uid>`.
pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("pods").join(uid)
}

/// Where a volume lives on the host.
pub fn volume_path(pod_dir: &Path, volume: &Volume) -> PathBuf {
    if let Some(host) = &volume.host_path {
        return PathBuf::from(&host.path);
    }
    let plugin = if volume.empty_dir.is_some() {
        "empty-dir"
    } else if volume.config_map.is_some() {
        "configmap"
    } else if volume.secret.is_some() {
        "secret"
    } else if volume.downward_api.is_some() {
        "downward-api"
    } else if volume.projected.is_some() {
        "projected"
    } else if volume.persistent_volume_claim.is_some() {
        "pvc"
    } else {
        "unsupported"
    };
    pod_dir
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(&volume.name)
}

/// Sets up every volume of the pod (idempotent), refreshing API-backed contents.
/// Returns the earliest time a projected token should be renewed, if any.
pub async fn set_up(ctx: &PodContext<'_>, pod_dir: &Path) -> Result<Option<jiff::Timestamp>> {
    let spec = ctx.pod.spec.as_ref();
    let mut renew_at: Option<jiff::Timestamp> = None;
    for volume in spec.into_iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = volume_path(pod_dir, volume);
        if let Some(host) = &volume.host_path {
            host_path(&path, host.type_.as_deref().unwrap_or(""))?;
        } else if let Some(empty) = &volume.empty_dir {
            create_dir(&path, 0o777)?;
            if empty.medium.as_deref() == Some("Memory") && !is_mount_point(&path) {
                mount_tmpfs(&path, empty.size_limit.as_ref().map(|q| q.0.as_str()))?;
            }
        } else if let Some(source) = &volume.config_map {
            let files = config_map_files(
                ctx,
                &source.name,
                source.items.as_deref(),
                source.optional.unwrap_or(false),
                source.default_mode.unwrap_or(0o644) as u32,
            )
            .await?;
            atomic_write(&path, &files)?;
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let files = secret_files(
                ctx,
                &name,
                source.items.as_deref(),
                source.optional.unwrap_or(false),
                source.default_mode.unwrap_or(0o644) as u32,
            )
            .await?;
            atomic_write(&path, &files)?;
        } else if let Some(source) = &volume.downward_api {
            let files = downward_files(
                ctx,
                source.items.as_deref().unwrap_or_default(),
                source.default_mode.unwrap_or(0o644) as u32,
            )?;
            atomic_write(&path, &files)?;
        } else if let Some(source) = &volume.projected {
            let default_mode = source.default_mode.unwrap_or(0o644) as u32;
            let mut files = Files::new();
            for projection in source.sources.iter().flatten() {
                if let Some(cm) = &projection.config_map {
                    files.extend(
                        config_map_files(
                            ctx,
                            &cm.name,
                            cm.items.as_deref(),
                            cm.optional.unwrap_or(false),
                            default_mode,
                        )
                        .await?,
                    );
                }
                if let Some(secret) = &projection.secret {
                    files.extend(
                        secret_files(
                            ctx,
                            &secret.name,
                            secret.items.as_deref(),
                            secret.optional.unwrap_or(false),
                            default_mode,
                        )
                        .await?,
                    );
                }
                if let Some(downward) = &projection.downward_api {
                    files.extend(downward_files(
                        ctx,
                        downward.items.as_deref().unwrap_or_default(),
                        default_mode,
                    )?);
                }
                if let Some(token) = &projection.service_account_token {
                    match service_account_token(ctx, token).await {
                        Ok((jwt, expires)) => {
                            files.insert(token.path.clone(), (jwt.into_bytes(), default_mode));
                            renew_at = Some(renew_at.map_or(expires, |r| r.min(expires)));
                        }
                        Err(e) => {
                            // The TokenRequest API may not be served yet: the pod runs
                            // without the token rather than not at all.
                            tracing::warn!(
                                pod = ctx.pod.metadata.name.as_deref().unwrap_or(""),
                                volume = %volume.name,
                                error = %e,
                                "service account token unavailable",
                            );
                        }
                    }
                }
            }
            atomic_write(&path, &files)?;
        } else if let Some(source) = &volume.persistent_volume_claim {
            let target = claimed_volume_dir(ctx, &source.claim_name).await?;
            link(&path, &target)?;
        } else {
            return Err(Error::config(format!(
                "volume {:?}: unsupported volume type",
                volume.name
            )));
        }
    }
    Ok(renew_at)
}

/// Unmounts the pod's tmpfs volumes and removes its directory.
pub fn tear_down(pod_dir: &Path) {
    for mount in mounts_under(pod_dir).into_iter().rev() {
        if let Err(e) = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(path = %mount.display(), error = %e, "unmounting volume");
        }
    }
    if let Err(e) = std::fs::remove_dir_all(pod_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %pod_dir.display(), error = %e, "removing pod directory");
    }
}

/// The CRI mounts of a container's volumeMounts (subPath and subPathExpr included).
pub fn container_mounts(
    pod_dir: &Path,
    volumes: &[Volume],
    mounts: &[VolumeMount],
    env: &BTreeMap<&str, &str>,
) -> Result<Vec<api::Mount>> {
    let mut out = Vec::new();
    for mount in mounts {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| Error::config(format!("volume {:?} not found", mount.name)))?;
        let mut host = volume_path(pod_dir, volume);
        let sub_path = match (&mount.sub_path, &mount.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => Some(p.clone()),
            (_, Some(expr)) if !expr.is_empty() => Some(super::env::expand(expr, env)),
            _ => None,
        };
        if let Some(sub) = sub_path {
            if Path::new(&sub).is_absolute() || sub.split('/').any(|c| c == "..") {
                return Err(Error::config(format!(
                    "subPath {sub:?} must be a relative path without '..'"
                )));
            }
            host = host.join(&sub);
            // A missing subPath becomes a directory, as kubelet does.
            if std::fs::symlink_metadata(&host).is_err() {
                create_dir(&host, 0o777)?;
            }
        }
        let propagation = match mount.mount_propagation.as_deref() {
            Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
            _ => api::MountPropagation::PropagationPrivate,
        };
        // A claim mounted readOnly is read-only in every container.
        let claim_read_only = volume
            .persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.read_only == Some(true));
        out.push(api::Mount {
            container_path: mount.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: mount.read_only.unwrap_or(false) || claim_read_only,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

/// The directory of the volume bound to the pod's claim `name`, created when the
/// local-path provisioner made the volume. An unbound claim is an error the pod waits on.
async fn claimed_volume_dir(ctx: &PodContext<'_>, name: &str) -> Result<PathBuf> {
    let namespace = ctx.pod.metadata.namespace.as_deref().unwrap_or("default");
    let claim = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::Api)?
        .ok_or_else(|| {
            Error::config(format!(
                "error processing PVC {namespace}/{name}: persistentvolumeclaims \"{name}\" not found"
            ))
        })?;
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty());
    let Some(volume_name) = volume_name.filter(|_| bound) else {
        return Err(Error::config(format!(
            "error processing PVC {namespace}/{name}: PVC is not bound"
        )));
    };
    let volume = Api::<PersistentVolume>::all(ctx.client.clone())
        .get_opt(&volume_name)
        .await
        .map_err(Error::Api)?
        .ok_or_else(|| {
            Error::config(format!(
                "error processing PVC {namespace}/{name}: persistentvolumes \"{volume_name}\" not found"
            ))
        })?;
    let spec = volume.spec.clone().unwrap_or_default();
    let claim_uid = claim.metadata.uid.as_deref();
    if spec.claim_ref.as_ref().and_then(|r| r.uid.as_deref()) != claim_uid {
        return Err(Error::config(format!(
            "error processing PVC {namespace}/{name}: volume {volume_name} is bound to another claim"
        )));
    }
    let provisioned_by_local_path = volume
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
        .is_some_and(|p| p == LOCAL_PATH_PROVISIONER);
    let path = if let Some(local) = &spec.local {
        PathBuf::from(&local.path)
    } else if let Some(host) = &spec.host_path {
        let path = PathBuf::from(&host.path);
        if !provisioned_by_local_path {
            host_path(&path, host.type_.as_deref().unwrap_or(""))?;
        }
        path
    } else {
        return Err(Error::config(format!(
            "volume {volume_name}: only local and hostPath persistent volumes are supported by this node"
        )));
    };
    if provisioned_by_local_path {
        if std::fs::symlink_metadata(&path).is_err() {
            create_dir(&path, 0o777)?;
        }
    } else if !path.exists() {
        return Err(Error::config(format!(
            "volume {volume_name}: path {} does not exist on this node",
            path.display()
        )));
    }
    Ok(path)
}

/// Makes `link` a symlink to `target` (replacing one that points elsewhere).
fn link(link: &Path, target: &Path) -> Result<()> {
    if std::fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(());
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).map_err(io_error(link))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io_error(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error(path))
}

/// hostPath type checks, as kubelet makes them.
fn host_path(path: &Path, kind: &str) -> Result<()> {
    let meta = std::fs::metadata(path);
    let fail = |what: &str| {
        Err(Error::config(format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        )))
    };
    use std::os::unix::fs::FileTypeExt;
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                create_dir(path, 0o755)?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "Directory" => {
            if meta.is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
                }
                std::fs::write(path, b"").map_err(io_error(path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io_error(path))?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "File" => {
            if meta.is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "Socket" => {
            if meta.is_ok_and(|m| m.file_type().is_socket()) {
                Ok(())
            } else {
                fail("a socket")
            }
        }
        "CharDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_char_device()) {
                Ok(())
            } else {
                fail("a character device")
            }
        }
        "BlockDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_block_device()) {
                Ok(())
            } else {
                fail("a block device")
            }
        }
        other => Err(Error::config(format!("unknown hostPath type {other:?}"))),
    }
}

fn mount_tmpfs(path: &Path, size: Option<&str>) -> Result<()> {
    let mut options = String::from("mode=0777");
    if let Some(size) = size
        && let Ok(q) = apimachinery::quantity::parse(size)
    {
        let bytes = q.nanos() / 1_000_000_000;
        if bytes > 0 {
            options.push_str(&format!(",size={bytes}"));
        }
    }
    let options = std::ffi::CString::new(options).expect("mount options have no NUL");
    rustix::mount::mount(
        "tmpfs",
        path,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(options.as_c_str()),
    )
    .map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// Mount points at or under `dir`, shallowest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| p.components().count());
    found.dedup();
    found
}

fn is_mount_point(path: &Path) -> bool {
    mounts_under(path).iter().any(|p| p == path)
}

fn key_files(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    what: &str,
) -> Result<Files> {
    let mut files = Files::new();
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    return Err(Error::config(format!(
                        "{what}: configured to use key {} but it does not exist",
                        item.key
                    )));
                };
                files.insert(
                    item.path.clone(),
                    (value.clone(), item.mode.map_or(default_mode, |m| m as u32)),
                );
            }
        }
        _ => {
            for (k, v) in data {
                files.insert(k, (v, default_mode));
            }
        }
    }
    Ok(files)
}

async fn config_map_files(
    ctx: &PodContext<'_>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: u32,
) -> Result<Files> {
    let namespace = ctx.pod.metadata.namespace.as_deref().unwrap_or("default");
    let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::Api)?;
    let Some(cm) = cm else {
        if optional {
            return Ok(Files::new());
        }
        return Err(Error::config(format!("configmap \"{name}\" not found")));
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    data.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    key_files(data, items, default_mode, &format!("configmap {name}"))
}

async fn secret_files(
    ctx: &PodContext<'_>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: u32,
) -> Result<Files> {
    let namespace = ctx.pod.metadata.namespace.as_deref().unwrap_or("default");
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::Api)?;
    let Some(secret) = secret else {
        if optional {
            return Ok(Files::new());
        }
        return Err(Error::config(format!("secret \"{name}\" not found")));
    };
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    key_files(data, items, default_mode, &format!("secret {name}"))
}

fn downward_files(
    ctx: &PodContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Files> {
    let mut files = Files::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            super::env::field_value(ctx, field)?
        } else if let Some(resource) = &item.resource_field_ref {
            super::env::resource_value(ctx, None, resource)?
        } else {
            String::new()
        };
        files.insert(
            item.path.clone(),
            (
                value.into_bytes(),
                item.mode.map_or(default_mode, |m| m as u32),
            ),
        );
    }
    Ok(files)
}

/// A bound token for the pod's service account through the TokenRequest API.
async fn service_account_token(
    ctx: &PodContext<'_>,
    projection: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> Result<(String, jiff::Timestamp)> {
    let pod = ctx.pod;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let seconds = projection.expiration_seconds.unwrap_or(3600);
    let request = TokenRequest {
        metadata: Default::default(),
        spec: TokenRequestSpec {
            audiences: projection.audience.iter().cloned().collect(),
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        status: None,
    };
    let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace);
    let response: TokenRequest = api
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(Error::Api)?;
    let status = response
        .status
        .ok_or_else(|| Error::config("TokenRequest answered without a status"))?;
    // Renew at 80% of the token's life, as kubelet does.
    let now = jiff::Timestamp::now();
    let life = status.expiration_timestamp.0.as_second() - now.as_second();
    let renew = now
        .checked_add(jiff::SignedDuration::from_secs(life.max(0) * 4 / 5))
        .unwrap_or(now);
    Ok((status.token, renew))
}

/// Writes `files` into `dir` as kubelet's atomic writer does: the files go into a fresh
/// timestamped directory, `..data` is switched to it with one rename, and each top-level
/// name is a symlink through `..data`. Unchanged contents are left alone.
pub fn atomic_write(dir: &Path, files: &Files) -> Result<()> {
    create_dir(dir, 0o755)?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link)
        && same_contents(&dir.join(&current), files)
    {
        return Ok(());
    }
    let stamp = format!(
        "..{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
    );
    let version = dir.join(&stamp);
    create_dir(&version, 0o755)?;
    for (path, (contents, mode)) in files {
        let target = version.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::fs::write(&target, contents).map_err(io_error(&target))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode & 0o7777))
            .map_err(io_error(&target))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(io_error(&tmp))?;
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp, &data_link).map_err(io_error(&data_link))?;
    // Top-level names point through ..data; names no longer present go away.
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_owned))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).map_err(io_error(&link))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !top.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn same_contents(version: &Path, files: &Files) -> bool {
    files.iter().all(|(path, (contents, mode))| {
        let target = version.join(path);
        std::fs::read(&target).is_ok_and(|c| &c == contents)
            && std::fs::metadata(&target)
                .is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode & 0o7777)
    }) && count_files(version) == files.len()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writer_swaps_versions() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        let mut files = Files::new();
        files.insert("a".into(), (b"1".to_vec(), 0o644));
        files.insert("sub/b".into(), (b"2".to_vec(), 0o600));
        atomic_write(&vol, &files).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(vol.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(vol.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(vol.join("..data")).unwrap();
        // Same contents: nothing rewritten.
        atomic_write(&vol, &files).unwrap();
        assert_eq!(std::fs::read_link(vol.join("..data")).unwrap(), first);
        // New contents: a new version, the old one and the dropped key gone.
        files.remove("sub/b");
        files.insert("a".into(), (b"3".to_vec(), 0o644));
        atomic_write(&vol, &files).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "3");
        assert_ne!(std::fs::read_link(vol.join("..data")).unwrap(), first);
        assert!(!vol.join(&first).exists());
        assert!(std::fs::symlink_metadata(vol.join("sub")).is_err());
    }
}
