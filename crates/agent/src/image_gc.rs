//! Image garbage collection, as kubelet's image manager does it: when the runtime's image
//! filesystem is fuller than the high threshold, unused images are removed, least recently
//! used first, until usage is down to the low threshold. Images a container uses, pinned
//! images (the sandbox image) and images younger than the minimum age are kept.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cri::{CallExt, Cri, api};

/// When and how images are collected (kubelet's `imageGCHighThresholdPercent`,
/// `imageGCLowThresholdPercent`, `imageMinimumGCAge`).
#[derive(Clone, Debug)]
pub struct Policy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub minimum_age: Duration,
    /// Never removed, whatever the runtime says (the sandbox image).
    pub pinned: Vec<String>,
    /// How often usage is checked.
    pub period: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            minimum_age: Duration::from_secs(120),
            pinned: vec![crate::images::PAUSE_IMAGE.to_owned()],
            period: Duration::from_secs(300),
        }
    }
}

/// What the collector remembers of an image.
#[derive(Clone, Copy, Debug)]
struct Record {
    first_seen: Instant,
    last_used: Instant,
}

/// Collects images on `cri` per `policy` until the future is dropped.
pub async fn run(cri: Cri, policy: Policy) -> anyhow::Result<()> {
    let mut records = HashMap::new();
    loop {
        if let Err(e) = collect(&cri, &policy, &mut records).await {
            tracing::warn!(error = %e, "image garbage collection failed");
        }
        tokio::time::sleep(policy.period).await;
    }
}

/// One pass; returns the ids of the images removed.
async fn collect(
    cri: &Cri,
    policy: &Policy,
    records: &mut HashMap<String, Record>,
) -> anyhow::Result<Vec<String>> {
    let now = Instant::now();
    let images = cri
        .images
        .clone()
        .list_images(api::ListImagesRequest { filter: None })
        .await
        .call("ListImages")?
        .images;
    let containers = cri
        .runtime
        .clone()
        .list_containers(api::ListContainersRequest { filter: None })
        .await
        .call("ListContainers")?
        .containers;
    let in_use: HashSet<&str> = containers
        .iter()
        .flat_map(|c| {
            [
                c.image_ref.as_str(),
                c.image.as_ref().map_or("", |i| i.image.as_str()),
            ]
        })
        .collect();
    records.retain(|id, _| images.iter().any(|i| &i.id == id));
    let mut used_now = HashSet::new();
    for image in &images {
        let record = records.entry(image.id.clone()).or_insert(Record {
            first_seen: now,
            last_used: now,
        });
        let used = in_use.contains(image.id.as_str())
            || image.repo_tags.iter().any(|t| in_use.contains(t.as_str()));
        if used {
            record.last_used = now;
            used_now.insert(image.id.as_str());
        }
    }

    let (used_bytes, capacity) = usage(cri).await?;
    if capacity == 0 {
        return Ok(Vec::new());
    }
    let percent = used_bytes.saturating_mul(100) / capacity;
    if percent < u64::from(policy.high_threshold_percent) {
        return Ok(Vec::new());
    }
    let target = capacity * u64::from(policy.low_threshold_percent) / 100;
    let mut to_free = used_bytes.saturating_sub(target);
    tracing::info!(
        usage_percent = percent,
        high = policy.high_threshold_percent,
        to_free,
        "image filesystem above the threshold; removing unused images"
    );
    let mut candidates: Vec<&api::Image> = images
        .iter()
        .filter(|i| {
            let record = records[&i.id];
            let used = used_now.contains(i.id.as_str());
            let pinned = i.pinned
                || i.repo_tags
                    .iter()
                    .any(|t| policy.pinned.iter().any(|p| p == t));
            !used && !pinned && now.duration_since(record.first_seen) >= policy.minimum_age
        })
        .collect();
    candidates.sort_by_key(|i| (records[&i.id].last_used, records[&i.id].first_seen));
    let mut removed = Vec::new();
    for image in candidates {
        if to_free == 0 {
            break;
        }
        let removal = cri
            .images
            .clone()
            .remove_image(api::RemoveImageRequest {
                image: Some(api::ImageSpec {
                    image: image.id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .call("RemoveImage");
        match removal {
            Ok(_) => {
                tracing::info!(image = %image.id, tags = ?image.repo_tags, size = image.size, "removed an unused image");
                to_free = to_free.saturating_sub(image.size);
                records.remove(&image.id);
                removed.push(image.id.clone());
            }
            Err(e) => tracing::warn!(image = %image.id, error = %e, "removing an unused image"),
        }
    }
    Ok(removed)
}

/// Bytes the runtime's images use, and the capacity of the filesystem they are on.
async fn usage(cri: &Cri) -> anyhow::Result<(u64, u64)> {
    let info = cri
        .images
        .clone()
        .image_fs_info(api::ImageFsInfoRequest {})
        .await
        .call("ImageFsInfo")?;
    let Some(fs) = info.image_filesystems.first() else {
        return Ok((0, 0));
    };
    let used = fs.used_bytes.as_ref().map_or(0, |b| b.value);
    let mountpoint = fs
        .fs_id
        .as_ref()
        .map(|f| f.mountpoint.clone())
        .unwrap_or_default();
    let stats = rustix::fs::statvfs(mountpoint.as_str())
        .map_err(|e| anyhow::anyhow!("statvfs {mountpoint}: {e}"))?;
    // What the images could grow to: their own bytes plus what is still free.
    let capacity = used + stats.f_bavail * stats.f_frsize;
    Ok((used, capacity))
}

/// One collection pass (for tests and `kumo` diagnostics); returns the removed ids.
pub async fn collect_once(cri: &Cri, policy: &Policy) -> anyhow::Result<Vec<String>> {
    collect(cri, policy, &mut HashMap::new()).await
}
