//! The kumo binary: parses flags, picks implementations and wires the crates together.

mod agent;
mod client;
mod hollow_nodes;
mod image;
mod join;
mod server;
mod service_account_keys;
mod signal;
mod token;
mod up;

use clap::{Parser, Subcommand};

/// kumo: Kubernetes for private clouds.
#[derive(Parser)]
#[command(name = "kumo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the Kubernetes API server on an embedded SQLite store.
    Server(server::ServerArgs),
    /// Run a one-node cluster in one process: the server, and on this host the agent (on a
    /// private containerd), the cluster DNS and the service proxy.
    Up(up::UpArgs),
    /// Run the node agent: register the node and run its pods on containerd over CRI.
    Agent(crate::agent::AgentArgs),
    /// Build the built-in OCI images, or import archives into containerd.
    Image(image::ImageArgs),
    /// Run simulated nodes that renew their Leases and report bound pods Running (for
    /// tests and benchmarks of the control plane).
    HollowNodes(hollow_nodes::HollowNodesArgs),
    /// Join a node's credentials to a cluster with a bootstrap token (writes its kubeconfig).
    Join(join::JoinArgs),
    /// Renew a node's client certificate now (the agent renews on its own before expiry).
    RenewNodeCertificate(join::RenewArgs),
    /// Manage bootstrap tokens for joining nodes.
    Token(token::TokenArgs),
    /// List, rotate and retire the service-account token signing keys.
    ServiceAccountKeys(service_account_keys::KeysArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Server(args) => runtime.block_on(server::run(args)),
        Command::Up(args) => runtime.block_on(up::run(args)),
        Command::Agent(args) => runtime.block_on(crate::agent::run(args)),
        Command::Image(args) => runtime.block_on(image::run(args)),
        Command::HollowNodes(args) => runtime.block_on(hollow_nodes::run(args)),
        Command::Token(args) => runtime.block_on(token::run(args)),
        Command::Join(args) => runtime.block_on(join::run(args)),
        Command::RenewNodeCertificate(args) => runtime.block_on(join::run_renew(args)),
        Command::ServiceAccountKeys(args) => runtime.block_on(service_account_keys::run(args)),
    }
}
