//! Service addresses with the installed kubectl against a real `kumo server`: ClusterIPs
//! and NodePorts are allocated, duplicates are refused with 422, the `kubernetes` Service
//! points at the server, and a restart keeps every allocation.

use std::time::Duration;

use e2e::Kumo;

fn jsonpath(kumo: &Kumo, what: &[&str], path: &str) -> anyhow::Result<String> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let expr = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &expr]);
    Ok(kumo.kubectl(&args)?.trim().to_owned())
}

fn in_service_cidr(ip: &str, prefix: &str) -> bool {
    ip.starts_with(prefix) && ip.parse::<std::net::Ipv4Addr>().is_ok()
}

const NODEPORT_MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: shop
  labels:
    tier: front
spec:
  type: NodePort
  selector:
    app: shop
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

#[test]
fn services_get_addresses_that_survive_restarts() -> anyhow::Result<()> {
    let mut kumo = Kumo::start()?;

    // The kubernetes Service: the first address, port 443 to the server.
    assert_eq!(
        jsonpath(&kumo, &["svc", "kubernetes"], "{.spec.clusterIP}")?,
        "10.43.0.1"
    );
    let port = kumo.url.rsplit(':').next().unwrap_or("").to_owned();
    assert_eq!(
        jsonpath(
            &kumo,
            &["endpoints", "kubernetes"],
            "{.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}"
        )?,
        format!("127.0.0.1:{port}")
    );
    assert_eq!(
        jsonpath(
            &kumo,
            &["endpointslices", "kubernetes"],
            "{.endpoints[0].addresses[0]}"
        )?,
        "127.0.0.1"
    );

    // kubectl expose and kubectl create service.
    kumo.kubectl(&["create", "deployment", "web", "--image=busybox:1.36"])?;
    kumo.kubectl(&["expose", "deployment", "web", "--port", "80"])?;
    let web_ip = jsonpath(&kumo, &["svc", "web"], "{.spec.clusterIP}")?;
    assert!(in_service_cidr(&web_ip, "10.43."), "{web_ip}");
    assert_ne!(web_ip, "10.43.0.1");
    assert_eq!(
        jsonpath(&kumo, &["svc", "web"], "{.spec.clusterIPs[0]}")?,
        web_ip
    );
    assert_eq!(
        jsonpath(&kumo, &["svc", "web"], "{.spec.ipFamilies[0]}")?,
        "IPv4"
    );
    // A new Service shows an empty status, as upstream's does.
    assert_eq!(
        jsonpath(&kumo, &["svc", "web"], "{.status}")?,
        r#"{"loadBalancer":{}}"#
    );

    kumo.kubectl(&["create", "service", "nodeport", "np", "--tcp=80:8080"])?;
    let node_port: u16 = jsonpath(&kumo, &["svc", "np"], "{.spec.ports[0].nodePort}")?.parse()?;
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    let np_ip = jsonpath(&kumo, &["svc", "np"], "{.spec.clusterIP}")?;
    assert!(in_service_cidr(&np_ip, "10.43.") && np_ip != web_ip);

    // Taken addresses are refused.
    let err = kumo.kubectl_fails(&[
        "create",
        "service",
        "clusterip",
        "dup",
        &format!("--clusterip={web_ip}"),
        "--tcp=80",
    ])?;
    assert!(
        err.contains("is invalid: spec.clusterIPs: Invalid value: []string{")
            && err.contains("provided IP is already allocated"),
        "{err}"
    );
    let err = kumo.kubectl_fails(&[
        "create",
        "service",
        "nodeport",
        "np2",
        "--tcp=80:8080",
        &format!("--node-port={node_port}"),
    ])?;
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value:")
            && err.contains("provided port is already allocated"),
        "{err}"
    );
    let err = kumo.kubectl_fails(&[
        "create",
        "service",
        "clusterip",
        "far",
        "--clusterip=10.99.0.1",
        "--tcp=80",
    ])?;
    assert!(err.contains("is not in the valid range"), "{err}");
    // A dry run allocates nothing.
    kumo.kubectl(&[
        "create",
        "service",
        "clusterip",
        "dry",
        "--clusterip=10.43.0.99",
        "--tcp=80",
        "--dry-run=server",
    ])?;
    kumo.kubectl(&[
        "create",
        "service",
        "clusterip",
        "wet",
        "--clusterip=10.43.0.99",
        "--tcp=80",
    ])?;

    // Re-applying a manifest keeps the allocated values.
    kumo.kubectl_stdin(&["apply", "-f", "-"], NODEPORT_MANIFEST)?;
    let shop_ip = jsonpath(&kumo, &["svc", "shop"], "{.spec.clusterIP}")?;
    let shop_port = jsonpath(&kumo, &["svc", "shop"], "{.spec.ports[0].nodePort}")?;
    kumo.kubectl_stdin(
        &["apply", "-f", "-"],
        &NODEPORT_MANIFEST.replace("tier: front", "tier: back"),
    )?;
    assert_eq!(
        jsonpath(&kumo, &["svc", "shop"], "{.spec.clusterIP}")?,
        shop_ip
    );
    assert_eq!(
        jsonpath(&kumo, &["svc", "shop"], "{.spec.ports[0].nodePort}")?,
        shop_port
    );
    // NodePort → ClusterIP gives the node port back.
    kumo.kubectl(&[
        "patch",
        "svc",
        "shop",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ])?;
    assert_eq!(
        jsonpath(&kumo, &["svc", "shop"], "{.spec.ports[0].nodePort}")?,
        ""
    );
    kumo.kubectl(&[
        "create",
        "service",
        "nodeport",
        "takes-port",
        "--tcp=80:8080",
        &format!("--node-port={shop_port}"),
    ])?;

    // After a restart the same addresses are still taken, and deleting frees them.
    kumo.restart()?;
    assert_eq!(
        jsonpath(&kumo, &["svc", "web"], "{.spec.clusterIP}")?,
        web_ip
    );
    let err = kumo.kubectl_fails(&[
        "create",
        "service",
        "clusterip",
        "dup",
        &format!("--clusterip={np_ip}"),
        "--tcp=80",
    ])?;
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let err = kumo.kubectl_fails(&[
        "create",
        "service",
        "nodeport",
        "np2",
        "--tcp=80:8080",
        &format!("--node-port={node_port}"),
    ])?;
    assert!(err.contains("provided port is already allocated"), "{err}");
    kumo.kubectl(&["delete", "svc", "np"])?;
    kumo.kubectl(&[
        "create",
        "service",
        "nodeport",
        "np2",
        "--tcp=80:8080",
        &format!("--node-port={node_port}"),
    ])?;
    kumo.kubectl(&[
        "create",
        "service",
        "clusterip",
        "dup",
        &format!("--clusterip={np_ip}"),
        "--tcp=80",
    ])?;
    Ok(())
}

#[test]
fn the_service_cidr_is_configurable() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--service-cidr", "10.96.0.0/24"])?;
    assert_eq!(
        jsonpath(&kumo, &["svc", "kubernetes"], "{.spec.clusterIP}")?,
        "10.96.0.1"
    );
    kumo.kubectl(&["create", "service", "clusterip", "a", "--tcp=80"])?;
    let ip = jsonpath(&kumo, &["svc", "a"], "{.spec.clusterIP}")?;
    assert!(in_service_cidr(&ip, "10.96.0."), "{ip}");
    let err = kumo.kubectl_fails(&[
        "create",
        "service",
        "clusterip",
        "b",
        "--clusterip=10.43.0.5",
        "--tcp=80",
    ])?;
    assert!(
        err.contains("The range of valid IPs is 10.96.0.0/24"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_node_port_range_is_configurable() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--service-node-port-range", "31000-31001"])?;
    for name in ["a", "b"] {
        kumo.kubectl(&["create", "service", "nodeport", name, "--tcp=80"])?;
        let port = jsonpath(&kumo, &["svc", name], "{.spec.ports[0].nodePort}")?;
        assert!(["31000", "31001"].contains(&port.as_str()), "{port}");
    }
    // The range is used up, and ports outside it are refused.
    let err = kumo.kubectl_fails(&["create", "service", "nodeport", "c", "--tcp=80"])?;
    assert!(err.contains("range is full"), "{err}");
    let err = kumo.kubectl_fails(&[
        "create",
        "service",
        "nodeport",
        "d",
        "--tcp=80",
        "--node-port=30080",
    ])?;
    assert!(err.contains("31000-31001"), "{err}");
    // A malformed range stops the server from starting.
    assert!(Kumo::start_with(&["--service-node-port-range", "32000-31000"]).is_err());
    Ok(())
}

#[test]
fn node_pod_cidrs_come_from_the_cluster_cidr() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&[
        "--cluster-cidr",
        "10.99.0.0/16",
        "--node-cidr-mask-size",
        "26",
    ])?;
    // Nodes that register without a podCIDR, as an agent started without --pod-cidr does.
    for name in ["n1", "n2"] {
        kumo.kubectl_stdin(
            &["create", "-f", "-"],
            &format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{{\"name\":\"{name}\"}}}}"
            ),
        )?;
    }
    let mut cidrs = String::new();
    let assigned = e2e::eventually(Duration::from_secs(20), || {
        cidrs = kumo
            .kubectl(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"])
            .unwrap_or_default();
        cidrs.split_whitespace().count() == 2
    });
    assert!(assigned, "both nodes got a podCIDR: {cidrs:?}");
    let mut got: Vec<&str> = cidrs.split_whitespace().collect();
    got.sort();
    assert_eq!(got, ["10.99.0.0/26", "10.99.0.64/26"]);
    // A mask that does not fit the cluster CIDR is refused at start.
    assert!(
        Kumo::start_with(&[
            "--cluster-cidr",
            "10.99.0.0/16",
            "--node-cidr-mask-size",
            "8"
        ])
        .is_err()
    );
    Ok(())
}
