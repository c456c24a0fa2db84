//! The project's own container images, built as OCI image-layout archives from the host's
//! statically linked busybox (Debian's `busybox-static`), because there is no public registry
//! to pull from: a busybox image, the pause image every pod sandbox runs, and a web image
//! serving a page with busybox httpd.
//!
//! The archives are what `ctr images import` (and `docker load` of OCI layouts) read:
//! `oci-layout`, `index.json` naming the image with the `io.containerd.image.name`
//! annotation, and content-addressed blobs. Layers are uncompressed tars with fixed
//! timestamps and owners, so the same busybox always gives the same digests.

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

/// The busybox image: a shell and the usual tools.
pub const BUSYBOX_IMAGE: &str = "kumo.local/busybox:1";
/// The pause image that holds every pod sandbox's namespaces.
pub const PAUSE_IMAGE: &str = "kumo.local/pause:1";
/// The web image: busybox httpd serving [`WEB_PAGE`] on port 80.
pub const WEB_IMAGE: &str = "kumo.local/web:1";
/// The page the web image serves at `/`.
pub const WEB_PAGE: &str = "<html><body><h1>Hello from kumo</h1></body></html>\n";
/// Where Debian's busybox-static installs busybox.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Failures building an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading busybox failed.
    #[error("reading {path}")]
    ReadBusybox {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Listing busybox's applets failed.
    #[error("listing the applets of {path}")]
    ListApplets {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing a tar stream failed.
    #[error("writing a tar archive")]
    Tar(#[source] std::io::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// An OCI image-layout archive, ready to write to a file or import.
#[derive(Clone, Debug)]
pub struct OciArchive {
    /// The image's full name (`kumo.local/web:1`).
    pub name: String,
    /// The tar bytes.
    pub bytes: Vec<u8>,
}

impl OciArchive {
    /// A file name for the archive: the image name with `/` and `:` made safe.
    pub fn file_name(&self) -> String {
        format!("{}.oci.tar", self.name.replace(['/', ':'], "_"))
    }
}

/// The three built-in images, built from the busybox at `busybox`.
pub fn build_all(busybox: &Path) -> Result<Vec<OciArchive>> {
    let base = base_layer(busybox)?;
    Ok(vec![
        busybox_image(&base)?,
        pause_image(&base)?,
        web_image(&base)?,
    ])
}

/// The busybox image: `sh` by default.
pub fn busybox_image(base: &[u8]) -> Result<OciArchive> {
    archive(
        BUSYBOX_IMAGE,
        &[base],
        json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
    )
}

/// The pause image: busybox `sleep inf` as the sandbox's process (as PID 1 it ignores
/// SIGTERM, and the runtime stops sandboxes with SIGKILL).
pub fn pause_image(base: &[u8]) -> Result<OciArchive> {
    archive(
        PAUSE_IMAGE,
        &[base],
        json!({"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sleep", "inf"]}),
    )
}

/// The web image: the base layer plus a layer with `/var/www/index.html`, served by
/// `httpd -f -p 80`. A shell runs it and exits on SIGTERM: httpd as PID 1 would ignore the
/// signal (the kernel drops signals PID 1 has no handler for), so every delete would wait
/// out the whole grace period.
pub fn web_image(base: &[u8]) -> Result<OciArchive> {
    let mut layer = tar::Builder::new(Vec::new());
    add_dir(&mut layer, "var/", 0o755)?;
    add_dir(&mut layer, "var/www/", 0o755)?;
    add_file(&mut layer, "var/www/index.html", 0o644, WEB_PAGE.as_bytes())?;
    let layer = layer.into_inner().map_err(Error::Tar)?;
    archive(
        WEB_IMAGE,
        &[base, &layer],
        json!({
            "Env": ["PATH=/bin"],
            "Cmd": ["sh", "-c", "trap 'exit 0' TERM; httpd -f -v -p 80 -h /var/www & wait"],
            "ExposedPorts": {"80/tcp": {}},
        }),
    )
}

/// The layer every image shares: busybox, a symlink per applet, and the directories and
/// files a minimal Linux root needs.
pub fn base_layer(busybox: &Path) -> Result<Vec<u8>> {
    let binary = std::fs::read(busybox).map_err(|source| Error::ReadBusybox {
        path: busybox.display().to_string(),
        source,
    })?;
    let applets = applets(busybox)?;
    let mut layer = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("var/", 0o755),
    ] {
        add_dir(&mut layer, dir, mode)?;
    }
    add_file(&mut layer, "bin/busybox", 0o755, &binary)?;
    for applet in applets.iter().filter(|a| a.as_str() != "busybox") {
        let mut header = header(tar::EntryType::Symlink, 0o777, 0);
        layer
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .map_err(Error::Tar)?;
    }
    add_file(
        &mut layer,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    add_file(
        &mut layer,
        "etc/group",
        0o644,
        b"root:x:0:\nnogroup:x:65534:\n",
    )?;
    layer.into_inner().map_err(Error::Tar)
}

/// Busybox's applet names (`busybox --list`).
fn applets(busybox: &Path) -> Result<Vec<String>> {
    let output = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|source| Error::ListApplets {
            path: busybox.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::ListApplets {
            path: busybox.display().to_string(),
            source: std::io::Error::other(format!("busybox --list: {}", output.status)),
        });
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// A tar header owned by root, with a fixed timestamp so layers are reproducible.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1);
    header
}

fn add_dir(layer: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut header = header(tar::EntryType::Directory, mode, 0);
    layer
        .append_data(&mut header, path, std::io::empty())
        .map_err(Error::Tar)
}

fn add_file(layer: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, data.len() as u64);
    layer
        .append_data(&mut header, path, data)
        .map_err(Error::Tar)
}

fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
}

/// Packs layers and an image config into an OCI image-layout tar.
fn archive(name: &str, layers: &[&[u8]], config: serde_json::Value) -> Result<OciArchive> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let image_config = serde_json::to_vec(&json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("image config serializes");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &image_config),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
            .collect::<Vec<_>>(),
    }))
    .expect("manifest serializes");
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let mut manifest_descriptor =
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag,
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }))
    .expect("index serializes");

    let mut out = tar::Builder::new(Vec::new());
    add_file(
        &mut out,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add_file(&mut out, "index.json", 0o644, &index)?;
    add_dir(&mut out, "blobs/", 0o755)?;
    add_dir(&mut out, "blobs/sha256/", 0o755)?;
    let mut blobs: Vec<&[u8]> = layers.to_vec();
    blobs.push(&image_config);
    blobs.push(&manifest);
    let mut written = std::collections::HashSet::new();
    for blob in blobs {
        let digest = sha256(blob);
        if written.insert(digest.clone()) {
            let hex = digest.trim_start_matches("sha256:");
            add_file(&mut out, &format!("blobs/sha256/{hex}"), 0o644, blob)?;
        }
    }
    Ok(OciArchive {
        name: name.to_owned(),
        bytes: out.into_inner().map_err(Error::Tar)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                (path, data)
            })
            .collect()
    }

    #[test]
    fn archives_are_oci_layouts_with_consistent_digests() {
        // A fake busybox: the layout does not depend on what the binary is.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("busybox");
        std::fs::write(&fake, "#!/bin/sh\necho sh\necho sleep\necho httpd\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let images = build_all(&fake).unwrap();
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, [BUSYBOX_IMAGE, PAUSE_IMAGE, WEB_IMAGE]);
        let web = &images[2];
        assert_eq!(web.file_name(), "kumo.local_web_1.oci.tar");
        let files: std::collections::HashMap<String, Vec<u8>> =
            entries(&web.bytes).into_iter().collect();
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let manifest_ref = &index["manifests"][0];
        assert_eq!(
            manifest_ref["annotations"]["io.containerd.image.name"],
            WEB_IMAGE
        );
        let blob = |d: &serde_json::Value| {
            let digest = d["digest"].as_str().unwrap();
            let data = &files[&format!("blobs/sha256/{}", &digest[7..])];
            assert_eq!(sha256(data), digest);
            assert_eq!(data.len() as u64, d["size"].as_u64().unwrap());
            data.clone()
        };
        let manifest: serde_json::Value = serde_json::from_slice(&blob(manifest_ref)).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&blob(&manifest["config"])).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        for (layer, diff_id) in layers
            .iter()
            .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
        {
            assert_eq!(layer["digest"], *diff_id);
            blob(layer);
        }
        let base: Vec<String> = entries(&blob(&layers[0]))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for path in [
            "bin/busybox",
            "bin/sh",
            "bin/sleep",
            "bin/httpd",
            "tmp/",
            "etc/passwd",
        ] {
            assert!(
                base.iter().any(|p| p == path),
                "{path} missing from {base:?}"
            );
        }
        let page = entries(&blob(&layers[1]));
        assert!(
            page.iter()
                .any(|(p, d)| p == "var/www/index.html" && d == WEB_PAGE.as_bytes())
        );
        // Reproducible: the same input gives the same bytes.
        assert_eq!(build_all(&fake).unwrap()[2].bytes, web.bytes);
    }
}
