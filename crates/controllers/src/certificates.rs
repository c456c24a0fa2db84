//! Node client certificates: upstream's CSR approver (`csrapproving`) and signer
//! (`csrsigning`) for the `kubernetes.io/kube-apiserver-client-kubelet` signer, so that a
//! node holding a bootstrap token gets its client certificate, and renews it later, without
//! an administrator.
//!
//! - Approval: a request for `CN=system:node:<name>, O=system:nodes` with client-auth
//!   usages is approved when its requester may `create` `certificatesigningrequests/nodeclient`
//!   (bootstrap tokens, through the default binding) or, renewing its own certificate,
//!   `certificatesigningrequests/selfnodeclient` (nodes). The question is asked with a
//!   SubjectAccessReview, as upstream does, so RBAC stays the one place that decides.
//! - Signing: approved requests of this signer and of `kubernetes.io/kube-apiserver-client`
//!   are signed with the cluster CA for `spec.expirationSeconds` (default one year).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::workloads::{Error, Result, informer, run_loop};

/// The signer of node client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other client certificates for the API server.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// How long a signed certificate lasts when the request does not say.
const DEFAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Shortest duration a request may ask for, as upstream.
const MIN_DURATION: Duration = Duration::from_secs(600);

/// The cluster CA that signs certificates.
#[derive(Clone)]
pub struct SigningCa {
    /// CA certificate, PEM.
    pub cert_pem: String,
    /// CA private key, PEM.
    pub key_pem: String,
}

struct State {
    client: Client,
    ca: SigningCa,
}

/// Runs the approver and signer until the future is dropped: one informer over the
/// requests feeding a work queue, as upstream's two controllers. A failed approval or
/// signing is retried with the queue's per-request exponential backoff; nothing lists the
/// requests again on a timer.
pub async fn run(client: Client, ca: SigningCa) -> anyhow::Result<()> {
    let (requests, events) = informer(
        Api::<CertificateSigningRequest>::all(client.clone()),
        watcher::Config::default(),
    );
    let queue = events.map(|csr| ObjectRef::from_obj(csr.as_ref()));
    let state = Arc::new(State { client, ca });
    run_loop("certificates", requests, queue, state, reconcile).await;
    Ok(())
}

fn condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, state: Arc<State>) -> Result<Action> {
    if condition(&csr, "Denied") || condition(&csr, "Failed") {
        return Ok(Action::await_change());
    }
    if !condition(&csr, "Approved") {
        if csr.spec.signer_name == KUBELET_CLIENT_SIGNER {
            approve_if_allowed(&state.client, &csr).await?;
        }
        // Approval is a change to the request, which brings it back here to be signed.
        return Ok(Action::await_change());
    }
    let signed = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if !signed
        && matches!(
            csr.spec.signer_name.as_str(),
            KUBELET_CLIENT_SIGNER | CLIENT_SIGNER
        )
    {
        sign(&state.client, &state.ca, &csr).await?;
    }
    Ok(Action::await_change())
}

/// What a node client certificate request asks for, if it is well formed.
fn node_subject(csr: &CertificateSigningRequest) -> Result<String, String> {
    let pem = String::from_utf8(csr.spec.request.0.clone()).map_err(|_| "request is not PEM")?;
    let params = rcgen::CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|e| format!("request is not a valid CSR: {e}"))?;
    let dn = &params.params.distinguished_name;
    let cn = dn
        .get(&rcgen::DnType::CommonName)
        .map(dn_text)
        .unwrap_or_default();
    let org = dn
        .get(&rcgen::DnType::OrganizationName)
        .map(dn_text)
        .unwrap_or_default();
    if !cn.starts_with("system:node:") || cn.len() == "system:node:".len() {
        return Err(format!("common name {cn:?} is not system:node:<name>"));
    }
    if org != "system:nodes" {
        return Err(format!("organization {org:?} is not system:nodes"));
    }
    let usages: Vec<&str> = csr
        .spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if !usages.contains(&"client auth")
        || usages
            .iter()
            .any(|u| !matches!(*u, "client auth" | "digital signature" | "key encipherment"))
    {
        return Err(format!("usages {usages:?} are not a client certificate's"));
    }
    Ok(cn)
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_owned(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_owned(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

async fn approve_if_allowed(client: &Client, csr: &CertificateSigningRequest) -> Result<()> {
    let cn = match node_subject(csr) {
        Ok(cn) => cn,
        Err(why) => {
            tracing::info!(csr = %csr.name_any(), %why, "certificates: not auto-approving");
            return Ok(());
        }
    };
    let requester = csr.spec.username.clone().unwrap_or_default();
    let subresource = if requester == cn {
        "selfnodeclient"
    } else {
        "nodeclient"
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(requester),
            uid: csr.spec.uid.clone(),
            groups: csr.spec.groups.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    if !answer.status.is_some_and(|s| s.allowed) {
        return Ok(());
    }
    let mut conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.push(CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("AutoApproved".into()),
        message: Some(format!(
            "Auto approving {subresource} certificate after SubjectAccessReview."
        )),
        last_update_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        )),
        ..Default::default()
    });
    let patch = json!({"status": {"conditions": conditions}});
    Api::<CertificateSigningRequest>::all(client.clone())
        .patch_approval(
            &csr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

async fn sign(client: &Client, ca: &SigningCa, csr: &CertificateSigningRequest) -> Result<()> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| Error::Invalid(format!("{what}: {e}"));
    let pem = String::from_utf8(csr.spec.request.0.clone())
        .map_err(|e| invalid("request is not PEM", &e))?;
    let request = rcgen::CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|e| invalid("request is not a valid CSR", &e))?;
    let ca_key =
        rcgen::KeyPair::from_pem(&ca.key_pem).map_err(|e| invalid("CA key unusable", &e))?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(|e| invalid("CA certificate unusable", &e))?;
    let requested = csr
        .spec
        .expiration_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        .unwrap_or(DEFAULT_DURATION);
    let duration = requested.clamp(MIN_DURATION, DEFAULT_DURATION);
    let mut params = request;
    let now = time::OffsetDateTime::now_utc();
    // Back-dated a little for clocks that lag, as upstream's signer does.
    params.params.not_before = now - time::Duration::minutes(5);
    params.params.not_after =
        now + time::Duration::seconds(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX));
    params.params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&issuer)
        .map_err(|e| invalid("signing failed", &e))?;
    let status = CertificateSigningRequestStatus {
        certificate: Some(ByteString(cert.pem().into_bytes())),
        conditions: csr.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    let patch = json!({"status": status});
    Api::<CertificateSigningRequest>::all(client.clone())
        .patch_status(
            &csr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    tracing::info!(csr = %csr.name_any(), "certificates: signed");
    Ok(())
}
