//! Clients for the client-side subcommands, from a kubeconfig.

use std::path::Path;

use anyhow::Context;
use base64::Engine;

/// A client for the kubeconfig's current context, with the server URL and the CA (PEM)
/// that it trusts.
pub async fn from_kubeconfig(path: &Path) -> anyhow::Result<(kube::Client, String, String)> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &Default::default())
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .context("the kubeconfig has no cluster for its current context")?;
    let ca_pem = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .context("certificate-authority-data is not base64")?,
        )?,
        (None, Some(file)) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
        }
        (None, None) => anyhow::bail!("the kubeconfig names no certificate authority"),
    };
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    Ok((kube::Client::try_from(config)?, server, ca_pem))
}
