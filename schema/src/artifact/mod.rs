//! The commentary artifact: a directory with `manifest.json`, `tensors.safetensors` and, once
//! applied, `report.json`. [`write_artifact`] writes one atomically; [`verify_artifact`] checks
//! one and says exactly what is wrong.

mod manifest;
mod tensors;
mod verify;

use std::path::{Path, PathBuf};

pub use manifest::{
    ArtifactManifest, DatasetRef, HypergradientMethod, Provenance, TimeInput, Validation,
};
pub use tensors::{
    Tensor, TensorError, TensorMap, TensorValues, decode_metadata, decode_tensors, encode_tensors,
};
pub use verify::{VerifiedArtifact, verify_artifact, verify_artifact_bytes};

use crate::Sha256;

/// Manifest format version written by this build.
pub const FORMAT_VERSION: u32 = 2;
/// Versions `verify` reads (version 1 artifacts keep their meaning: a train hold-out and a
/// clamped i/K time input).
pub const READABLE_VERSIONS: [u32; 2] = [1, 2];
pub const MANIFEST_FILE: &str = "manifest.json";
pub const TENSORS_FILE: &str = "tensors.safetensors";
pub const REPORT_FILE: &str = "report.json";
/// Tensors under this prefix are insight data for pages, not commentary parameters.
pub const INSIGHT_PREFIX: &str = "insight.";

/// Why an artifact could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}: file is missing", path.display())]
    Missing { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid manifest: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: cannot encode tensors: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: TensorError,
    },
    #[error("{} is not a valid artifact:\n{}", dir.display(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { dir: PathBuf, problems: Vec<String> },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `tensors` and `manifest` (with its `tensors_sha256` filled in) into `dir`, creating it.
/// Each file is written to a temporary name and renamed, the manifest last, so a reader never
/// sees a manifest whose tensors are incomplete. Returns the manifest as written.
pub fn write_artifact(
    dir: &Path,
    mut manifest: ArtifactManifest,
    tensors: &TensorMap,
) -> Result<ArtifactManifest, ArtifactError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let tensors_path = dir.join(TENSORS_FILE);
    let metadata = [("commentary_kind".to_owned(), manifest.kind.to_string())];
    let bytes = encode_tensors(tensors, metadata).map_err(|source| ArtifactError::Encode {
        path: tensors_path.clone(),
        source,
    })?;
    manifest.format_version = FORMAT_VERSION;
    manifest.tensors_sha256 = Sha256::of(&bytes);
    write_atomically(&tensors_path, &bytes)?;
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ArtifactError::Manifest {
        path: dir.join(MANIFEST_FILE),
        source,
    })?;
    write_atomically(&dir.join(MANIFEST_FILE), &json)?;
    Ok(manifest)
}

/// Writes `bytes` to a sibling temporary file, syncs it and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}
