//! `verify_artifact`: reads an artifact directory and checks everything that can be checked
//! without the dataset, collecting every problem rather than stopping at the first.

use std::collections::BTreeSet;
use std::path::Path;

use super::{
    ArtifactError, ArtifactManifest, FORMAT_VERSION, INSIGHT_PREFIX, MANIFEST_FILE,
    READABLE_VERSIONS, REPORT_FILE, TENSORS_FILE, TensorMap, TensorValues, decode_tensors,
    io_error,
};
use crate::Sha256;

/// An artifact that passed verification.
#[derive(Debug, Clone)]
pub struct VerifiedArtifact {
    pub manifest: ArtifactManifest,
    pub tensors: TensorMap,
    /// `report.json`, when the artifact has been applied.
    pub report: Option<serde_json::Value>,
}

/// Reads and checks the artifact in `dir`: the manifest's schema and version, the tensors'
/// sha256, the tensor names, dtypes and shapes the kind requires, finite parameter values,
/// validation indices in range, and `report.json` (when present) being JSON.
pub fn verify_artifact(dir: &Path) -> Result<VerifiedArtifact, ArtifactError> {
    // The manifest is parsed before the other files are read, so a broken manifest is
    // reported first.
    let manifest = parse_manifest(dir, &read_file(&dir.join(MANIFEST_FILE))?)?;
    let tensor_bytes = read_file(&dir.join(TENSORS_FILE))?;
    let report_path = dir.join(REPORT_FILE);
    let report_bytes = if report_path.exists() {
        Some(read_file(&report_path)?)
    } else {
        None
    };
    check_artifact(dir, manifest, &tensor_bytes, report_bytes.as_deref())
}

/// [`verify_artifact`] on the files' bytes (`report` when the artifact has one); `dir` only
/// names the artifact in errors. The fuzz target `artifact` calls this.
pub fn verify_artifact_bytes(
    dir: &Path,
    manifest_bytes: &[u8],
    tensor_bytes: &[u8],
    report: Option<&[u8]>,
) -> Result<VerifiedArtifact, ArtifactError> {
    check_artifact(
        dir,
        parse_manifest(dir, manifest_bytes)?,
        tensor_bytes,
        report,
    )
}

fn parse_manifest(dir: &Path, manifest_bytes: &[u8]) -> Result<ArtifactManifest, ArtifactError> {
    serde_json::from_slice(manifest_bytes).map_err(|source| {
        // An unknown format version explains a schema mismatch better than the field error.
        match serde_json::from_slice::<serde_json::Value>(manifest_bytes)
            .ok()
            .and_then(|v| v.get("format_version").and_then(|v| v.as_u64()))
        {
            Some(version) if !READABLE_VERSIONS.iter().any(|&v| u64::from(v) == version) => {
                ArtifactError::Invalid {
                    dir: dir.to_owned(),
                    problems: vec![format!(
                        "{MANIFEST_FILE}: format_version {version} is not supported \
                         (this build reads version {FORMAT_VERSION})"
                    )],
                }
            }
            _ => ArtifactError::Manifest {
                path: dir.join(MANIFEST_FILE),
                source,
            },
        }
    })
}

/// Everything after the manifest parsed: version, sha256, tensors, report.
fn check_artifact(
    dir: &Path,
    manifest: ArtifactManifest,
    tensor_bytes: &[u8],
    report: Option<&[u8]>,
) -> Result<VerifiedArtifact, ArtifactError> {
    let mut problems = Vec::new();
    if !READABLE_VERSIONS.contains(&manifest.format_version) {
        problems.push(format!(
            "{MANIFEST_FILE}: format_version {} is not supported (this build reads version \
             {FORMAT_VERSION})",
            manifest.format_version
        ));
    }
    let actual_sha = Sha256::of(tensor_bytes);
    if actual_sha != manifest.tensors_sha256 {
        problems.push(format!(
            "{TENSORS_FILE}: sha256 is {actual_sha} but the manifest says {}; the file was \
             changed or damaged",
            manifest.tensors_sha256
        ));
    }
    let tensors = match decode_tensors(tensor_bytes) {
        Ok(tensors) => {
            check_tensors(&manifest, &tensors, &mut problems);
            tensors
        }
        Err(err) => {
            problems.push(format!("{TENSORS_FILE}: {err}"));
            TensorMap::new()
        }
    };
    check_manifest(&manifest, &mut problems);

    let report = match report.map(serde_json::from_slice) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(err)) => {
            problems.push(format!("{REPORT_FILE}: not valid JSON: {err}"));
            None
        }
    };

    if problems.is_empty() {
        Ok(VerifiedArtifact {
            manifest,
            tensors,
            report,
        })
    } else {
        Err(ArtifactError::Invalid {
            dir: dir.to_owned(),
            problems,
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    match std::fs::read(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(ArtifactError::Missing {
            path: path.to_owned(),
        }),
        other => other.map_err(io_error(path)),
    }
}

/// Checks the manifest's internal consistency.
fn check_manifest(manifest: &ArtifactManifest, problems: &mut Vec<String>) {
    let spec_kind = manifest.architecture.commentary.kind();
    if spec_kind != manifest.kind {
        problems.push(format!(
            "{MANIFEST_FILE}: kind is {} but architecture.commentary describes a {spec_kind} \
             commentary",
            manifest.kind
        ));
    }
    let dataset = &manifest.dataset;
    if dataset.classes.is_empty() {
        problems.push(format!("{MANIFEST_FILE}: dataset.classes is empty"));
    }
    if dataset.shape.height == 0 || dataset.shape.width == 0 || dataset.shape.channels == 0 {
        problems.push(format!(
            "{MANIFEST_FILE}: dataset.shape {} has a zero dimension",
            dataset.shape
        ));
    }
    let mut previous: Option<u64> = None;
    if manifest.validation.split() == crate::bounds::TEST_SPLIT {
        problems.push(format!(
            "{MANIFEST_FILE}: validation split is \"test\"; the test split is never used for learning"
        ));
    }
    for &index in manifest.validation.holdout_indices() {
        if index >= dataset.train_examples {
            problems.push(format!(
                "{MANIFEST_FILE}: validation index {index} is out of range (the train split \
                 has {} examples)",
                dataset.train_examples
            ));
            break;
        }
        if previous.is_some_and(|p| p >= index) {
            problems.push(format!(
                "{MANIFEST_FILE}: validation indices must be strictly increasing ({index} \
                 follows {})",
                previous.unwrap_or_default()
            ));
            break;
        }
        previous = Some(index);
    }
    for (name, value) in &manifest.metrics {
        if !value.is_finite() {
            problems.push(format!("{MANIFEST_FILE}: metric {name:?} is {value}"));
        }
    }
}

/// Checks that the tensors are exactly the parameters the commentary spec requires (plus any
/// `insight.` tensors), each f32, of the right shape, and finite.
fn check_tensors(manifest: &ArtifactManifest, tensors: &TensorMap, problems: &mut Vec<String>) {
    let dataset = &manifest.dataset;
    let classes = dataset.classes.len();
    let Ok(train) = usize::try_from(dataset.train_examples) else {
        problems.push(format!(
            "{MANIFEST_FILE}: dataset sizes do not fit in memory"
        ));
        return;
    };
    let required = manifest
        .architecture
        .commentary
        .parameter_shapes(dataset.shape, classes, train);
    let required_names: BTreeSet<&str> = required.iter().map(|(n, _)| n.as_str()).collect();
    for (name, shape) in &required {
        let Some(tensor) = tensors.get(name) else {
            problems.push(format!(
                "{TENSORS_FILE}: tensor {name:?} (shape {shape:?}) is missing"
            ));
            continue;
        };
        if tensor.shape() != shape.as_slice() {
            problems.push(format!(
                "{TENSORS_FILE}: tensor {name:?} has shape {:?}; the {} commentary needs {shape:?}",
                tensor.shape(),
                manifest.kind
            ));
        }
        match tensor.values() {
            TensorValues::F32(values) => {
                if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
                    problems.push(format!(
                        "{TENSORS_FILE}: tensor {name:?} holds a non-finite value ({}) at flat \
                         index {pos}",
                        values[pos]
                    ));
                }
            }
            other => problems.push(format!(
                "{TENSORS_FILE}: tensor {name:?} has dtype {}; parameters are F32",
                other.dtype_name()
            )),
        }
    }
    for name in tensors.keys() {
        if !required_names.contains(name.as_str()) && !name.starts_with(INSIGHT_PREFIX) {
            problems.push(format!(
                "{TENSORS_FILE}: unexpected tensor {name:?}: not a parameter of this \
                 commentary and not under the {INSIGHT_PREFIX:?} prefix"
            ));
        }
    }
}
