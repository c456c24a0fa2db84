//! Startup, liveness and readiness probes (exec through CRI; HTTP(S) GET, TCP and gRPC
//! health checks from the node), with kubelet's timing: initial delay, period, timeout, success and failure
//! thresholds, and liveness/readiness held back until the startup probe passes.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

use crate::cri::Cri;

/// Probe state of one runtime container; a new container starts afresh.
#[derive(Debug)]
pub struct Tracker {
    /// The runtime container this state belongs to.
    pub container_id: String,
    /// Whether the startup probe has passed (true at once without one).
    pub started: bool,
    /// The readiness verdict (the start, without a readiness probe).
    pub ready: bool,
    startup: Counter,
    liveness: Counter,
    readiness: Counter,
}

#[derive(Debug)]
struct Counter {
    next: Instant,
    successes: i32,
    failures: i32,
}

impl Counter {
    fn new(since: Instant, probe: Option<&Probe>) -> Self {
        let delay = probe
            .and_then(|p| p.initial_delay_seconds)
            .unwrap_or(0)
            .max(0) as u64;
        Self {
            next: since + Duration::from_secs(delay),
            successes: 0,
            failures: 0,
        }
    }
}

/// What the probes ask of the agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Healthy,
    /// Kill the container (it will be restarted per the restart policy), for this reason.
    Kill(String),
}

/// What a probe needs to reach the container.
pub struct Target<'a> {
    pub cri: &'a Cri,
    pub container_id: &'a str,
    pub pod_ip: &'a str,
    pub container: &'a Container,
}

impl Tracker {
    /// Fresh state for a container seen running now.
    pub fn new(container_id: &str, container: &Container) -> Self {
        let now = Instant::now();
        Self {
            container_id: container_id.to_owned(),
            started: container.startup_probe.is_none(),
            ready: container.startup_probe.is_none() && container.readiness_probe.is_none(),
            startup: Counter::new(now, container.startup_probe.as_ref()),
            liveness: Counter::new(now, container.liveness_probe.as_ref()),
            readiness: Counter::new(now, container.readiness_probe.as_ref()),
        }
    }

    /// Runs the probes that are due.
    pub async fn tick(&mut self, target: &Target<'_>) -> Verdict {
        let container = target.container;
        if !self.started {
            let Some(probe) = container.startup_probe.as_ref() else {
                self.started = true;
                return Verdict::Healthy;
            };
            match step(&mut self.startup, probe, target).await {
                Some(true) => {
                    self.started = true;
                    let now = Instant::now();
                    self.liveness = Counter::new(now, container.liveness_probe.as_ref());
                    self.readiness = Counter::new(now, container.readiness_probe.as_ref());
                    self.ready = container.readiness_probe.is_none();
                }
                Some(false) => {
                    return Verdict::Kill(format!(
                        "Container {} failed startup probe, will be restarted",
                        container.name
                    ));
                }
                None => {}
            }
            return Verdict::Healthy;
        }
        if let Some(probe) = container.readiness_probe.as_ref()
            && let Some(verdict) = step(&mut self.readiness, probe, target).await
        {
            self.ready = verdict;
        }
        if let Some(probe) = container.liveness_probe.as_ref()
            && step(&mut self.liveness, probe, target).await == Some(false)
        {
            return Verdict::Kill(format!(
                "Container {} failed liveness probe, will be restarted",
                container.name
            ));
        }
        Verdict::Healthy
    }

    /// When a probe is next due (for the agent's wake-up), if any.
    pub fn next_due(&self, container: &Container) -> Option<Instant> {
        let mut due = Vec::new();
        if !self.started && container.startup_probe.is_some() {
            due.push(self.startup.next);
        }
        if self.started && container.liveness_probe.is_some() {
            due.push(self.liveness.next);
        }
        if self.started && container.readiness_probe.is_some() {
            due.push(self.readiness.next);
        }
        due.into_iter().min()
    }
}

/// Runs the probe if due; `Some(true)` once the success threshold is reached, `Some(false)`
/// once the failure threshold is, `None` otherwise.
async fn step(counter: &mut Counter, probe: &Probe, target: &Target<'_>) -> Option<bool> {
    let now = Instant::now();
    if now < counter.next {
        return None;
    }
    let period = probe.period_seconds.unwrap_or(10).max(1) as u64;
    counter.next = now + Duration::from_secs(period);
    let result = run(probe, target).await;
    match result {
        Ok(()) => {
            counter.failures = 0;
            counter.successes += 1;
            (counter.successes >= probe.success_threshold.unwrap_or(1).max(1)).then_some(true)
        }
        Err(reason) => {
            tracing::debug!(container = %target.container.name, %reason, "probe failed");
            counter.successes = 0;
            counter.failures += 1;
            (counter.failures >= probe.failure_threshold.unwrap_or(3).max(1)).then_some(false)
        }
    }
}

/// Runs a probe once.
pub async fn run(probe: &Probe, target: &Target<'_>) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let response = target
            .cri
            .exec_sync(target.container_id, command, timeout.as_secs() as i64)
            .await
            .map_err(|e| e.to_string())?;
        return if response.exit_code == 0 {
            Ok(())
        } else {
            Err(format!("command exited with {}", response.exit_code))
        };
    }
    if let Some(http) = &probe.http_get {
        let port = port_number(&http.port, target.container)?;
        let host = http
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.to_owned());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let tls = http.scheme.as_deref() == Some("HTTPS");
        return tokio::time::timeout(timeout, http_get(&host, port, &path, &headers, tls))
            .await
            .map_err(|_| format!("timeout after {}s", timeout.as_secs()))?;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port_number(&tcp.port, target.container)?;
        let host = tcp
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.to_owned());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: timeout")),
        };
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {}", grpc.port))?;
        let service = grpc.service.clone().unwrap_or_default();
        return tokio::time::timeout(timeout, grpc_health(target.pod_ip, port, service))
            .await
            .map_err(|_| format!("timeout: health rpc did not complete within {timeout:?}"))?;
    }
    Err("probe has no handler".into())
}

fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("port {name:?} not found in the container's ports"))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port {number}"))
}

/// The gRPC health-checking protocol (`grpc.health.v1.Health/Check`) against the pod:
/// SERVING is a success.
async fn grpc_health(pod_ip: &str, port: u16, service: String) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let host = if pod_ip.contains(':') {
        format!("[{pod_ip}]")
    } else {
        pod_ip.to_owned()
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {host}:{port}: {e}"))?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service })
        .await
        .map_err(|e| format!("health rpc failed: {}", e.message()))?
        .into_inner();
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!(
            "service unhealthy (responded with {:?})",
            other.as_str_name()
        )),
        Err(_) => Err(format!("service unhealthy (status {})", response.status)),
    }
}

/// Kubelet's HTTPS probes do not verify the server's certificate: a pod's certificate
/// names its Service, not the pod IP the probe dials.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn probe_tls() -> tokio_rustls::TlsConnector {
    static CONNECTOR: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        })
        .clone()
}

/// An HTTP/1.1 GET (over TLS for HTTPS); a status in [200, 400) is a success, as kubelet
/// counts it.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    tls: bool,
) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let (mut sender, driver) = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host}: {e}"))?;
        let stream = probe_tls()
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        (
            sender,
            tokio::spawn(async move { connection.await.map(|_| ()) }),
        )
    } else {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        (
            sender,
            tokio::spawn(async move { connection.await.map(|_| ()) }),
        )
    };
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = http::Request::get(path)
        .header(http::header::HOST, host_header)
        .header(http::header::USER_AGENT, "kube-probe/1.33")
        .header(http::header::ACCEPT, "*/*");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let result = match response {
        Ok(response) => {
            let status = response.status();
            // Drain a little of the body so the server sees a complete exchange.
            let _ = response.into_body().collect().await;
            if (200..400).contains(&status.as_u16()) {
                Ok(())
            } else {
                Err(format!(
                    "HTTP probe failed with statuscode: {}",
                    status.as_u16()
                ))
            }
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTPS server with a self-signed certificate: 200 on `/healthz`, 500 elsewhere.
    async fn https_server() -> u16 {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["pod.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                        let code = if req.uri().path() == "/healthz" {
                            200
                        } else {
                            500
                        };
                        let mut response =
                            http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                        *response.status_mut() = http::StatusCode::from_u16(code).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_probes_skip_verification_and_judge_the_status() {
        let port = https_server().await;
        http_get("127.0.0.1", port, "/healthz", &[], true)
            .await
            .unwrap();
        let failed = http_get("127.0.0.1", port, "/broken", &[], true)
            .await
            .unwrap_err();
        assert!(failed.contains("statuscode: 500"), "{failed}");
        // Plain HTTP to a TLS port fails.
        assert!(
            http_get("127.0.0.1", port, "/healthz", &[], false)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn grpc_probes_use_the_health_protocol() {
        use tonic_health::pb::health_check_response::ServingStatus;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("ready", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("draining", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        grpc_health("127.0.0.1", port, "ready".into())
            .await
            .unwrap();
        // The empty service name is the server as a whole, which the reporter serves.
        grpc_health("127.0.0.1", port, String::new()).await.unwrap();
        let failed = grpc_health("127.0.0.1", port, "draining".into())
            .await
            .unwrap_err();
        assert!(
            failed.contains(ServingStatus::NotServing.as_str_name()),
            "{failed}"
        );
        let unknown = grpc_health("127.0.0.1", port, "nope".into())
            .await
            .unwrap_err();
        assert!(unknown.contains("health rpc failed"), "{unknown}");
    }
}
