//! VolumeBinding, upstream's plugin simplified: the PersistentVolumeClaims a pod uses
//! decide where it may run.
//!
//! PreFilter: every claim must exist and not be deleting; a claim bound to a volume
//! brings that volume's node affinity; an unbound claim must be of a
//! `WaitForFirstConsumer` class (an unbound claim of an immediate class waits for the
//! binder instead). Filter: the node must satisfy every bound volume's node affinity,
//! and for each waiting claim either hold an Available volume that matches it (classes
//! without a provisioner) or be allowed by the class's `allowedTopologies` (classes with
//! one). PreBind: the waiting claims get the `volume.kubernetes.io/selected-node`
//! annotation, which the binder and the provisioner act on. Unlike upstream, binding the
//! pod does not wait for the claims to be bound: the node's agent holds the pod in
//! ContainerCreating until they are.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::selectors::node_matches_terms;

/// The claim annotation naming the node of the claim's first consumer.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner of classes whose volumes are all created by hand.
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// Filter reason: a bound volume cannot be reached from the node.
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Filter reason: no volume can be bound or provisioned for a waiting claim.
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// PreFilter reason: an unbound claim of an immediate class.
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// Reason: a claim is bound to a volume that does not exist.
pub const ERR_VOLUME_MISSING: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// The claims, volumes and classes of the cluster, as the informers last saw them.
#[derive(Clone, Default)]
pub struct Volumes {
    claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
}

fn claim_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Volumes {
    /// Adds or replaces a claim.
    pub fn set_claim(&mut self, claim: PersistentVolumeClaim) {
        let key = claim_key(
            claim.metadata.namespace.as_deref().unwrap_or_default(),
            claim.metadata.name.as_deref().unwrap_or_default(),
        );
        self.claims.insert(key, Arc::new(claim));
    }

    /// Forgets a claim (`namespace/name`).
    pub fn remove_claim(&mut self, key: &str) {
        self.claims.remove(key);
    }

    /// Adds or replaces a volume.
    pub fn set_volume(&mut self, volume: PersistentVolume) {
        let name = volume.metadata.name.clone().unwrap_or_default();
        self.volumes.insert(name, Arc::new(volume));
    }

    /// Forgets a volume.
    pub fn remove_volume(&mut self, name: &str) {
        self.volumes.remove(name);
    }

    /// Adds or replaces a class.
    pub fn set_class(&mut self, class: StorageClass) {
        let name = class.metadata.name.clone().unwrap_or_default();
        self.classes.insert(name, Arc::new(class));
    }

    /// Forgets a class.
    pub fn remove_class(&mut self, name: &str) {
        self.classes.remove(name);
    }

    /// Keys of every claim (`namespace/name`), for relists.
    pub fn claim_keys(&self) -> Vec<String> {
        self.claims.keys().cloned().collect()
    }

    /// Names of every volume.
    pub fn volume_names(&self) -> Vec<String> {
        self.volumes.keys().cloned().collect()
    }

    /// Names of every class.
    pub fn class_names(&self) -> Vec<String> {
        self.classes.keys().cloned().collect()
    }
}

/// What PreFilter found about a pod's claims.
#[derive(Debug, Default)]
pub struct PodVolumes {
    /// Volumes bound to the pod's claims.
    bound: Vec<Arc<PersistentVolume>>,
    /// Unbound claims of `WaitForFirstConsumer` classes.
    waiting: Vec<WaitingClaim>,
}

#[derive(Debug)]
struct WaitingClaim {
    claim: Arc<PersistentVolumeClaim>,
    /// The class provisions volumes; otherwise an existing volume must match.
    class: Arc<StorageClass>,
    /// Available volumes that match the claim, whatever their node (static classes).
    candidates: Vec<Arc<PersistentVolume>>,
}

impl PodVolumes {
    /// `(namespace, name)` of the claims to annotate with the chosen node.
    pub fn claims_to_annotate(&self) -> Vec<(String, String)> {
        self.waiting
            .iter()
            .map(|w| {
                (
                    w.claim.metadata.namespace.clone().unwrap_or_default(),
                    w.claim.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Filter: whether the pod's volumes allow `node`, or upstream's reason why not.
    pub fn filter(&self, node: &Node) -> Result<(), &'static str> {
        if self.bound.iter().any(|pv| !reachable_from(pv, node)) {
            return Err(ERR_NODE_CONFLICT);
        }
        for waiting in &self.waiting {
            let ok = if waiting.class.provisioner == NO_PROVISIONER {
                waiting.candidates.iter().any(|pv| reachable_from(pv, node))
            } else {
                allowed_topology(&waiting.class, node)
            };
            if !ok {
                return Err(ERR_BIND_CONFLICT);
            }
        }
        Ok(())
    }
}

/// PreFilter: the pod's claims, or why the pod cannot be scheduled anywhere. `None` when
/// the pod uses no claim.
pub fn pre_filter(pod: &Pod, volumes: &Volumes) -> Result<Option<PodVolumes>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claim_names: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
        .collect();
    if claim_names.is_empty() {
        return Ok(None);
    }
    let mut found = PodVolumes::default();
    for name in claim_names {
        let Some(claim) = volumes.claims.get(&claim_key(namespace, name)) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let spec = claim.spec.clone().unwrap_or_default();
        if let Some(volume_name) = spec.volume_name.as_deref().filter(|n| !n.is_empty()) {
            let Some(pv) = volumes.volumes.get(volume_name) else {
                return Err(ERR_VOLUME_MISSING.into());
            };
            found.bound.push(pv.clone());
            continue;
        }
        let class_name = spec.storage_class_name.as_deref().unwrap_or("");
        let class = volumes
            .classes
            .get(class_name)
            .filter(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        let Some(class) = class else {
            return Err(ERR_UNBOUND_IMMEDIATE.into());
        };
        let candidates = volumes
            .volumes
            .values()
            .filter(|pv| available_for(pv, claim, class_name))
            .cloned()
            .collect();
        found.waiting.push(WaitingClaim {
            claim: claim.clone(),
            class: class.clone(),
            candidates,
        });
    }
    Ok(Some(found))
}

/// Whether an unclaimed Available volume can serve the claim (class, modes, size).
fn available_for(pv: &PersistentVolume, claim: &PersistentVolumeClaim, class: &str) -> bool {
    let (Some(spec), Some(claim_spec)) = (pv.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    let available = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available");
    let storage = |list: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| {
        list.and_then(|l| l.get("storage"))
            .map_or(0, crate::resources::value)
    };
    let modes = spec.access_modes.clone().unwrap_or_default();
    available
        && spec.claim_ref.is_none()
        && pv.metadata.deletion_timestamp.is_none()
        && spec.storage_class_name.as_deref().unwrap_or("") == class
        && claim_spec
            .access_modes
            .iter()
            .flatten()
            .all(|m| modes.contains(m))
        && storage(spec.capacity.as_ref())
            >= storage(
                claim_spec
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref()),
            )
}

/// Whether the volume's required node affinity admits `node`.
fn reachable_from(pv: &PersistentVolume, node: &Node) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_none_or(|required| node_matches_terms(node, &required.node_selector_terms))
}

/// Whether the class's `allowedTopologies` (if any) admit `node`: some term whose every
/// expression has the node's label value among its values.
fn allowed_topology(class: &StorageClass, node: &Node) -> bool {
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    terms.iter().any(|term| {
        term.match_label_expressions
            .iter()
            .flatten()
            .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
    })
}

/// PreBind: annotates the waiting claims with the chosen node.
pub async fn annotate_selected_node(
    client: &Client,
    claims: &[(String, String)],
    node: &str,
) -> Result<(), kube::Error> {
    for (namespace, name) in claims {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        let patch = serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volumes() -> Volumes {
        let mut v = Volumes::default();
        v.set_class(serde_json::from_value(json!({"metadata": {"name": "local-path"}, "provisioner": "kumo.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"})).unwrap());
        v.set_class(serde_json::from_value(json!({"metadata": {"name": "zoned"}, "provisioner": "kumo.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer",
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": ["a"]}]}]})).unwrap());
        v.set_class(serde_json::from_value(json!({"metadata": {"name": "manual"}, "provisioner": NO_PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer"})).unwrap());
        v.set_class(
            serde_json::from_value(json!({"metadata": {"name": "immediate"}, "provisioner": "x"}))
                .unwrap(),
        );
        let claim = |name: &str, class: &str, volume: &str| {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"storageClassName": class, "volumeName": volume, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap()
        };
        v.set_claim(claim("dynamic", "local-path", ""));
        v.set_claim(claim("zoned", "zoned", ""));
        v.set_claim(claim("static", "manual", ""));
        v.set_claim(claim("now", "immediate", ""));
        v.set_claim(claim("bound", "local-path", "pv-n1"));
        v.set_claim(claim("dangling", "local-path", "gone"));
        let local = |name: &str, node: &str, class: &str, phase: &str| {
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"storageClassName": class, "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/d"},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
                "status": {"phase": phase}})).unwrap()
        };
        v.set_volume(local("pv-n1", "n1", "local-path", "Bound"));
        v.set_volume(local("manual-n2", "n2", "manual", "Available"));
        v
    }

    fn pod(claims: &[&str]) -> Pod {
        let vols: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [], "volumes": vols}})).unwrap()
    }

    fn node(name: &str, zone: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}}})).unwrap()
    }

    fn check(claims: &[&str]) -> Result<Vec<&'static str>, String> {
        let found = pre_filter(&pod(claims), &volumes())?.unwrap_or_default();
        Ok([node("n1", "a"), node("n2", "b")]
            .iter()
            .map(|n| match found.filter(n) {
                Ok(()) => "ok",
                Err(reason) => reason,
            })
            .collect())
    }

    #[test]
    fn claims_decide_the_nodes() {
        assert_eq!(check(&[]), Ok(vec!["ok", "ok"]));
        assert_eq!(check(&["dynamic"]), Ok(vec!["ok", "ok"]));
        assert_eq!(check(&["bound"]), Ok(vec!["ok", ERR_NODE_CONFLICT]));
        assert_eq!(check(&["static"]), Ok(vec![ERR_BIND_CONFLICT, "ok"]));
        assert_eq!(check(&["zoned"]), Ok(vec!["ok", ERR_BIND_CONFLICT]));
        assert_eq!(
            check(&["dynamic", "bound"]),
            Ok(vec!["ok", ERR_NODE_CONFLICT])
        );
        assert_eq!(
            check(&["missing"]),
            Err("persistentvolumeclaim \"missing\" not found".into())
        );
        assert_eq!(check(&["now"]), Err(ERR_UNBOUND_IMMEDIATE.into()));
        assert_eq!(check(&["dangling"]), Err(ERR_VOLUME_MISSING.into()));
        let found = pre_filter(&pod(&["dynamic", "bound", "static"]), &volumes())
            .unwrap()
            .unwrap();
        assert_eq!(
            found.claims_to_annotate(),
            [
                ("default".to_owned(), "dynamic".to_owned()),
                ("default".to_owned(), "static".to_owned())
            ]
        );
    }
}
