//! `report.json`: what applying a commentary did, fresh students trained with and without it
//! side by side.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{CommentaryKind, Sha256};

/// One evaluation point of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CurvePoint {
    pub step: u64,
    pub val_loss: f64,
    pub val_accuracy: f64,
}

/// One student trained from one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunReport {
    pub seed: u64,
    pub curve: Vec<CurvePoint>,
    pub final_val_accuracy: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub wall_s: f64,
}

/// Mean and sample standard deviation over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

/// All runs of one arm (baseline or with the commentary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArmReport {
    pub runs: Vec<RunReport>,
    pub test_accuracy: Spread,
    pub final_val_accuracy: Spread,
}

/// Mask quality on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MaskReport {
    /// Mean share of each image's mask mass inside the object's bounding box.
    pub mass_in_box: f64,
    /// Share of pixels removed in the removal test.
    pub removed_fraction: f64,
    /// Baseline students' test accuracy with the most-masked pixels removed (over seeds).
    pub accuracy_most_masked_removed: Spread,
    /// ... and with the same number of random pixels removed.
    pub accuracy_random_removed: Spread,
}

/// A reference arm a sceptical practitioner would ask for, trained beside the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReferenceArm {
    /// `train+val` (the trusted validation examples used as plain training data) or
    /// `class-weights` (inverse-frequency class weights, for imbalanced data).
    pub name: String,
    pub arm: ArmReport,
}

/// How well low weights find flipped labels (given the dataset's `corruption.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NoiseDetection {
    /// Train examples scored, and how many of them have flipped labels.
    pub examples: u64,
    pub flipped: u64,
    /// Area under the ROC curve of "low weight" as a detector of a flipped label (0.5: chance).
    pub auroc: f64,
    /// Share of flipped labels among the lowest-weighted `flipped` examples.
    pub precision_at_noise_rate: f64,
}

/// The z below which a commentary's gain counts as harm beyond noise.
pub const HARMFUL_Z: f64 = -2.0;
/// Smallest per-arm standard deviation assumed in z (an accuracy measured on one seed still
/// varies by about a point between seeds).
pub const MIN_ARM_STD: f64 = 0.01;

/// z = (mean_with - mean_without) / sqrt(s_with^2 / n + s_without^2 / n), each s at least
/// [`MIN_ARM_STD`].
pub fn gain_z(with: &ArmReport, without: &ArmReport) -> f64 {
    let n = with.runs.len().max(1) as f64;
    let m = without.runs.len().max(1) as f64;
    let (sw, sb) = (
        with.test_accuracy.std.max(MIN_ARM_STD),
        without.test_accuracy.std.max(MIN_ARM_STD),
    );
    (with.test_accuracy.mean - without.test_accuracy.mean) / (sw * sw / n + sb * sb / m).sqrt()
}

/// The apply report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplyReport {
    pub kind: CommentaryKind,
    pub dataset: Sha256,
    /// The student architecture trained (may differ from the one used for learning).
    pub student: String,
    pub steps: u64,
    pub eval_every: u64,
    pub batch_size: u64,
    pub baseline: ArmReport,
    pub with_commentary: ArmReport,
    /// Per seed: the first evaluated step at which the run with the commentary reached the
    /// baseline's final validation accuracy (same seed), or null if it never did.
    pub steps_to_baseline_accuracy: Vec<Option<u64>>,
    /// Label blending only: students trained with random blending (lambda ~ U(0.5, 1) per pair,
    /// drawn each batch), the baseline a learned blend matrix must beat.
    pub random_blending: Option<ArmReport>,
    /// Attention masks only: where the masks point, and what removing it does.
    pub masks: Option<MaskReport>,
    /// with_commentary.test_accuracy.mean - baseline.test_accuracy.mean
    pub test_accuracy_gain: f64,
    /// The gain measured against its noise (see [`gain_z`]).
    #[serde(default)]
    pub gain_z: f64,
    /// Whether the commentary hurts beyond noise (z below [`HARMFUL_Z`]): never picked as
    /// "best".
    #[serde(default)]
    pub harmful: bool,
    /// Where the curves' validation accuracy is measured (the recorded validation protocol).
    #[serde(default)]
    pub validation: Option<String>,
    /// Reference arms (train+val, class weights) beside the baseline.
    #[serde(default)]
    pub reference_arms: Vec<ReferenceArm>,
    /// with_commentary minus the best reference arm's mean test accuracy.
    #[serde(default)]
    pub gain_over_best_reference: Option<f64>,
    /// Example weighting on a corrupted dataset: how well low weights find flipped labels.
    #[serde(default)]
    pub label_noise: Option<NoiseDetection>,
    /// True when the commentary was applied to a dataset with another digest (--force).
    pub forced: bool,
    /// The settings the students were trained with (None in reports written before they were
    /// recorded).
    #[serde(default)]
    pub evaluation: Option<crate::api::Evaluation>,
    pub wall_s: f64,
}

/// The divergence rule's default factor (`--divergence-factor`).
pub const DEFAULT_DIVERGENCE_FACTOR: f64 = 10.0;

/// Why the training behind a commentary diverged, if it did. A loss diverged when it is not
/// finite or above `factor` x ln(classes), that is `factor` times what a student predicting
/// every class equally scores: no working student is that wrong. Checked: learning's last and
/// best validation losses (manifest metrics) and every evaluated student's test loss.
pub fn divergence(
    manifest: &crate::artifact::ArtifactManifest,
    report: Option<&ApplyReport>,
    factor: f64,
) -> Option<String> {
    let uniform = (manifest.dataset.classes.len().max(2) as f64).ln();
    let limit = factor * uniform;
    let diverged = |loss: f64| !loss.is_finite() || loss > limit;
    let explain = |what: &str, loss: f64| {
        format!(
            "training diverged: {what} is {loss:.4e}, above {factor} x ln({}) = {limit:.3} \
             (the divergence rule, --divergence-factor {factor}); lower the learning rates",
            manifest.dataset.classes.len().max(2)
        )
    };
    for metric in ["last_val_loss", "best_val_loss"] {
        if let Some(&loss) = manifest.metrics.get(metric)
            && diverged(loss)
        {
            return Some(explain(&format!("learning's {metric}"), loss));
        }
    }
    let report = report?;
    let arms = [
        ("baseline", &report.baseline),
        ("with-commentary", &report.with_commentary),
    ];
    for (arm, runs) in arms {
        if let Some(run) = runs.runs.iter().find(|r| diverged(r.test_loss)) {
            return Some(explain(
                &format!("the test loss of the {arm} student (seed {})", run.seed),
                run.test_loss,
            ));
        }
    }
    None
}
