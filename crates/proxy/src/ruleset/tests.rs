//! Ruleset generation: what each kind of Service turns into.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;
use crate::model::service_ports;

fn svc(name: &str, spec: Value, status: Value) -> Service {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec, "status": status}),
    )
    .expect("service")
}

fn slice(svc: &str, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-x"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("slice")
}

fn ep(ip: &str, node: &str, conditions: Value) -> Value {
    json!({"addresses": [ip], "nodeName": node, "conditions": conditions})
}

fn ready() -> Value {
    json!({"ready": true, "serving": true, "terminating": false})
}

fn node() -> Node {
    Node {
        name: "node-a".into(),
        ips: vec!["192.168.1.10".parse().expect("ip")],
        cluster_cidrs: vec!["10.42.0.0/16".parse().expect("cidr")],
    }
}

fn rules(services: &[Service], slices: &[EndpointSlice]) -> Ruleset {
    let ports = service_ports(
        &services.iter().collect::<Vec<_>>(),
        &slices.iter().collect::<Vec<_>>(),
    );
    build(Family::V4, &node(), &ports)
}

/// The one per-service chain (their names carry the service port: `.../tcp/http`) whose
/// name starts with `prefix`.
fn chain<'a>(rs: &'a Ruleset, prefix: &str) -> (&'a str, &'a [String]) {
    let found: Vec<_> = rs
        .chains
        .iter()
        .filter(|(n, _)| n.starts_with(prefix) && n.contains('/'))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "chains starting with {prefix}: {:?}",
        rs.chains.keys().collect::<Vec<_>>()
    );
    (found[0].0.as_str(), found[0].1.rules.as_slice())
}

fn chains_like(rs: &Ruleset, prefix: &str) -> Vec<String> {
    rs.chains
        .keys()
        .filter(|n| n.starts_with(prefix) && n.contains('/'))
        .cloned()
        .collect()
}

fn elements<'a>(rs: &'a Ruleset, set: &str) -> &'a [String] {
    &rs.sets[set].elements
}

fn web(extra: Value) -> Service {
    let mut spec = json!({"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    svc("web", spec, json!({}))
}

#[test]
fn cluster_ips_balance_over_ready_endpoints() {
    let rs = rules(
        &[web(json!({}))],
        &[slice(
            "web",
            json!([
                ep("10.42.0.5", "node-a", ready()),
                ep("10.42.1.6", "node-b", ready())
            ]),
        )],
    );
    let (service_chain, service_rules) = chain(&rs, "service-");
    assert!(
        service_chain.ends_with("-default/web/tcp/http"),
        "{service_chain}"
    );
    assert_eq!(
        elements(&rs, "service-ips"),
        [format!("10.43.0.10 . tcp . 80 : goto {service_chain}")]
    );
    assert_eq!(elements(&rs, "cluster-ips"), ["10.43.0.10"]);
    assert!(elements(&rs, "no-endpoint-services").is_empty());
    let endpoint_chains = chains_like(&rs, "endpoint-");
    assert_eq!(endpoint_chains.len(), 2);
    assert_eq!(
        service_rules[0],
        "ip saddr != { 10.42.0.0/16 } jump mark-for-masquerade"
    );
    assert_eq!(
        service_rules[1],
        format!(
            "numgen random mod 2 vmap {{ 0 : goto {} , 1 : goto {} }}",
            endpoint_chains[0], endpoint_chains[1]
        )
    );
    let (_, first) = chain(&rs, &endpoint_chains[0]);
    let (_, second) = chain(&rs, &endpoint_chains[1]);
    let mut dnats = [first.to_vec(), second.to_vec()];
    dnats.sort();
    assert_eq!(
        dnats,
        [
            vec![
                "ip saddr 10.42.0.5 jump mark-for-masquerade".to_owned(),
                "meta l4proto tcp dnat to 10.42.0.5:8080".to_owned()
            ],
            vec![
                "ip saddr 10.42.1.6 jump mark-for-masquerade".to_owned(),
                "meta l4proto tcp dnat to 10.42.1.6:8080".to_owned()
            ],
        ]
    );
    // No NodePort: no external chain.
    assert!(chains_like(&rs, "external-").is_empty());
}

#[test]
fn services_without_endpoints_reject() {
    let rs = rules(
        &[web(
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        )],
        &[],
    );
    assert!(elements(&rs, "service-ips").is_empty());
    assert_eq!(
        elements(&rs, "no-endpoint-services"),
        ["10.43.0.10 . tcp . 80 : goto reject-chain"]
    );
    assert_eq!(
        elements(&rs, "no-endpoint-nodeports"),
        ["tcp . 30080 : goto reject-chain"]
    );
    assert!(chains_like(&rs, "service-").is_empty());
    assert_eq!(
        rs.chains["reject-chain"].rules,
        ["meta l4proto tcp reject with tcp reset", "reject"]
    );
}

#[test]
fn terminating_endpoints_are_drained_unless_nothing_else_serves() {
    let terminating = json!({"ready": false, "serving": true, "terminating": true});
    let gone = json!({"ready": false, "serving": false, "terminating": true});
    let rs = rules(
        &[web(json!({}))],
        &[slice(
            "web",
            json!([
                ep("10.42.0.5", "node-a", ready()),
                ep("10.42.0.6", "node-a", terminating.clone())
            ]),
        )],
    );
    let (_, service_rules) = chain(&rs, "service-");
    assert!(service_rules[1].starts_with("numgen random mod 1 vmap"));
    assert!(!service_rules[1].contains("10.42.0.6"));
    // Only terminating endpoints left: the serving ones still take traffic.
    let rs = rules(
        &[web(json!({}))],
        &[slice(
            "web",
            json!([
                ep("10.42.0.6", "node-a", terminating),
                ep("10.42.0.7", "node-a", gone.clone())
            ]),
        )],
    );
    let endpoint_chains = chains_like(&rs, "endpoint-");
    assert_eq!(endpoint_chains.len(), 1);
    assert!(endpoint_chains[0].contains("10.42.0.6"));
    let rs = rules(
        &[web(json!({}))],
        &[slice("web", json!([ep("10.42.0.7", "node-a", gone)]))],
    );
    assert_eq!(elements(&rs, "no-endpoint-services").len(), 1);
    // An unset `ready` counts as ready.
    let rs = rules(
        &[web(json!({}))],
        &[slice("web", json!([{"addresses": ["10.42.0.8"]}]))],
    );
    assert_eq!(chains_like(&rs, "endpoint-").len(), 1);
}

#[test]
fn client_ip_affinity_uses_timed_sets() {
    let rs = rules(
        &[web(
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
        )],
        &[slice(
            "web",
            json!([
                ep("10.42.0.5", "node-a", ready()),
                ep("10.42.0.6", "node-a", ready())
            ]),
        )],
    );
    assert_eq!(rs.affinity.len(), 2);
    for spec in rs.affinity.values() {
        assert_eq!(
            spec,
            "type ipv4_addr ; flags dynamic,timeout ; timeout 60s ;"
        );
    }
    let (_, service_rules) = chain(&rs, "service-");
    // Known clients go back to their endpoint before any new choice is made.
    assert_eq!(service_rules.len(), 4);
    assert!(
        service_rules[1..3]
            .iter()
            .all(|r| r.starts_with("ip saddr @affinity-") && r.contains(" goto endpoint-"))
    );
    assert!(service_rules[3].starts_with("numgen random mod 2"));
    for ip in ["10.42.0.5", "10.42.0.6"] {
        let set = rs
            .affinity
            .keys()
            .find(|s| s.contains(&format!("__{ip}/")))
            .expect("set");
        let endpoint_chain = chains_like(&rs, "endpoint-")
            .into_iter()
            .find(|c| c.contains(&format!("__{ip}/")))
            .expect("endpoint chain");
        let endpoint_rules = &rs.chains[&endpoint_chain].rules;
        assert!(
            endpoint_rules.contains(&format!("update @{set} {{ ip saddr }}")),
            "{endpoint_rules:?}"
        );
        assert!(service_rules.contains(&format!("ip saddr @{set} goto {endpoint_chain}")));
    }
}

#[test]
fn external_traffic_policy_local_prefers_local_endpoints() {
    let service = web(
        json!({"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    );
    let rs = rules(
        std::slice::from_ref(&service),
        &[slice(
            "web",
            json!([
                ep("10.42.0.5", "node-a", ready()),
                ep("10.42.1.6", "node-b", ready())
            ]),
        )],
    );
    let (external, external_rules) = chain(&rs, "external-");
    let (service_chain, _) = chain(&rs, "service-");
    let (local_chain, local_rules) = chain(&rs, "local-");
    assert_eq!(
        elements(&rs, "service-nodeports"),
        [format!("tcp . 30080 : goto {external}")]
    );
    assert_eq!(
        external_rules,
        [
            format!("ip saddr {{ 10.42.0.0/16 }} goto {service_chain}"),
            "fib saddr type local jump mark-for-masquerade".to_owned(),
            format!("fib saddr type local goto {service_chain}"),
            format!("goto {local_chain}"),
        ]
    );
    assert!(
        local_rules[0].starts_with("numgen random mod 1") && local_rules[0].contains("10.42.0.5")
    );
    // Without a local endpoint, outside traffic is dropped (not masqueraded elsewhere).
    let rs = rules(
        &[service],
        &[slice("web", json!([ep("10.42.1.6", "node-b", ready())]))],
    );
    let (_, external_rules) = chain(&rs, "external-");
    assert_eq!(
        external_rules.last().map(String::as_str),
        Some("drop comment \"no local endpoints\"")
    );
    assert!(chains_like(&rs, "local-").is_empty());
}

#[test]
fn external_traffic_policy_cluster_masquerades() {
    let rs = rules(
        &[web(
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        )],
        &[slice("web", json!([ep("10.42.1.6", "node-b", ready())]))],
    );
    let (_, external_rules) = chain(&rs, "external-");
    let (service_chain, _) = chain(&rs, "service-");
    assert_eq!(
        external_rules,
        [
            "jump mark-for-masquerade".to_owned(),
            format!("goto {service_chain}")
        ]
    );
    assert_eq!(elements(&rs, "nodeport-ips"), ["192.168.1.10"]);
}

#[test]
fn internal_traffic_policy_local() {
    let service = web(json!({"internalTrafficPolicy": "Local"}));
    let rs = rules(
        std::slice::from_ref(&service),
        &[slice(
            "web",
            json!([
                ep("10.42.0.5", "node-a", ready()),
                ep("10.42.1.6", "node-b", ready())
            ]),
        )],
    );
    let (local_chain, local_rules) = chain(&rs, "local-");
    assert_eq!(
        elements(&rs, "service-ips"),
        [format!("10.43.0.10 . tcp . 80 : goto {local_chain}")]
    );
    assert!(local_rules[0].contains("10.42.0.5") && !local_rules[0].contains("10.42.1.6"));
    let rs = rules(
        &[service],
        &[slice("web", json!([ep("10.42.1.6", "node-b", ready())]))],
    );
    assert_eq!(
        elements(&rs, "no-endpoint-services"),
        ["10.43.0.10 . tcp . 80 : drop"]
    );
}

#[test]
fn load_balancer_and_external_ips_lead_to_the_external_chain() {
    let service = svc(
        "web",
        json!({"type": "LoadBalancer", "clusterIP": "10.43.0.10", "externalIPs": ["203.0.113.4"],
               "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}}),
    );
    let rs = rules(
        &[service],
        &[slice("web", json!([ep("10.42.0.5", "node-a", ready())]))],
    );
    let (external, _) = chain(&rs, "external-");
    let (service_chain, _) = chain(&rs, "service-");
    assert_eq!(
        elements(&rs, "service-ips"),
        [
            format!("10.43.0.10 . tcp . 80 : goto {service_chain}"),
            format!("192.0.2.9 . tcp . 80 : goto {external}"),
            format!("203.0.113.4 . tcp . 80 : goto {external}"),
        ]
    );
}

#[test]
fn headless_and_external_name_services_are_not_proxied() {
    let rs = rules(
        &[
            svc(
                "db",
                json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
                json!({}),
            ),
            svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
                json!({}),
            ),
        ],
        &[slice("db", json!([ep("10.42.0.5", "node-a", ready())]))],
    );
    assert!(
        elements(&rs, "service-ips").is_empty() && elements(&rs, "no-endpoint-services").is_empty()
    );
    assert!(chains_like(&rs, "endpoint-").is_empty());
}

#[test]
fn ipv6_services_go_to_the_ip6_table() {
    let service = svc(
        "six",
        json!({"clusterIP": "fd00::a", "clusterIPs": ["fd00::a"], "ports": [{"name": "http", "port": 80}]}),
        json!({}),
    );
    let v6_slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "six-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "six"}},
        "addressType": "IPv6", "endpoints": [{"addresses": ["fd00:42::5"]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("slice");
    let ports = service_ports(&[&service], &[&v6_slice]);
    let v4 = build(Family::V4, &node(), &ports);
    assert!(chains_like(&v4, "service-").is_empty());
    let v6 = build(Family::V6, &node(), &ports);
    let endpoint = chains_like(&v6, "endpoint-");
    assert_eq!(endpoint.len(), 1);
    assert!(
        !endpoint[0].contains(':'),
        "identifiers carry no colons: {}",
        endpoint[0]
    );
    let (_, endpoint_rules) = chain(&v6, &endpoint[0]);
    assert_eq!(
        endpoint_rules[1],
        "meta l4proto tcp dnat to [fd00:42::5]:8080"
    );
    assert!(v6.transaction(DEFAULT_TABLE, None).contains(
        "add map ip6 kumo service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; }"
    ));
}

#[test]
fn transactions_replace_whole_tables_then_only_what_changed() {
    let affinity = json!({"sessionAffinity": "ClientIP"});
    let before = rules(
        &[web(affinity.clone())],
        &[slice(
            "web",
            json!([
                ep("10.42.0.5", "node-a", ready()),
                ep("10.42.0.6", "node-a", ready())
            ]),
        )],
    );
    let full = before.transaction(DEFAULT_TABLE, None);
    let lines: Vec<&str> = full.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "add table ip kumo",
            "delete table ip kumo",
            "add table ip kumo"
        ]
    );
    assert!(lines.contains(
        &"add chain ip kumo nat-prerouting { type nat hook prerouting priority -100 ; }"
    ));
    assert!(lines.contains(
        &"add rule ip kumo services ip daddr . meta l4proto . th dport vmap @service-ips"
    ));
    // Nothing changed: nothing but the table's idempotent add.
    assert_eq!(
        before.transaction(DEFAULT_TABLE, Some(&before)),
        "add table ip kumo\n"
    );

    // One endpoint leaves: its chain and set go, the service chain and map are rewritten,
    // the other endpoint's chain and affinity set stay untouched.
    let after = rules(
        &[web(affinity)],
        &[slice("web", json!([ep("10.42.0.5", "node-a", ready())]))],
    );
    let delta = after.transaction(DEFAULT_TABLE, Some(&before));
    let (service_chain, _) = chain(&after, "service-");
    let gone_chain = chains_like(&before, "endpoint-")
        .into_iter()
        .find(|c| c.contains("10.42.0.6"))
        .expect("chain");
    let kept_chain = chains_like(&after, "endpoint-").pop().expect("chain");
    let gone_set = before
        .affinity
        .keys()
        .find(|s| s.contains("10.42.0.6"))
        .expect("set");
    assert!(delta.contains(&format!("flush chain ip kumo {service_chain}\n")));
    assert!(delta.contains("flush map ip kumo service-ips\n") || !delta.contains("service-ips"));
    assert!(
        delta.contains(&format!("flush chain ip kumo {gone_chain}\n"))
            && delta.contains(&format!("delete chain ip kumo {gone_chain}\n"))
    );
    assert!(delta.contains(&format!("delete set ip kumo {gone_set}\n")));
    assert!(
        !delta.contains(&format!("chain ip kumo {kept_chain}\n"))
            && !delta.contains(&format!("add rule ip kumo {kept_chain} ")),
        "the remaining endpoint's chain is left alone: {delta}"
    );
    assert!(
        !delta.contains("add set"),
        "affinity sets are never recreated: {delta}"
    );
    // Deletions come after every rewrite that referred to them.
    let rewrite = delta
        .find(&format!("flush chain ip kumo {service_chain}"))
        .expect("rewrite");
    let delete = delta
        .find(&format!("delete chain ip kumo {gone_chain}"))
        .expect("delete");
    assert!(rewrite < delete);
}

#[test]
fn a_transaction_touches_only_its_own_table() {
    let rs = rules(
        &[web(json!({}))],
        &[slice("web", json!([ep("10.42.0.5", "node-a", ready())]))],
    );
    for script in [
        rs.transaction("kumoup0", None),
        rs.transaction("kumoup0", Some(&rules(&[], &[]))),
    ] {
        for line in script.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            // `VERB [OBJECT] ip kumoup0 ...`: the family is always followed by our table.
            let family_at = words.iter().position(|w| *w == "ip").expect(line);
            assert_eq!(words[family_at + 1], "kumoup0", "{line}");
        }
    }
}
