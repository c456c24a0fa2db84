//! Applying a transaction with `nft -f -`: the whole script is one atomic batch, so the
//! kernel sees either the old rules or the new ones.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The command could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// nft refused the transaction (nothing was changed).
    #[error("{command} failed: {stderr}")]
    Refused {
        /// The command line.
        command: String,
        /// What nft said.
        stderr: String,
    },
}

/// Runs `command -f -` with `script` on standard input.
pub async fn apply(command: &[String], script: &str) -> Result<(), NftError> {
    let shown = command.join(" ");
    let (program, args) = command.split_first().ok_or_else(|| NftError::Spawn {
        command: shown.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty nft command"),
    })?;
    let spawn_error = |source| NftError::Spawn {
        command: shown.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(spawn_error)?;
    }
    let output = child.wait_with_output().await.map_err(spawn_error)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused {
            command: shown,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
