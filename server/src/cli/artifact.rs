//! `commentary artifact verify|examples`.

use std::path::PathBuf;

use clap::Subcommand;
use schema::artifact::verify_artifact;

#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Check an artifact directory: manifest schema, tensor hash, and the tensor names, dtypes
    /// and shapes its kind requires. Exits non-zero and lists every problem found.
    Verify {
        /// The artifact directory (holding manifest.json and tensors.safetensors).
        dir: PathBuf,
    },
    /// List an example-weighting artifact's lowest-weighted train examples: the suspected
    /// mislabeled ones (canonical train index, label, weight).
    Examples {
        /// The artifact directory.
        dir: PathBuf,
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print CSV (index,label,class,weight) instead of a table.
        #[arg(long)]
        csv: bool,
    },
}

pub fn run(command: ArtifactCommand) -> anyhow::Result<()> {
    match command {
        ArtifactCommand::Verify { dir } => {
            let artifact = verify_artifact(&dir)?;
            let manifest = &artifact.manifest;
            let parameters = artifact
                .tensors
                .keys()
                .filter(|n| !n.starts_with(schema::artifact::INSIGHT_PREFIX))
                .count();
            println!(
                "ok: {} commentary ({}) for dataset {}",
                manifest.kind, manifest.algorithm, manifest.dataset.digest
            );
            println!(
                "    {parameters} parameter tensors, {} insight tensors, tensors {}",
                artifact.tensors.len() - parameters,
                manifest.tensors_sha256
            );
            if artifact.report.is_some() {
                println!("    report.json present");
            }
        }
        ArtifactCommand::Examples { dir, limit, csv } => {
            let artifact = verify_artifact(&dir)?;
            let listed = crate::registry::commentaries::lowest_weighted(
                &artifact.tensors,
                &artifact.manifest.dataset.classes,
                limit,
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no per-example weights (example-weighting artifacts of format 2 have them)",
                    dir.display()
                )
            })?;
            if csv {
                print!("{}", listed.to_csv());
                return Ok(());
            }
            println!(
                "the {} lowest-weighted of {} train examples (canonical index):",
                listed.items.len(),
                listed.total
            );
            for e in &listed.items {
                println!(
                    "{:>8}  label {:<10} weight {:.4}",
                    e.index, e.class, e.weight
                );
            }
        }
    }
    Ok(())
}
