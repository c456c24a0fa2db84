//! The zone built from objects, question by question.

use std::str::FromStr;

use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;

fn svc(ns: &str, name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .expect("service")
}

fn slice(ns: &str, svc: &str, endpoints: Value, ports: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-abc"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
    }))
    .expect("slice")
}

fn pod(ns: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}))
        .expect("pod")
}

fn zone(mode: PodRecords, services: &[Service], slices: &[EndpointSlice], pods: &[Pod]) -> Zone {
    let objects = Objects {
        services: services.iter().collect(),
        slices: slices.iter().collect(),
        pods: pods.iter().collect(),
    };
    Zone::build(
        Name::from_str("cluster.local.").expect("origin"),
        5,
        mode,
        &objects,
    )
}

/// The answer as short strings: `A 10.43.0.10`, `SRV 0 100 80 web.default.svc.cluster.local.`.
fn ask(zone: &Zone, name: &str, rtype: RecordType) -> Result<(Vec<String>, Vec<String>), Answer> {
    let name = LowerName::new(&Name::from_str(name).expect("name"));
    match zone.answer(&name, rtype) {
        Answer::Records(answers, additionals) => Ok((show(&answers), show(&additionals))),
        other => Err(other),
    }
}

fn show(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut shown: Vec<String> = records
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => format!("A {}", a.0),
            RData::AAAA(a) => format!("AAAA {}", a.0),
            RData::SRV(s) => format!("SRV {} {} {} {}", s.priority, s.weight, s.port, s.target),
            RData::CNAME(c) => format!("CNAME {}", c.0),
            RData::PTR(p) => format!("PTR {}", p.0),
            RData::SOA(s) => format!("SOA {} {}", s.mname, s.minimum),
            other => format!("{other:?}"),
        })
        .collect();
    shown.sort();
    shown
}

fn answers(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn cluster_ip_services_have_address_and_srv_records() {
    let web = svc(
        "default",
        "web",
        json!({"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"port": 9000},
        ]}),
    );
    let z = zone(PodRecords::Disabled, &[web], &[], &[]);
    assert_eq!(
        ask(&z, "web.default.svc.cluster.local.", RecordType::A),
        Ok((answers(&["A 10.43.0.10"]), vec![]))
    );
    // Names are case-insensitive.
    assert!(ask(&z, "WEB.Default.svc.cluster.local.", RecordType::A).is_ok());
    assert_eq!(
        ask(&z, "web.default.svc.cluster.local.", RecordType::AAAA),
        Err(Answer::NoData)
    );
    assert_eq!(
        ask(
            &z,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        Ok((
            answers(&["SRV 0 100 80 web.default.svc.cluster.local."]),
            answers(&["A 10.43.0.10"])
        ))
    );
    assert!(
        ask(
            &z,
            "_dns._udp.web.default.svc.cluster.local.",
            RecordType::SRV
        )
        .is_ok()
    );
    assert_eq!(
        ask(
            &z,
            "_dns._tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        Err(Answer::NxDomain)
    );
    assert_eq!(
        ask(&z, "nope.default.svc.cluster.local.", RecordType::A),
        Err(Answer::NxDomain)
    );
    // Empty non-terminals exist.
    for name in [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "pod.cluster.local.",
        "_tcp.web.default.svc.cluster.local.",
    ] {
        assert_eq!(ask(&z, name, RecordType::A), Err(Answer::NoData), "{name}");
    }
    assert_eq!(
        ask(&z, "10.0.43.10.in-addr.arpa.", RecordType::PTR),
        Ok((answers(&["PTR web.default.svc.cluster.local."]), vec![]))
    );
    assert_eq!(
        ask(&z, "11.0.43.10.in-addr.arpa.", RecordType::PTR),
        Err(Answer::NotOurs)
    );
    assert_eq!(ask(&z, "example.com.", RecordType::A), Err(Answer::NotOurs));
    assert_eq!(
        ask(&z, "cluster.local.", RecordType::SOA),
        Ok((answers(&["SOA ns.dns.cluster.local. 5"]), vec![]))
    );
}

#[test]
fn headless_services_list_ready_endpoints_by_hostname_or_dashed_ip() {
    let db = svc(
        "data",
        "db",
        json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
    );
    let endpoints = json!([
        {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
        {"addresses": ["10.42.1.6"], "conditions": {"ready": true}},
        {"addresses": ["10.42.2.7"], "hostname": "db-2", "conditions": {"ready": false}},
        {"addresses": ["10.42.3.8"]},
    ]);
    let slices = [slice(
        "data",
        "db",
        endpoints,
        json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
    )];
    let z = zone(PodRecords::Disabled, &[db], &slices, &[]);
    assert_eq!(
        ask(&z, "db.data.svc.cluster.local.", RecordType::A),
        Ok((
            answers(&["A 10.42.0.5", "A 10.42.1.6", "A 10.42.3.8"]),
            vec![]
        ))
    );
    assert_eq!(
        ask(&z, "db-0.db.data.svc.cluster.local.", RecordType::A),
        Ok((answers(&["A 10.42.0.5"]), vec![]))
    );
    assert_eq!(
        ask(&z, "10-42-1-6.db.data.svc.cluster.local.", RecordType::A),
        Ok((answers(&["A 10.42.1.6"]), vec![]))
    );
    // Not ready: no record.
    assert_eq!(
        ask(&z, "db-2.db.data.svc.cluster.local.", RecordType::A),
        Err(Answer::NxDomain)
    );
    let (srv, additional) =
        ask(&z, "_pg._tcp.db.data.svc.cluster.local.", RecordType::SRV).expect("srv");
    assert_eq!(
        srv,
        answers(&[
            "SRV 0 33 5432 10-42-1-6.db.data.svc.cluster.local.",
            "SRV 0 33 5432 10-42-3-8.db.data.svc.cluster.local.",
            "SRV 0 33 5432 db-0.db.data.svc.cluster.local.",
        ])
    );
    assert_eq!(
        additional,
        answers(&["A 10.42.0.5", "A 10.42.1.6", "A 10.42.3.8"])
    );
    assert_eq!(
        ask(&z, "5.0.42.10.in-addr.arpa.", RecordType::PTR),
        Ok((answers(&["PTR db-0.db.data.svc.cluster.local."]), vec![]))
    );

    // publishNotReadyAddresses lists the not-ready ones too; no endpoints at all is NODATA.
    let published = svc(
        "data",
        "db",
        json!({"clusterIP": "None", "publishNotReadyAddresses": true}),
    );
    let z = zone(PodRecords::Disabled, &[published], &slices, &[]);
    assert!(ask(&z, "db-2.db.data.svc.cluster.local.", RecordType::A).is_ok());
    let empty = svc("data", "empty", json!({"clusterIP": "None"}));
    let z = zone(PodRecords::Disabled, &[empty], &[], &[]);
    assert_eq!(
        ask(&z, "empty.data.svc.cluster.local.", RecordType::A),
        Err(Answer::NoData)
    );
}

#[test]
fn external_name_services_are_cnames() {
    let ext = svc(
        "default",
        "search",
        json!({"type": "ExternalName", "externalName": "www.example.com"}),
    );
    let z = zone(PodRecords::Disabled, &[ext], &[], &[]);
    for rtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        assert_eq!(
            ask(&z, "search.default.svc.cluster.local.", rtype),
            Ok((answers(&["CNAME www.example.com."]), vec![]))
        );
    }
}

#[test]
fn pod_records_follow_the_mode() {
    let pods = [pod("default", "10.42.0.9")];
    let insecure = zone(PodRecords::Insecure, &[], &[], &pods);
    assert_eq!(
        ask(
            &insecure,
            "10-42-0-9.default.pod.cluster.local.",
            RecordType::A
        ),
        Ok((answers(&["A 10.42.0.9"]), vec![]))
    );
    assert!(
        ask(
            &insecure,
            "1-2-3-4.anywhere.pod.cluster.local.",
            RecordType::A
        )
        .is_ok()
    );
    assert_eq!(
        ask(
            &insecure,
            "not-an-ip.default.pod.cluster.local.",
            RecordType::A
        ),
        Err(Answer::NxDomain)
    );
    let verified = zone(PodRecords::Verified, &[], &[], &pods);
    assert!(
        ask(
            &verified,
            "10-42-0-9.default.pod.cluster.local.",
            RecordType::A
        )
        .is_ok()
    );
    assert_eq!(
        ask(
            &verified,
            "10-42-0-9.other.pod.cluster.local.",
            RecordType::A
        ),
        Err(Answer::NxDomain)
    );
    let disabled = zone(PodRecords::Disabled, &[], &[], &pods);
    assert_eq!(
        ask(
            &disabled,
            "10-42-0-9.default.pod.cluster.local.",
            RecordType::A
        ),
        Err(Answer::NxDomain)
    );
}

#[test]
fn ipv6_services_answer_aaaa() {
    let v6 = svc(
        "default",
        "six",
        json!({"clusterIP": "fd00::a", "clusterIPs": ["fd00::a"]}),
    );
    let z = zone(PodRecords::Disabled, &[v6], &[], &[]);
    assert_eq!(
        ask(&z, "six.default.svc.cluster.local.", RecordType::AAAA),
        Ok((answers(&["AAAA fd00::a"]), vec![]))
    );
    assert_eq!(
        ask(&z, "six.default.svc.cluster.local.", RecordType::A),
        Err(Answer::NoData)
    );
    assert_eq!(
        reverse_name("fd00::a".parse().expect("ip")),
        "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
    );
    assert_eq!(dashed("fd00::a".parse().expect("ip")), "fd00--a");
}
