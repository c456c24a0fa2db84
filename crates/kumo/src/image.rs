//! `kumo image`: the project's own images (busybox, pause, web) as OCI archives, and their
//! import into a node's containerd.

use std::path::PathBuf;

use anyhow::Context;

/// Flags of `kumo image`.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// `kumo image` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Write the built-in images as OCI archives into a directory.
    Build {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// The statically linked busybox to build from.
        #[arg(long, default_value = ::agent::images::DEFAULT_BUSYBOX)]
        busybox: PathBuf,
    },
    /// Import OCI archives into containerd (CRI's namespace).
    Import {
        /// containerd's socket.
        #[arg(long, default_value = "/run/containerd/containerd.sock")]
        address: PathBuf,
        /// The archives.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::Build { out, busybox } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for archive in ::agent::images::build_all(&busybox)? {
                let path = out.join(archive.file_name());
                std::fs::write(&path, &archive.bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}\t{}", archive.name, path.display());
            }
            Ok(())
        }
        ImageCommand::Import { address, files } => {
            for file in files {
                ::agent::containerd::import_archive(&address, &file).await?;
                println!("imported {}", file.display());
            }
            Ok(())
        }
    }
}
