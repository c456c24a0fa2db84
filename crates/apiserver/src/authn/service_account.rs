//! Service-account tokens: JWTs signed by the cluster's [`SigningKeys`].
//!
//! Two kinds, as upstream:
//! - *bound* tokens from the TokenRequest API (`serviceaccounts/<name>/token`): audience,
//!   expiry, and optionally bound to a Pod, Secret or Node; they stop working when the bound
//!   object is gone (a pod being deleted keeps its tokens for 60 s, so it can shut down);
//! - *legacy* tokens kept in `kubernetes.io/service-account-token` Secrets: no expiry,
//!   valid while the Secret (holding exactly that token) and the ServiceAccount exist.
//!
//! Tokens are checked against every key of the set, so a rotation leaves earlier tokens
//! valid until their key is retired.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use apimachinery::object::ObjectExt;
use apimachinery::status::{ApiError, StatusCause};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Identity;
use super::signing_keys::SigningKeys;
use crate::control_plane::ControlPlane;

/// The issuer of legacy (secret-based) tokens, as upstream.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// Default lifetime of a requested token, and the shortest one allowed.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
/// How long a pod's tokens outlive the start of its deletion.
const POD_DELETION_GRACE_SECONDS: i64 = 60;
/// Clock skew tolerated on `nbf` and `exp`.
const LEEWAY_SECONDS: i64 = 60;

/// Extra keys upstream sets on service-account users.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Ref {
    name: String,
    uid: String,
}

/// The private `kubernetes.io` claim of bound tokens.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Private {
    namespace: String,
    serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<Ref>,
}

/// Every claim kumo reads or writes (both token kinds).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "audience")]
    aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    private: Option<Private>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/namespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    legacy_namespace: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/secret.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    legacy_secret: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    legacy_sa_name: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.uid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    legacy_sa_uid: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
mod audience {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(aud)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(a) => a,
        })
    }
}

/// Issues and verifies one cluster's service-account tokens.
pub struct TokenAuthority {
    keys: SigningKeys,
    issuer: RwLock<String>,
}

impl TokenAuthority {
    /// The authority of `cluster`, with keys in `backend`.
    pub fn new(backend: Arc<dyn store::Backend>, cluster: &str) -> Self {
        Self {
            keys: SigningKeys::new(backend, cluster),
            issuer: RwLock::new(format!("https://kubernetes.default.svc/{cluster}")),
        }
    }

    /// The signing keys.
    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Sets the issuer URL (`iss` of new tokens, and the base of OIDC discovery). Tokens
    /// must carry the current issuer to be accepted.
    pub fn set_issuer(&self, issuer: &str) {
        *self.issuer.write().unwrap_or_else(|e| e.into_inner()) =
            issuer.trim_end_matches('/').to_owned();
    }

    /// The issuer URL; it is also the audience the API server accepts.
    pub fn issuer(&self) -> String {
        self.issuer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        let keys = self.keys.keys().await?;
        let key = keys
            .last()
            .ok_or_else(|| ApiError::internal("no service-account signing key"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.stored.kid.clone());
        jsonwebtoken::encode(&header, claims, key.encoding())
            .map_err(|e| ApiError::internal(format!("signing a token: {e}")))
    }

    /// Checks signature, issuer and times; `None` for a token that is not one of ours.
    async fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != jsonwebtoken::Algorithm::ES256 {
            return None;
        }
        let kid = header.kid?;
        let mut keys = self.keys.keys().await.ok()?;
        if !keys.iter().any(|k| k.stored.kid == kid) {
            // Perhaps another server rotated a moment ago.
            keys = self.keys.reload().await.ok()?;
        }
        let key = keys.iter().find(|k| k.stored.kid == kid)?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, key.decoding(), &validation)
            .ok()?
            .claims;
        let now = jiff::Timestamp::now().as_second();
        if claims.iss == LEGACY_ISSUER {
            return Some(claims);
        }
        if claims.iss != self.issuer() {
            return None;
        }
        let exp = claims.exp?;
        if now > exp + LEEWAY_SECONDS || claims.nbf.is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
            return None;
        }
        if !claims.aud.iter().any(|a| *a == self.issuer()) {
            return None;
        }
        Some(claims)
    }

    /// The OpenID provider configuration (`/.well-known/openid-configuration`).
    pub fn discovery(&self) -> Value {
        let issuer = self.issuer();
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// The verification keys (`/openid/v1/jwks`).
    pub async fn jwks(&self) -> Result<Value, ApiError> {
        let keys = self.keys.keys().await?;
        Ok(json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}))
    }
}

fn object_ref(obj: &Value) -> Ref {
    Ref {
        name: obj.name().to_owned(),
        uid: obj.uid().to_owned(),
    }
}

/// Reads a core/v1 object straight from the store (authentication and authorization
/// lookups are not requests of their own, so they are not authorized).
pub(crate) async fn core_object(
    cp: &ControlPlane,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let info = cp
        .registry()
        .by_kind("", kind)
        .ok_or_else(|| ApiError::internal(format!("kind {kind} is not served")))?;
    cp.store.get(&cp.store.key(&info, namespace, name)).await
}

fn deleting(obj: &Value) -> Option<jiff::Timestamp> {
    obj.pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
}

/// The identity in a service-account token, or `None` when the token is not valid (bad
/// signature, wrong issuer or audience, expired, or its objects are gone).
pub async fn authenticate(cp: &ControlPlane, token: &str) -> Result<Option<Identity>, ApiError> {
    let Some(claims) = cp.tokens().verify(token).await else {
        return Ok(None);
    };
    if claims.iss == LEGACY_ISSUER {
        return legacy_identity(cp, token, &claims).await;
    }
    let Some(private) = claims.private.as_ref() else {
        return Ok(None);
    };
    let ns = &private.namespace;
    let Some(sa) = core_object(cp, "ServiceAccount", ns, &private.serviceaccount.name).await?
    else {
        return Ok(None);
    };
    if sa.uid() != private.serviceaccount.uid || deleting(&sa).is_some() {
        return Ok(None);
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(pod_ref) = &private.pod {
        let Some(pod) = core_object(cp, "Pod", ns, &pod_ref.name).await? else {
            return Ok(None);
        };
        if pod.uid() != pod_ref.uid {
            return Ok(None);
        }
        if let Some(since) = deleting(&pod)
            && jiff::Timestamp::now().as_second() - since.as_second() > POD_DELETION_GRACE_SECONDS
        {
            return Ok(None);
        }
        extra.insert(EXTRA_POD_NAME.into(), vec![pod_ref.name.clone()]);
        extra.insert(EXTRA_POD_UID.into(), vec![pod_ref.uid.clone()]);
    }
    if let Some(secret_ref) = &private.secret {
        let secret = core_object(cp, "Secret", ns, &secret_ref.name).await?;
        if !secret.is_some_and(|s| s.uid() == secret_ref.uid && deleting(&s).is_none()) {
            return Ok(None);
        }
    }
    if let Some(node_ref) = &private.node {
        // A pod-bound token names its node for information; only a node-bound token (no
        // pod) depends on the node still existing.
        if private.pod.is_none() {
            let node = core_object(cp, "Node", "", &node_ref.name).await?;
            if !node.is_some_and(|n| n.uid() == node_ref.uid && deleting(&n).is_none()) {
                return Ok(None);
            }
        }
        extra.insert(EXTRA_NODE_NAME.into(), vec![node_ref.name.clone()]);
        extra.insert(EXTRA_NODE_UID.into(), vec![node_ref.uid.clone()]);
    }
    if let Some(jti) = &claims.jti {
        extra.insert(EXTRA_CREDENTIAL_ID.into(), vec![format!("JTI={jti}")]);
    }
    Ok(Some(service_account_identity(
        ns,
        &private.serviceaccount.name,
        sa.uid(),
        extra,
    )))
}

async fn legacy_identity(
    cp: &ControlPlane,
    token: &str,
    claims: &Claims,
) -> Result<Option<Identity>, ApiError> {
    let (Some(ns), Some(secret_name), Some(sa_name)) = (
        claims.legacy_namespace.as_deref(),
        claims.legacy_secret.as_deref(),
        claims.legacy_sa_name.as_deref(),
    ) else {
        return Ok(None);
    };
    let Some(secret) = core_object(cp, "Secret", ns, secret_name).await? else {
        return Ok(None);
    };
    // The secret must still hold this very token (deleting or replacing it revokes it).
    let stored = secret
        .pointer("/data/token")
        .and_then(Value::as_str)
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        });
    if stored.as_deref() != Some(token.as_bytes()) || deleting(&secret).is_some() {
        return Ok(None);
    }
    let Some(sa) = core_object(cp, "ServiceAccount", ns, sa_name).await? else {
        return Ok(None);
    };
    if claims
        .legacy_sa_uid
        .as_deref()
        .is_some_and(|u| u != sa.uid())
        || deleting(&sa).is_some()
    {
        return Ok(None);
    }
    let mut extra = BTreeMap::new();
    extra.insert(
        EXTRA_CREDENTIAL_ID.into(),
        vec![format!("LEGACYSECRET={}", secret.uid())],
    );
    Ok(Some(service_account_identity(ns, sa_name, sa.uid(), extra)))
}

fn service_account_identity(
    namespace: &str,
    name: &str,
    uid: &str,
    extra: BTreeMap<String, Vec<String>>,
) -> Identity {
    Identity {
        user: format!("system:serviceaccount:{namespace}:{name}"),
        uid: uid.to_owned(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
        extra,
    }
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        "",
        vec![StatusCause::new("FieldValueInvalid", field, message)],
    )
}

/// Answers a TokenRequest posted to `serviceaccounts/<sa_name>/token` in `namespace`.
pub async fn token_request(
    cp: &ControlPlane,
    namespace: &str,
    sa_name: &str,
    request: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if !request.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a TokenRequest object",
        ));
    }
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(
                "spec.expirationSeconds",
                "Invalid value: must be an integer".into(),
            )
        })?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let issuer = cp.tokens().issuer();
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("spec.audiences", "Invalid value: must be strings".into()))?,
        _ => vec![issuer.clone()],
    };
    let sa = core_object(cp, "ServiceAccount", namespace, sa_name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", sa_name))?;
    let mut private = Private {
        namespace: namespace.to_owned(),
        serviceaccount: object_ref(&sa),
        ..Default::default()
    };
    let mut bound_ref = Value::Null;
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = bound.get("name").and_then(Value::as_str).unwrap_or("");
        let (object, resource) = match kind {
            "Pod" => (core_object(cp, "Pod", namespace, name).await?, "pods"),
            "Secret" => (core_object(cp, "Secret", namespace, name).await?, "secrets"),
            "Node" => (core_object(cp, "Node", "", name).await?, "nodes"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {other}; Pod, Secret and Node are supported"
                )));
            }
        };
        let object = object.ok_or_else(|| ApiError::not_found("", resource, name))?;
        let uid = bound.get("uid").and_then(Value::as_str).unwrap_or("");
        if !uid.is_empty() && uid != object.uid() {
            return Err(ApiError::conflict(
                "",
                resource,
                name,
                &format!(
                    "the UID in the bound object reference ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    object.uid()
                ),
            ));
        }
        match kind {
            "Pod" => {
                let pod_sa = object
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                if pod_sa != sa_name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name"
                    )));
                }
                private.pod = Some(object_ref(&object));
                let node_name = object.pointer("/spec/nodeName").and_then(Value::as_str);
                if let Some(node_name) = node_name.filter(|n| !n.is_empty())
                    && let Some(node) = core_object(cp, "Node", "", node_name).await?
                {
                    private.node = Some(object_ref(&node));
                }
            }
            "Secret" => private.secret = Some(object_ref(&object)),
            _ => private.node = Some(object_ref(&object)),
        }
        bound_ref = json!({
            "kind": kind,
            "apiVersion": bound.get("apiVersion").cloned().unwrap_or_else(|| json!("v1")),
            "name": name,
            "uid": object.uid(),
        });
    }
    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        iss: issuer,
        sub: format!("system:serviceaccount:{namespace}:{sa_name}"),
        aud: audiences.clone(),
        exp: Some(now + expiration),
        iat: Some(now),
        nbf: Some(now),
        jti: Some(uuid::Uuid::new_v4().to_string()),
        private: Some(private),
        ..Default::default()
    };
    let token = if dry_run {
        String::new()
    } else {
        cp.tokens().sign(&claims).await?
    };
    let expires = jiff::Timestamp::from_second(now + expiration)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut spec_out = json!({"audiences": audiences, "expirationSeconds": expiration});
    if !bound_ref.is_null() {
        spec_out["boundObjectRef"] = bound_ref;
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": sa_name, "namespace": namespace, "creationTimestamp": null},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

/// Fills a new `kubernetes.io/service-account-token` Secret, as upstream's token
/// controller does: a legacy token, the cluster CA and the namespace, and the account's uid
/// annotation. Secrets naming an account that does not exist are left alone.
pub async fn fill_legacy_secret(
    cp: &ControlPlane,
    namespace: &str,
    secret: &mut Value,
    ca_pem: Option<&str>,
) -> Result<(), ApiError> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    if secret.get("type").and_then(Value::as_str) != Some("kubernetes.io/service-account-token") {
        return Ok(());
    }
    let sa_name = secret
        .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if sa_name.is_empty() {
        return Ok(());
    }
    if secret.pointer("/data/token").is_some() {
        return Ok(());
    }
    let Some(sa) = core_object(cp, "ServiceAccount", namespace, &sa_name).await? else {
        return Ok(());
    };
    let claims = Claims {
        iss: LEGACY_ISSUER.into(),
        sub: format!("system:serviceaccount:{namespace}:{sa_name}"),
        legacy_namespace: Some(namespace.to_owned()),
        legacy_secret: Some(secret.name().to_owned()),
        legacy_sa_name: Some(sa_name.clone()),
        legacy_sa_uid: Some(sa.uid().to_owned()),
        ..Default::default()
    };
    let token = cp.tokens().sign(&claims).await?;
    secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = json!(sa.uid());
    if !secret.get("data").is_some_and(Value::is_object) {
        secret["data"] = json!({});
    }
    secret["data"]["token"] = json!(b64(&token));
    secret["data"]["namespace"] = json!(b64(namespace));
    if let Some(ca) = ca_pem {
        secret["data"]["ca.crt"] = json!(b64(ca));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_is_a_string_or_a_list() {
        let one: Claims =
            serde_json::from_value(json!({"iss": "i", "sub": "s", "aud": "a"})).expect("claims");
        assert_eq!(one.aud, vec!["a"]);
        let many: Claims =
            serde_json::from_value(json!({"iss": "i", "sub": "s", "aud": ["a", "b"]}))
                .expect("claims");
        assert_eq!(many.aud, vec!["a", "b"]);
        let legacy: Claims =
            serde_json::from_value(json!({"iss": LEGACY_ISSUER, "sub": "s"})).expect("claims");
        assert!(legacy.aud.is_empty());
        let out = serde_json::to_value(&legacy).expect("json");
        assert!(out.get("aud").is_none() && out.get("exp").is_none());
    }
}
