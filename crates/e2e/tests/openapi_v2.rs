//! kubectl's OpenAPI v2 fallback against a real `kumo server`: kinds whose v3 document has
//! no PATCH operation (TokenReview, SubjectAccessReview) make kubectl's field-validation
//! check fall back to `/openapi/v2`, which it asks for only as gnostic protobuf, and then
//! validate the manifest on the client side from that document.

use std::time::Duration;

use e2e::{Kumo, eventually};

fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path.to_string_lossy().into_owned()
}

/// A service-account token of `default/default`, once the account exists.
fn default_token(kumo: &Kumo) -> String {
    let mut token = String::new();
    let minted = eventually(Duration::from_secs(30), || {
        match kumo.kubectl(&["create", "token", "default", "-n", "default"]) {
            Ok(out) => {
                token = out.trim().to_owned();
                true
            }
            Err(_) => false,
        }
    });
    assert!(minted, "no token for default/default");
    token
}

#[test]
fn create_of_review_kinds_validates_with_v2() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let dir = tempfile::tempdir()?;

    let token = default_token(&kumo);
    let review = write(
        dir.path(),
        "tokenreview.yaml",
        &format!(
            // No metadata at all, as reviews are usually written: only `spec` is required.
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n"
        ),
    );
    // Default --validate=strict: this needs the protobuf v2 document.
    let out = kumo.kubectl(&["create", "-f", &review, "-o", "json"])?;
    let created: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(created["status"]["authenticated"], true, "{out}");
    assert_eq!(
        created["status"]["user"]["username"], "system:serviceaccount:default:default",
        "{out}"
    );

    let access = write(
        dir.path(),
        "sar.yaml",
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nmetadata:\n  name: review\nspec:\n  user: alice\n  resourceAttributes:\n    verb: get\n    resource: pods\n    namespace: default\n",
    );
    let out = kumo.kubectl(&["create", "-f", &access, "-o", "json"])?;
    let created: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(created["status"]["allowed"], false, "{out}");

    // kubectl itself rejects unknown fields and wrong types, from the v2 schemas, before
    // sending anything: the messages name the v2 definitions.
    let unknown = write(
        dir.path(),
        "unknown.yaml",
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nmetadata:\n  name: review\nspec:\n  token: abc\n  bogusField: 1\n",
    );
    let err = kumo.kubectl_fails(&["create", "-f", &unknown])?;
    assert!(
        err.contains("unknown field \"bogusField\"")
            && err.contains("io.k8s.api.authentication.v1.TokenReviewSpec"),
        "{err}"
    );
    let mistyped = write(
        dir.path(),
        "mistyped.yaml",
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nmetadata:\n  name: review\nspec:\n  user: alice\n  groups: admins\n  nonResourceAttributes:\n    path: /healthz\n    verb: get\n",
    );
    let err = kumo.kubectl_fails(&["create", "-f", &mistyped])?;
    assert!(
        err.contains("ValidationError") && err.contains("groups"),
        "{err}"
    );
    // Turning validation off leaves the unknown field to the server, which drops it.
    let out = kumo.kubectl(&["create", "-f", &unknown, "--validate=false", "-o", "json"])?;
    let created: serde_json::Value = serde_json::from_str(&out)?;
    assert_ne!(created["status"]["authenticated"], true, "{out}");
    Ok(())
}
