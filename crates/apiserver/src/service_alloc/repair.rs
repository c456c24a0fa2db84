//! The repair loop of upstream's allocators: rebuilds each allocation bitmap from the
//! Services that exist, so an address whose Service is gone (an API server crashed between
//! allocating and committing, or a release failed) goes back to the pool, and an address a
//! Service holds but the bitmap lost is marked again.
//!
//! An allocation without a Service may belong to a create in flight on this or another API
//! server, so it is freed only after it was seen leaked in several consecutive runs, and
//! the rebuilt bitmap is written with a compare-and-swap against the snapshot it started
//! from: an allocation made meanwhile makes the write lose, and the run starts over.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::range::{AllocError, Bitmap, PersistedRange};
use super::{Allocators, Held};
use crate::control_plane::ControlPlane;

/// How many runs in a row must see an allocation without its Service before it is freed.
pub const RUNS_BEFORE_LEAK_CLEANUP: u32 = 3;

/// How often one run retries after losing a race with an allocation.
const MAX_ATTEMPTS: usize = 5;

/// Allocations seen without a Service, and in how many runs in a row.
#[derive(Default, Debug)]
pub struct Leaks {
    ips: HashMap<usize, u32>,
    ports: HashMap<usize, u32>,
}

/// What one run changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Leaked ClusterIPs freed.
    pub freed_ips: usize,
    /// Leaked node ports freed.
    pub freed_ports: usize,
    /// ClusterIPs held by a Service that the bitmap had lost.
    pub restored_ips: usize,
    /// Node ports held by a Service that the bitmap had lost.
    pub restored_ports: usize,
}

/// One repair run over both ranges of `cp`.
pub async fn run_once(cp: &ControlPlane) -> Result<Report, AllocError> {
    let allocators = cp.services();
    let mut report = Report::default();
    for ports in [false, true] {
        let range = if ports {
            &allocators.ports
        } else {
            &allocators.ips
        };
        let (freed, restored) = repair_range(cp, allocators, range, ports).await?;
        if ports {
            report.freed_ports = freed;
            report.restored_ports = restored;
        } else {
            report.freed_ips = freed;
            report.restored_ips = restored;
        }
    }
    Ok(report)
}

async fn repair_range(
    cp: &ControlPlane,
    allocators: &Allocators,
    range: &PersistedRange,
    ports: bool,
) -> Result<(usize, usize), AllocError> {
    for _ in 0..MAX_ATTEMPTS {
        // The snapshot first, the Services after: a Service committed before the listing
        // holds an address that is in the snapshot or is restored below.
        let snapshot = range.read().await?;
        let in_use = in_use(cp, allocators, ports).await?;
        let mut rebuilt = Bitmap::new(range.range.size());
        for (offset, owners) in &in_use {
            if owners.len() > 1 {
                tracing::warn!(cluster = %cp.id, range = %range.range.describe(), offset, ?owners, "one address is held by several Services");
            }
            rebuilt.set(*offset);
        }
        let restored = in_use.keys().filter(|o| !snapshot.bitmap.has(**o)).count();
        let mut freed = 0;
        let mut next_leaks = HashMap::new();
        {
            let mut leaks = allocators.leaks.lock().unwrap_or_else(|e| e.into_inner());
            let counts = if ports {
                &mut leaks.ports
            } else {
                &mut leaks.ips
            };
            for offset in snapshot.bitmap.offsets() {
                if in_use.contains_key(&offset) {
                    continue;
                }
                let seen = counts.get(&offset).copied().unwrap_or(0) + 1;
                if seen >= RUNS_BEFORE_LEAK_CLEANUP {
                    freed += 1;
                } else {
                    rebuilt.set(offset);
                    next_leaks.insert(offset, seen);
                }
            }
        }
        if rebuilt != snapshot.bitmap && !range.write(&rebuilt, snapshot.revision).await? {
            // An allocation won the race: look again.
            continue;
        }
        if freed > 0 || restored > 0 {
            tracing::info!(cluster = %cp.id, range = %range.range.describe(), freed, restored, "repaired service address allocations");
        }
        let mut leaks = allocators.leaks.lock().unwrap_or_else(|e| e.into_inner());
        *(if ports {
            &mut leaks.ports
        } else {
            &mut leaks.ips
        }) = next_leaks;
        return Ok((freed, restored));
    }
    Err(AllocError::Store(format!(
        "repair of {} kept losing races with allocations",
        range.range.describe()
    )))
}

/// The offsets the stored Services hold, each with the Services holding it.
async fn in_use(
    cp: &ControlPlane,
    allocators: &Allocators,
    ports: bool,
) -> Result<BTreeMap<usize, Vec<String>>, AllocError> {
    let Some(kind) = cp.registry().by_kind("", "Service") else {
        return Ok(BTreeMap::new());
    };
    let listed = cp
        .store
        .backend()
        .range(store::RangeRequest {
            prefix: cp.store.prefix(&kind, None),
            ..Default::default()
        })
        .await
        .map_err(|e| AllocError::Store(e.to_string()))?;
    let mut in_use: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for kv in &listed.kvs {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let held = Held::of(allocators, &svc);
        let offsets = if ports { held.ports } else { held.ips };
        for offset in offsets {
            in_use.entry(offset).or_default().push(kv.key.clone());
        }
    }
    Ok(in_use)
}
