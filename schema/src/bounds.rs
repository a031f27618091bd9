//! Every bound on a learning run's configuration, in one place: which algorithms learn which
//! kind, and the ranges of every `LearnConfig` and `Evaluation` value. The CLI, the server and
//! the trainer all call these, so a request refused by one is refused by all, with one message.

use crate::api::Evaluation;
use crate::arch::NetSpec;
use crate::{Algorithm, CommentaryKind, LearnConfig};

/// Most student steps of one training (per meta-step, or per student under truncated BPTT).
pub const MAX_INNER_STEPS: u32 = 1_000_000;
/// Most meta-steps of a run (a large count with a time limit is a "until the time is up" run;
/// each meta-step keeps one f32 of the L_V curve).
pub const MAX_META_STEPS: u32 = 10_000_000;
/// Largest student or validation batch.
pub const MAX_BATCH: u32 = 65_536;
/// Most examples x steps one BPTT unroll may store (the trajectory and its batches).
pub const MAX_UNROLLED_EXAMPLES: u64 = 4_000_000;
/// Widest hidden layer of an MLP.
pub const MAX_WIDTH: u32 = 16_384;
/// Most weights between an MLP's hidden layers (the sum of consecutive widths' products): a
/// student is copied per unrolled step, so a [16384, 16384] one would take the worker down.
pub const MAX_HIDDEN_WEIGHTS: u64 = 16_777_216;
/// Most student parameters x stored copies one run may hold (the BPTT trajectory keeps a
/// theta per unrolled step): 2^29 floats, 2 GiB.
pub const MAX_TRAJECTORY_FLOATS: u64 = 1 << 29;
/// Most hidden layers of an MLP.
pub const MAX_DEPTH: usize = 16;
/// Most Neumann-series terms of an IFT hyper-step.
pub const MAX_NEUMANN_TERMS: u32 = 100;
/// Most train examples whose curriculum the insight tensors record.
pub const MAX_INSIGHT_EXAMPLES: u32 = 4_096;
/// Most examples whose masks the insight tensors record (each stores its image too).
pub const MAX_INSIGHT_MASKS: u32 = 256;
/// The split that is never used for learning.
pub const TEST_SPLIT: &str = "test";

/// A configuration that cannot work, with a message naming the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

fn in_range(name: &str, value: u32, low: u32, high: u32) -> Result<(), ConfigError> {
    if value < low || value > high {
        return refuse(format!(
            "{name} is {value}; it must be between {low} and {high}"
        ));
    }
    Ok(())
}

fn positive_rate(name: &str, value: f64) -> Result<(), ConfigError> {
    if !value.is_finite() || value <= 0.0 || value > 10.0 {
        return refuse(format!(
            "{name} is {value}; a learning rate must be finite, positive and at most 10"
        ));
    }
    Ok(())
}

fn unit_interval(name: &str, value: f64) -> Result<(), ConfigError> {
    if !value.is_finite() || !(0.0..1.0).contains(&value) {
        return refuse(format!("{name} is {value}; it must be in [0, 1)"));
    }
    Ok(())
}

fn positive(name: &str, value: f64) -> Result<(), ConfigError> {
    if !value.is_finite() || value <= 0.0 {
        return refuse(format!("{name} is {value}; it must be finite and positive"));
    }
    Ok(())
}

fn check_net(name: &str, net: &NetSpec) -> Result<(), ConfigError> {
    if let NetSpec::Mlp { hidden } = net {
        if hidden.len() > MAX_DEPTH {
            return refuse(format!(
                "{name} has {} hidden layers; at most {MAX_DEPTH}",
                hidden.len()
            ));
        }
        if let Some(width) = hidden.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return refuse(format!(
                "{name} has a hidden layer of width {width}; widths must be between 1 and {MAX_WIDTH}"
            ));
        }
        let between: u64 = hidden
            .windows(2)
            .map(|pair| u64::from(pair[0]) * u64::from(pair[1]))
            .sum();
        if between > MAX_HIDDEN_WEIGHTS {
            return refuse(format!(
                "{name} has {between} weights between its hidden layers; at most {MAX_HIDDEN_WEIGHTS} (narrower or fewer layers)"
            ));
        }
    }
    Ok(())
}

/// Why `algorithm` cannot learn `kind`, if it cannot.
pub fn check_algorithm(kind: CommentaryKind, algorithm: Algorithm) -> Result<(), ConfigError> {
    if algorithm.supports(kind) {
        return Ok(());
    }
    let supported: Vec<&str> = Algorithm::ALL
        .into_iter()
        .filter(|a| a.supports(kind))
        .map(|a| a.as_str())
        .collect();
    let why = match kind {
        CommentaryKind::ExampleWeighting => {
            "example weighting is learned by BPTT (the teacher's time input needs the trajectory)"
        }
        CommentaryKind::LabelBlending => {
            "label blending is learned by IFT while the student trains"
        }
        CommentaryKind::AttentionMask => "attention masks are learned by any algorithm",
    };
    refuse(format!(
        "{why}, not by {algorithm}; use --algorithm {}",
        supported.join(" or ")
    ))
}

impl LearnConfig {
    /// Checks every value of this config for a run of `kind` by `algorithm`.
    pub fn validate(&self, kind: CommentaryKind, algorithm: Algorithm) -> Result<(), ConfigError> {
        check_algorithm(kind, algorithm)?;
        in_range("inner_steps", self.inner_steps, 1, MAX_INNER_STEPS)?;
        in_range("meta_steps", self.meta_steps, 1, MAX_META_STEPS)?;
        in_range("batch_size", self.batch_size, 1, MAX_BATCH)?;
        in_range(
            "validation_batch_size",
            self.validation_batch_size,
            1,
            MAX_BATCH,
        )?;
        in_range(
            "hyper_step_every",
            self.hyper_step_every,
            1,
            MAX_INNER_STEPS,
        )?;
        in_range("neumann_terms", self.neumann_terms, 0, MAX_NEUMANN_TERMS)?;
        if let Some(n) = self.validation_examples {
            in_range("validation_examples", n, 1, u32::MAX)?;
        }
        if algorithm == Algorithm::TruncatedBptt
            && (self.unroll_steps == 0 || self.unroll_steps > self.inner_steps)
        {
            return refuse(format!(
                "unroll_steps is {}; under truncated-bptt it must be between 1 and inner_steps ({})",
                self.unroll_steps, self.inner_steps
            ));
        }
        let unrolled = match algorithm {
            Algorithm::Bptt => u64::from(self.inner_steps),
            Algorithm::TruncatedBptt => u64::from(self.unroll_steps),
            Algorithm::Ift => 1,
        };
        if unrolled * u64::from(self.batch_size) > MAX_UNROLLED_EXAMPLES {
            return refuse(format!(
                "{algorithm} would unroll {unrolled} steps of {} examples; at most {MAX_UNROLLED_EXAMPLES} examples per unroll \
                 (lower inner_steps{} or batch_size)",
                self.batch_size,
                if algorithm == Algorithm::TruncatedBptt {
                    " or unroll_steps"
                } else {
                    ""
                }
            ));
        }
        positive_rate("inner_lr", self.inner_lr)?;
        positive_rate("outer_lr", self.outer_lr)?;
        positive_rate("neumann_lr", self.neumann_lr)?;
        unit_interval("momentum", self.momentum)?;
        unit_interval("adam_beta1", self.adam_beta1)?;
        unit_interval("adam_beta2", self.adam_beta2)?;
        unit_interval("outer_beta1", self.outer_beta1)?;
        unit_interval("outer_beta2", self.outer_beta2)?;
        positive("adam_eps", self.adam_eps)?;
        positive("outer_eps", self.outer_eps)?;
        in_range(
            "insight_examples",
            self.insight_examples,
            1,
            MAX_INSIGHT_EXAMPLES,
        )?;
        in_range("insight_masks", self.insight_masks, 1, MAX_INSIGHT_MASKS)?;
        if self.validation_split.as_deref() == Some(TEST_SPLIT) {
            return refuse(
                "validation_split is \"test\": the test split is never used for learning; use a trusted split such as \
                 \"val\" (commentary dataset corrupt --clean-val makes one)",
            );
        }
        if self.validation_split.as_deref() == Some("") {
            return refuse("validation_split is empty; name a split such as \"val\"");
        }
        check_net("student", &self.student)?;
        check_net("commentary_net", &self.commentary_net)?;
        Ok(())
    }
}

impl LearnConfig {
    /// [`LearnConfig::validate`], then the bounds that need the data's shape: the student's
    /// parameters times the copies `algorithm` keeps of them (a theta per unrolled step under
    /// BPTT) must fit [`MAX_TRAJECTORY_FLOATS`].
    pub fn validate_for(
        &self,
        kind: CommentaryKind,
        algorithm: Algorithm,
        input: crate::ImageShape,
        classes: usize,
    ) -> Result<(), ConfigError> {
        self.validate(kind, algorithm)?;
        let parameters: u64 = self
            .student
            .parameter_shapes("student.", input, 0, classes.max(1))
            .iter()
            .map(|(_, shape)| shape.iter().map(|&d| d as u64).product::<u64>())
            .sum();
        let copies = match algorithm {
            Algorithm::Bptt => u64::from(self.inner_steps) + 1,
            Algorithm::TruncatedBptt => u64::from(self.unroll_steps) + 1,
            // theta, its optimizer moments and the Neumann terms' vectors.
            Algorithm::Ift => 4,
        };
        if parameters.saturating_mul(copies) > MAX_TRAJECTORY_FLOATS {
            return refuse(format!(
                "the student has {parameters} parameters on {input} images and {algorithm} keeps {copies} copies of them; \
                 at most {MAX_TRAJECTORY_FLOATS} floats in all (a smaller student, or fewer unrolled steps)"
            ));
        }
        Ok(())
    }
}

/// Most student steps of an evaluation arm.
pub const MAX_EVALUATION_STEPS: u32 = 1_000_000;
/// Most seeds of an evaluation.
pub const MAX_EVALUATION_SEEDS: usize = 32;

impl Evaluation {
    /// Checks the evaluation settings (an empty seed list skips evaluation).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.seeds.is_empty() {
            return Ok(());
        }
        if self.seeds.len() > MAX_EVALUATION_SEEDS {
            return refuse(format!(
                "evaluation has {} seeds; at most {MAX_EVALUATION_SEEDS}",
                self.seeds.len()
            ));
        }
        in_range("evaluation steps", self.steps, 1, MAX_EVALUATION_STEPS)?;
        in_range(
            "evaluation eval_every",
            self.eval_every,
            1,
            MAX_EVALUATION_STEPS,
        )?;
        in_range("evaluation batch_size", self.batch_size, 1, MAX_BATCH)?;
        positive_rate("evaluation lr", self.lr)?;
        unit_interval("evaluation adam_beta1", self.adam_beta1)?;
        unit_interval("evaluation adam_beta2", self.adam_beta2)?;
        positive("evaluation adam_eps", self.adam_eps)?;
        let fraction = self.mask_removed_fraction;
        if !(fraction > 0.0 && fraction < 1.0) {
            return refuse(format!(
                "evaluation mask_removed_fraction is {fraction}; it must be between 0 and 1 (exclusive)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_names_the_algorithms_that_learn_it() {
        let err = LearnConfig::default()
            .validate(CommentaryKind::LabelBlending, Algorithm::Bptt)
            .expect_err("blending by bptt");
        assert_eq!(
            err.0,
            "label blending is learned by IFT while the student trains, not by bptt; use --algorithm ift"
        );
        let err = check_algorithm(CommentaryKind::ExampleWeighting, Algorithm::Ift)
            .expect_err("weighting by ift");
        assert!(err.0.contains("bptt or truncated-bptt"), "{err}");
        for kind in CommentaryKind::ALL {
            for trusted in [false, true] {
                LearnConfig::default()
                    .validate(kind, Algorithm::default_for(kind, trusted))
                    .expect("the default algorithm works");
            }
        }
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let cases: Vec<(LearnConfig, &str)> = vec![
            (
                LearnConfig {
                    inner_lr: -1e-3,
                    ..LearnConfig::default()
                },
                "inner_lr is -0.001",
            ),
            (
                LearnConfig {
                    outer_lr: f64::NAN,
                    ..LearnConfig::default()
                },
                "outer_lr is NaN",
            ),
            (
                LearnConfig {
                    inner_steps: 0,
                    ..LearnConfig::default()
                },
                "inner_steps is 0",
            ),
            (
                LearnConfig {
                    unroll_steps: 0,
                    ..LearnConfig::default()
                },
                "unroll_steps is 0",
            ),
            (
                LearnConfig {
                    unroll_steps: 101,
                    ..LearnConfig::default()
                },
                "unroll_steps is 101",
            ),
            (
                LearnConfig {
                    validation_split: Some("test".into()),
                    ..LearnConfig::default()
                },
                "validation_split is \"test\"",
            ),
            (
                LearnConfig {
                    student: NetSpec::Mlp { hidden: vec![0] },
                    ..LearnConfig::default()
                },
                "width 0",
            ),
            (
                LearnConfig {
                    inner_steps: 1_000_000_000,
                    ..LearnConfig::default()
                },
                "inner_steps is 1000000000",
            ),
            (
                LearnConfig {
                    student: NetSpec::Mlp {
                        hidden: vec![16_384, 16_384],
                    },
                    ..LearnConfig::default()
                },
                "268435456 weights between its hidden layers",
            ),
            (
                LearnConfig {
                    insight_examples: 0,
                    ..LearnConfig::default()
                },
                "insight_examples is 0",
            ),
            (
                LearnConfig {
                    insight_masks: 100_000,
                    ..LearnConfig::default()
                },
                "insight_masks is 100000",
            ),
        ];
        for (config, expected) in cases {
            let err = config
                .validate(CommentaryKind::ExampleWeighting, Algorithm::TruncatedBptt)
                .expect_err(expected);
            assert!(err.0.contains(expected), "{err} lacks {expected}");
        }
        let wide = LearnConfig {
            student: NetSpec::Mlp {
                hidden: vec![16_384],
            },
            ..LearnConfig::default()
        };
        let rgb = crate::ImageShape {
            height: 32,
            width: 32,
            channels: 3,
        };
        let err = wide
            .validate_for(CommentaryKind::ExampleWeighting, Algorithm::Bptt, rgb, 10)
            .expect_err("a 50M-parameter student unrolled 100 steps");
        assert!(err.0.contains("copies"), "{err}");
        assert!(
            wide.validate_for(CommentaryKind::LabelBlending, Algorithm::Ift, rgb, 10)
                .is_ok()
        );
        let long_bptt = LearnConfig {
            inner_steps: 1_000_000,
            ..LearnConfig::default()
        };
        let err = long_bptt
            .validate(CommentaryKind::ExampleWeighting, Algorithm::Bptt)
            .expect_err("a million-step unroll");
        assert!(err.0.contains("unroll"), "{err}");
    }

    #[test]
    fn evaluation_bounds_are_checked_unless_evaluation_is_skipped() {
        let skipped = Evaluation {
            seeds: vec![],
            steps: 0,
            ..Evaluation::default()
        };
        assert!(skipped.validate().is_ok());
        let bad = Evaluation {
            steps: 0,
            ..Evaluation::default()
        };
        assert!(
            bad.validate()
                .expect_err("zero steps")
                .0
                .contains("evaluation steps is 0")
        );
        for (bad, expected) in [
            (
                Evaluation {
                    lr: 0.0,
                    ..Evaluation::default()
                },
                "evaluation lr is 0",
            ),
            (
                Evaluation {
                    adam_beta2: 1.0,
                    ..Evaluation::default()
                },
                "evaluation adam_beta2 is 1",
            ),
            (
                Evaluation {
                    adam_eps: f64::NAN,
                    ..Evaluation::default()
                },
                "evaluation adam_eps is NaN",
            ),
            (
                Evaluation {
                    mask_removed_fraction: 1.0,
                    ..Evaluation::default()
                },
                "mask_removed_fraction is 1",
            ),
        ] {
            let err = bad.validate().expect_err(expected);
            assert!(err.0.contains(expected), "{err} lacks {expected}");
        }
    }
}
