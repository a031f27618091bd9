//! `commentary pull`: download a commentary from a registry, verified: one by id, or the best
//! for a dataset. `PickArgs` (which one) is shared with `apply --server`.

use std::path::PathBuf;

use clap::Args;
use schema::{CommentaryKind, Sha256};

use super::progress;
use super::remote::{ServerArgs, runtime};
use super::values;
use crate::registry::client::Pick;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  commentary pull --server http://127.0.0.1:8080 --dataset sha256:534e37... --out /tmp/best
  commentary pull --server http://127.0.0.1:8080 --dataset 534e37... --kind label-blending \\
      --out /tmp/blend
  commentary pull --server http://127.0.0.1:8080 --id 0193a5e2-... --out /tmp/that-one")]
pub struct PullArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The dataset whose best commentary to pull (sha256:<hex> or bare hex).
    #[arg(long, required_unless_present = "id", conflicts_with = "id")]
    dataset: Option<Sha256>,
    #[command(flatten)]
    pick: PickArgs,
    /// The artifact directory to write.
    #[arg(long)]
    out: PathBuf,
}

/// Which commentary of a registry: `--id`, or the best for the dataset (of `--kind`).
#[derive(Debug, Args)]
pub(super) struct PickArgs {
    /// This commentary exactly, by id (instead of the best for the dataset).
    #[arg(long, requires = "server")]
    id: Option<String>,
    /// Only commentaries of this kind.
    #[arg(long, value_parser = values::kind(), requires = "server", conflicts_with = "id")]
    kind: Option<CommentaryKind>,
    /// The best is the largest improvement among the commentaries that improved (a positive
    /// test-accuracy gain, not marked harmful; measured by the registry before uploaders'
    /// claims). When none did: take the first one not marked harmful instead of failing.
    #[arg(long, requires = "server", conflicts_with = "id")]
    allow_no_improvement: bool,
}

impl PickArgs {
    /// The pick these flags describe; `dataset` gives the digest when it is the best.
    pub(super) fn pick(
        &self,
        dataset: impl FnOnce() -> anyhow::Result<Sha256>,
    ) -> anyhow::Result<Pick> {
        Ok(match &self.id {
            Some(id) => Pick::Id(id.clone()),
            None => Pick::Best {
                dataset: dataset()?,
                kind: self.kind,
                allow_no_improvement: self.allow_no_improvement,
            },
        })
    }
}

/// `commentary pull`: the commentary, verified, into a directory.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let pick = args.pick.pick(|| {
        args.dataset
            .ok_or_else(|| anyhow::anyhow!("give --dataset DIGEST or --id ID"))
    })?;
    let bar = progress::bytes("downloading");
    let detail = runtime()?.block_on(client.pull(&pick, &args.out, &bar))?;
    bar.finish_and_clear();
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
