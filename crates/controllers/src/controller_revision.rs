//! ControllerRevision history shared by the StatefulSet and DaemonSet loops, as upstream's
//! `pkg/controller/history`: each distinct pod template is kept as a revision named
//! `<owner>-<hash>` holding a patch that restores the template, numbered in the order the
//! templates were applied; rolling back to an old template renumbers its revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PostParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::workloads::{Error, Result, is_already_exists, is_not_found, patch_params};

/// The revision data of a template: a strategic merge patch replacing `spec.template`.
pub(crate) fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The template a revision's data restores.
pub(crate) fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// Upstream's `HashControllerRevision`: FNV-1 (32 bits) over the data and the collision
/// count, printed in decimal and safely encoded.
pub(crate) fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if let Some(probe) = collision_count {
        bytes.extend_from_slice(probe.to_string().as_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(b);
    }
    crate::workloads::safe_encode(&h.to_string())
}

/// `<owner>-<hash>`, the owner's name cut so that the whole stays a valid name.
pub(crate) fn revision_name(owner: &str, hash: &str) -> String {
    let owner = owner.get(..223).unwrap_or(owner);
    format!("{owner}-{hash}")
}

/// The revisions controlled by `owner` in the cache, oldest first.
pub(crate) fn owned<O: Resource>(
    store: &Store<ControllerRevision>,
    owner: &O,
) -> Vec<Arc<ControllerRevision>> {
    let uid = owner.meta().uid.as_deref().unwrap_or_default();
    let ns = owner.meta().namespace.as_deref();
    let mut revisions: Vec<_> = store
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == ns)
        .filter(|r| crate::pods::is_controlled_by(&r.metadata, uid))
        .collect();
    sort(&mut revisions);
    revisions
}

/// Sorts by revision number, then name.
pub(crate) fn sort(revisions: &mut [Arc<ControllerRevision>]) {
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The next revision number after `revisions` (sorted).
pub(crate) fn next_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.last().map_or(1, |r| r.revision + 1)
}

/// What the owner's template is stored as.
pub(crate) struct Wanted<'a, O> {
    /// The owner.
    pub owner: &'a O,
    /// Its pod template.
    pub template: &'a PodTemplateSpec,
    /// Extra labels for the revision (besides the template's).
    pub extra_labels: BTreeMap<String, String>,
    /// The owner's `status.collisionCount`.
    pub collision_count: Option<i32>,
}

/// Finds or makes the revision of the owner's current template, as upstream's
/// `getStatefulSetRevisions` and the DaemonSet's `constructHistory`: an equal revision is
/// reused (renumbered as the newest when it is not), otherwise one is created, bumping the
/// collision count on a name clash. Returns the revision and the collision count to store.
pub(crate) async fn ensure<O>(
    api: &Api<ControllerRevision>,
    wanted: Wanted<'_, O>,
    revisions: &[Arc<ControllerRevision>],
) -> Result<(Arc<ControllerRevision>, Option<i32>)>
where
    O: Resource<DynamicType = ()>,
{
    let data = template_patch(wanted.template);
    let next = next_revision(revisions);
    let equal: Vec<_> = revisions
        .iter()
        .filter(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
        .collect();
    if let Some(last_equal) = equal.last() {
        if revisions.last().map(|r| r.metadata.name.clone())
            == Some(last_equal.metadata.name.clone())
        {
            return Ok(((*last_equal).clone(), wanted.collision_count));
        }
        // A rollback: the old revision becomes the newest.
        let patch = json!({"revision": next});
        let updated = api
            .patch(
                &last_equal.name_any(),
                &patch_params(),
                &Patch::Merge(&patch),
            )
            .await?;
        return Ok((Arc::new(updated), wanted.collision_count));
    }
    let mut collision_count = wanted.collision_count;
    let owner_name = wanted.owner.meta().name.clone().unwrap_or_default();
    let mut labels = wanted
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for _ in 0..10 {
        let hash = hash(&data, collision_count);
        labels.extend(wanted.extra_labels.clone());
        let revision = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(revision_name(&owner_name, &hash)),
                namespace: wanted.owner.meta().namespace.clone(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![crate::pods::controller_ref(wanted.owner)]),
                ..Default::default()
            },
            data: Some(RawExtension(data.clone())),
            revision: next,
        };
        match api.create(&PostParams::default(), &revision).await {
            Ok(created) => return Ok((Arc::new(created), collision_count)),
            Err(e) if is_already_exists(&e) => {
                let existing = api.get(&revision.name_any()).await?;
                let same_owner = crate::pods::is_controlled_by(
                    &existing.metadata,
                    wanted.owner.meta().uid.as_deref().unwrap_or_default(),
                );
                if same_owner && existing.data.as_ref().map(|d| &d.0) == Some(&data) {
                    return Ok((Arc::new(existing), collision_count));
                }
                collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Invalid("too many revision name collisions".into()))
}

/// Deletes the oldest revisions beyond `limit` that are not `in_use`.
pub(crate) async fn truncate(
    api: &Api<ControllerRevision>,
    revisions: &[Arc<ControllerRevision>],
    limit: i32,
    in_use: impl Fn(&ControllerRevision) -> bool,
) -> Result<()> {
    let unused: Vec<_> = revisions.iter().filter(|r| !in_use(r)).collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if unused.len() <= limit {
        return Ok(());
    }
    for revision in &unused[..unused.len() - limit] {
        match api
            .delete(&revision.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_round_trips_and_hash_is_stable() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        let data = template_patch(&template);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let revision = ControllerRevision {
            data: Some(RawExtension(data.clone())),
            ..Default::default()
        };
        assert_eq!(template_of(&revision), Some(template));
        let h = hash(&data, None);
        assert_eq!(h, hash(&data, None));
        assert_ne!(h, hash(&data, Some(1)));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_eq!(revision_name("web", &h), format!("web-{h}"));
    }
}
