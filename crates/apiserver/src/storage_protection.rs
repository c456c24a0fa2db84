//! Upstream's `StorageObjectInUseProtection` admission plugin: every new
//! PersistentVolumeClaim gets the `kubernetes.io/pvc-protection` finalizer and every new
//! PersistentVolume `kubernetes.io/pv-protection`. The protection controllers
//! (`controllers::volume_protection`) remove them once a deleted claim is used by no pod,
//! or a deleted volume is no longer bound, so storage in use never vanishes under a pod.

use apimachinery::kinds::KindInfo;
use apimachinery::object::{ObjectExt, metadata_mut};
use serde_json::json;

/// The finalizer that keeps a claim while pods use it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while it is bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Adds the protection finalizer to a PersistentVolumeClaim or PersistentVolume being
/// created (the main resource; subresources never create these kinds); other kinds pass
/// unchanged.
pub fn admit_create(kind: &KindInfo, obj: &mut serde_json::Value) {
    let finalizer = match (kind.group.as_str(), kind.kind.as_str()) {
        ("", "PersistentVolumeClaim") => PVC_PROTECTION,
        ("", "PersistentVolume") => PV_PROTECTION,
        _ => return,
    };
    let mut finalizers = obj.finalizers();
    if finalizers.iter().any(|f| f == finalizer) {
        return;
    }
    finalizers.push(finalizer.to_owned());
    metadata_mut(obj).insert("finalizers".into(), json!(finalizers));
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimachinery::kinds::builtin;
    use serde_json::Value;

    fn admitted(kind: &str, obj: Value) -> Value {
        let kind = builtin()
            .into_iter()
            .find(|i| i.kind == kind)
            .expect("kind");
        let mut obj = obj;
        admit_create(&kind, &mut obj);
        obj
    }

    #[test]
    fn claims_and_volumes_get_their_finalizer_once() {
        let claim = admitted("PersistentVolumeClaim", json!({"metadata": {"name": "c"}}));
        assert_eq!(claim.finalizers(), [PVC_PROTECTION]);
        let volume = admitted(
            "PersistentVolume",
            json!({"metadata": {"name": "v", "finalizers": ["example.com/keep"]}}),
        );
        assert_eq!(volume.finalizers(), ["example.com/keep", PV_PROTECTION]);
        let again = admitted("PersistentVolume", volume.clone());
        assert_eq!(again, volume);
        let other = admitted("ConfigMap", json!({"metadata": {"name": "m"}}));
        assert!(other.finalizers().is_empty());
    }
}
