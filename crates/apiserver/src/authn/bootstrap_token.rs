//! Bootstrap tokens (`<id>.<secret>`, as kubeadm's): Secrets of type
//! `bootstrap.kubernetes.io/token` named `bootstrap-token-<id>` in kube-system. A valid one
//! authenticates as `system:bootstrap:<id>` in `system:bootstrappers` plus the secret's
//! `auth-extra-groups`; nodes use it once, to ask for their client certificate.

use apimachinery::status::ApiError;
use base64::Engine;
use serde_json::Value;

use super::Identity;
use crate::control_plane::ControlPlane;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The namespace their Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// The group every bootstrap token user is in.
pub const GROUP: &str = "system:bootstrappers";
/// The extra group kumo's join tokens carry (kubeadm's name for it).
pub const NODE_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// Splits `<id>.<secret>` when it has the bootstrap token form (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// The Secret name for token `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn data(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether the token Secret has expired (its `expiration` is in the past).
pub fn expired(secret: &Value, now: jiff::Timestamp) -> bool {
    data(secret, "expiration")
        .and_then(|e| e.parse::<jiff::Timestamp>().ok())
        .is_some_and(|e| e <= now)
}

/// The identity of a bootstrap token, or `None` when it is not a valid one.
pub async fn authenticate(cp: &ControlPlane, token: &str) -> Result<Option<Identity>, ApiError> {
    let Some((id, token_secret)) = parse(token) else {
        return Ok(None);
    };
    let Some(secret) =
        super::service_account::core_object(cp, "Secret", NAMESPACE, &secret_name(id)).await?
    else {
        return Ok(None);
    };
    let valid = secret.get("type").and_then(Value::as_str) == Some(SECRET_TYPE)
        && secret.pointer("/metadata/deletionTimestamp").is_none()
        && data(&secret, "token-id").as_deref() == Some(id)
        && data(&secret, "token-secret")
            .is_some_and(|s| same(s.as_bytes(), token_secret.as_bytes()))
        && data(&secret, "usage-bootstrap-authentication").as_deref() == Some("true")
        && !expired(&secret, jiff::Timestamp::now());
    if !valid {
        return Ok(None);
    }
    let mut groups = vec![GROUP.to_owned()];
    for group in data(&secret, "auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        // Only groups under system:bootstrappers: may be added, as upstream.
        if group.starts_with("system:bootstrappers:") && !groups.iter().any(|g| g == group) {
            groups.push(group.to_owned());
        }
    }
    groups.push("system:authenticated".to_owned());
    Ok(Some(Identity {
        user: format!("system:bootstrap:{id}"),
        groups,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_form() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse("abcdef.0123456789abcde"), None);
        assert_eq!(parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse("eyJhbGciOi.x.y"), None);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
