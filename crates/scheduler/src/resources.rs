//! Resource quantities and the resource arithmetic of scheduling: what a pod requests
//! (containers, init containers by upstream's max rule, sidecars, overhead, pod-level
//! resources) and what a node can allocate.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU a container without a CPU request counts as when spreading load (upstream's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when spreading load (upstream's
/// `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A set of resources in the units the scheduler compares: millicores of CPU, bytes of
/// memory and ephemeral storage, a number of pods, and integral extended resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// How many pods (only meaningful for a node's allocatable).
    pub pods: i64,
    /// Extended resources, hugepages and other scalar resources by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// The resources of a resource list (`requests`, `allocatable`, `overhead`).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Self::default();
        if let Some(list) = list {
            for (name, q) in list {
                r.set(name, q, false);
            }
        }
        r
    }

    /// Sets (or with `keep_max`, raises to) resource `name`.
    fn set(&mut self, name: &str, q: &Quantity, keep_max: bool) {
        let merge = |old: &mut i64, new: i64| *old = if keep_max { (*old).max(new) } else { new };
        match name {
            "cpu" => merge(&mut self.milli_cpu, milli_value(q)),
            "memory" => merge(&mut self.memory, value(q)),
            "ephemeral-storage" => merge(&mut self.ephemeral_storage, value(q)),
            "pods" => merge(&mut self.pods, value(q)),
            other if is_scalar_resource(other) => {
                let slot = self.scalar.entry(other.to_owned()).or_insert(0);
                merge(slot, value(q));
            }
            _ => {}
        }
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Raises every resource of `self` to at least the one of `other`.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let slot = self.scalar.entry(k.clone()).or_insert(0);
            *slot = (*slot).max(*v);
        }
    }

    /// Whether nothing is requested (pods count aside).
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Whether `name` is a scalar resource: extended (domain-prefixed), prefixed native,
/// hugepages or attachable volumes.
pub fn is_scalar_resource(name: &str) -> bool {
    name.contains('/') || name.starts_with("hugepages-") || name.starts_with("attachable-volumes-")
}

/// What a pod asks of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// The effective requests: the max rule over init containers, sidecars, overhead.
    pub requests: Resources,
    /// CPU with containers lacking a CPU request counted at the default, for scoring.
    pub non_zero_milli_cpu: i64,
    /// Memory with containers lacking a memory request counted at the default.
    pub non_zero_memory: i64,
}

/// Computes a pod's requests as upstream's `PodRequests` does: the sum of the app
/// containers and restartable init containers (sidecars), raised to the largest
/// non-restartable init container plus the sidecars started before it, plus the pod's
/// overhead. Pod-level `spec.resources` requests, when set, replace the CPU and memory sums.
pub fn pod_requests(pod: &Pod) -> PodRequests {
    let Some(spec) = pod.spec.as_ref() else {
        return PodRequests::default();
    };
    let (mut reqs, mut non_zero) = (Resources::default(), Resources::default());
    for c in &spec.containers {
        reqs.add(&container_requests(c, false));
        non_zero.add(&container_requests(c, true));
    }
    let (mut sidecars, mut sidecars_nz) = (Resources::default(), Resources::default());
    let (mut init_max, mut init_max_nz) = (Resources::default(), Resources::default());
    for c in spec.init_containers.iter().flatten() {
        let (r, nz) = (container_requests(c, false), container_requests(c, true));
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            non_zero.add(&nz);
            sidecars.add(&r);
            sidecars_nz.add(&nz);
        } else {
            let mut with_sidecars = sidecars.clone();
            with_sidecars.add(&r);
            init_max.max_with(&with_sidecars);
            let mut with_sidecars_nz = sidecars_nz.clone();
            with_sidecars_nz.add(&nz);
            init_max_nz.max_with(&with_sidecars_nz);
        }
    }
    reqs.max_with(&init_max);
    non_zero.max_with(&init_max_nz);
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let level = Resources::from_list(Some(pod_level));
        if pod_level.contains_key("cpu") {
            reqs.milli_cpu = level.milli_cpu;
            non_zero.milli_cpu = level.milli_cpu;
        }
        if pod_level.contains_key("memory") {
            reqs.memory = level.memory;
            non_zero.memory = level.memory;
        }
    }
    let overhead = Resources::from_list(spec.overhead.as_ref());
    reqs.add(&overhead);
    non_zero.add(&overhead);
    PodRequests {
        requests: reqs,
        non_zero_milli_cpu: non_zero.milli_cpu,
        non_zero_memory: non_zero.memory,
    }
}

/// One container's requests (limits stand in for missing requests, as defaulting does);
/// with `non_zero`, a missing CPU or memory request counts at the scheduler's default.
fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let (requests, limits) = match &c.resources {
        Some(ResourceRequirements {
            requests, limits, ..
        }) => (requests.as_ref(), limits.as_ref()),
        None => (None, None),
    };
    let mut r = Resources::from_list(limits);
    r.pods = 0;
    if let Some(requests) = requests {
        for (name, q) in requests {
            r.set(name, q, false);
        }
    }
    let has = |name: &str| {
        requests.is_some_and(|l| l.contains_key(name))
            || limits.is_some_and(|l| l.contains_key(name))
    };
    if non_zero {
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// A quantity in millis, rounded up (upstream's `MilliValue`); malformed quantities count 0.
pub fn milli_value(q: &Quantity) -> i64 {
    parse_scaled(&q.0, 3).unwrap_or(0)
}

/// A quantity's value, rounded up (upstream's `Value`); malformed quantities count 0.
pub fn value(q: &Quantity) -> i64 {
    parse_scaled(&q.0, 0).unwrap_or(0)
}

/// Parses a Kubernetes quantity and returns `ceil(q × 10^scale)`, saturating at the i64
/// range; `None` when malformed.
pub fn parse_scaled(s: &str, scale: i32) -> Option<i64> {
    let s = s.trim();
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let mut mantissa: i128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(c as u8 - b'0'))?;
        if mantissa > 10i128.pow(30) {
            return Some(if negative { i64::MIN } else { i64::MAX });
        }
    }
    let mut exp10 = -(frac_part.len() as i32);
    let mut binary: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => binary = 10,
        "Mi" => binary = 20,
        "Gi" => binary = 30,
        "Ti" => binary = 40,
        "Pi" => binary = 50,
        "Ei" => binary = 60,
        e if e.starts_with(['e', 'E']) => exp10 += e[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    exp10 += scale;
    let saturated = if negative { i64::MIN } else { i64::MAX };
    let mut n = mantissa.checked_mul(1i128 << binary)?;
    if exp10 >= 0 {
        if exp10 > 38 {
            return Some(if n == 0 { 0 } else { saturated });
        }
        n = match n.checked_mul(10i128.pow(exp10 as u32)) {
            Some(n) => n,
            None => return Some(saturated),
        };
    } else {
        let div = if -exp10 > 38 {
            return Some(if n == 0 || negative { 0 } else { 1 });
        } else {
            10i128.pow((-exp10) as u32)
        };
        // Round away from zero towards +infinity for positive numbers (ceil).
        n = if negative {
            n / div
        } else {
            (n + div - 1) / div
        };
    }
    let n = if negative { -n } else { n };
    Some(i64::try_from(n).unwrap_or(saturated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities() {
        let milli = |s: &str| parse_scaled(s, 3);
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(milli("2e3"), Some(2_000_000));
        assert_eq!(milli("1u"), Some(1));
        assert_eq!(value(&q("128Gi")), 128 << 30);
        assert_eq!(value(&q("1k")), 1000);
        assert_eq!(value(&q("500M")), 500_000_000);
        assert_eq!(value(&q("1.5Ki")), 1536);
        assert_eq!(value(&q("0.5")), 1);
        assert_eq!(value(&q("110")), 110);
        assert_eq!(parse_scaled("abc", 0), None);
        assert_eq!(parse_scaled("1Zi", 0), None);
        assert_eq!(parse_scaled("", 0), None);
        assert_eq!(parse_scaled("99999999999999999999E", 0), Some(i64::MAX));
    }

    fn container(requests: &[(&str, &str)]) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = requests
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
            .collect();
        serde_json::json!({"name": "c", "image": "i", "resources": {"requests": map}})
    }

    #[test]
    fn init_containers_use_the_max_rule() {
        let mut sidecar = container(&[("cpu", "200m")]);
        sidecar["restartPolicy"] = "Always".into();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [container(&[("cpu", "100m"), ("memory", "1Gi")]), container(&[("cpu", "300m")])],
                "initContainers": [container(&[("cpu", "2")]), sidecar, container(&[("cpu", "500m"), ("memory", "3Gi")])],
                "overhead": {"cpu": "10m"}
            }
        }))
        .unwrap();
        let r = pod_requests(&pod);
        // Apps 400m + sidecar 200m = 600m; first init 2000m; later init 500m + sidecar 200m.
        assert_eq!(r.requests.milli_cpu, 2010);
        assert_eq!(r.requests.memory, 3 << 30);
        // Containers without a memory request count 200Mi when scoring: the last init
        // container (3Gi) runs beside the sidecar (200Mi).
        assert_eq!(r.non_zero_memory, (3 << 30) + DEFAULT_MEMORY_REQUEST);
        assert_eq!(r.non_zero_milli_cpu, 2010);
    }

    #[test]
    fn missing_requests_count_as_defaults_only_for_scoring() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}, container(&[("example.com/gpu", "2")])]}
        }))
        .unwrap();
        let r = pod_requests(&pod);
        assert_eq!(r.requests.milli_cpu, 0);
        assert_eq!(r.requests.scalar.get("example.com/gpu"), Some(&2));
        assert_eq!(r.non_zero_milli_cpu, 2 * DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.non_zero_memory, 2 * DEFAULT_MEMORY_REQUEST);
    }
}
