//! The kumo binary: parses flags, picks implementations and wires the crates together.

mod hollow_nodes;
mod server;
mod signal;

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
    /// Run simulated nodes that renew their Leases and report bound pods Running (for
    /// tests and benchmarks of the control plane).
    HollowNodes(hollow_nodes::HollowNodesArgs),
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
        Command::HollowNodes(args) => runtime.block_on(hollow_nodes::run(args)),
    }
}
