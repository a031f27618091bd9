//! `commentary artifact verify`.

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
    }
    Ok(())
}
