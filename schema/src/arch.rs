//! Architecture specs: which networks a run uses and, from them, the exact parameter tensors
//! (names and shapes) an artifact must hold. The trainer names its parameters from these
//! functions and `artifact verify` checks against them, so the two cannot drift apart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{CommentaryKind, ImageShape};

/// A network family for students, teachers and mask networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum NetSpec {
    /// Fully connected layers with ReLU between them; `hidden` lists the hidden widths.
    Mlp { hidden: Vec<u32> },
    /// The paper's CBR: conv5x5/s2/p2(32)-BN-ReLU-maxpool3/s2, conv3x3/s2/p2(64)-BN-ReLU-
    /// maxpool3/s2, linear on the flattened map. A pool is skipped when the map is smaller
    /// than its window.
    Cbr,
}

/// CBR's channel widths.
pub const CBR_CHANNELS: [usize; 2] = [32, 64];

impl NetSpec {
    /// Parses `cbr`, `mlp` (one hidden layer of 128) or `mlp:256,128`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "cbr" => Ok(Self::Cbr),
            None if text == "mlp" => Ok(Self::Mlp { hidden: vec![128] }),
            Some(("mlp", widths)) => {
                let hidden = widths
                    .split(',')
                    .filter(|w| !w.is_empty())
                    .map(|w| match w.trim().parse::<u32>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(format!("MLP width {w:?} is not a positive integer")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Self::Mlp { hidden })
            }
            _ => Err(format!(
                "unknown architecture {text:?}; expected `cbr`, `mlp` or `mlp:<width>,<width>...`"
            )),
        }
    }

    /// Parameter names (prefixed) and shapes for this network on `input` images, with
    /// `extra_inputs` values (e.g. a one-hot label) appended to the last layer's input and
    /// `outputs` units out.
    pub fn parameter_shapes(
        &self,
        prefix: &str,
        input: ImageShape,
        extra_inputs: usize,
        outputs: usize,
    ) -> Vec<(String, Vec<usize>)> {
        let (h, w, c) = (
            input.height as usize,
            input.width as usize,
            input.channels as usize,
        );
        match self {
            Self::Mlp { hidden } => {
                let mut dims = vec![h * w * c];
                dims.extend(hidden.iter().map(|&n| n as usize));
                dims.push(outputs);
                let last = dims.len() - 2;
                let mut out = Vec::new();
                for (i, pair) in dims.windows(2).enumerate() {
                    let fan_in = pair[0] + if i == last { extra_inputs } else { 0 };
                    out.push((format!("{prefix}layers.{i}.weight"), vec![pair[1], fan_in]));
                    out.push((format!("{prefix}layers.{i}.bias"), vec![pair[1]]));
                }
                out
            }
            Self::Cbr => {
                let [c1, c2] = CBR_CHANNELS;
                let (fh, fw) = cbr_feature_map(h, w);
                let mut out = Vec::new();
                for (i, (cin, cout, k)) in [(c, c1, 5), (c1, c2, 3)].into_iter().enumerate() {
                    let n = i + 1;
                    out.push((format!("{prefix}conv{n}.weight"), vec![cout, cin, k, k]));
                    out.push((format!("{prefix}conv{n}.bias"), vec![cout]));
                    out.push((format!("{prefix}bn{n}.weight"), vec![cout]));
                    out.push((format!("{prefix}bn{n}.bias"), vec![cout]));
                }
                out.push((
                    format!("{prefix}fc.weight"),
                    vec![outputs, c2 * fh * fw + extra_inputs],
                ));
                out.push((format!("{prefix}fc.bias"), vec![outputs]));
                out
            }
        }
    }
}

impl std::fmt::Display for NetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cbr => f.write_str("cbr"),
            Self::Mlp { hidden } => {
                let widths: Vec<String> = hidden.iter().map(u32::to_string).collect();
                write!(f, "mlp:{}", widths.join(","))
            }
        }
    }
}

/// Output size of a convolution or pool along one axis.
fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding).saturating_sub(kernel) / stride + 1
}

/// Height and width of CBR's last feature map for an `h` x `w` input.
pub fn cbr_feature_map(h: usize, w: usize) -> (usize, usize) {
    let pool = |h: usize, w: usize| {
        if h < 3 || w < 3 {
            (h, w)
        } else {
            (conv_out(h, 3, 2, 0), conv_out(w, 3, 2, 0))
        }
    };
    let (h, w) = pool(conv_out(h, 5, 2, 2), conv_out(w, 5, 2, 2));
    pool(conv_out(h, 3, 2, 2), conv_out(w, 3, 2, 2))
}

/// How a commentary is parameterised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CommentarySpec {
    /// Teacher network t(x, i/S) -> (0,1): the image gets the training progress as an extra
    /// channel; optionally the label as a one-hot input to the last layer (`label_input`: it
    /// can only shift the logit per class), or a per-class head (`label_head`: one output per
    /// class, w = sigmoid(out[y]), which can tell an image of one class labelled as another).
    Teacher {
        net: NetSpec,
        label_input: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        label_head: bool,
    },
    /// One logit per train example (canonical order); w_i = sigmoid(logit_i).
    Table,
    /// C x C logits M; lambda = 1 - 0.5 * sigmoid(M[y_i, y_j]).
    BlendMatrix,
    /// Mask network on H*W outputs z; m(x) in `range` (artifacts written before ranges were
    /// recorded have `unit`).
    MaskNet {
        net: NetSpec,
        #[serde(default = "MaskRange::legacy")]
        range: MaskRange,
    },
}

impl CommentarySpec {
    /// The kind this parameterisation belongs to.
    pub fn kind(&self) -> CommentaryKind {
        match self {
            Self::Teacher { .. } | Self::Table => CommentaryKind::ExampleWeighting,
            Self::BlendMatrix => CommentaryKind::LabelBlending,
            Self::MaskNet { .. } => CommentaryKind::AttentionMask,
        }
    }

    /// The parameter tensors (all f32) an artifact of this spec holds.
    pub fn parameter_shapes(
        &self,
        shape: ImageShape,
        classes: usize,
        train_examples: usize,
    ) -> Vec<(String, Vec<usize>)> {
        const PREFIX: &str = "commentary.";
        match self {
            Self::Teacher {
                net,
                label_input,
                label_head,
            } => {
                let with_time = ImageShape {
                    channels: shape.channels + 1,
                    ..shape
                };
                let extra = if *label_input { classes } else { 0 };
                let outputs = if *label_head { classes } else { 1 };
                net.parameter_shapes(PREFIX, with_time, extra, outputs)
            }
            Self::Table => vec![(format!("{PREFIX}logits"), vec![train_examples])],
            Self::BlendMatrix => vec![(format!("{PREFIX}logits"), vec![classes, classes])],
            Self::MaskNet { net, .. } => net.parameter_shapes(
                PREFIX,
                shape,
                0,
                shape.height as usize * shape.width as usize,
            ),
        }
    }
}

/// The range of an attention mask m(x), from the mask network's outputs z.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MaskRange {
    /// 1 + 0.5 tanh(z) in (0.5, 1.5) around 1, the paper's range: learned from exactly 1 (the
    /// last layer starts at zero), it cannot remove a pixel, so it cannot remove a shortcut.
    #[default]
    Half,
    /// 1.5 sigmoid(z + ln 2) in (0, 1.5), also starting at 1: it can remove a shortcut, and
    /// costs more on clean data (docs/results.md).
    Full,
    /// sigmoid(z) in (0, 1) from a random start (artifacts before mask ranges).
    Unit,
}

impl MaskRange {
    /// What a mask spec without a range means: `unit` (written before ranges existed).
    pub fn legacy() -> Self {
        Self::Unit
    }

    /// Whether masks start at exactly 1 (a zero last layer).
    pub fn starts_at_one(self) -> bool {
        self != Self::Unit
    }
}

impl std::str::FromStr for MaskRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "half" => Ok(Self::Half),
            "full" => Ok(Self::Full),
            "unit" => Ok(Self::Unit),
            other => Err(format!(
                "unknown mask range {other:?}; expected half, full or unit"
            )),
        }
    }
}

/// The networks of a learning run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArchitectureSpec {
    /// The student trained while learning.
    pub student: NetSpec,
    pub commentary: CommentarySpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MNIST: ImageShape = ImageShape {
        height: 28,
        width: 28,
        channels: 1,
    };

    #[test]
    fn cbr_feature_map_follows_the_paper_and_skips_pools_on_small_maps() {
        // 28 -> conv 14 -> pool 6 -> conv 4 -> pool 1
        assert_eq!(cbr_feature_map(28, 28), (1, 1));
        // 32 -> 16 -> 7 -> 5 -> 2
        assert_eq!(cbr_feature_map(32, 32), (2, 2));
        // 8 -> 4 -> 1 -> 2 (pool skipped: map smaller than its window)
        assert_eq!(cbr_feature_map(8, 8), (2, 2));
    }

    #[test]
    fn teacher_with_label_input_widens_only_its_last_layer() {
        let spec = CommentarySpec::Teacher {
            net: NetSpec::Cbr,
            label_input: true,
            label_head: false,
        };
        let shapes = spec.parameter_shapes(MNIST, 10, 100);
        assert_eq!(
            shapes[0],
            ("commentary.conv1.weight".into(), vec![32, 2, 5, 5])
        );
        let fc = shapes
            .iter()
            .find(|(n, _)| n == "commentary.fc.weight")
            .expect("fc");
        assert_eq!(fc.1, vec![1, 64 + 10]);
    }

    #[test]
    fn mlp_names_match_the_hypergrad_problem_layout() {
        let shapes = NetSpec::Mlp { hidden: vec![16] }.parameter_shapes("student.", MNIST, 0, 10);
        assert_eq!(
            shapes,
            vec![
                ("student.layers.0.weight".into(), vec![16, 784]),
                ("student.layers.0.bias".into(), vec![16]),
                ("student.layers.1.weight".into(), vec![10, 16]),
                ("student.layers.1.bias".into(), vec![10]),
            ]
        );
    }

    #[test]
    fn net_specs_parse_from_their_cli_form() {
        assert_eq!(NetSpec::parse("cbr"), Ok(NetSpec::Cbr));
        assert_eq!(
            NetSpec::parse("mlp:256,64"),
            Ok(NetSpec::Mlp {
                hidden: vec![256, 64]
            })
        );
        assert_eq!(
            NetSpec::parse("mlp:256,64").map(|n| n.to_string()),
            Ok("mlp:256,64".into())
        );
        assert!(NetSpec::parse("mlp:0").is_err());
        assert!(NetSpec::parse("resnet").is_err());
    }
}
