//! `Evaluation`: how fresh students are trained with and without a commentary (by `apply` and
//! by the registry before publishing). Its `Default` is the one place the defaults live: the
//! CLI's flags, the REST body and `ApplyOptions` all read it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a finished run's commentary is evaluated before it is published (train fresh students
/// with and without it; the test-accuracy gain is what `?sort=improvement` ranks by). Recorded
/// in the apply report, so a report says how its students were trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Evaluation {
    /// Seeds of the fresh students; empty skips evaluation (the commentary has no improvement).
    pub seeds: Vec<u64>,
    /// Student training steps per arm.
    pub steps: u32,
    /// Measure validation accuracy every this many steps (the curves, steps-to-baseline).
    pub eval_every: u32,
    pub batch_size: u32,
    /// Adam learning rate of the students.
    pub lr: f64,
    /// The students' Adam beta1, beta2 and eps (PyTorch's defaults).
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Attention masks: the fraction of pixels the removal test blanks (the most or the least
    /// attended ones).
    pub mask_removed_fraction: f64,
}

impl Default for Evaluation {
    fn default() -> Self {
        Self {
            seeds: vec![1, 2, 3],
            steps: 500,
            eval_every: 50,
            batch_size: 32,
            lr: 1e-3,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            mask_removed_fraction: 0.25,
        }
    }
}
