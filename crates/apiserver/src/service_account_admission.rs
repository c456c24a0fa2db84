//! ServiceAccount admission, as upstream's `ServiceAccount` plugin: a new pod runs as a
//! service account (`default` unless named), gets that account's imagePullSecrets when it
//! has none, and, unless automounting is turned off on the pod or the account, the
//! `kube-api-access-<suffix>` projected volume (a bound token, the cluster CA from the
//! `kube-root-ca.crt` ConfigMap and the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container, which is where
//! client libraries' in-cluster configuration looks.

use apimachinery::status::ApiError;
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;

/// Where client libraries look for the token, CA and namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Lifetime of the projected token; the node refreshes it well before (upstream's value).
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// Admits a new pod of `namespace`.
pub async fn admit_pod(
    cp: &ControlPlane,
    namespace: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    // Mirror pods of static manifests carry no API credentials.
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let name = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            pod.pointer("/spec/serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_owned();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    let account =
        crate::authn::service_account::core_object(cp, "ServiceAccount", namespace, &name).await?;
    let Some(account) = account else {
        // Upstream refuses the pod. The `default` account is created by a controller a
        // moment after its namespace, so a pod that races it is admitted, without
        // credentials, rather than refused.
        if name == "default" {
            return Ok(());
        }
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: error looking up service account {namespace}/{name}: serviceaccount \"{name}\" not found",
            pod.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )));
    };
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .expect("checked above");
    let has_pull_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_pull_secrets
        && let Some(secrets) = account.get("imagePullSecrets").filter(|s| s.is_array())
    {
        spec.insert("imagePullSecrets".into(), secrets.clone());
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    add_api_access(spec);
    Ok(())
}

/// Adds the projected volume and mounts it where no container mounts something already.
fn add_api_access(spec: &mut serde_json::Map<String, Value>) {
    let mounted_everywhere = ["initContainers", "containers"]
        .iter()
        .flat_map(|field| {
            spec.get(*field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .all(mounts_token_path);
    if mounted_everywhere {
        return;
    }
    let volume_name = format!("kube-api-access-{}", suffix());
    let volume = json!({
        "name": volume_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(volumes) => volumes.push(volume),
        None => {
            spec.insert("volumes".into(), json!([volume]));
        }
    }
    for field in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            if mounts_token_path(container) {
                continue;
            }
            let mount = json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH});
            match container
                .get_mut("volumeMounts")
                .and_then(Value::as_array_mut)
            {
                Some(mounts) => mounts.push(mount),
                None => {
                    container["volumeMounts"] = json!([mount]);
                }
            }
        }
    }
}

fn mounts_token_path(container: &Value) -> bool {
    container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
}

/// Five characters of upstream's generated-name alphabet (no vowels or look-alikes).
fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let random = uuid::Uuid::new_v4();
    random.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_is_mounted_in_every_container_once() {
        let mut pod = json!({
            "containers": [
                {"name": "a"},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]},
            ],
            "initContainers": [{"name": "init", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}],
        });
        let spec = pod.as_object_mut().unwrap();
        add_api_access(spec);
        let volume = pod["volumes"][0]["name"].as_str().unwrap().to_owned();
        assert!(
            volume.starts_with("kube-api-access-") && volume.len() == 21,
            "{volume}"
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"][0]["name"],
            volume.as_str()
        );
        assert_eq!(
            pod["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            pod["initContainers"][0]["volumeMounts"][1]["mountPath"],
            MOUNT_PATH
        );
        // A pod whose containers all mount the path themselves gets nothing.
        let mut own = json!({"containers": [{"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}]});
        add_api_access(own.as_object_mut().unwrap());
        assert!(own.get("volumes").is_none());
    }
}
