//! The cluster zone as DNS records, built from Services, EndpointSlices and pods as the
//! Kubernetes DNS specification (kubernetes/dns, docs/specification.md) lays them out:
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of the ClusterIPs; for a headless Service, of its
//!   ready endpoints; a CNAME for an ExternalName Service.
//! - `<hostname>.<svc>.<ns>.svc.<zone>`: one per endpoint of a headless Service (the
//!   endpoint's hostname, which the EndpointSlice controller takes from a pod's
//!   `hostname` when its `subdomain` names the Service, else the dashed IP).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV for each named port.
//! - `<dashed-ip>.<ns>.pod.<zone>`: pods, when pod records are on.
//! - PTR records for ClusterIPs and headless endpoints.
//!
//! Building is a pure function of the objects; the server swaps in a new zone whenever
//! they change.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Which pod records the zone answers, as CoreDNS's `pods` option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodRecords {
    /// No `<ip>.<ns>.pod.<zone>` records.
    Disabled,
    /// Any dashed IP answers with that IP (kube-dns's behaviour, kubeadm's default).
    #[default]
    Insecure,
    /// Only IPs of pods that exist in that namespace answer (needs a pod watch).
    Verified,
}

/// What the zone says about one question.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Records for the answer section, and records for the additional section.
    Records(Vec<Record>, Vec<Record>),
    /// The name exists but has no records of the type asked for.
    NoData,
    /// The name does not exist in the zone.
    NxDomain,
    /// The name is not ours (outside the zone, or an unknown reverse name): forward it.
    NotOurs,
}

/// The cluster zone at one moment.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    ttl: u32,
    pods: PodRecords,
    records: HashMap<LowerName, Vec<Record>>,
    /// Names that exist: those with records and every ancestor up to the origin.
    existing: HashSet<LowerName>,
    reverse: HashMap<LowerName, Vec<Record>>,
}

/// The objects a zone is built from.
#[derive(Default)]
pub struct Objects<'a> {
    /// Every Service.
    pub services: Vec<&'a Service>,
    /// Every EndpointSlice.
    pub slices: Vec<&'a EndpointSlice>,
    /// Every pod (read only for [`PodRecords::Verified`]).
    pub pods: Vec<&'a Pod>,
}

impl Zone {
    /// A zone with only its apex records.
    pub fn empty(origin: Name, ttl: u32, pods: PodRecords) -> Self {
        let mut zone = Self {
            origin,
            ttl,
            pods,
            records: HashMap::new(),
            existing: HashSet::new(),
            reverse: HashMap::new(),
        };
        let apex = zone.origin.clone();
        zone.add(apex.clone(), RData::NS(NS(zone.dns_name())));
        for sub in ["svc", "pod"] {
            if let Ok(name) = Name::from_ascii(sub).and_then(|n| n.append_domain(&apex)) {
                zone.existing.insert(LowerName::new(&name));
            }
        }
        zone
    }

    /// The zone for `objects`.
    pub fn build(origin: Name, ttl: u32, pods: PodRecords, objects: &Objects<'_>) -> Self {
        let mut zone = Self::empty(origin, ttl, pods);
        let mut slices_by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in &objects.slices {
            let ns = slice.metadata.namespace.clone().unwrap_or_default();
            if let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
            {
                slices_by_service
                    .entry((ns, svc.clone()))
                    .or_default()
                    .push(slice);
            }
        }
        for svc in &objects.services {
            let key = (
                svc.metadata.namespace.clone().unwrap_or_default(),
                svc.metadata.name.clone().unwrap_or_default(),
            );
            let slices = slices_by_service.get(&key).map_or(&[][..], Vec::as_slice);
            zone.add_service(svc, slices);
        }
        if pods == PodRecords::Verified {
            for pod in &objects.pods {
                zone.add_pod(pod);
            }
        }
        zone.finish_srv_weights();
        zone
    }

    /// The zone's origin (`cluster.local.`).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The SOA record of the zone, for the authority section of negative answers.
    pub fn soa(&self) -> Record {
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&self.origin))
            .unwrap_or_else(|_| self.origin.clone());
        // Serial, refresh, retry, expire as CoreDNS; the minimum (negative TTL) is the TTL.
        let soa = SOA::new(self.dns_name(), rname, 1, 7200, 1800, 86400, self.ttl);
        Record::from_rdata(self.origin.clone(), self.ttl, RData::SOA(soa))
    }

    fn dns_name(&self) -> Name {
        Name::from_ascii("ns.dns")
            .and_then(|n| n.append_domain(&self.origin))
            .unwrap_or_else(|_| self.origin.clone())
    }

    /// Answers `name`/`rtype`.
    pub fn answer(&self, name: &LowerName, rtype: RecordType) -> Answer {
        let origin = LowerName::new(&self.origin);
        if !origin.zone_of(name) {
            return match self.reverse.get(name) {
                Some(records) => select(records, rtype).map_or(Answer::NoData, |answers| {
                    Answer::Records(answers, Vec::new())
                }),
                None => Answer::NotOurs,
            };
        }
        if *name == origin && rtype == RecordType::SOA {
            return Answer::Records(vec![self.soa()], Vec::new());
        }
        let records = match self.records.get(name) {
            Some(records) => records.clone(),
            None => match self.pod_record(name) {
                Some(record) => vec![record],
                None if self.existing.contains(name) => return Answer::NoData,
                None => return Answer::NxDomain,
            },
        };
        // A CNAME answers every type but CNAME itself (RFC 1034 §4.3.2).
        let cname: Vec<Record> = records
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .cloned()
            .collect();
        let answers = if !cname.is_empty() {
            cname
        } else {
            match select(&records, rtype) {
                Some(answers) => answers,
                None => return Answer::NoData,
            }
        };
        let additionals = answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.target.clone()),
                _ => None,
            })
            .collect::<BTreeSet<Name>>()
            .into_iter()
            .flat_map(|target| {
                self.records
                    .get(&LowerName::new(&target))
                    .into_iter()
                    .flatten()
                    .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                    .cloned()
            })
            .collect();
        Answer::Records(answers, additionals)
    }

    /// `<dashed-ip>.<ns>.pod.<zone>` in insecure mode: any well-formed name answers.
    fn pod_record(&self, name: &LowerName) -> Option<Record> {
        if self.pods != PodRecords::Insecure {
            return None;
        }
        let name = Name::from(name.clone());
        let labels: Vec<String> = name
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let n_origin = self.origin.num_labels() as usize;
        if labels.len() != n_origin + 3 || labels[2] != "pod" {
            return None;
        }
        let ip = undash(&labels[0])?;
        Some(Record::from_rdata(name, self.ttl, address(ip)))
    }

    fn add(&mut self, name: Name, data: RData) {
        let record = Record::from_rdata(name.clone(), self.ttl, data);
        let key = LowerName::new(&name);
        let entry = self.records.entry(key.clone()).or_default();
        if !entry.contains(&record) {
            entry.push(record);
        }
        let origin = LowerName::new(&self.origin);
        let mut at = key;
        while origin.zone_of(&at) && self.existing.insert(at.clone()) {
            if at == origin {
                break;
            }
            at = at.base_name();
        }
    }

    fn add_ptr(&mut self, ip: IpAddr, target: &Name) {
        let Ok(reverse) = Name::from_str(&reverse_name(ip)) else {
            return;
        };
        let record = Record::from_rdata(reverse.clone(), self.ttl, RData::PTR(PTR(target.clone())));
        let entry = self.reverse.entry(LowerName::new(&reverse)).or_default();
        if !entry.contains(&record) {
            entry.push(record);
        }
    }

    fn child(&self, labels: &[&str]) -> Option<Name> {
        let mut name = Name::root();
        for label in labels {
            name = name.append_label(*label).ok()?;
        }
        name.append_domain(&self.origin).ok()
    }

    fn add_service(&mut self, svc: &Service, slices: &[&EndpointSlice]) {
        let (Some(ns), Some(svc_name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            return;
        };
        let Some(base) = self.child(&[svc_name, ns, "svc"]) else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec
                .external_name
                .as_deref()
                .and_then(|n| Name::from_str(n).ok())
            {
                let mut target = target;
                target.set_fqdn(true);
                self.add(base, RData::CNAME(CNAME(target)));
            }
            return;
        }
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect::<Vec<_>>();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            if cluster_ips.is_empty() {
                return;
            }
            for ip in &cluster_ips {
                self.add(base.clone(), address(*ip));
                self.add_ptr(*ip, &base);
            }
            for port in spec.ports.iter().flatten() {
                let (Some(port_name), Ok(number)) =
                    (port.name.as_deref(), u16::try_from(port.port))
                else {
                    continue;
                };
                let proto = port.protocol.as_deref().unwrap_or("TCP");
                if let Some(srv) = self.srv_name(port_name, proto, &base) {
                    self.add(srv, RData::SRV(SRV::new(0, 100, number, base.clone())));
                }
            }
            return;
        }
        // Headless: the endpoints themselves.
        self.existing.insert(LowerName::new(&base));
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        for slice in slices {
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                // A nil `ready` means unknown, which consumers treat as ready.
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                if !ready && !publish_not_ready {
                    continue;
                }
                for address_text in &endpoint.addresses {
                    let Ok(ip) = address_text.parse::<IpAddr>() else {
                        continue;
                    };
                    let label = endpoint
                        .hostname
                        .clone()
                        .filter(|h| is_dns_label(h))
                        .unwrap_or_else(|| dashed(ip));
                    let Some(host) = prepend(&label, &base) else {
                        continue;
                    };
                    self.add(base.clone(), address(ip));
                    self.add(host.clone(), address(ip));
                    self.add_ptr(ip, &host);
                    for port in slice.ports.iter().flatten() {
                        let (Some(port_name), Some(number)) = (
                            port.name.as_deref().filter(|n| !n.is_empty()),
                            port.port.and_then(|p| u16::try_from(p).ok()),
                        ) else {
                            continue;
                        };
                        let proto = port.protocol.as_deref().unwrap_or("TCP");
                        if let Some(srv) = self.srv_name(port_name, proto, &base) {
                            self.add(srv, RData::SRV(SRV::new(0, 100, number, host.clone())));
                        }
                    }
                }
            }
        }
    }

    fn srv_name(&self, port: &str, proto: &str, base: &Name) -> Option<Name> {
        let port_label = format!("_{}", port.to_ascii_lowercase());
        let proto_label = format!("_{}", proto.to_ascii_lowercase());
        Name::root()
            .append_label(port_label.as_str())
            .and_then(|n| n.append_label(proto_label.as_str()))
            .and_then(|n| n.append_domain(base))
            .ok()
    }

    fn add_pod(&mut self, pod: &Pod) {
        let Some(ns) = pod.metadata.namespace.as_deref() else {
            return;
        };
        let status = pod.status.as_ref();
        let ips = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.ip.clone())
            .chain(status.and_then(|s| s.pod_ip.clone()));
        for ip in ips.filter_map(|ip| ip.parse::<IpAddr>().ok()) {
            let label = dashed(ip);
            if let Some(name) = self.child(&[label.as_str(), ns, "pod"]) {
                self.add(name, address(ip));
            }
        }
    }

    /// Spreads the weight of each SRV name's records evenly, as CoreDNS does.
    fn finish_srv_weights(&mut self) {
        for records in self.records.values_mut() {
            let n_srv = records
                .iter()
                .filter(|r| r.record_type() == RecordType::SRV)
                .count();
            if n_srv < 2 {
                continue;
            }
            let weight = u16::try_from((100 / n_srv).max(1)).unwrap_or(1);
            for record in records.iter_mut() {
                if let RData::SRV(srv) = &record.data {
                    record.data =
                        RData::SRV(SRV::new(srv.priority, weight, srv.port, srv.target.clone()));
                }
            }
        }
    }
}

/// `label.base`.
fn prepend(label: &str, base: &Name) -> Option<Name> {
    Name::root()
        .append_label(label)
        .and_then(|n| n.append_domain(base))
        .ok()
}

/// The records of `rtype` (all of them for ANY); `None` when there are none.
fn select(records: &[Record], rtype: RecordType) -> Option<Vec<Record>> {
    let chosen: Vec<Record> = records
        .iter()
        .filter(|r| rtype == RecordType::ANY || r.record_type() == rtype)
        .cloned()
        .collect();
    (!chosen.is_empty()).then_some(chosen)
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `10.42.0.5` → `10-42-0-5`; `fd00::5` → `fd00--5`.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The reverse of [`dashed`].
fn undash(label: &str) -> Option<IpAddr> {
    let v4 = label.replace('-', ".");
    v4.parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .ok()
        .or_else(|| label.replace('-', ":").parse().ok())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `10.43.0.1` → `1.0.43.10.in-addr.arpa.`; IPv6 by nibbles under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut labels = String::new();
            for byte in v6.octets().iter().rev() {
                labels.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            format!("{labels}ip6.arpa.")
        }
    }
}

#[cfg(test)]
mod tests;
