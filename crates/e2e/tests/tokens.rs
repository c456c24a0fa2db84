//! Bearer tokens end to end with kubectl: service-account tokens from `kubectl create token`
//! (audience, binding to a pod), legacy token Secrets, signing-key rotation and retirement,
//! OIDC discovery, and bootstrap tokens from `kumo token create`.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use e2e::{Kumo, kumo_bin};
use serde_json::Value;

/// kubectl as the bearer of `token` only (no client certificate).
fn as_token(kumo: &Kumo, token: &str, args: &[&str]) -> std::process::Output {
    let ca = kumo.data_dir().join("pki/ca.crt");
    let mut full = vec![
        "--kubeconfig=/dev/null".to_owned(),
        format!("--server={}", kumo.url),
        format!("--certificate-authority={}", ca.display()),
        format!("--token={token}"),
    ];
    full.extend(args.iter().map(|a| (*a).to_owned()));
    Command::new("kubectl")
        .args(&full)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl runs")
}

/// `kubectl auth whoami` as the bearer of `token`: the user info, or the error text.
fn whoami(kumo: &Kumo, token: &str) -> Result<Value, String> {
    let out = as_token(kumo, token, &["auth", "whoami", "-o", "json"]);
    if out.status.success() {
        let review: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok(review["status"]["userInfo"].clone())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn unauthorized(result: Result<Value, String>) -> bool {
    matches!(result, Err(e) if e.contains("Unauthorized") || e.contains("provide credentials"))
}

fn kumo_cli(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(kumo_bin())
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kumo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap_or_default();
    let header: Value = serde_json::from_slice(&header).unwrap_or_default();
    header["kid"].as_str().unwrap_or_default().to_owned()
}

fn setup(kumo: &Kumo) -> anyhow::Result<()> {
    kumo.kubectl(&["create", "namespace", "apps"])?;
    kumo.kubectl(&["create", "serviceaccount", "robot", "-n", "apps"])?;
    Ok(())
}

#[test]
fn service_account_tokens_follow_audience_and_bound_pod() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    setup(&kumo)?;
    let token = kumo.kubectl(&["create", "token", "robot", "-n", "apps"])?;
    let token = token.trim();
    let user = whoami(&kumo, token).map_err(anyhow::Error::msg)?;
    assert_eq!(user["username"], "system:serviceaccount:apps:robot");
    let groups: Vec<&str> = user["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:apps",
            "system:authenticated"
        ]
    );
    let sa_uid = kumo.kubectl(&[
        "get",
        "sa",
        "robot",
        "-n",
        "apps",
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    assert_eq!(user["uid"], sa_uid.trim());
    // Authenticated but not authorized: RBAC decides, not authentication.
    let out = as_token(&kumo, token, &["get", "pods", "-n", "apps"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Forbidden"));
    kumo.kubectl(&[
        "create",
        "rolebinding",
        "robot-view",
        "-n",
        "apps",
        "--clusterrole=view",
        "--serviceaccount=apps:robot",
    ])?;
    let out = as_token(&kumo, token, &["get", "pods", "-n", "apps"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token for another audience is not for the API server.
    let vault = kumo.kubectl(&["create", "token", "robot", "-n", "apps", "--audience=vault"])?;
    assert!(unauthorized(whoami(&kumo, vault.trim())));
    // Nor is a forged or truncated one.
    assert!(unauthorized(whoami(&kumo, &token[..token.len() - 4])));

    // A token bound to a pod names the pod and dies with it.
    kumo.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: worker, namespace: apps}\nspec:\n  serviceAccountName: robot\n  containers: [{name: c, image: busybox}]\n",
    )?;
    let bound = kumo.kubectl(&[
        "create",
        "token",
        "robot",
        "-n",
        "apps",
        "--bound-object-kind=Pod",
        "--bound-object-name=worker",
        "--duration=20m",
    ])?;
    let user = whoami(&kumo, bound.trim()).map_err(anyhow::Error::msg)?;
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"][0],
        "worker"
    );
    let wrong = kumo.kubectl_fails(&[
        "create",
        "token",
        "default",
        "-n",
        "apps",
        "--bound-object-kind=Pod",
        "--bound-object-name=worker",
    ]);
    assert!(
        wrong.is_ok(),
        "binding to a pod of another account must fail"
    );
    kumo.kubectl(&["delete", "pod", "worker", "-n", "apps"])?;
    assert!(unauthorized(whoami(&kumo, bound.trim())));
    // The unbound token is unaffected; deleting the account ends it too.
    assert!(whoami(&kumo, token).is_ok());
    kumo.kubectl(&["delete", "sa", "robot", "-n", "apps"])?;
    assert!(unauthorized(whoami(&kumo, token)));
    Ok(())
}

#[test]
fn legacy_token_secrets_work_while_the_secret_exists() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    setup(&kumo)?;
    kumo.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: robot-token\n  namespace: apps\n  annotations: {kubernetes.io/service-account.name: robot}\ntype: kubernetes.io/service-account-token\n",
    )?;
    let b64 = kumo.kubectl(&[
        "get",
        "secret",
        "robot-token",
        "-n",
        "apps",
        "-o",
        "jsonpath={.data.token}",
    ])?;
    let token = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64.trim())?)?;
    let ca = kumo.kubectl(&[
        "get",
        "secret",
        "robot-token",
        "-n",
        "apps",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ])?;
    assert!(!ca.trim().is_empty(), "the secret carries the cluster CA");
    let user = whoami(&kumo, &token).map_err(anyhow::Error::msg)?;
    assert_eq!(user["username"], "system:serviceaccount:apps:robot");
    kumo.kubectl(&["delete", "secret", "robot-token", "-n", "apps"])?;
    assert!(unauthorized(whoami(&kumo, &token)));
    Ok(())
}

#[test]
fn rotated_signing_key_keeps_old_tokens_until_retired() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    setup(&kumo)?;
    let admin: PathBuf = kumo.kubeconfig();
    let old = kumo.kubectl(&["create", "token", "robot", "-n", "apps"])?;
    let old = old.trim().to_owned();
    let old_kid = kid(&old);
    let listing = kumo_cli(&admin, &["service-account-keys", "list"])?;
    assert!(listing.contains(&old_kid), "{listing}");

    // OIDC discovery points at the JWKS, which holds the signing key.
    let discovery: Value = serde_json::from_str(&kumo.kubectl(&[
        "get",
        "--raw",
        "/.well-known/openid-configuration",
    ])?)?;
    assert_eq!(discovery["issuer"], kumo.url.as_str());
    assert_eq!(
        discovery["jwks_uri"],
        format!("{}/openid/v1/jwks", kumo.url).as_str()
    );
    let jwks = |kumo: &Kumo| -> anyhow::Result<Vec<String>> {
        let doc: Value =
            serde_json::from_str(&kumo.kubectl(&["get", "--raw", "/openid/v1/jwks"])?)?;
        Ok(doc["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect())
    };
    assert_eq!(jwks(&kumo)?, vec![old_kid.clone()]);

    // Rotate: the old token keeps working, new tokens use the new key.
    let rotated = kumo_cli(&admin, &["service-account-keys", "rotate"])?;
    assert_eq!(rotated.lines().count(), 3, "{rotated}");
    assert!(
        whoami(&kumo, &old).is_ok(),
        "old token survives the rotation"
    );
    let new = kumo.kubectl(&["create", "token", "robot", "-n", "apps"])?;
    let new = new.trim().to_owned();
    let new_kid = kid(&new);
    assert_ne!(new_kid, old_kid);
    assert_eq!(jwks(&kumo)?, vec![old_kid.clone(), new_kid.clone()]);
    assert!(whoami(&kumo, &new).is_ok());

    // The signing key cannot be retired; the old one can, and its tokens stop.
    assert!(kumo_cli(&admin, &["service-account-keys", "retire", &new_kid]).is_err());
    kumo_cli(&admin, &["service-account-keys", "retire", &old_kid])?;
    assert!(unauthorized(whoami(&kumo, &old)));
    assert!(whoami(&kumo, &new).is_ok());
    assert_eq!(jwks(&kumo)?, vec![new_kid]);

    // Only cluster admins may manage keys.
    kumo.kubectl(&[
        "create",
        "clusterrolebinding",
        "robot-edit",
        "--clusterrole=edit",
        "--serviceaccount=apps:robot",
    ])?;
    let out = as_token(
        &kumo,
        &new,
        &[
            "create",
            "--raw",
            "/kumo/v1/serviceaccount-keys",
            "-f",
            "/dev/null",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Forbidden"));
    Ok(())
}

#[test]
fn bootstrap_tokens_authenticate_until_deleted() -> anyhow::Result<()> {
    let kumo = Kumo::start_with(&["--no-control-loops"])?;
    let admin = kumo.kubeconfig();
    let join = kumo_cli(&admin, &["token", "create", "--ttl", "1h"])?;
    let words: Vec<&str> = join.split_whitespace().collect();
    let at = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .map(|s| (*s).to_owned())
            .unwrap_or_default()
    };
    assert_eq!(&words[..2], ["kumo", "agent"]);
    assert_eq!(at("--server"), kumo.url);
    let ca = std::fs::read_to_string(kumo.data_dir().join("pki/ca.crt"))?;
    assert_eq!(at("--ca-cert-hash"), apiserver::pki::ca_cert_hash(&ca)?);
    let token = at("--token");
    let id = token.split('.').next().unwrap_or_default().to_owned();
    let user = whoami(&kumo, &token).map_err(anyhow::Error::msg)?;
    assert_eq!(user["username"], format!("system:bootstrap:{id}").as_str());
    assert!(user["groups"].as_array().is_some_and(|g| {
        g.iter()
            .any(|g| g == "system:bootstrappers:kubeadm:default-node-token")
    }));
    let listing = kumo_cli(&admin, &["token", "list"])?;
    assert!(listing.contains(&id), "{listing}");
    // A wrong secret for a real id is refused.
    let forged = format!("{id}.0000000000000000");
    assert!(unauthorized(whoami(&kumo, &forged)));
    kumo_cli(&admin, &["token", "delete", &token])?;
    assert!(unauthorized(whoami(&kumo, &token)));
    Ok(())
}

#[test]
fn a_node_joins_with_a_bootstrap_token_and_the_ca_hash() -> anyhow::Result<()> {
    let kumo = Kumo::start()?;
    let admin = kumo.kubeconfig();
    let join = kumo_cli(&admin, &["token", "create"])?;
    let words: Vec<String> = join.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[..2], ["kumo", "agent"]);
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("node.kubeconfig");
    let run_join = |hash: &str| {
        let mut args: Vec<String> = vec!["join".into()];
        let mut rest = words[2..].to_vec();
        if let Some(i) = rest.iter().position(|w| w == "--ca-cert-hash") {
            rest[i + 1] = hash.to_owned();
        }
        args.extend(rest);
        args.extend([
            "--node-name".into(),
            "joined-1".into(),
            "--kubeconfig-out".into(),
        ]);
        args.push(out_path.display().to_string());
        Command::new(kumo_bin()).args(&args).output()
    };
    // A hash that is not the cluster CA's: the node refuses the server and sends nothing.
    let wrong =
        run_join("sha256:0000000000000000000000000000000000000000000000000000000000000000")?;
    assert!(!wrong.status.success());
    assert!(!out_path.exists());
    let hash = words
        .iter()
        .position(|w| w == "--ca-cert-hash")
        .map(|i| words[i + 1].clone())
        .unwrap_or_default();
    let joined = run_join(&hash)?;
    assert!(
        joined.status.success(),
        "join: {}\n{}",
        String::from_utf8_lossy(&joined.stderr),
        kumo.log()
    );
    let out = kumo
        .kubectl_cmd(&["auth", "whoami", "-o", "json"])
        .env("KUBECONFIG", &out_path)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let review: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:node:joined-1"
    );
    assert!(
        review["status"]["userInfo"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:nodes"))
    );
    // The node renews its own certificate (approved as selfnodeclient): a new key and
    // certificate in the same kubeconfig, and it still works.
    let before = std::fs::read_to_string(&out_path)?;
    let renewed = Command::new(kumo_bin())
        .args(["renew-node-certificate", "--kubeconfig"])
        .arg(&out_path)
        .output()?;
    assert!(
        renewed.status.success(),
        "renew: {}",
        String::from_utf8_lossy(&renewed.stderr)
    );
    let after = std::fs::read_to_string(&out_path)?;
    assert_ne!(before, after);
    let out = kumo
        .kubectl_cmd(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .env("KUBECONFIG", &out_path)
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "system:node:joined-1");
    let renewal = kumo.kubectl(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.username}{\"\\n\"}{end}",
    ])?;
    assert!(
        renewal.lines().any(|u| u == "system:node:joined-1"),
        "{renewal}"
    );
    // The request was approved automatically and signed.
    let csrs = kumo.kubectl(&["get", "csr", "-o", "json"])?;
    let csrs: Value = serde_json::from_str(&csrs)?;
    let items = csrs["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "the join's request and the renewal's");
    for csr in &items {
        assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved");
    }
    assert!(items.iter().any(|c| {
        c["spec"]["username"]
            .as_str()
            .unwrap_or_default()
            .starts_with("system:bootstrap:")
    }));
    Ok(())
}
