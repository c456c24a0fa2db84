//! A range of service addresses (ClusterIPs of a CIDR, or NodePorts) and its allocation
//! bitmap, persisted as upstream persists its `RangeAllocation` objects: one store key per
//! range, every change a compare-and-swap on the key's revision, so several API servers
//! sharing the datastore and restarts never hand out a taken address twice.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use ipnet::IpNet;
use serde_json::{Value, json};
use store::{Backend, Revision};

/// How often a compare-and-swap that lost a race is retried before giving up.
const MAX_CAS_ATTEMPTS: usize = 32;

/// Why an allocation failed; the messages are upstream's allocator errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    /// The address is taken.
    #[error("provided {0} is already allocated")]
    Allocated(&'static str),
    /// The address is outside the range.
    #[error("{0}")]
    NotInRange(String),
    /// Nothing is left.
    #[error("range is full")]
    Full,
    /// The store failed.
    #[error("cannot persist the allocation: {0}")]
    Store(String),
}

/// The addresses one allocator hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Range {
    /// Host addresses of a CIDR: the network address (and, for IPv4, the broadcast
    /// address) are never handed out.
    Ips(IpNet),
    /// An inclusive port range.
    Ports(u16, u16),
}

impl Range {
    /// How many addresses the range holds.
    pub fn size(&self) -> usize {
        match self {
            Range::Ips(net) => {
                let host_bits = u32::from(net.max_prefix_len() - net.prefix_len()).min(24);
                let all = 1usize << host_bits;
                match net {
                    IpNet::V4(_) => all.saturating_sub(2),
                    IpNet::V6(_) => all.saturating_sub(1),
                }
            }
            Range::Ports(lo, hi) => usize::from(hi.saturating_sub(*lo)) + 1,
        }
    }

    /// The range as upstream prints it: `10.43.0.0/16` or `30000-32767`.
    pub fn describe(&self) -> String {
        match self {
            Range::Ips(net) => net.to_string(),
            Range::Ports(lo, hi) => format!("{lo}-{hi}"),
        }
    }

    /// The offset of `ip` in the range.
    pub fn ip_offset(&self, ip: IpAddr) -> Option<usize> {
        let Range::Ips(net) = self else { return None };
        if !net.contains(&ip) {
            return None;
        }
        let offset = ip_to_u128(ip).checked_sub(ip_to_u128(net.network()))?;
        let offset = usize::try_from(offset).ok()?.checked_sub(1)?;
        (offset < self.size()).then_some(offset)
    }

    /// The IP at `offset`.
    pub fn ip_at(&self, offset: usize) -> Option<IpAddr> {
        let Range::Ips(net) = self else { return None };
        if offset >= self.size() {
            return None;
        }
        let value = ip_to_u128(net.network()) + 1 + offset as u128;
        Some(match net {
            IpNet::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(value as u32)),
            IpNet::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(value)),
        })
    }

    /// The offset of `port` in the range.
    pub fn port_offset(&self, port: i64) -> Option<usize> {
        let Range::Ports(lo, hi) = self else {
            return None;
        };
        (i64::from(*lo)..=i64::from(*hi))
            .contains(&port)
            .then(|| (port - i64::from(*lo)) as usize)
    }

    /// The port at `offset`.
    pub fn port_at(&self, offset: usize) -> Option<i64> {
        let Range::Ports(lo, _) = self else {
            return None;
        };
        (offset < self.size()).then(|| i64::from(*lo) + offset as i64)
    }

    /// Where dynamic allocation starts: the low band is left for addresses users ask for,
    /// as upstream's allocators do (KEP-3070, KEP-3668): min(max(16, size/16), 256).
    pub fn dynamic_start(&self) -> usize {
        let size = self.size();
        (size / 16).clamp(16, 256).min(size)
    }
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Which offsets of a range are taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    bits: Vec<u8>,
    size: usize,
}

impl Bitmap {
    /// An empty bitmap of `size` offsets.
    pub fn new(size: usize) -> Self {
        Self {
            bits: vec![0; size.div_ceil(8)],
            size,
        }
    }

    /// Whether `offset` is taken.
    pub fn has(&self, offset: usize) -> bool {
        offset < self.size && self.bits[offset / 8] & (1 << (offset % 8)) != 0
    }

    /// Marks `offset` taken; false when it already was (or is out of range).
    pub fn set(&mut self, offset: usize) -> bool {
        if offset >= self.size || self.has(offset) {
            return false;
        }
        self.bits[offset / 8] |= 1 << (offset % 8);
        true
    }

    /// Marks `offset` free.
    pub fn clear(&mut self, offset: usize) {
        if offset < self.size {
            self.bits[offset / 8] &= !(1 << (offset % 8));
        }
    }

    /// The taken offsets, in order.
    pub fn offsets(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.size).filter(|o| self.has(*o))
    }

    /// How many offsets are taken.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// A free offset: a random one of the dynamic band `[dynamic_start, size)` if any is
    /// free, else one of the low band. `random` picks where the scan starts.
    pub fn next_free(&self, dynamic_start: usize, random: u64) -> Option<usize> {
        let scan = |lo: usize, hi: usize| -> Option<usize> {
            let len = hi.checked_sub(lo).filter(|l| *l > 0)?;
            let start = (random % len as u64) as usize;
            (0..len)
                .map(|i| lo + (start + i) % len)
                .find(|o| !self.has(*o))
        };
        scan(dynamic_start.min(self.size), self.size).or_else(|| scan(0, dynamic_start))
    }
}

/// A bitmap as read from the store, with the revision a write must compare against.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The taken offsets.
    pub bitmap: Bitmap,
    /// The key's mod revision; 0 when the key does not exist yet.
    pub revision: Revision,
}

/// One range's allocations in the store.
pub struct PersistedRange {
    backend: Arc<dyn Backend>,
    key: String,
    /// The addresses.
    pub range: Range,
}

impl PersistedRange {
    /// The allocations of `range` kept at `key`.
    pub fn new(backend: Arc<dyn Backend>, key: String, range: Range) -> Self {
        Self {
            backend,
            key,
            range,
        }
    }

    /// The current allocations. A stored bitmap of another range (the configured range
    /// changed) reads as empty; the repair loop then marks the live services' addresses.
    pub async fn read(&self) -> Result<Snapshot, AllocError> {
        let kv = self
            .backend
            .get(&self.key)
            .await
            .map_err(|e| AllocError::Store(e.to_string()))?;
        let Some(kv) = kv else {
            return Ok(Snapshot {
                bitmap: Bitmap::new(self.range.size()),
                revision: 0,
            });
        };
        let stored: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let mut bitmap = Bitmap::new(self.range.size());
        if stored["range"].as_str() == Some(self.range.describe().as_str())
            && let Some(data) = stored["data"].as_str()
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data)
            && bytes.len() == bitmap.bits.len()
        {
            bitmap.bits = bytes;
        } else {
            tracing::warn!(key = %self.key, range = %self.range.describe(), "stored allocations are of another range; starting anew");
        }
        Ok(Snapshot {
            bitmap,
            revision: kv.mod_revision,
        })
    }

    /// Writes `bitmap` if the key is still at `revision`. `Ok(false)` means another
    /// writer won the race.
    pub async fn write(&self, bitmap: &Bitmap, revision: Revision) -> Result<bool, AllocError> {
        let value = json!({
            "range": self.range.describe(),
            "data": base64::engine::general_purpose::STANDARD.encode(&bitmap.bits),
        });
        let bytes = bytes::Bytes::from(value.to_string());
        let result = if revision == 0 {
            self.backend.create(&self.key, bytes).await
        } else {
            self.backend.update(&self.key, bytes, revision).await
        };
        match result {
            Ok(_) => Ok(true),
            Err(
                store::Error::Conflict { .. }
                | store::Error::AlreadyExists(_)
                | store::Error::NotFound(_),
            ) => Ok(false),
            Err(e) => Err(AllocError::Store(e.to_string())),
        }
    }

    /// Reads, changes with `change` and writes back with a compare-and-swap, retrying
    /// lost races. `change` returns its answer and whether it changed the bitmap.
    pub async fn modify<T>(
        &self,
        mut change: impl FnMut(&mut Bitmap) -> Result<(T, bool), AllocError>,
    ) -> Result<T, AllocError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut snapshot = self.read().await?;
            let (answer, changed) = change(&mut snapshot.bitmap)?;
            if !changed || self.write(&snapshot.bitmap, snapshot.revision).await? {
                return Ok(answer);
            }
        }
        Err(AllocError::Store(format!(
            "too many concurrent allocations in {}",
            self.range.describe()
        )))
    }

    /// Takes `offset`.
    pub async fn allocate(&self, offset: usize) -> Result<(), AllocError> {
        let kind = self.what();
        self.modify(|bitmap| {
            if bitmap.set(offset) {
                Ok(((), true))
            } else {
                Err(AllocError::Allocated(kind))
            }
        })
        .await
    }

    /// Takes a free offset.
    pub async fn allocate_next(&self) -> Result<usize, AllocError> {
        let dynamic_start = self.range.dynamic_start();
        let random = super::random_u64();
        self.modify(|bitmap| {
            let offset = bitmap
                .next_free(dynamic_start, random)
                .ok_or(AllocError::Full)?;
            bitmap.set(offset);
            Ok((offset, true))
        })
        .await
    }

    /// Frees `offsets`.
    pub async fn release(&self, offsets: &[usize]) -> Result<(), AllocError> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.modify(|bitmap| {
            let changed = offsets.iter().any(|o| bitmap.has(*o));
            for o in offsets {
                bitmap.clear(*o);
            }
            Ok(((), changed))
        })
        .await
    }

    /// `IP` or `port`, for error messages.
    pub fn what(&self) -> &'static str {
        match self.range {
            Range::Ips(_) => "IP",
            Range::Ports(..) => "port",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(cidr: &str) -> Range {
        Range::Ips(cidr.parse().expect("cidr"))
    }

    #[test]
    fn ip_ranges_skip_network_and_broadcast() {
        let r = ips("10.43.0.0/16");
        assert_eq!(r.size(), 65534);
        assert_eq!(r.ip_at(0), Some("10.43.0.1".parse().expect("ip")));
        assert_eq!(r.ip_at(65533), Some("10.43.255.254".parse().expect("ip")));
        assert_eq!(r.ip_at(65534), None);
        assert_eq!(r.ip_offset("10.43.0.0".parse().expect("ip")), None);
        assert_eq!(r.ip_offset("10.43.255.255".parse().expect("ip")), None);
        assert_eq!(r.ip_offset("10.43.1.0".parse().expect("ip")), Some(255));
        assert_eq!(r.ip_offset("10.44.0.1".parse().expect("ip")), None);
        assert_eq!(r.dynamic_start(), 256);
        let small = ips("10.0.0.0/29");
        assert_eq!(small.size(), 6);
        assert_eq!(small.dynamic_start(), 6);
        let v6 = ips("fd00::/112");
        assert_eq!(v6.size(), 65535);
        assert_eq!(v6.ip_at(0), Some("fd00::1".parse().expect("ip")));
        assert_eq!(v6.ip_offset("fd00::ffff".parse().expect("ip")), Some(65534));
    }

    #[test]
    fn port_ranges() {
        let r = Range::Ports(30000, 32767);
        assert_eq!(r.size(), 2768);
        assert_eq!(r.port_offset(30000), Some(0));
        assert_eq!(r.port_offset(32767), Some(2767));
        assert_eq!(r.port_offset(29999), None);
        assert_eq!(r.port_at(5), Some(30005));
        assert_eq!(r.dynamic_start(), 173);
        assert_eq!(r.describe(), "30000-32767");
    }

    #[test]
    fn bitmap_prefers_the_dynamic_band_then_falls_back() {
        let mut b = Bitmap::new(10);
        for seed in 0..20 {
            let o = b.next_free(4, seed).expect("free");
            assert!(o >= 4, "{o}");
        }
        for o in 4..10 {
            assert!(b.set(o));
        }
        assert!(!b.set(4));
        assert!(b.next_free(4, 7).expect("free") < 4);
        for o in 0..4 {
            b.set(o);
        }
        assert_eq!(b.next_free(4, 3), None);
        assert_eq!(b.count(), 10);
        b.clear(2);
        assert_eq!(b.next_free(4, 99), Some(2));
        assert_eq!(b.offsets().count(), 9);
    }

    #[tokio::test]
    async fn allocations_persist_and_compare_and_swap() {
        let dir = tempfile::tempdir().expect("dir");
        let backend: Arc<dyn Backend> = Arc::new(
            store::SqliteBackend::open(store::SqliteConfig::new(&dir.path().join("s.db")))
                .expect("store"),
        );
        let range =
            PersistedRange::new(backend.clone(), "/c/ranges/ips".into(), ips("10.0.0.0/28"));
        range.allocate(3).await.expect("allocate");
        assert_eq!(range.allocate(3).await, Err(AllocError::Allocated("IP")));
        // Two allocators over the same key (two API servers) never hand out one offset twice.
        let other =
            PersistedRange::new(backend.clone(), "/c/ranges/ips".into(), ips("10.0.0.0/28"));
        let mut seen = vec![3];
        for _ in 0..13 {
            let a = range.allocate_next().await.expect("next");
            assert!(!seen.contains(&a));
            seen.push(a);
            if seen.len() == 14 {
                break;
            }
            let b = other.allocate_next().await.expect("next");
            assert!(!seen.contains(&b));
            seen.push(b);
            if seen.len() == 14 {
                break;
            }
        }
        assert_eq!(range.allocate_next().await, Err(AllocError::Full));
        range.release(&[3, 5]).await.expect("release");
        let snapshot = other.read().await.expect("read");
        assert!(!snapshot.bitmap.has(3) && !snapshot.bitmap.has(5));
        assert_eq!(snapshot.bitmap.count(), 12);
        // A stale revision loses.
        assert!(!range.write(&Bitmap::new(14), 1).await.expect("write"));
        // Another range at the same key reads as empty.
        let wider = PersistedRange::new(backend, "/c/ranges/ips".into(), ips("10.0.0.0/27"));
        assert_eq!(wider.read().await.expect("read").bitmap.count(), 0);
    }
}
