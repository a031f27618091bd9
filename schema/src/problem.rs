//! The `commentary hypergrad` problem file: a hypergradient problem any framework can check the
//! engine on, and its parser (burn-free, so the fuzz target `problem` builds without the engine).
//!
//! A problem file is a small, self-contained hypergradient problem in safetensors:
//!
//! - student MLP: `student.layers.{i}.weight` [out, in], `student.layers.{i}.bias` [out] (f32),
//!   ReLU between layers, none after the last;
//! - data: `train.x` [N, d] f32, `train.y` [N] i64, `val.x` [M, d] f32, `val.y` [M] i64;
//!   phi = `commentary.logits`; L_V = mean CE over the whole validation set at the final theta;
//! - metadata `problem`:
//!   - `weight-bptt`: phi [N], w_i = sigmoid(phi_i); `batches` [K, b] i64; inner loss = batch
//!     mean of w_i CE_i; metadata `optimizer` `sgd` (`inner_lr`, `momentum`) or `adam`
//!     (`inner_lr`, `adam_beta1`, `adam_beta2`, `adam_eps`); output d L_V / d phi. With Adam,
//!     optional `state.first` and `state.second` [|theta|] and metadata `state_step` start the
//!     unroll from a student part-way through training (truncated BPTT's window);
//!   - `blend-ift`: phi [C, C]; `pairs` [N] i64; lambda_i = 1 - 0.5 sigmoid(phi[y_i, y_pairs_i]);
//!     inner loss = mean_i of lambda_i CE(f(x~_i), y_i) + (1 - lambda_i) CE(f(x~_i), y_pairs_i)
//!     on x~_i = lambda_i x_i + (1 - lambda_i) x_pairs_i; metadata `neumann_terms` J,
//!     `neumann_lr` alpha, or `inverse` = `cg` with `cg_damping` (and optional
//!     `cg_iterations`); output -(d/d phi)[grad_theta L_T . p]. With `--approximate`,
//!     optional metadata `finite_difference_step` sets the differences' relative step
//!     (default 1e-3).
//! - output file: `hypergrad` (phi's shape, f32) and `val_loss` [1] f32; metadata
//!   `hypergradient` = `exact` or `finite-difference` (approximate, with `--approximate`).

use std::collections::HashMap;

use crate::artifact::{TensorMap, TensorValues, decode_metadata, decode_tensors};

/// The finite differences' relative step when a problem file names none.
pub const DEFAULT_FINITE_DIFFERENCE_STEP: f32 = 1e-3;

/// What is wrong with a problem file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidProblem(pub String);

fn invalid(message: impl Into<String>) -> InvalidProblem {
    InvalidProblem(message.into())
}

/// The inner optimiser a `weight-bptt` problem names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProblemOptimizer {
    Sgd {
        lr: f64,
        momentum: f64,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

/// How a `blend-ift` problem approximates the inverse Hessian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProblemInverse {
    /// J Neumann terms with step alpha.
    Neumann { terms: usize, alpha: f64 },
    /// Conjugate gradients on (H + damping I).
    ConjugateGradient {
        iterations: usize,
        damping: f64,
        tolerance: f64,
    },
}

/// What the problem asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ProblemTask {
    WeightBptt {
        /// K rows of b train indices.
        batches: Vec<Vec<i64>>,
        optimizer: ProblemOptimizer,
        /// Adam's state at the start of the unroll: steps taken, first and second moments.
        state: Option<(usize, Vec<f32>, Vec<f32>)>,
    },
    BlendIft {
        /// A permutation of the train examples: example i blends with `pairs[i]`.
        pairs: Vec<i64>,
        inverse: ProblemInverse,
        /// With `--approximate`: the finite differences' relative step.
        finite_difference_step: f32,
    },
}

/// A parsed and validated problem: every index in range, every value finite, every shape
/// consistent with the student's widths.
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemFile {
    pub task: ProblemTask,
    /// Layer widths, input first.
    pub widths: Vec<usize>,
    /// The student's flat weights (per layer: weight [out, in], then bias [out]).
    pub theta: Vec<f32>,
    pub train_x: Vec<f32>,
    pub train_y: Vec<i64>,
    pub val_x: Vec<f32>,
    pub val_y: Vec<i64>,
    pub phi: Vec<f32>,
    pub phi_shape: Vec<usize>,
}

type Metadata = HashMap<String, String>;

/// A tensor's f32 values, refusing other dtypes, wrong shapes and non-finite values.
fn f32_tensor<'a>(
    tensors: &'a TensorMap,
    name: &str,
    shape: Option<&[usize]>,
) -> Result<(&'a [f32], Vec<usize>), InvalidProblem> {
    let tensor = tensors
        .get(name)
        .ok_or_else(|| invalid(format!("tensor {name:?} is missing")))?;
    let TensorValues::F32(values) = tensor.values() else {
        return Err(invalid(format!(
            "tensor {name:?} has dtype {}; it must be F32",
            tensor.values().dtype_name()
        )));
    };
    if let Some(expected) = shape
        && tensor.shape() != expected
    {
        return Err(invalid(format!(
            "tensor {name:?} has shape {:?}; expected {expected:?}",
            tensor.shape()
        )));
    }
    if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "tensor {name:?} holds a non-finite value ({}) at flat index {pos}",
            values[pos]
        )));
    }
    Ok((values, tensor.shape().to_vec()))
}

/// A tensor's i64 values, each in [0, bound).
fn index_tensor<'a>(
    tensors: &'a TensorMap,
    name: &str,
    bound: usize,
) -> Result<(&'a [i64], Vec<usize>), InvalidProblem> {
    let tensor = tensors
        .get(name)
        .ok_or_else(|| invalid(format!("tensor {name:?} is missing")))?;
    let TensorValues::I64(values) = tensor.values() else {
        return Err(invalid(format!(
            "tensor {name:?} has dtype {}; it must be I64",
            tensor.values().dtype_name()
        )));
    };
    if let Some(pos) = values.iter().position(|&v| v < 0 || v as usize >= bound) {
        return Err(invalid(format!(
            "tensor {name:?} holds {} at flat index {pos}, out of range [0, {bound})",
            values[pos]
        )));
    }
    Ok((values, tensor.shape().to_vec()))
}

/// A finite number from the metadata, or `default` when the key is absent.
fn number(metadata: &Metadata, key: &str, default: Option<f64>) -> Result<f64, InvalidProblem> {
    match (metadata.get(key), default) {
        (Some(text), _) => match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(invalid(format!(
                "metadata {key:?} = {text:?} is not a finite number"
            ))),
        },
        (None, Some(default)) => Ok(default),
        (None, None) => Err(invalid(format!("metadata {key:?} is missing"))),
    }
}

/// A non-negative integer from the metadata, or `default` when the key is absent.
fn count(metadata: &Metadata, key: &str, default: Option<usize>) -> Result<usize, InvalidProblem> {
    match (metadata.get(key), default) {
        (Some(text), _) => text.trim().parse::<usize>().map_err(|_| {
            invalid(format!(
                "metadata {key:?} = {text:?} is not a non-negative integer"
            ))
        }),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(invalid(format!("metadata {key:?} is missing"))),
    }
}

/// The student MLP's layers, chained from `d` inputs: the layer widths (input first) and the
/// flat weights theta (per layer: weight [out, in], then bias [out]).
fn student(tensors: &TensorMap, d: usize) -> Result<(Vec<usize>, Vec<f32>), InvalidProblem> {
    let mut widths = vec![d];
    let mut theta = Vec::new();
    let mut layer = 0;
    while tensors.contains_key(&format!("student.layers.{layer}.weight")) {
        let fan_in = widths[layer];
        let weight_name = format!("student.layers.{layer}.weight");
        let (_, shape) = f32_tensor(tensors, &weight_name, None)?;
        let [out, input] = shape[..] else {
            return Err(invalid(format!(
                "tensor {weight_name:?} has shape {shape:?}; expected [out, in]"
            )));
        };
        if input != fan_in || out == 0 {
            return Err(invalid(format!(
                "tensor {weight_name:?} has shape {shape:?}; expected [out, {fan_in}]"
            )));
        }
        theta.extend_from_slice(f32_tensor(tensors, &weight_name, None)?.0);
        theta.extend_from_slice(
            f32_tensor(
                tensors,
                &format!("student.layers.{layer}.bias"),
                Some(&[out]),
            )?
            .0,
        );
        widths.push(out);
        layer += 1;
    }
    if layer == 0 {
        return Err(invalid(
            "tensor \"student.layers.0.weight\" is missing (the student needs at least one layer)",
        ));
    }
    Ok((widths, theta))
}

/// A `weight-bptt` task over `n` train examples and a theta of `theta_len` values.
fn weight_bptt(
    tensors: &TensorMap,
    metadata: &Metadata,
    n: usize,
    theta_len: usize,
) -> Result<ProblemTask, InvalidProblem> {
    let (batches, b_shape) = index_tensor(tensors, "batches", n)?;
    let [_, b] = b_shape[..] else {
        return Err(invalid(format!(
            "tensor \"batches\" has shape {b_shape:?}; expected [K, b]"
        )));
    };
    if b == 0 {
        return Err(invalid("tensor \"batches\" has empty rows"));
    }
    let lr = number(metadata, "inner_lr", None)?;
    let optimizer = match metadata.get("optimizer").map(String::as_str) {
        Some("sgd") => ProblemOptimizer::Sgd {
            lr,
            momentum: number(metadata, "momentum", Some(0.0))?,
        },
        Some("adam") => ProblemOptimizer::Adam {
            lr,
            beta1: number(metadata, "adam_beta1", Some(0.9))?,
            beta2: number(metadata, "adam_beta2", Some(0.999))?,
            eps: number(metadata, "adam_eps", Some(1e-8))?,
        },
        Some(other) => {
            return Err(invalid(format!(
                "metadata \"optimizer\" = {other:?} is unknown; expected sgd or adam"
            )));
        }
        None => {
            return Err(invalid(
                "metadata \"optimizer\" is missing; expected sgd or adam",
            ));
        }
    };
    let batches = batches.chunks(b).map(<[i64]>::to_vec).collect();
    let state = match (tensors.get("state.first"), tensors.get("state.second")) {
        (None, None) => None,
        (Some(_), Some(_)) if matches!(optimizer, ProblemOptimizer::Adam { .. }) => {
            let len = [theta_len];
            let (first, _) = f32_tensor(tensors, "state.first", Some(&len))?;
            let (second, _) = f32_tensor(tensors, "state.second", Some(&len))?;
            if second.iter().any(|&v| v < 0.0) {
                return Err(invalid("tensor \"state.second\" holds a negative value"));
            }
            let step = number(metadata, "state_step", None)?;
            if step < 1.0 || step.fract() != 0.0 {
                return Err(invalid(format!(
                    "metadata \"state_step\" = {step} must be a positive whole number"
                )));
            }
            Some((step as usize, first.to_vec(), second.to_vec()))
        }
        _ => {
            return Err(invalid(
                "an optimiser state needs both \"state.first\" and \"state.second\", with optimizer adam",
            ));
        }
    };
    Ok(ProblemTask::WeightBptt {
        batches,
        optimizer,
        state,
    })
}

/// A `blend-ift` task over `n` train examples.
fn blend_ift(
    tensors: &TensorMap,
    metadata: &Metadata,
    n: usize,
) -> Result<ProblemTask, InvalidProblem> {
    let (pairs, p_shape) = index_tensor(tensors, "pairs", n)?;
    if p_shape != [n] {
        return Err(invalid(format!(
            "tensor \"pairs\" has shape {p_shape:?}; expected [{n}]"
        )));
    }
    let mut seen = vec![false; n];
    for &p in pairs {
        if std::mem::replace(&mut seen[p as usize], true) {
            return Err(invalid(format!(
                "tensor \"pairs\" is not a permutation: {p} appears twice"
            )));
        }
    }
    let inverse = match metadata.get("inverse").map(String::as_str) {
        None | Some("neumann") => ProblemInverse::Neumann {
            terms: count(metadata, "neumann_terms", None)?,
            alpha: number(metadata, "neumann_lr", None)?,
        },
        Some("cg") => ProblemInverse::ConjugateGradient {
            iterations: count(metadata, "cg_iterations", Some(200))?,
            damping: number(metadata, "cg_damping", None)?,
            tolerance: number(metadata, "cg_tolerance", Some(1e-6))?,
        },
        Some(other) => {
            return Err(invalid(format!(
                "metadata \"inverse\" = {other:?} is unknown; expected neumann or cg"
            )));
        }
    };
    let default_step = f64::from(DEFAULT_FINITE_DIFFERENCE_STEP);
    let finite_difference_step = number(metadata, "finite_difference_step", Some(default_step))?;
    if !(finite_difference_step > 0.0 && finite_difference_step < 1.0) {
        return Err(invalid(format!(
            "metadata \"finite_difference_step\" = {finite_difference_step} must be between 0 and 1 (exclusive)"
        )));
    }
    Ok(ProblemTask::BlendIft {
        pairs: pairs.to_vec(),
        inverse,
        finite_difference_step: finite_difference_step as f32,
    })
}

impl ProblemFile {
    /// Reads and validates a problem file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidProblem> {
        let tensors =
            decode_tensors(bytes).map_err(|e| invalid(format!("not a problem file: {e}")))?;
        let metadata =
            decode_metadata(bytes).map_err(|e| invalid(format!("not a problem file: {e}")))?;
        let (train_x, x_shape) = f32_tensor(&tensors, "train.x", None)?;
        let [n, d] = x_shape[..] else {
            return Err(invalid(format!(
                "tensor \"train.x\" has shape {x_shape:?}; expected [N, d]"
            )));
        };
        let (widths, theta) = student(&tensors, d)?;
        let classes = widths[widths.len() - 1];
        let (train_y, y_shape) = index_tensor(&tensors, "train.y", classes)?;
        if y_shape != [n] {
            return Err(invalid(format!(
                "tensor \"train.y\" has shape {y_shape:?}; expected [{n}]"
            )));
        }
        let (val_x, val_shape) = f32_tensor(&tensors, "val.x", None)?;
        let [m, val_d] = val_shape[..] else {
            return Err(invalid(format!(
                "tensor \"val.x\" has shape {val_shape:?}; expected [M, {d}]"
            )));
        };
        if val_d != d || m == 0 {
            return Err(invalid(format!(
                "tensor \"val.x\" has shape {val_shape:?}; expected [M > 0, {d}]"
            )));
        }
        let (val_y, vy_shape) = index_tensor(&tensors, "val.y", classes)?;
        if vy_shape != [m] {
            return Err(invalid(format!(
                "tensor \"val.y\" has shape {vy_shape:?}; expected [{m}]"
            )));
        }
        let (task, phi_shape) = match metadata.get("problem").map(String::as_str) {
            Some("weight-bptt") => (weight_bptt(&tensors, &metadata, n, theta.len())?, vec![n]),
            Some("blend-ift") => (blend_ift(&tensors, &metadata, n)?, vec![classes, classes]),
            Some(other) => {
                return Err(invalid(format!(
                    "metadata \"problem\" = {other:?} is unknown; expected weight-bptt or blend-ift"
                )));
            }
            None => {
                return Err(invalid(
                    "metadata \"problem\" is missing; expected weight-bptt or blend-ift",
                ));
            }
        };
        let (phi, _) = f32_tensor(&tensors, "commentary.logits", Some(&phi_shape))?;
        Ok(Self {
            task,
            widths,
            theta,
            train_x: train_x.to_vec(),
            train_y: train_y.to_vec(),
            val_x: val_x.to_vec(),
            val_y: val_y.to_vec(),
            phi: phi.to_vec(),
            phi_shape,
        })
    }
}
