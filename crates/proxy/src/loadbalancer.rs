//! LoadBalancer Services on bare metal, as k3s's ServiceLB and MetalLB do it: a Service of
//! type LoadBalancer (without a `loadBalancerClass`, which names another implementation)
//! gets a free address of the configured pool in `status.loadBalancer.ingress`, and the
//! proxy's rules send that address's traffic to the Service like an external IP.
//!
//! Every node's proxy may assign: each write carries the resourceVersion it read, so of
//! two proxies racing for one Service only one wins, and the loser sees the winner's
//! address on its next sync.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// Hands out pool addresses to LoadBalancer Services.
pub struct Assigner {
    client: kube::Client,
    pool: Vec<IpNet>,
}

impl Assigner {
    /// An assigner over `pool` (empty: assigns nothing).
    pub fn new(client: kube::Client, pool: Vec<IpNet>) -> Self {
        Self { client, pool }
    }

    /// Gives every pending LoadBalancer Service of `services` an address.
    pub async fn assign(&self, services: &[Arc<Service>]) {
        if self.pool.is_empty() {
            return;
        }
        let mut used: HashSet<IpAddr> = services.iter().flat_map(|s| ingress_ips(s)).collect();
        for svc in services {
            if !wants_address(svc) {
                continue;
            }
            let requested = svc
                .spec
                .as_ref()
                .and_then(|s| s.load_balancer_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            let Some(ip) = pick(&self.pool, &used, requested) else {
                tracing::warn!(service = ?svc.metadata.name, "no free LoadBalancer address in the pool");
                continue;
            };
            let (Some(ns), Some(name)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let patch = json!({
                "metadata": {"resourceVersion": svc.metadata.resource_version},
                "status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}},
            });
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = ns, service = name, %ip, "assigned a LoadBalancer address");
                    used.insert(ip);
                }
                // Another proxy won, or the Service changed: the next sync sees it.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(namespace = ns, service = name, error = %e, "assigning a LoadBalancer address failed")
                }
            }
        }
    }
}

/// Whether `svc` is a LoadBalancer Service this implementation serves and still lacks an
/// address.
pub fn wants_address(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec.load_balancer_class.is_none()
        && ingress_ips(svc).is_empty()
}

fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The requested address if it is in the pool and free, else the first free one.
pub fn pick(pool: &[IpNet], used: &HashSet<IpAddr>, requested: Option<IpAddr>) -> Option<IpAddr> {
    if let Some(ip) = requested {
        return (pool.iter().any(|net| net.contains(&ip)) && !used.contains(&ip)).then_some(ip);
    }
    pool.iter()
        .flat_map(|net| net.hosts())
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_free_pool_addresses() {
        let pool: Vec<IpNet> = vec![
            "192.0.2.8/30".parse().expect("net"),
            "198.51.100.7/32".parse().expect("net"),
        ];
        let mut used = HashSet::new();
        assert_eq!(
            pick(&pool, &used, None),
            Some("192.0.2.9".parse().expect("ip"))
        );
        used.insert("192.0.2.9".parse().expect("ip"));
        used.insert("192.0.2.10".parse().expect("ip"));
        assert_eq!(
            pick(&pool, &used, None),
            Some("198.51.100.7".parse().expect("ip"))
        );
        used.insert("198.51.100.7".parse().expect("ip"));
        assert_eq!(pick(&pool, &used, None), None);
        assert_eq!(
            pick(
                &pool,
                &HashSet::new(),
                Some("192.0.2.10".parse().expect("ip"))
            ),
            Some("192.0.2.10".parse().expect("ip"))
        );
        assert_eq!(
            pick(
                &pool,
                &HashSet::new(),
                Some("10.0.0.1".parse().expect("ip"))
            ),
            None
        );
    }

    #[test]
    fn only_pending_load_balancers_of_no_other_class_want_addresses() {
        let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).expect("service") };
        assert!(wants_address(&svc(
            json!({"spec": {"type": "LoadBalancer"}})
        )));
        assert!(!wants_address(&svc(json!({"spec": {"type": "NodePort"}}))));
        assert!(!wants_address(&svc(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}})
        )));
        assert!(!wants_address(&svc(
            json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}}})
        )));
    }
}
