//! `corruption.json`: what `commentary dataset corrupt` did to a dataset, so a commentary's
//! findings (its lowest-weighted examples) can be scored against the truth. Decoders ignore the
//! file and the digest does not include it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Sha256;

/// The file name, beside the corrupted dataset's files.
pub const CORRUPTION_FILE: &str = "corruption.json";

/// How labels were flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseKind {
    /// A uniformly drawn other class.
    Symmetric,
    /// The next class, c -> c + 1 mod C (the confusable kind).
    Pair,
}

impl std::str::FromStr for NoiseKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "symmetric" => Ok(Self::Symmetric),
            "pair" => Ok(Self::Pair),
            other => Err(format!(
                "unknown noise {other:?}; expected symmetric or pair"
            )),
        }
    }
}

/// The options of a corruption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorruptionOptions {
    /// Share of the (remaining) train examples whose label is flipped, in [0, 1).
    pub label_noise: f64,
    pub noise: NoiseKind,
    /// Largest over smallest class count in train (1 = no imbalance): n_c = n_max * r^(-c/(C-1)).
    pub imbalance: f64,
    /// Whether a class-correlated patch was added (train only; val and test: random places).
    pub spurious: bool,
    /// Canvas side under `spurious`.
    pub canvas: Option<u32>,
    /// Class-balanced clean examples held out of train as the `val` split.
    pub clean_val: u32,
    pub seed: u64,
}

/// One flipped label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlippedLabel {
    /// Index in the corrupted train split's canonical order.
    pub index: u64,
    /// The class the example really is.
    pub true_class: u32,
    /// The label it was given.
    pub label: u32,
}

/// The contents of `corruption.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorruptionRecord {
    /// The digest of the dataset that was corrupted.
    pub source_digest: Sha256,
    /// The digest of the corrupted dataset (the folder this file is in).
    pub digest: Sha256,
    pub options: CorruptionOptions,
    /// Examples in the corrupted train split.
    pub train_examples: u64,
    /// Examples per class in the corrupted train split.
    pub class_counts: Vec<u64>,
    pub flipped: Vec<FlippedLabel>,
}
