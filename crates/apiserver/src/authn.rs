//! Authentication: who is making a request. x509 client certificates verified by the TLS
//! layer against the cluster CA give the user (CN) and groups (O).

use rustls::pki_types::CertificateDer;

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity the server's own loops use in-process.
    pub fn loopback() -> Self {
        Self {
            user: "system:apiserver".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    /// The built-in controllers' identity, as upstream's kube-controller-manager. The
    /// default policy binds it to system:kube-controller-manager and to
    /// system:kumo-controller-manager (the union of upstream's per-controller roles).
    pub fn controller_manager() -> Self {
        Self {
            user: "system:kube-controller-manager".into(),
            groups: vec!["system:authenticated".into()],
        }
    }

    /// The scheduler's identity, as upstream's kube-scheduler. The default policy binds it
    /// to system:kube-scheduler and system:volume-scheduler.
    pub fn scheduler() -> Self {
        Self {
            user: "system:kube-scheduler".into(),
            groups: vec!["system:authenticated".into()],
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
    Some(Identity { user, groups })
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
