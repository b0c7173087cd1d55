//! `herald tail`: print a channel's publications as JSON lines.

use crate::cli::TailArgs;
use std::process::ExitCode;

/// Runs `herald tail`.
pub async fn run(_args: TailArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("tail is not wired yet")
}
