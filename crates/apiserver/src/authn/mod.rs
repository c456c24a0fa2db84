//! Authentication: who is making a request, as upstream's union of authenticators.
//!
//! - x509 client certificates, verified by the TLS layer against the cluster CA, give the
//!   user (CN) and groups (O); a request with one is that user, whatever else it carries.
//! - Otherwise an `Authorization: Bearer` token is tried as a bootstrap token
//!   ([`bootstrap_token`]) or a service-account JWT ([`service_account`]) of the cluster the
//!   request addresses. A token that is not valid is a 401, as is a request with neither.

pub mod bootstrap_token;
pub mod service_account;
pub mod signing_keys;

use std::collections::BTreeMap;

use apimachinery::status::ApiError;
use http::HeaderMap;
use rustls::pki_types::CertificateDer;

use crate::control_plane::ControlPlane;

/// An authenticated user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// A unique id of the user, when the authenticator knows one (service accounts).
    pub uid: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes (the bound pod and node of a service-account token, ...).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Authenticates a request to cluster `cp`: its verified certificate's identity if it has
/// one, else its bearer token's. `Err` (401) when neither gives an identity.
pub async fn authenticate(
    cp: &ControlPlane,
    headers: &HeaderMap,
    certificate: Option<Identity>,
) -> Result<Identity, ApiError> {
    if let Some(identity) = certificate {
        return Ok(identity);
    }
    let Some(token) = bearer_token(headers) else {
        return Err(ApiError::unauthorized());
    };
    let identity = if bootstrap_token::parse(token).is_some() {
        bootstrap_token::authenticate(cp, token).await?
    } else {
        service_account::authenticate(cp, token).await?
    };
    identity.ok_or_else(ApiError::unauthorized)
}

impl Identity {
    /// The identity the server's own loops use in-process.
    pub fn loopback() -> Self {
        Self {
            user: "system:apiserver".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    /// The built-in controllers' identity, as upstream's kube-controller-manager. The
    /// default policy binds it to system:kube-controller-manager and to
    /// system:kumo-controller-manager (the union of upstream's per-controller roles).
    pub fn controller_manager() -> Self {
        Self {
            user: "system:kube-controller-manager".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        }
    }

    /// The scheduler's identity, as upstream's kube-scheduler. The default policy binds it
    /// to system:kube-scheduler and system:volume-scheduler.
    pub fn scheduler() -> Self {
        Self {
            user: "system:kube-scheduler".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        }
    }
}

/// The identity in a client certificate chain the TLS layer has already verified.
/// `None` when there is no certificate or it carries no common name.
pub fn from_client_cert(chain: Option<&[CertificateDer<'_>]>) -> Option<Identity> {
    let leaf = chain?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    if user.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    groups.push("system:authenticated".to_owned());
    Some(Identity {
        user,
        groups,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_groups() {
        let ca = crate::pki::new_ca("test-ca").expect("ca");
        let client = crate::pki::issue_client(&ca, "alice", &["dev"]).expect("client");
        assert!(crate::pki::issue_client(&ca, "bob", &["a", "b"]).is_err());
        let (_, pem) = x509_parser::pem::parse_x509_pem(client.cert_pem.as_bytes()).expect("pem");
        let der = CertificateDer::from(pem.contents.clone());
        let id = from_client_cert(Some(&[der])).expect("identity");
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["dev", "system:authenticated"]);
        assert_eq!(from_client_cert(None), None);
    }
}
