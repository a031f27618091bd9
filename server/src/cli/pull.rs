//! `commentary pull`: download the best commentary for a dataset from a registry, verified.

use std::path::PathBuf;

use clap::Args;
use schema::{CommentaryKind, Sha256};

use super::remote::{ServerArgs, runtime};

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The dataset's digest (sha256:<hex> or bare hex).
    #[arg(long)]
    dataset: Sha256,
    /// Only commentaries of this kind.
    #[arg(long)]
    kind: Option<CommentaryKind>,
    /// The artifact directory to write.
    #[arg(long)]
    out: PathBuf,
}

/// `commentary pull`: the best commentary for a dataset, verified, into a directory.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let detail = runtime()?.block_on(client.pull(&args.dataset, args.kind, &args.out))?;
    println!(
        "pulled {} ({} commentary{}) into {}",
        detail.info.id,
        detail.info.kind,
        detail
            .info
            .improvement
            .map(|g| format!(", test-accuracy gain {g:+.4}"))
            .unwrap_or_default(),
        args.out.display()
    );
    Ok(())
}
