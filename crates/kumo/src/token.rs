//! `kumo token …`: bootstrap tokens for joining nodes, as `kubeadm token`. A token is a
//! `bootstrap.kubernetes.io/token` Secret in kube-system; `create` prints the join command
//! with the server URL and the hash that pins the cluster CA.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use apiserver::authn::bootstrap_token;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// Flags of `kumo token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Kubeconfig of the cluster (an admin's).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for joining nodes and print the `kumo agent` command that uses it.
    Create {
        /// How long the token is valid (e.g. 24h, 30m, 1h30m); 0 never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// A note stored with the token.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the bootstrap tokens.
    List,
    /// Delete a token (by id or whole token).
    Delete { token: String },
}

pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let kubeconfig = args.kubeconfig.context("--kubeconfig is required")?;
    let (client, server, ca_pem) = crate::client::from_kubeconfig(&kubeconfig).await?;
    let secrets: Api<Secret> = Api::namespaced(client, bootstrap_token::NAMESPACE);
    match args.command {
        TokenCommand::Create { ttl, description } => {
            let ttl = parse_ttl(&ttl)?;
            let id = random_token_part(6);
            let secret_part = random_token_part(16);
            let mut data = BTreeMap::new();
            let mut put = |k: &str, v: &str| {
                data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
            };
            put("token-id", &id);
            put("token-secret", &secret_part);
            put("usage-bootstrap-authentication", "true");
            put("usage-bootstrap-signing", "true");
            put("auth-extra-groups", bootstrap_token::NODE_GROUP);
            if let Some(ttl) = ttl {
                let at = jiff::Timestamp::now() + ttl;
                put("expiration", &at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
            if let Some(d) = &description {
                put("description", d);
            }
            let mut secret = Secret {
                type_: Some(bootstrap_token::SECRET_TYPE.to_owned()),
                data: Some(data),
                ..Default::default()
            };
            secret.metadata.name = Some(bootstrap_token::secret_name(&id));
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .context("creating the token secret")?;
            let hash = apiserver::pki::ca_cert_hash(&ca_pem)?;
            println!(
                "kumo agent --server {server} --token {id}.{secret_part} --ca-cert-hash {hash}"
            );
        }
        TokenCommand::List => {
            let list = secrets
                .list(
                    &ListParams::default()
                        .fields(&format!("type={}", bootstrap_token::SECRET_TYPE)),
                )
                .await?;
            println!("{:<8} {:<22} {:<8} DESCRIPTION", "ID", "EXPIRES", "EXPIRED");
            for s in list.items {
                let get = |k: &str| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                        .unwrap_or_default()
                };
                let raw = serde_json::to_value(&s).unwrap_or_default();
                let expired = bootstrap_token::expired(&raw, jiff::Timestamp::now());
                let expires = get("expiration");
                println!(
                    "{:<8} {:<22} {:<8} {}",
                    get("token-id"),
                    if expires.is_empty() {
                        "<never>".to_owned()
                    } else {
                        expires
                    },
                    expired,
                    get("description")
                );
            }
        }
        TokenCommand::Delete { token } => {
            let id = token.split('.').next().unwrap_or_default();
            secrets
                .delete(&bootstrap_token::secret_name(id), &DeleteParams::default())
                .await
                .with_context(|| format!("deleting token {id}"))?;
            println!("bootstrap token {id:?} deleted");
        }
    }
    Ok(())
}

/// `24h`, `90m`, `1h30m`, `3600s` or `0` (no expiry).
fn parse_ttl(ttl: &str) -> anyhow::Result<Option<jiff::SignedDuration>> {
    if ttl == "0" {
        return Ok(None);
    }
    let mut total = 0i64;
    let mut number = String::new();
    for c in ttl.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number
            .parse()
            .with_context(|| format!("invalid --ttl {ttl:?}"))?;
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => anyhow::bail!("invalid --ttl {ttl:?}: units are h, m and s"),
        };
    }
    anyhow::ensure!(number.is_empty() && total > 0, "invalid --ttl {ttl:?}");
    Ok(Some(jiff::SignedDuration::from_secs(total)))
}

/// `len` characters of [a-z0-9] from the OS's random source.
fn random_token_part(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        // 252 is the largest multiple of 36 below 256: rejecting above it keeps it uniform.
        let byte = uuid::Uuid::new_v4().as_bytes()[0];
        if byte < 252 {
            out.push(ALPHABET[usize::from(byte) % 36] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_token_parts() {
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(
            parse_ttl("1h30m").unwrap(),
            Some(jiff::SignedDuration::from_secs(5400))
        );
        assert!(parse_ttl("1d").is_err() && parse_ttl("h").is_err() && parse_ttl("10").is_err());
        let t = format!("{}.{}", random_token_part(6), random_token_part(16));
        assert!(bootstrap_token::parse(&t).is_some(), "{t}");
    }
}
