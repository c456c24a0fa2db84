//! `kumo service-account-keys …`: lists, rotates and retires the keys that sign a cluster's
//! service-account tokens (through the server's /kumo/v1/serviceaccount-keys endpoint, which
//! only cluster admins may use).
//!
//! Rotation adds a key that signs from then on; tokens signed by older keys stay valid
//! until those keys are retired, so a rotation never breaks a running workload. Retire an
//! old key once its tokens have been replaced (projected tokens renew within an hour).

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// Flags of `kumo service-account-keys`.
#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    /// Kubeconfig of the cluster (an admin's).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// List the keys; the signing key is marked.
    List,
    /// Add a new signing key; older keys keep verifying their tokens.
    Rotate,
    /// Retire a key: tokens it signed stop working at once.
    Retire {
        /// The key id (see `list`).
        kid: String,
    },
}

const PATH: &str = "/kumo/v1/serviceaccount-keys";

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let kubeconfig = args.kubeconfig.context("--kubeconfig is required")?;
    let (client, _, _) = crate::client::from_kubeconfig(&kubeconfig).await?;
    let request = match &args.command {
        KeysCommand::List => http::Request::get(PATH),
        KeysCommand::Rotate => http::Request::post(PATH),
        KeysCommand::Retire { kid } => http::Request::delete(format!("{PATH}/{kid}")),
    }
    .body(Vec::new())?;
    let keys: Value = client
        .request(request)
        .await
        .context("calling the server")?;
    println!("{:<45} {:<22} SIGNING", "KID", "CREATED");
    for key in keys["keys"].as_array().into_iter().flatten() {
        println!(
            "{:<45} {:<22} {}",
            key["kid"].as_str().unwrap_or_default(),
            key["created"].as_str().unwrap_or_default(),
            if key["signing"] == true { "*" } else { "" }
        );
    }
    Ok(())
}
