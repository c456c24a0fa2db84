//! `kumo join`: kubeadm's trust model for a new node. The bootstrap token authenticates the
//! node; the CA hash authenticates the server. The server's CA is taken from its TLS chain
//! only if its public key matches `--ca-cert-hash`, before anything secret is sent; then the
//! node asks for its client certificate with a CertificateSigningRequest, which the cluster
//! approves and signs for valid bootstrap tokens, and writes a kubeconfig with it.

use std::path::PathBuf;
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
    let identity = apiserver::pki::CertKey {
        cert_pem: cert,
        key_pem: key.serialize_pem(),
    };
    Ok(apiserver::pki::kubeconfig(
        "kumo",
        server,
        ca_pem,
        &format!("system:node:{node}"),
        &identity,
    ))
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
