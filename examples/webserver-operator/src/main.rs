//! `webserver-operator crd` prints the CustomResourceDefinition to apply first;
//! `webserver-operator` runs the operator with the usual kubeconfig discovery
//! (`KUBECONFIG`, `~/.kube/config`, or in-cluster).

use kube::CustomResourceExt;
use webserver_operator::WebServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if std::env::args().nth(1).as_deref() == Some("crd") {
        print!("{}", serde_yaml::to_string(&WebServer::crd())?);
        return Ok(());
    }
    let client = kube::Client::try_default().await?;
    tokio::select! {
        _ = webserver_operator::run(client) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
