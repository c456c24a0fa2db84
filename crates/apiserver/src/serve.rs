//! The HTTPS listener: TLS with optional client certificates (verified against the
//! cluster CA), HTTP/1.1 and HTTP/2, one task per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::authn;
use crate::pki::Pki;
use crate::server::ApiServer;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM block could not be read.
    #[error("reading {what}: {message}")]
    Pem {
        /// Which item.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The server's TLS configuration, and the check of client certificates against the CA.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    clients: Arc<dyn ClientCertVerifier>,
}

/// The server's TLS configuration: its serving certificate, and client certificates
/// requested but not required. A certificate is checked against the cluster CA after the
/// handshake, as upstream's x509 authenticator does, so one from another CA is answered
/// 401 like a request without one, not with a TLS alert. TLS 1.2 and 1.3 with rustls'
/// default (strong, forward-secret) suites.
pub fn tls_config(pki: &Pki) -> Result<Tls, TlsError> {
    let pem = |what: &'static str| {
        move |e: rustls::pki_types::pem::Error| TlsError::Pem {
            what,
            message: e.to_string(),
        }
    };
    // The CA goes with the serving certificate so that a joining node, which knows only
    // the CA's hash (`--ca-cert-hash`), can check the server before sending its token.
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.serving.cert_pem.as_bytes())
            .chain(CertificateDer::pem_slice_iter(pki.ca.cert_pem.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(pem("serving certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes())
        .map_err(pem("serving key"))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca.cert_pem.as_bytes()) {
        roots.add(ca.map_err(pem("CA certificate"))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let verifier = Arc::new(AnyClientCertificate {
        inner: clients.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        clients,
    })
}

/// Takes any client certificate whose holder proves it has the key; whether the
/// certificate chains to the CA is decided after the handshake (see [`Tls`]).
#[derive(Debug)]
struct AnyClientCertificate {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The identity in a client certificate chain, if it chains to the CA.
fn verified_identity(
    clients: &dyn ClientCertVerifier,
    chain: Option<&[CertificateDer<'_>]>,
) -> Option<authn::Identity> {
    let chain = chain?;
    let (leaf, intermediates) = chain.split_first()?;
    clients
        .verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now())
        .ok()?;
    authn::from_client_cert(Some(chain))
}

/// Serves HTTPS on `listener` until `shutdown` resolves.
pub async fn serve(
    server: Arc<ApiServer>,
    listener: TcpListener,
    tls: Tls,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let clients = tls.clients;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        let clients = clients.clone();
        tokio::spawn(async move { connection(server, acceptor, clients, tcp, peer).await });
    }
}

async fn connection(
    server: Arc<ApiServer>,
    acceptor: TlsAcceptor,
    clients: Arc<dyn ClientCertVerifier>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = verified_identity(clients.as_ref(), tls.get_ref().1.peer_certificates());
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(crate::server::PeerAddr(peer));
        let server = server.clone();
        let identity = identity.clone();
        async move {
            // A panic in one request becomes a 500 for that request, not a dead server.
            let handled = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
                server.handle(req, identity),
            ));
            Ok::<_, std::convert::Infallible>(match handled.await {
                Ok(resp) => resp,
                Err(_) => crate::server::error_response(&apimachinery::status::ApiError::internal(
                    "request handler panicked",
                )),
            })
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
