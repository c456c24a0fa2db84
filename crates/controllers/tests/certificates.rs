//! The CSR approver and signer on an in-process API server: node client certificates are
//! approved after a SubjectAccessReview of the requester (bootstrap tokens may ask for any
//! node, nodes only for themselves) and signed with the cluster CA; other requests wait
//! for an administrator.

use std::time::Duration;

use apiserver::authn::Identity;
use apiserver::testing::InProcess;
use controllers::certificates::{self, CLIENT_SIGNER, KUBELET_CLIENT_SIGNER, SigningCa};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

/// An API server with the approver and signer running; both stop when dropped.
struct Server {
    api: InProcess,
    signer: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signer.abort();
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let api = InProcess::start(dir.path()).await.expect("API server");
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("CA certificate");
    let ca = SigningCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let client = api.client_as(Identity::controller_manager());
    let signer = tokio::spawn(async move {
        let _ = certificates::run(client, ca).await;
    });
    Server {
        api,
        signer,
        _dir: dir,
    }
}

fn identity(user: &str, groups: &[&str]) -> Identity {
    Identity {
        user: user.into(),
        groups: groups
            .iter()
            .map(|g| (*g).to_owned())
            .chain(["system:authenticated".to_owned()])
            .collect(),
        ..Default::default()
    }
}

/// A bootstrap token's identity, in the group the default policy lets join nodes.
fn bootstrap_token() -> Identity {
    identity(
        "system:bootstrap:abcdef",
        &[
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
        ],
    )
}

fn node(name: &str) -> Identity {
    identity(&format!("system:node:{name}"), &["system:nodes"])
}

/// Creates, as `client`, a request for `cn`/`org` from `signer`.
async fn request(client: &Client, name: &str, cn: &str, org: &str, signer: &str) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let pem = params
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("PEM");
    let mut csr = CertificateSigningRequest {
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: signer.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    csr.metadata.name = Some(name.into());
    Api::<CertificateSigningRequest>::all(client.clone())
        .create(&PostParams::default(), &csr)
        .await
        .expect("create CSR");
}

fn approval(csr: &CertificateSigningRequest) -> Option<CertificateSigningRequestCondition> {
    csr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Approved" && c.status == "True")
        .cloned()
}

/// Waits for the request's certificate, returning the request.
async fn signed(csrs: &Api<CertificateSigningRequest>, name: &str) -> CertificateSigningRequest {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let csr = csrs.get(name).await.expect("get CSR");
        let cert = csr.status.as_ref().and_then(|s| s.certificate.as_ref());
        if cert.is_some_and(|c| !c.0.is_empty()) {
            return csr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not signed in {TIMEOUT:?}: {:?}",
            csr.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn certificate_pem(csr: &CertificateSigningRequest) -> String {
    let bytes = csr.status.as_ref().unwrap().certificate.clone().unwrap().0;
    String::from_utf8(bytes).expect("PEM")
}

#[tokio::test]
async fn bootstrap_and_renewal_requests_are_approved_and_signed() {
    let server = start().await;
    let csrs: Api<CertificateSigningRequest> = Api::all(server.api.client());

    // Joining: a bootstrap token asks for a node's certificate.
    request(
        &server.api.client_as(bootstrap_token()),
        "join",
        "system:node:n1",
        "system:nodes",
        KUBELET_CLIENT_SIGNER,
    )
    .await;
    let csr = signed(&csrs, "join").await;
    let approved = approval(&csr).expect("approved");
    assert_eq!(approved.reason.as_deref(), Some("AutoApproved"));
    assert_eq!(
        approved.message.as_deref(),
        Some("Auto approving nodeclient certificate after SubjectAccessReview.")
    );
    assert!(certificate_pem(&csr).starts_with("-----BEGIN CERTIFICATE-----"));

    // Renewing: the node asks for its own certificate again.
    request(
        &server.api.client_as(node("n1")),
        "renew",
        "system:node:n1",
        "system:nodes",
        KUBELET_CLIENT_SIGNER,
    )
    .await;
    let csr = signed(&csrs, "renew").await;
    assert_eq!(
        approval(&csr).and_then(|c| c.message).as_deref(),
        Some("Auto approving selfnodeclient certificate after SubjectAccessReview.")
    );
}

#[tokio::test]
async fn requests_the_requester_may_not_make_wait_for_an_administrator() {
    let server = start().await;
    let admin = server.api.client();
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());

    // A node asking for another node's certificate is not approved (nodes hold only
    // selfnodeclient), and neither is a request that is not a node's.
    request(
        &server.api.client_as(node("n2")),
        "other-node",
        "system:node:n1",
        "system:nodes",
        KUBELET_CLIENT_SIGNER,
    )
    .await;
    request(
        &server.api.client_as(bootstrap_token()),
        "not-a-node",
        "alice",
        "system:nodes",
        KUBELET_CLIENT_SIGNER,
    )
    .await;
    // A request handled after them is signed, so they have been looked at by then.
    request(
        &server.api.client_as(bootstrap_token()),
        "marker",
        "system:node:n3",
        "system:nodes",
        KUBELET_CLIENT_SIGNER,
    )
    .await;
    signed(&csrs, "marker").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["other-node", "not-a-node"] {
        let csr = csrs.get(name).await.expect("get");
        assert!(approval(&csr).is_none(), "{name} was approved: {csr:?}");
        assert!(csr.status.and_then(|s| s.certificate).is_none());
    }

    // An administrator approves a plain client certificate; the signer then signs it.
    request(&admin, "alice", "alice", "developers", CLIENT_SIGNER).await;
    let csr = csrs.get("alice").await.expect("get");
    assert!(
        approval(&csr).is_none(),
        "only node requests are auto-approved"
    );
    let conditions = json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "AdminApproved", "message": "ok",
    }]}});
    csrs.patch_approval("alice", &PatchParams::default(), &Patch::Merge(&conditions))
        .await
        .expect("approve");
    let csr = signed(&csrs, "alice").await;
    assert!(certificate_pem(&csr).starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(csr.name_any(), "alice");
}
