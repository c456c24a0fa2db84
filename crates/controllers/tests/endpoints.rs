//! Endpoints and EndpointSlices of Services, against the in-process cluster: pods are
//! created bound to a node with their status (IP, readiness) written by the test.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const NS: &str = "default";

/// A subset as (sorted (port name, port)), ready IPs, not-ready IPs.
type SubsetSummary = (Vec<(String, i64)>, Vec<String>, Vec<String>);

/// Creates a pod bound to `node` with `labels` and container ports, then writes its status.
async fn pod(client: &Client, name: &str, labels: Value, ports: Value, ip: &str, ready: bool) {
    pod_with(client, name, labels, ports, ip, ready, json!({})).await;
}

async fn pod_with(
    client: &Client,
    name: &str,
    labels: Value,
    ports: Value,
    ip: &str,
    ready: bool,
    extra_spec: Value,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut spec = json!({"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox", "ports": ports}]});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .unwrap();
    let mut pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    set_status(&mut pod, ip, ready);
    pods.replace_status(name, &PostParams::default(), &pod)
        .await
        .unwrap();
}

fn set_status(pod: &mut Pod, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    pod.status = Some(
        serde_json::from_value(json!({
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": Time(jiff::Timestamp::now())}],
        }))
        .unwrap(),
    );
}

async fn set_ready(client: &Client, name: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut pod = pods.get(name).await.unwrap();
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    set_status(&mut pod, &ip, ready);
    pods.replace_status(name, &PostParams::default(), &pod)
        .await
        .unwrap();
}

async fn service(client: &Client, spec: Value) -> Service {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let svc: Service = serde_json::from_value(spec).unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap()
}

/// The Endpoints `name` once `check` accepts its JSON form.
async fn endpoints_where(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    wait_for(Duration::from_secs(10), what, || {
        let api = api.clone();
        let check = &check;
        async move {
            let ep = api.get_opt(name).await.ok()??;
            let v = serde_json::to_value(&ep).unwrap();
            check(&v).then_some(v)
        }
    })
    .await
}

/// `ip` lists of a subset's addresses.
fn ips(subset: &Value, key: &str) -> Vec<String> {
    subset[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["ip"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn endpoints_follow_pods() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let web = json!([{"name": "web", "containerPort": 8080}]);
    let web2 = json!([{"name": "web", "containerPort": 8081}]);
    pod(
        &client,
        "a",
        json!({"app": "shop"}),
        web.clone(),
        "10.0.0.1",
        true,
    )
    .await;
    pod(
        &client,
        "b",
        json!({"app": "shop"}),
        web2,
        "10.0.0.2",
        false,
    )
    .await;
    pod(
        &client,
        "c",
        json!({"app": "shop"}),
        json!([]),
        "10.0.0.3",
        true,
    )
    .await;
    pod(
        &client,
        "other",
        json!({"app": "else"}),
        web.clone(),
        "10.0.0.9",
        true,
    )
    .await;
    service(
        &client,
        json!({
            "metadata": {"name": "shop", "labels": {"team": "x"}},
            "spec": {"selector": {"app": "shop"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "metrics", "port": 9090, "targetPort": 9090}
            ]},
        }),
    )
    .await;
    let ep = endpoints_where(&client, "shop", "endpoints of shop", |v| {
        v["subsets"].as_array().is_some_and(|s| s.len() == 3)
    })
    .await;
    assert_eq!(ep["metadata"]["labels"], json!({"team": "x"}));
    assert!(
        ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string()
    );
    assert!(
        ep["metadata"]["labels"]
            .get("endpoints.kubernetes.io/managed-by")
            .is_none()
    );
    // Subsets by port set: a offers http on 8080 and metrics, b (not ready) http on 8081
    // and metrics, c only metrics (no port named web).
    let mut summary: Vec<SubsetSummary> = ep["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut ports: Vec<(String, i64)> = s["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["port"].as_i64().unwrap(),
                    )
                })
                .collect();
            ports.sort();
            (ports, ips(s, "addresses"), ips(s, "notReadyAddresses"))
        })
        .collect();
    summary.sort();
    let p = |n: &str, port: i64| (n.to_owned(), port);
    assert_eq!(
        summary,
        vec![
            (vec![p("http", 8080)], vec!["10.0.0.1".to_owned()], vec![]),
            (vec![p("http", 8081)], vec![], vec!["10.0.0.2".to_owned()]),
            (
                vec![p("metrics", 9090)],
                vec!["10.0.0.1".to_owned(), "10.0.0.3".to_owned()],
                vec!["10.0.0.2".to_owned()]
            ),
        ]
    );
    let first = &ep["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| !ips(s, "addresses").is_empty())
        .unwrap()["addresses"][0];
    assert_eq!(first["targetRef"]["kind"], "Pod");
    assert_eq!(first["nodeName"], "node-a");

    // b turns ready, c's labels change: the Endpoints follow.
    set_ready(&client, "b", true).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .unwrap();
    endpoints_where(&client, "shop", "b ready and c gone", |v| {
        let all: Vec<String> = v["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| {
                let mut a = ips(s, "addresses");
                a.extend(
                    ips(s, "notReadyAddresses")
                        .into_iter()
                        .map(|x| format!("!{x}")),
                );
                a
            })
            .collect();
        !all.iter().any(|x| x.starts_with('!'))
            && !all.contains(&"10.0.0.3".to_owned())
            && all.contains(&"10.0.0.2".to_owned())
    })
    .await;

    // A pod being deleted leaves; publishNotReadyAddresses keeps not-ready pods in addresses.
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    endpoints_where(&client, "shop", "a gone", |v| {
        !v.to_string().contains("10.0.0.1")
    })
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    set_ready(&client, "b", false).await;
    services
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"publishNotReadyAddresses": true}})),
        )
        .await
        .unwrap();
    // Both the not-ready and the terminating pod are published as addresses.
    endpoints_where(
        &client,
        "shop",
        "not-ready b and terminating a published",
        |v| {
            v["subsets"].as_array().is_some_and(|s| {
                let addresses: Vec<String> = s.iter().flat_map(|s| ips(s, "addresses")).collect();
                s.iter().all(|s| s.get("notReadyAddresses").is_none())
                    && addresses.contains(&"10.0.0.2".to_owned())
                    && addresses.contains(&"10.0.0.1".to_owned())
            })
        },
    )
    .await;

    // Deleting the Service deletes its Endpoints.
    services
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    wait_for(Duration::from_secs(10), "endpoints deleted", || {
        let api = api.clone();
        async move { api.get_opt("shop").await.ok()?.is_none().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn selectorless_and_headless_services() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    // A Service without selector keeps the Endpoints its user wrote.
    service(
        &client,
        json!({"metadata": {"name": "external"}, "spec": {"ports": [{"port": 5432}]}}),
    )
    .await;
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NS);
    let manual: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "192.168.1.10"}], "ports": [{"port": 5432}]}],
    }))
    .unwrap();
    api.create(&PostParams::default(), &manual).await.unwrap();

    // A headless Service without ports: addresses without ports, the headless label, and
    // hostnames for pods whose subdomain is the Service.
    pod_with(
        &client,
        "db-0",
        json!({"app": "db"}),
        json!([]),
        "10.0.1.1",
        true,
        json!({"hostname": "db-0", "subdomain": "db"}),
    )
    .await;
    service(
        &client,
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}}}),
    )
    .await;
    let ep = endpoints_where(&client, "db", "headless endpoints", |v| {
        v["subsets"].as_array().is_some_and(|s| !s.is_empty())
    })
    .await;
    assert_eq!(
        ep["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );
    let subset = &ep["subsets"][0];
    assert!(subset.get("ports").is_none(), "{subset}");
    assert_eq!(subset["addresses"][0]["ip"], "10.0.1.1");
    assert_eq!(subset["addresses"][0]["hostname"], "db-0");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = api.get("external").await.unwrap();
    assert_eq!(
        serde_json::to_value(&kept.subsets).unwrap()[0]["addresses"][0]["ip"],
        "192.168.1.10"
    );
}

async fn slices_of(client: &Client, service: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let mut list = api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap()
        .items;
    list.sort_by_key(|s| s.name_any());
    list
}

#[tokio::test]
async fn endpoint_slices() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-1"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let web = json!([{"name": "web", "containerPort": 8080}]);
    pod(
        &client,
        "a",
        json!({"app": "api"}),
        web.clone(),
        "10.0.0.1",
        true,
    )
    .await;
    pod(
        &client,
        "b",
        json!({"app": "api"}),
        web.clone(),
        "10.0.0.2",
        false,
    )
    .await;
    let svc = service(
        &client,
        json!({
            "metadata": {"name": "api", "labels": {"team": "x"}},
            "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
        }),
    )
    .await;
    let slices = wait_for(Duration::from_secs(10), "slices of api", || {
        let client = client.clone();
        async move {
            let s = slices_of(&client, "api").await;
            (s.len() == 1 && s[0].endpoints.len() == 2).then_some(s)
        }
    })
    .await;
    let slice = &slices[0];
    let labels = slice.labels();
    assert_eq!(
        labels
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("x"));
    assert_eq!(slice.address_type, "IPv4");
    assert!(slice.name_any().starts_with("api-"));
    let owner = &slice.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Service", svc.uid().unwrap().as_str())
    );
    assert_eq!(owner.controller, Some(true));
    let ports = slice.ports.clone().unwrap();
    assert_eq!(ports[0].port, Some(8080));
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    let by_ip: BTreeMap<String, Value> = slice
        .endpoints
        .iter()
        .map(|e| (e.addresses[0].clone(), serde_json::to_value(e).unwrap()))
        .collect();
    let a = &by_ip["10.0.0.1"];
    assert_eq!(
        a["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(a["nodeName"], "node-a");
    assert_eq!(a["zone"], "zone-1");
    assert_eq!(a["targetRef"]["name"], "a");
    assert_eq!(
        by_ip["10.0.0.2"]["conditions"],
        json!({"ready": false, "serving": false, "terminating": false})
    );

    // A terminating pod stays, marked terminating; the slice is updated in place.
    let name = slice.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    let slices = wait_for(Duration::from_secs(10), "a terminating", || {
        let client = client.clone();
        async move {
            let s = slices_of(&client, "api").await;
            let a = s
                .first()?
                .endpoints
                .iter()
                .find(|e| e.addresses[0] == "10.0.0.1")?
                .clone();
            (a.conditions?.terminating == Some(true)).then_some(s)
        }
    })
    .await;
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].name_any(), name, "updated in place");
    let a = serde_json::to_value(
        &slices[0]
            .endpoints
            .iter()
            .find(|e| e.addresses[0] == "10.0.0.1")
            .unwrap()
            .conditions,
    )
    .unwrap();
    assert_eq!(
        a,
        json!({"ready": false, "serving": true, "terminating": true})
    );

    // More than 100 endpoints spread over slices of at most 100.
    for i in 0..105 {
        pod(
            &client,
            &format!("m-{i}"),
            json!({"app": "many"}),
            json!([]),
            &format!("10.2.{}.{}", i / 200, i % 200 + 1),
            true,
        )
        .await;
    }
    service(
        &client,
        json!({"metadata": {"name": "many"}, "spec": {"selector": {"app": "many"}, "ports": [{"port": 80}]}}),
    )
    .await;
    let sizes = wait_for(Duration::from_secs(15), "105 endpoints in slices", || {
        let client = client.clone();
        async move {
            let s = slices_of(&client, "many").await;
            let mut sizes: Vec<usize> = s.iter().map(|s| s.endpoints.len()).collect();
            sizes.sort();
            (sizes.iter().sum::<usize>() == 105).then_some(sizes)
        }
    })
    .await;
    assert_eq!(sizes, [5, 100]);

    // A Service whose pods all go keeps one empty slice.
    for name in ["a", "b"] {
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }
    wait_for(Duration::from_secs(10), "placeholder slice", || {
        let client = client.clone();
        async move {
            let s = slices_of(&client, "api").await;
            (s.len() == 1 && s[0].endpoints.is_empty()).then_some(())
        }
    })
    .await;
}
