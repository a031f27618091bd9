//! `manifest.json`: what an artifact is, what it was learned from and how.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::arch::ArchitectureSpec;
use crate::{Algorithm, CommentaryKind, ImageShape, LearnConfig, Sha256};

/// The manifest of a commentary artifact (format version 2; version 1 manifests are read too,
/// see [`ManifestFile`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "ManifestFile")]
pub struct ArtifactManifest {
    pub format_version: u32,
    pub kind: CommentaryKind,
    pub algorithm: Algorithm,
    /// The dataset the commentary was learned on.
    pub dataset: DatasetRef,
    /// Where L_V was measured while learning.
    pub validation: Validation,
    /// What the teacher's time input means.
    pub time_input: TimeInput,
    pub architecture: ArchitectureSpec,
    pub config: LearnConfig,
    /// Whether hypergradients were exact or finite-difference approximations.
    pub hypergradient: HypergradientMethod,
    /// Named results, e.g. `val_loss`, `test_accuracy_gain`.
    pub metrics: BTreeMap<String, f64>,
    pub provenance: Provenance,
    /// sha256 of `tensors.safetensors`; the server's strong ETag for the tensors.
    pub tensors_sha256: Sha256,
}

/// Where the validation loss L_V was measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Validation {
    /// A seeded hold-out of the train split: `split` is `train`, `indices` are canonical train
    /// indices (sorted), excluded from the student's training pool.
    Holdout { split: String, indices: Vec<u64> },
    /// A split of its own (e.g. a trusted `val`), whole train used for training.
    Split { split: String, examples: u64 },
}

impl Validation {
    /// A hold-out of these train indices.
    pub fn holdout(indices: Vec<u64>) -> Self {
        Self::Holdout {
            split: "train".to_owned(),
            indices,
        }
    }

    /// The split's name.
    pub fn split(&self) -> &str {
        match self {
            Self::Holdout { split, .. } | Self::Split { split, .. } => split,
        }
    }

    /// How many examples L_V was measured on.
    pub fn examples(&self) -> u64 {
        match self {
            Self::Holdout { indices, .. } => indices.len() as u64,
            Self::Split { examples, .. } => *examples,
        }
    }

    /// The held-out train indices (empty for a split of its own).
    pub fn holdout_indices(&self) -> &[u64] {
        match self {
            Self::Holdout { indices, .. } => indices,
            Self::Split { .. } => &[],
        }
    }
}

impl std::fmt::Display for Validation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Holdout { indices, .. } => {
                write!(f, "train (a hold-out of {} examples)", indices.len())
            }
            Self::Split { split, examples } => write!(f, "{split}, {examples} examples"),
        }
    }
}

/// What the teacher's time input t(x, s) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TimeInput {
    /// Training progress i / S, S the length of the training the teacher serves (K under
    /// bptt, `inner_steps` under truncated-bptt, the student's steps when applied).
    Progress,
    /// i / K clamped to 1 (format version 1): a teacher learned with K steps is constant after K.
    ClampedIteration,
}

/// The manifest as stored, in either format version: version 1 has `validation_indices`
/// where version 2 has `validation` and `time_input`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    format_version: u32,
    kind: CommentaryKind,
    algorithm: Algorithm,
    dataset: DatasetRef,
    #[serde(default)]
    validation_indices: Option<Vec<u64>>,
    #[serde(default)]
    validation: Option<Validation>,
    #[serde(default)]
    time_input: Option<TimeInput>,
    architecture: ArchitectureSpec,
    config: LearnConfig,
    hypergradient: HypergradientMethod,
    metrics: BTreeMap<String, f64>,
    provenance: Provenance,
    tensors_sha256: Sha256,
}

impl TryFrom<ManifestFile> for ArtifactManifest {
    type Error = String;

    fn try_from(file: ManifestFile) -> Result<Self, Self::Error> {
        let (validation, time_input) = match (file.format_version, file.validation_indices) {
            (1, Some(indices)) => (Validation::holdout(indices), TimeInput::ClampedIteration),
            (1, None) => return Err("a version 1 manifest needs validation_indices".into()),
            (_, Some(_)) => {
                return Err(
                    "validation_indices belongs to format version 1; version 2 has validation"
                        .into(),
                );
            }
            (_, None) => (
                file.validation.ok_or("missing field `validation`")?,
                file.time_input.ok_or("missing field `time_input`")?,
            ),
        };
        Ok(Self {
            format_version: file.format_version,
            kind: file.kind,
            algorithm: file.algorithm,
            dataset: file.dataset,
            validation,
            time_input,
            architecture: file.architecture,
            config: file.config,
            hypergradient: file.hypergradient,
            metrics: file.metrics,
            provenance: file.provenance,
            tensors_sha256: file.tensors_sha256,
        })
    }
}

/// Enough about the dataset to check tensor shapes without the data itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    pub digest: Sha256,
    pub shape: ImageShape,
    pub classes: Vec<String>,
    /// Examples in the train split (the length of the canonical order).
    pub train_examples: u64,
}

/// How hypergradients were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HypergradientMethod {
    /// Exact (differentiable layers with explicit backward passes).
    Exact,
    /// Finite-difference Hessian-vector products (arbitrary burn modules): approximate.
    FiniteDifference,
}

impl HypergradientMethod {
    /// The name used in manifests and in `commentary hypergrad` outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::FiniteDifference => "finite-difference",
        }
    }
}

/// Who made the artifact, where and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub trainer_version: String,
    /// burn backend, e.g. `flex`, `wgpu`, `cuda`.
    pub backend: String,
    pub device: String,
    pub seed: u64,
    pub run_id: Option<String>,
    pub created_at: DateTime<Utc>,
}
