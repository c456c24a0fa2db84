//! CustomResourceDefinitions in a control plane: stored CRDs become served kinds, a new
//! CRD is established (names accepted, status conditions set) as soon as it is written, and
//! deleting a CRD deletes its objects.

use apimachinery::kinds::KindInfo;
use apimachinery::object::{ObjectExt, now};
use apimachinery::status::ApiError;
use serde_json::{Value, json};
use store::RangeRequest;

use crate::control_plane::{ControlPlane, CustomKind, Registry};
use crate::storage::{decode, store_error};

/// The CRD kind's group.
pub const GROUP: &str = "apiextensions.k8s.io";

/// True for the CustomResourceDefinition kind itself.
pub fn is_crd(kind: &KindInfo) -> bool {
    kind.group == GROUP && kind.kind == "CustomResourceDefinition"
}

fn crd_kind(cp: &ControlPlane) -> Result<std::sync::Arc<KindInfo>, ApiError> {
    cp.registry()
        .by_kind(GROUP, "CustomResourceDefinition")
        .ok_or_else(ApiError::no_route)
}

/// Every stored CRD.
async fn stored_crds(cp: &ControlPlane) -> Result<Vec<Value>, ApiError> {
    let kind = crd_kind(cp)?;
    let prefix = cp.store.prefix(&kind, None);
    let range = cp
        .store
        .backend()
        .range(RangeRequest {
            prefix,
            ..Default::default()
        })
        .await
        .map_err(store_error)?;
    range.kvs.iter().map(decode).collect()
}

/// The kinds one CRD serves, with what serving them needs.
pub fn custom_kinds(crd: &Value) -> Vec<(KindInfo, CustomKind)> {
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .unwrap_or("")
        .to_owned();
    apimachinery::crd::kinds_of(crd)
        .into_iter()
        .map(|mut info| {
            info.schema_name = Some(definition_name(&info));
            let version = versions
                .iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(info.version.as_str()));
            let field = |path: &str| version.and_then(|v| v.pointer(path)).cloned();
            let extra = CustomKind {
                crd_name: crd.name().to_owned(),
                schema: field("/schema/openAPIV3Schema").unwrap_or_else(|| json!({})),
                storage_version: storage_version.clone(),
                printer_columns: field("/additionalPrinterColumns").unwrap_or_else(|| json!([])),
                scale: field("/subresources/scale"),
            };
            (info, extra)
        })
        .collect()
}

/// The OpenAPI definition name of a custom kind, as upstream forms it: the group's labels
/// reversed, then version and kind (`com.example.stable.v1.CronTab`).
pub fn definition_name(info: &KindInfo) -> String {
    let group: Vec<&str> = info.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), info.version, info.kind)
}

/// Rebuilds the served kinds from the stored CRDs.
pub async fn reload(cp: &ControlPlane) -> Result<(), ApiError> {
    let crds = stored_crds(cp).await?;
    let custom = crds.iter().flat_map(custom_kinds).collect();
    cp.set_registry(Registry::with_custom(custom));
    Ok(())
}

/// Marks a CRD's names accepted and the CRD established (its kinds are served at once).
pub async fn establish(cp: &ControlPlane, name: &str) -> Result<(), ApiError> {
    let kind = crd_kind(cp)?;
    let key = cp.store.key(&kind, "", name);
    for _ in 0..8 {
        let Some(crd) = cp.store.get(&key).await? else {
            return Ok(());
        };
        let mut updated = crd.clone();
        let names = crd
            .pointer("/spec/names")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let storage: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .filter_map(|v| v.get("name").cloned())
            .collect();
        let mut stored: Vec<Value> = crd
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for v in storage {
            if !stored.contains(&v) {
                stored.push(v);
            }
        }
        let previous = crd
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let condition = |type_: &str, reason: &str, message: &str| {
            let since = previous
                .iter()
                .find(|c| c["type"] == type_ && c["status"] == "True")
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now()));
            json!({"type": type_, "status": "True", "lastTransitionTime": since, "reason": reason, "message": message})
        };
        updated["status"] = json!({
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "acceptedNames": names,
            "storedVersions": stored,
        });
        if updated == crd {
            return Ok(());
        }
        let rev = crd.resource_version().parse().unwrap_or(0);
        match cp.store.update(&key, &updated, rev).await {
            Ok(_) => return Ok(()),
            Err(store::Error::Conflict { .. }) => continue,
            Err(store::Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(ApiError::conflict(
        GROUP,
        "customresourcedefinitions",
        name,
        "too many concurrent writes; try again",
    ))
}

/// Deletes every object of a CRD (all versions share one collection).
pub async fn delete_instances(cp: &ControlPlane, crd: &Value) -> Result<(), ApiError> {
    let Some(info) = apimachinery::crd::kinds_of(crd).into_iter().next() else {
        return Ok(());
    };
    let prefix = cp.store.prefix(&info, None);
    loop {
        let page = cp
            .store
            .backend()
            .range(RangeRequest {
                prefix: prefix.clone(),
                limit: 500,
                ..Default::default()
            })
            .await
            .map_err(store_error)?;
        for kv in &page.kvs {
            match cp.store.backend().delete(&kv.key, None).await {
                Ok(_) | Err(store::Error::NotFound(_)) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        if !page.more {
            return Ok(());
        }
    }
}
