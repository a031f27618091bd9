//! `manifest.json`: what an artifact is, what it was learned from and how.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::arch::ArchitectureSpec;
use crate::{Algorithm, CommentaryKind, ImageShape, LearnConfig, Sha256};

/// The manifest of a commentary artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactManifest {
    pub format_version: u32,
    pub kind: CommentaryKind,
    pub algorithm: Algorithm,
    /// The dataset the commentary was learned on.
    pub dataset: DatasetRef,
    /// Indices (into the canonical train order) of the examples held out for L_V.
    pub validation_indices: Vec<u64>,
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
