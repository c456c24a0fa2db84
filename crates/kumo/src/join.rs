//! `kumo join`: kubeadm's trust model for a new node. The bootstrap token authenticates the
//! node; the CA hash authenticates the server. The server's CA is taken from its TLS chain
//! only if its public key matches `--ca-cert-hash`, before anything secret is sent; then the
//! node asks for its client certificate with a CertificateSigningRequest, which the cluster
//! approves and signs for valid bootstrap tokens, and writes a kubeconfig with it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, PostParams};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Flags of `kumo join`.
#[derive(clap::Args, Debug)]
pub struct JoinArgs {
    /// The API server, https://HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// A bootstrap token (`kumo token create` prints one).
    #[arg(long)]
    pub token: String,
    /// sha256:<hex> of the cluster CA's public key.
    #[arg(long)]
    pub ca_cert_hash: String,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Where to write the node's kubeconfig.
    #[arg(long)]
    pub kubeconfig_out: PathBuf,
}

pub async fn run(args: JoinArgs) -> anyhow::Result<()> {
    let node = match args.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")?
            .trim()
            .to_ascii_lowercase(),
    };
    let ca_pem = pinned_ca(&args.server, &args.ca_cert_hash).await?;
    let kubeconfig = join(&args.server, &args.token, &ca_pem, &node).await?;
    apiserver::pki::write_private(&args.kubeconfig_out, kubeconfig.as_bytes())?;
    println!(
        "node {node} joined; kubeconfig: {}",
        args.kubeconfig_out.display()
    );
    Ok(())
}

/// Asks for a node client certificate with the bootstrap token and returns a kubeconfig.
pub async fn join(server: &str, token: &str, ca_pem: &str, node: &str) -> anyhow::Result<String> {
    let bootstrap = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kumo\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: bootstrap\n  user:\n    token: {token}\ncontexts:\n- name: kumo\n  context: {{cluster: kumo, user: bootstrap}}\ncurrent-context: kumo\n",
        base64_std(ca_pem.as_bytes())
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&bootstrap)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let identity = request_certificate(client, node).await?;
    Ok(node_kubeconfig(server, ca_pem, node, &identity))
}

fn node_kubeconfig(
    server: &str,
    ca_pem: &str,
    node: &str,
    identity: &apiserver::pki::CertKey,
) -> String {
    apiserver::pki::kubeconfig(
        "kumo",
        server,
        ca_pem,
        &format!("system:node:{node}"),
        identity,
    )
}

/// Creates a CSR for `system:node:<node>` as `client` and waits for the signed certificate.
async fn request_certificate(
    client: kube::Client,
    node: &str,
) -> anyhow::Result<apiserver::pki::CertKey> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let mut csr = CertificateSigningRequest {
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: controllers::certificates::KUBELET_CLIENT_SIGNER.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    csr.metadata.generate_name = Some("node-csr-".into());
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .context("creating the certificate signing request")?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let cert = loop {
        let csr = csrs.get(&name).await?;
        let status = csr.status.unwrap_or_default();
        if let Some(c) = status.certificate.filter(|c| !c.0.is_empty()) {
            break String::from_utf8(c.0)?;
        }
        if status
            .conditions
            .iter()
            .flatten()
            .any(|c| matches!(c.type_.as_str(), "Denied" | "Failed") && c.status == "True")
        {
            anyhow::bail!("certificate signing request {name} was denied or failed");
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "certificate signing request {name} was not signed within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    Ok(apiserver::pki::CertKey {
        cert_pem: cert,
        key_pem: key.serialize_pem(),
    })
}

/// A node kubeconfig's parts: server, CA, node name, and its certificate's validity.
struct NodeCredentials {
    server: String,
    ca_pem: String,
    node: String,
    not_before: i64,
    not_after: i64,
}

fn read_node_kubeconfig(path: &Path) -> anyhow::Result<NodeCredentials> {
    use base64::Engine;
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let cluster = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("the kubeconfig has no cluster")?;
    let user = kubeconfig
        .auth_infos
        .first()
        .and_then(|a| a.auth_info.clone())
        .context("the kubeconfig has no user")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca_pem = String::from_utf8(
        b64.decode(
            cluster
                .certificate_authority_data
                .context("the kubeconfig has no certificate-authority-data")?,
        )?,
    )?;
    let cert_pem = b64.decode(
        user.client_certificate_data
            .context("the kubeconfig has no client certificate")?,
    )?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&cert_pem)
        .map_err(|e| anyhow::anyhow!("client certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents)
        .map_err(|e| anyhow::anyhow!("client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default();
    let node = cn
        .strip_prefix("system:node:")
        .with_context(|| format!("certificate of {cn:?} is not a node's"))?
        .to_owned();
    Ok(NodeCredentials {
        server: cluster.server.context("the kubeconfig has no server")?,
        ca_pem,
        node,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Replaces the node certificate in the kubeconfig at `path` with a new one, asked for
/// with the current certificate (nodes may renew their own; the cluster approves it).
pub async fn renew(path: &Path) -> anyhow::Result<()> {
    let creds = read_node_kubeconfig(path)?;
    let client = crate::client::from_kubeconfig(path).await?.0;
    let identity = request_certificate(client, &creds.node).await?;
    let kubeconfig = node_kubeconfig(&creds.server, &creds.ca_pem, &creds.node, &identity);
    apiserver::pki::write_private(path, kubeconfig.as_bytes())?;
    Ok(())
}

/// Waits until 70 to 90 % of the node certificate's lifetime at `path` has passed (a
/// random point, so a fleet does not renew at once, as kubelet does), then renews it;
/// failures are retried every minute. Returns once the kubeconfig holds a new certificate.
pub async fn renew_when_due(path: &Path) {
    let share = 70 + i64::from(uuid::Uuid::new_v4().as_bytes()[0] % 21);
    loop {
        let wait = match read_node_kubeconfig(path) {
            Ok(creds) => {
                let lifetime = (creds.not_after - creds.not_before).max(0);
                let at = creds.not_before + lifetime * share / 100;
                let now = jiff::Timestamp::now().as_second();
                Duration::from_secs(u64::try_from(at - now).unwrap_or(0))
            }
            Err(e) => {
                tracing::warn!(error = %e, "node certificate: cannot read the kubeconfig");
                Duration::from_secs(60)
            }
        };
        tokio::time::sleep(wait).await;
        match renew(path).await {
            Ok(()) => {
                tracing::info!(kubeconfig = %path.display(), "node certificate renewed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "node certificate: renewal failed; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

/// Flags of `kumo renew-node-certificate`.
#[derive(clap::Args, Debug)]
pub struct RenewArgs {
    /// The node's kubeconfig (as `kumo join` wrote it); rewritten with the new certificate.
    #[arg(long)]
    pub kubeconfig: PathBuf,
}

pub async fn run_renew(args: RenewArgs) -> anyhow::Result<()> {
    renew(&args.kubeconfig).await?;
    println!("node certificate renewed: {}", args.kubeconfig.display());
    Ok(())
}

fn base64_std(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Connects to `server` and returns the CA (PEM) in its TLS chain whose public key has
/// hash `pin`; fails when there is none or the serving certificate is not signed by it.
pub async fn pinned_ca(server: &str, pin: &str) -> anyhow::Result<String> {
    let url: http::Uri = server.parse().context("--server is not a URL")?;
    let host = url.host().context("--server has no host")?.to_owned();
    let port = url.port_u16().unwrap_or(443);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let found = Arc::new(Mutex::new(None));
    let verifier = Arc::new(PinnedCa {
        pin: pin.to_owned(),
        provider: provider.clone(),
        found: found.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("the server's certificate does not chain to a CA with the given hash")?;
    let der = found
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("no CA found")?;
    Ok(pem_certificate(&der))
}

fn pem_certificate(der: &[u8]) -> String {
    let b64 = base64_std(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Accepts a server chain only if one of its certificates has the pinned public key and
/// the serving certificate verifies against it (as a root) for the server's name.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    found: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates.iter().find(|der| {
            let pem = pem_certificate(der);
            apiserver::pki::ca_cert_hash(&pem).is_ok_and(|h| h.eq_ignore_ascii_case(&self.pin))
        });
        let Some(ca) = pinned else {
            return Err(rustls::Error::General(
                "no certificate in the server's chain matches --ca-cert-hash".into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified =
            inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(ca.to_vec());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
