//! `kumo hollow-nodes`: runs simulated nodes against a cluster until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Taint;

/// Flags of `kumo hollow-nodes`.
#[derive(clap::Args, Debug)]
pub struct HollowNodesArgs {
    /// Kubeconfig of the cluster to join.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// How many nodes to run.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Node names are PREFIX<index>.
    #[arg(long, default_value = "hollow-")]
    pub name_prefix: String,
    /// Index of the first node.
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// CPU capacity of each node.
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value = "110")]
    pub pods: String,
    /// Extra node labels, as k=v,k2=v2.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Taints registered with the nodes, as key[=value]:Effect, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub taints: Vec<String>,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 10)]
    pub renew_interval_seconds: u64,
}

pub async fn run(args: HollowNodesArgs) -> anyhow::Result<()> {
    let mut config = hollow::Config {
        count: args.count,
        first_index: args.first_index,
        name_prefix: args.name_prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        renew_interval: Duration::from_secs(args.renew_interval_seconds.max(1)),
        ..Default::default()
    };
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .with_context(|| format!("label {label:?} is not k=v"))?;
        config.labels.insert(k.to_owned(), v.to_owned());
    }
    for taint in &args.taints {
        config.taints.push(parse_taint(taint)?);
    }
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(client_config)?;
    tokio::select! {
        r = hollow::run(client, config) => r,
        _ = crate::signal::shutdown() => Ok(()),
    }
}

/// `key[=value]:Effect`, as `kubectl taint` writes them.
fn parse_taint(s: &str) -> anyhow::Result<Taint> {
    let (kv, effect) = s
        .rsplit_once(':')
        .with_context(|| format!("taint {s:?} is not key[=value]:Effect"))?;
    anyhow::ensure!(
        matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute"),
        "taint {s:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
    );
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (kv, None),
    };
    Ok(Taint {
        key: key.to_owned(),
        value,
        effect: effect.to_owned(),
        time_added: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints() {
        let t = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        let t = parse_taint("example.com/x:NoExecute").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("example.com/x", None, "NoExecute")
        );
        assert!(parse_taint("x=y").is_err());
        assert!(parse_taint("x=y:Sometimes").is_err());
    }
}
