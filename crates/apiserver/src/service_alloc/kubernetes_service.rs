//! The `default/kubernetes` Service, as upstream's bootstrap controller keeps it: the first
//! address of the service CIDR, port 443 (`https`) to the API server's port, with an
//! Endpoints object and an EndpointSlice listing the API server's advertised address.

use std::net::SocketAddr;
use std::sync::Arc;

use apimachinery::status::ApiError;
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;
use crate::query::Query;
use crate::resource::Scope;

/// The Service's name, in `default`.
pub const NAME: &str = "kubernetes";

/// Creates the Service, its Endpoints and EndpointSlice, or brings them back to what the
/// configuration says (after a restart on another port, or a user's deletion).
pub async fn ensure(cp: &ControlPlane) -> Result<(), ApiError> {
    let network = cp.services().network.clone();
    let Some(ip) = network.kubernetes_ip() else {
        return Ok(());
    };
    let target_port = network.advertise.map_or(6443, |a| a.port());
    let ports =
        json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": target_port}]);
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "ports": ports, "sessionAffinity": "None"},
    });
    upsert(cp, "", "Service", service, |current, wanted| {
        // Only the ports are reconciled: the ClusterIP cannot change once set.
        let mut updated = current.clone();
        updated["spec"]["ports"] = wanted["spec"]["ports"].clone();
        updated["spec"]["type"] = json!("ClusterIP");
        (current["spec"]["ports"] != wanted["spec"]["ports"]
            || current["spec"]["type"] != "ClusterIP")
            .then_some(updated)
    })
    .await?;
    let Some(advertise) = network.advertise else {
        return Ok(());
    };
    upsert(
        cp,
        "",
        "Endpoints",
        endpoints(advertise),
        replace_field("subsets"),
    )
    .await?;
    upsert(
        cp,
        "discovery.k8s.io",
        "EndpointSlice",
        endpoint_slice(advertise),
        |current, wanted| {
            let fields = ["addressType", "endpoints", "ports"];
            fields.iter().any(|f| current[*f] != wanted[*f]).then(|| {
                let mut updated = current.clone();
                for f in fields {
                    updated[f] = wanted[f].clone();
                }
                updated
            })
        },
    )
    .await
}

fn endpoints(advertise: SocketAddr) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{
            "addresses": [{"ip": advertise.ip().to_string()}],
            "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}],
        }],
    })
}

fn endpoint_slice(advertise: SocketAddr) -> Value {
    let family = if advertise.is_ipv4() { "IPv4" } else { "IPv6" };
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": "default", "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": family,
        "endpoints": [{"addresses": [advertise.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": advertise.port(), "protocol": "TCP"}],
    })
}

fn replace_field(field: &'static str) -> impl Fn(&Value, &Value) -> Option<Value> {
    move |current, wanted| {
        (current[field] != wanted[field]).then(|| {
            let mut updated = current.clone();
            updated[field] = wanted[field].clone();
            updated
        })
    }
}

/// Creates `wanted`, or updates the existing object with what `differs` returns.
async fn upsert(
    cp: &ControlPlane,
    group: &str,
    kind_name: &str,
    wanted: Value,
    differs: impl Fn(&Value, &Value) -> Option<Value>,
) -> Result<(), ApiError> {
    let Some(kind) = cp.registry().by_kind(group, kind_name) else {
        return Ok(());
    };
    let scope = Scope {
        cp,
        kind: Arc::clone(&kind),
        namespace: Some("default".into()),
        name: Some(NAME.into()),
        subresource: None,
        duplicates: Vec::new(),
        custom: None,
        manager: "kube-apiserver".into(),
    };
    let query = Query::parse(None);
    match scope.get().await {
        Ok(current) => {
            if let Some(updated) = differs(&current, &wanted) {
                scope.update(&query, updated).await?;
            }
            Ok(())
        }
        Err(e) if e.code == 404 => match scope.create(&query, wanted).await {
            Ok(_) => Ok(()),
            // Another API server created it a moment ago.
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}
