//! A cluster's PKI: its CA, the API server's serving certificate and the admin client
//! certificate, created on first start and kept on disk; and the admin kubeconfig.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Why the PKI could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a key or certificate failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// The request cannot be expressed in a certificate this PKI issues.
    #[error("{0}")]
    Unsupported(String),
    /// A stored certificate could not be parsed.
    #[error("{path}: not a valid PEM certificate")]
    BadPem {
        /// The file.
        path: PathBuf,
    },
}

type Result<T> = std::result::Result<T, PkiError>;

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct CertKey {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// The PKI of one cluster.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The cluster CA.
    pub ca: CertKey,
    /// The API server's serving certificate.
    pub serving: CertKey,
    /// The admin client certificate (CN=kubernetes-admin, O=system:masters).
    pub admin: CertKey,
}

/// Validity of the CA.
const CA_DAYS: i64 = 3650;
/// Validity of leaf certificates.
const LEAF_DAYS: i64 = 365;

impl Pki {
    /// Loads the PKI from `dir`, creating whatever is missing. The serving certificate is
    /// re-issued when it lacks one of `hosts` (DNS names or IP addresses).
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let ca = match load(dir, "ca")? {
            Some(ca) => ca,
            None => store(dir, "ca", new_ca("kumo-ca")?)?,
        };
        let serving = match load(dir, "apiserver")? {
            Some(s) if covers(&s.cert_pem, hosts) => s,
            _ => store(dir, "apiserver", issue_serving(&ca, hosts)?)?,
        };
        let admin = match load(dir, "admin")? {
            Some(a) => a,
            None => store(
                dir,
                "admin",
                issue_client(&ca, "kubernetes-admin", &["system:masters"])?,
            )?,
        };
        Ok(Self { ca, serving, admin })
    }
}

/// Creates a self-signed CA.
pub fn new_ca(common_name: &str) -> Result<CertKey> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name, &[]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a serving certificate for `hosts` (DNS names or IPs) signed by `ca`.
pub fn issue_serving(ca: &CertKey, hosts: &[String]) -> Result<CertKey> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("kube-apiserver", &[]);
    params.subject_alt_names = hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => h.clone().try_into().map(SanType::DnsName),
        })
        .collect::<std::result::Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    sign(ca, params)
}

/// Issues a client certificate: CN is the user name, O is the group. rcgen keeps one value
/// per attribute type in a subject, so at most one group can be carried.
pub fn issue_client(ca: &CertKey, user: &str, groups: &[&str]) -> Result<CertKey> {
    if groups.len() > 1 {
        return Err(PkiError::Unsupported(format!(
            "a client certificate carries at most one group, got {}",
            groups.len()
        )));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(user, groups);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    sign(ca, params)
}

fn sign(ca: &CertKey, mut params: CertificateParams) -> Result<CertKey> {
    set_validity(&mut params, LEAF_DAYS);
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn dn(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // Backdate a little so clients with a slightly slow clock accept a fresh certificate.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days);
}

/// True when the certificate's SANs include every host.
fn covers(cert_pem: &str, hosts: &[String]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let mut names = Vec::new();
    for name in &san.value.general_names {
        match name {
            x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => names
                    .push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()).to_string()),
                16 => names
                    .push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()).to_string()),
                _ => {}
            },
            _ => {}
        }
    }
    let not_expiring = cert
        .validity()
        .time_to_expiration()
        .is_some_and(|d| d.whole_days() > 30);
    not_expiring && hosts.iter().all(|h| names.iter().any(|n| n == h))
}

fn load(dir: &Path, name: &str) -> Result<Option<CertKey>> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    if !cert_path.exists() || !key_path.exists() {
        return Ok(None);
    }
    let read = |p: &Path| {
        fs::read_to_string(p).map_err(|source| PkiError::Io {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    if x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).is_err() {
        return Err(PkiError::BadPem { path: cert_path });
    }
    Ok(Some(CertKey {
        cert_pem,
        key_pem: read(&key_path)?,
    }))
}

fn store(dir: &Path, name: &str, ck: CertKey) -> Result<CertKey> {
    write_private(&dir.join(format!("{name}.key")), ck.key_pem.as_bytes())?;
    write_private(&dir.join(format!("{name}.crt")), ck.cert_pem.as_bytes())?;
    Ok(ck)
}

/// Writes a file readable by its owner only, atomically (write then rename).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// A kubeconfig with one cluster, one user (client certificate) and one context.
pub fn kubeconfig(
    cluster_name: &str,
    server_url: &str,
    ca_pem: &str,
    user: &str,
    client: &CertKey,
) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server_url, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(&client.cert_pem), "client-key-data": b64(&client.key_pem)}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
        "preferences": {},
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

/// The pin of a CA certificate as kubeadm writes it: `sha256:<hex>` of the certificate's
/// SubjectPublicKeyInfo. Joining nodes check the server's CA against it.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String> {
    let bad = || PkiError::Unsupported("the CA certificate is not valid PEM".into());
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|_| bad())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).map_err(|_| bad())?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_and_reissues_for_new_hosts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = Pki::load_or_create(dir.path(), &hosts).expect("create");
        let again = Pki::load_or_create(dir.path(), &hosts).expect("load");
        assert_eq!(first.ca.cert_pem, again.ca.cert_pem);
        assert_eq!(first.serving.cert_pem, again.serving.cert_pem);
        let more = vec!["localhost".to_owned(), "10.0.0.1".to_owned()];
        let third = Pki::load_or_create(dir.path(), &more).expect("reissue");
        assert_eq!(first.ca.cert_pem, third.ca.cert_pem);
        assert_ne!(first.serving.cert_pem, third.serving.cert_pem);
        assert!(covers(&third.serving.cert_pem, &more));
    }
}
