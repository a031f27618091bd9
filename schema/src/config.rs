//! `LearnConfig`: every hyperparameter of a learning run, shared by CLI flags, `--config FILE`
//! (TOML or JSON) and the REST run body, and saved in each artifact's manifest so a run can be
//! reproduced from what it produced.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::arch::NetSpec;

/// The three commentary kinds of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CommentaryKind {
    /// Per-example weights (a curriculum): inner loss = mean_i w_i * CE_i.
    ExampleWeighting,
    /// A C x C matrix of label-dependent blending proportions.
    LabelBlending,
    /// A mask network m(x) -> [0,1]^{HxW}; the student trains on x * m(x).
    AttentionMask,
}

impl CommentaryKind {
    pub const ALL: [Self; 3] = [
        Self::ExampleWeighting,
        Self::LabelBlending,
        Self::AttentionMask,
    ];

    /// The kebab-case name used on the CLI, in URLs and in manifests.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ExampleWeighting => "example-weighting",
            Self::LabelBlending => "label-blending",
            Self::AttentionMask => "attention-mask",
        }
    }
}

impl std::fmt::Display for CommentaryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CommentaryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown commentary kind {s:?}; expected one of: example-weighting, \
                     label-blending, attention-mask"
                )
            })
    }
}

/// How the hypergradient is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Backpropagation through training (the paper's Algorithm 1).
    Bptt,
    /// Implicit differentiation with a Neumann-series inverse Hessian (Algorithm 2).
    Ift,
    /// Online BPTT: one student trains the whole run; every `unroll_steps` steps the commentary
    /// takes an outer step through those last steps (1 = learning to reweight's look-ahead).
    TruncatedBptt,
}

impl Algorithm {
    pub const ALL: [Self; 3] = [Self::Bptt, Self::Ift, Self::TruncatedBptt];

    /// The kebab-case name used on the CLI, in URLs and in manifests.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Bptt => "bptt",
            Self::Ift => "ift",
            Self::TruncatedBptt => "truncated-bptt",
        }
    }

    /// The algorithm a run of `kind` uses when none is named. Example weighting with a trusted
    /// validation split (`trusted`: the dataset has a `val` split, or one is named) is learned
    /// online by truncated BPTT (one student trained for the whole run, so the weights cover
    /// all of it); without one, by the paper's BPTT. Blending and masks: online IFT.
    pub fn default_for(kind: CommentaryKind, trusted: bool) -> Self {
        match kind {
            CommentaryKind::ExampleWeighting if trusted => Self::TruncatedBptt,
            CommentaryKind::ExampleWeighting => Self::Bptt,
            CommentaryKind::LabelBlending | CommentaryKind::AttentionMask => Self::Ift,
        }
    }

    /// Whether a commentary of `kind` can be learned by this algorithm (the one rule, used by
    /// the CLI, the server and the trainer).
    pub fn supports(self, kind: CommentaryKind) -> bool {
        match kind {
            CommentaryKind::ExampleWeighting => matches!(self, Self::Bptt | Self::TruncatedBptt),
            CommentaryKind::LabelBlending => self == Self::Ift,
            CommentaryKind::AttentionMask => true,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown algorithm {s:?}; expected bptt, ift or truncated-bptt"))
    }
}

/// The student's inner optimiser, differentiated through in BPTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// SGD with (PyTorch-style) momentum.
    Sgd,
    /// Adam with PyTorch semantics.
    Adam,
}

/// Every hyperparameter of a learning run. Missing fields take the documented defaults, unknown
/// fields are an error (a typo must not silently fall back to a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LearnConfig {
    /// Seed for the validation split, initialisations and batch order.
    pub seed: u64,
    /// The split on which the validation loss L_V is measured (a trusted split: clean labels,
    /// balanced classes). Unset: the dataset's `val` split when it has one, otherwise a seeded
    /// hold-out of the train split. `test` is refused.
    pub validation_split: Option<String>,
    /// Examples held out of the train split for L_V when no validation split is used; unset: a
    /// fifth of the train split, at most 1,000.
    pub validation_examples: Option<u32>,
    /// Student (inner) steps per meta-step under `bptt` and `ift`; under `truncated-bptt` the
    /// length of each student's whole training. Also S in the teacher's time input i/S.
    pub inner_steps: u32,
    /// Meta-steps: outer updates under `bptt`, blocks of `inner_steps` under `ift`, students
    /// trained in sequence (phi carried over) under `truncated-bptt`.
    pub meta_steps: u32,
    /// `truncated-bptt`: student steps unrolled per outer step (1 = a one-step look-ahead).
    pub unroll_steps: u32,
    /// Student batch size.
    pub batch_size: u32,
    /// Validation examples per evaluation of L_V.
    pub validation_batch_size: u32,
    pub inner_optimizer: Optimizer,
    pub inner_lr: f64,
    pub momentum: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Learning rate of the outer Adam on the commentary parameters.
    pub outer_lr: f64,
    /// The outer Adam's beta1, beta2 and eps.
    pub outer_beta1: f64,
    pub outer_beta2: f64,
    pub outer_eps: f64,
    /// IFT: Neumann series terms J (0 gives alpha * grad).
    pub neumann_terms: u32,
    /// IFT: Neumann step size alpha.
    pub neumann_lr: f64,
    /// IFT: a hyper-step after every N student steps.
    pub hyper_step_every: u32,
    /// The student architecture used while learning.
    pub student: NetSpec,
    /// The commentary network: the teacher (example weighting) or the mask network.
    pub commentary_net: NetSpec,
    /// Example weighting: give the teacher the label as a one-hot input to its last layer (an
    /// additive shift of its logit per class).
    pub label_input: bool,
    /// Example weighting: give the teacher one output per class and weigh each example by its
    /// label's output (what finding mislabeled examples needs).
    pub label_head: bool,
    /// Example weighting: learn a per-example weight table instead of a teacher network.
    pub tabular: bool,
    /// Attention masks: the masks' range (`half` around 1, or `full` down to 0, which can remove
    /// a shortcut).
    pub mask_range: crate::arch::MaskRange,
    /// Train examples whose weights the insight tensors record at each progress point (a
    /// seeded sample, weighed as one batch).
    pub insight_examples: u32,
    /// Attention masks: examples whose masks (and images) the insight tensors record.
    pub insight_masks: u32,
    /// Stop learning after this many seconds and keep the best commentary so far.
    pub time_limit_s: Option<u64>,
}

impl std::str::FromStr for Optimizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            other => Err(format!("unknown optimizer {other:?}; expected sgd or adam")),
        }
    }
}

impl LearnConfig {
    /// How a commentary of `kind` is parameterised under this config.
    pub fn commentary_spec(&self, kind: CommentaryKind) -> crate::arch::CommentarySpec {
        use crate::arch::CommentarySpec;
        match kind {
            CommentaryKind::ExampleWeighting if self.tabular => CommentarySpec::Table,
            CommentaryKind::ExampleWeighting => CommentarySpec::Teacher {
                net: self.commentary_net.clone(),
                label_input: self.label_input,
                label_head: self.label_head,
            },
            CommentaryKind::LabelBlending => CommentarySpec::BlendMatrix,
            CommentaryKind::AttentionMask => CommentarySpec::MaskNet {
                net: self.commentary_net.clone(),
                range: self.mask_range,
            },
        }
    }
}

impl Default for LearnConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            validation_split: None,
            validation_examples: None,
            inner_steps: 100,
            meta_steps: 20,
            unroll_steps: 1,
            batch_size: 32,
            validation_batch_size: 512,
            inner_optimizer: Optimizer::Adam,
            inner_lr: 1e-3,
            momentum: 0.9,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            outer_lr: 1e-2,
            outer_beta1: 0.9,
            outer_beta2: 0.999,
            outer_eps: 1e-8,
            neumann_terms: 1,
            neumann_lr: 1e-2,
            hyper_step_every: 1,
            student: NetSpec::Cbr,
            commentary_net: NetSpec::Cbr,
            label_input: false,
            label_head: false,
            tabular: false,
            mask_range: crate::arch::MaskRange::Half,
            insight_examples: 256,
            insight_masks: 32,
            time_limit_s: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_take_defaults_and_unknown_fields_are_refused() {
        let config: LearnConfig =
            serde_json::from_str(r#"{"inner_steps": 7}"#).expect("partial config");
        assert_eq!(config.inner_steps, 7);
        assert_eq!(config.batch_size, LearnConfig::default().batch_size);
        let err = serde_json::from_str::<LearnConfig>(r#"{"inner_stpes": 7}"#)
            .expect_err("typo must be refused");
        assert!(err.to_string().contains("inner_stpes"), "{err}");
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in CommentaryKind::ALL {
            assert_eq!(kind.as_str().parse::<CommentaryKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_string(&kind).expect("json"),
                format!("\"{kind}\"")
            );
        }
        assert!("curriculum".parse::<CommentaryKind>().is_err());
    }
}
