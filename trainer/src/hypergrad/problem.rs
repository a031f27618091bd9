//! `commentary hypergrad` problem files: small, self-contained hypergradient problems in
//! safetensors, so the engine can be checked against any other framework.
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
//!     `cg_iterations`); output -(d/d phi)[grad_theta L_T . p].
//! - output file: `hypergrad` (phi's shape, f32) and `val_loss` [1] f32; metadata
//!   `hypergradient` = `exact` or `finite-difference` (approximate, with `--approximate`).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Int, Tensor, TensorData};
use schema::ImageShape;
use schema::arch::NetSpec;
use schema::artifact::{
    HypergradientMethod, Tensor as FileTensor, TensorMap, TensorValues, decode_metadata,
    decode_tensors, encode_tensors,
};

use super::ift::{self, InverseHessian};
use super::module::ModuleProblem;
use super::optim::{InnerOptimizer, OptState};
use super::{InnerProblem, bptt, step_batch_indices, step_row};
use crate::models::{Input, Network};
use crate::nn::loss;

/// Why a problem file cannot be solved.
#[derive(Debug, thiserror::Error)]
pub enum ProblemError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ift(#[from] ift::IftError),
}

fn invalid(message: impl Into<String>) -> ProblemError {
    ProblemError::Invalid(message.into())
}

/// What the problem asks for.
#[derive(Debug, Clone)]
enum Task {
    WeightBptt {
        batches: Vec<Vec<i64>>,
        optimizer: InnerOptimizer,
        /// Adam's state at the start of the unroll: steps taken, first and second moments.
        state: Option<(usize, Vec<f32>, Vec<f32>)>,
    },
    BlendIft {
        pairs: Vec<i64>,
        inverse: InverseHessian,
    },
}

/// A parsed and validated problem.
pub struct Problem {
    task: Task,
    /// Layer widths, input first.
    widths: Vec<usize>,
    theta: Vec<f32>,
    train_x: Vec<f32>,
    train_y: Vec<i64>,
    val_x: Vec<f32>,
    val_y: Vec<i64>,
    phi: Vec<f32>,
    phi_shape: Vec<usize>,
}

/// The answer: d L_V / d phi (or the IFT hypergradient) and L_V.
#[derive(Debug, Clone)]
pub struct Solution {
    pub hypergrad: Vec<f32>,
    pub shape: Vec<usize>,
    pub val_loss: f32,
    /// Exact, or finite-difference (approximate); written to the output's metadata.
    pub method: HypergradientMethod,
}

/// A tensor's f32 values, refusing other dtypes, wrong shapes and non-finite values.
fn f32_tensor<'a>(
    tensors: &'a TensorMap,
    name: &str,
    shape: Option<&[usize]>,
) -> Result<(&'a [f32], Vec<usize>), ProblemError> {
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
) -> Result<(&'a [i64], Vec<usize>), ProblemError> {
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

fn number(
    metadata: &HashMap<String, String>,
    key: &str,
    default: Option<f64>,
) -> Result<f64, ProblemError> {
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

fn count(
    metadata: &HashMap<String, String>,
    key: &str,
    default: Option<usize>,
) -> Result<usize, ProblemError> {
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

impl Problem {
    /// Reads and validates a problem file.
    pub fn load(path: &Path) -> Result<Self, ProblemError> {
        let bytes = std::fs::read(path).map_err(|source| ProblemError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes).map_err(|e| match e {
            ProblemError::Invalid(message) => invalid(format!("{}: {message}", path.display())),
            other => other,
        })
    }

    /// Validates a problem held in memory.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProblemError> {
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
        // The student's layers, chained from d inputs.
        let mut widths = vec![d];
        let mut theta = Vec::new();
        let mut layer = 0;
        while tensors.contains_key(&format!("student.layers.{layer}.weight")) {
            let fan_in = widths[layer];
            let weight_name = format!("student.layers.{layer}.weight");
            let (_, shape) = f32_tensor(&tensors, &weight_name, None)?;
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
            theta.extend_from_slice(f32_tensor(&tensors, &weight_name, None)?.0);
            theta.extend_from_slice(
                f32_tensor(
                    &tensors,
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
        let classes = widths[layer];
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
        let kind = metadata.get("problem").map(String::as_str);
        let (task, phi_shape) = match kind {
            Some("weight-bptt") => {
                let (batches, b_shape) = index_tensor(&tensors, "batches", n)?;
                let [_, b] = b_shape[..] else {
                    return Err(invalid(format!(
                        "tensor \"batches\" has shape {b_shape:?}; expected [K, b]"
                    )));
                };
                if b == 0 {
                    return Err(invalid("tensor \"batches\" has empty rows"));
                }
                let lr = number(&metadata, "inner_lr", None)?;
                let optimizer = match metadata.get("optimizer").map(String::as_str) {
                    Some("sgd") => InnerOptimizer::Sgd {
                        lr,
                        momentum: number(&metadata, "momentum", Some(0.0))?,
                    },
                    Some("adam") => InnerOptimizer::Adam {
                        lr,
                        beta1: number(&metadata, "adam_beta1", Some(0.9))?,
                        beta2: number(&metadata, "adam_beta2", Some(0.999))?,
                        eps: number(&metadata, "adam_eps", Some(1e-8))?,
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
                    (Some(_), Some(_)) if matches!(optimizer, InnerOptimizer::Adam { .. }) => {
                        let len = [theta.len()];
                        let (first, _) = f32_tensor(&tensors, "state.first", Some(&len))?;
                        let (second, _) = f32_tensor(&tensors, "state.second", Some(&len))?;
                        if second.iter().any(|&v| v < 0.0) {
                            return Err(invalid("tensor \"state.second\" holds a negative value"));
                        }
                        let step = number(&metadata, "state_step", None)?;
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
                (
                    Task::WeightBptt {
                        batches,
                        optimizer,
                        state,
                    },
                    vec![n],
                )
            }
            Some("blend-ift") => {
                let (pairs, p_shape) = index_tensor(&tensors, "pairs", n)?;
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
                    None | Some("neumann") => InverseHessian::Neumann {
                        terms: count(&metadata, "neumann_terms", None)?,
                        alpha: number(&metadata, "neumann_lr", None)?,
                    },
                    Some("cg") => InverseHessian::ConjugateGradient {
                        iterations: count(&metadata, "cg_iterations", Some(200))?,
                        damping: number(&metadata, "cg_damping", None)?,
                        tolerance: number(&metadata, "cg_tolerance", Some(1e-6))?,
                    },
                    Some(other) => {
                        return Err(invalid(format!(
                            "metadata \"inverse\" = {other:?} is unknown; expected neumann or cg"
                        )));
                    }
                };
                (
                    Task::BlendIft {
                        pairs: pairs.to_vec(),
                        inverse,
                    },
                    vec![classes, classes],
                )
            }
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

    /// Solves the problem on `device` (an autodiff device) with exact hypergradients.
    pub fn solve(&self, device: &Device) -> Result<Solution, ProblemError> {
        self.solve_with(device, false)
    }

    /// Solves the problem; with `approximate`, IFT problems use finite-difference
    /// Hessian-vector products (the fallback for models without explicit backward passes).
    pub fn solve_with(&self, device: &Device, approximate: bool) -> Result<Solution, ProblemError> {
        let d = self.widths[0];
        let classes = *self.widths.last().unwrap_or(&1);
        let hidden = self.widths[1..self.widths.len() - 1]
            .iter()
            .map(|&w| w as u32)
            .collect();
        let net = Network::new(
            &NetSpec::Mlp { hidden },
            "student.",
            ImageShape {
                height: 1,
                width: d as u32,
                channels: 1,
            },
            0,
            classes,
        );
        let data = MlpData::new(
            device,
            &self.train_x,
            &self.train_y,
            &self.val_x,
            &self.val_y,
            d,
            classes,
        );
        let theta = Tensor::<1>::from_data(
            TensorData::new(self.theta.clone(), [self.theta.len()]),
            device,
        );
        let phi =
            Tensor::<1>::from_data(TensorData::new(self.phi.clone(), [self.phi.len()]), device);
        let (hypergrad, val_loss) = match &self.task {
            Task::WeightBptt { .. } if approximate => {
                return Err(invalid(
                    "finite-difference hypergradients apply to IFT problems (blend-ift) only",
                ));
            }
            Task::WeightBptt {
                batches,
                optimizer,
                state,
            } => {
                let batches = batches
                    .iter()
                    .map(|b| {
                        Tensor::<1, Int>::from_data(TensorData::new(b.clone(), [b.len()]), device)
                    })
                    .collect();
                let problem = WeightedMlp { net, data, batches };
                let vector = |v: &Vec<f32>| {
                    Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), device)
                };
                let state0 = match state {
                    Some((step, first, second)) => OptState {
                        step: *step,
                        first: Some(vector(first)),
                        second: Some(vector(second)),
                    },
                    None => OptState::new(),
                };
                let out = bptt::hypergradient_from(
                    &problem,
                    &theta,
                    &state0,
                    &phi,
                    *optimizer,
                    problem.batches.len(),
                );
                (out.hypergrad, out.val_loss)
            }
            Task::BlendIft { pairs, inverse } => {
                let problem = BlendedMlp::new(net, data, pairs, classes, device);
                if approximate {
                    // The fallback for arbitrary burn modules, here a burn-nn MLP with the
                    // problem's weights: only its first-order autodiff is used.
                    let student = NnMlp::new(&self.widths, &self.theta, device);
                    ModuleProblem::new(
                        student,
                        |mlp: &NnMlp, phi: &Tensor<1>, _step| {
                            let (x, targets) = problem.blend(phi);
                            loss::weighted_mean(&mlp.forward(x), &targets, None)
                        },
                        |mlp: &NnMlp| {
                            let logits = mlp.forward(problem.data.val_x.clone());
                            loss::weighted_mean(&logits, &problem.data.val_onehot, None)
                        },
                    )
                    .and_then(|(fallback, theta)| fallback.hypergradient(&theta, &phi, 0, *inverse))
                    .map_err(|e| invalid(e.to_string()))?
                } else {
                    let out = ift::hypergradient(&problem, &theta, &phi, 0, *inverse)?;
                    (out.hypergrad, out.val_loss)
                }
            }
        };
        let hypergrad = hypergrad.to_data().iter::<f32>().collect();
        Ok(Solution {
            hypergrad,
            shape: self.phi_shape.clone(),
            val_loss,
            method: if approximate {
                HypergradientMethod::FiniteDifference
            } else {
                HypergradientMethod::Exact
            },
        })
    }
}

impl Solution {
    /// Writes `hypergrad` and `val_loss` as a safetensors file, with the method in its metadata.
    pub fn write(&self, path: &Path) -> Result<(), ProblemError> {
        let mut map = TensorMap::new();
        let tensor =
            |shape, values| FileTensor::f32(shape, values).map_err(|e| invalid(e.to_string()));
        map.insert(
            "hypergrad".into(),
            tensor(self.shape.clone(), self.hypergrad.clone())?,
        );
        map.insert("val_loss".into(), tensor(vec![1], vec![self.val_loss])?);
        let metadata = [("hypergradient".to_owned(), self.method.as_str().to_owned())];
        let bytes = encode_tensors(&map, metadata).map_err(|e| invalid(e.to_string()))?;
        std::fs::write(path, bytes).map_err(|source| ProblemError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Train and validation data of a problem on a device.
struct MlpData {
    x: Tensor<2>,
    onehot: Tensor<2>,
    val_x: Tensor<2>,
    val_onehot: Tensor<2>,
}

impl MlpData {
    fn new(
        device: &Device,
        x: &[f32],
        y: &[i64],
        val_x: &[f32],
        val_y: &[i64],
        d: usize,
        classes: usize,
    ) -> Self {
        let labels =
            |y: &[i64]| Tensor::<1, Int>::from_data(TensorData::new(y.to_vec(), [y.len()]), device);
        Self {
            x: Tensor::from_data(TensorData::new(x.to_vec(), [y.len(), d]), device),
            onehot: loss::one_hot(&labels(y), classes),
            val_x: Tensor::from_data(TensorData::new(val_x.to_vec(), [val_y.len(), d]), device),
            val_onehot: loss::one_hot(&labels(val_y), classes),
        }
    }

    fn validation_loss(&self, net: &Network, theta: &Tensor<1>) -> Tensor<1> {
        let (logits, _) = net.forward(theta, Input::Flat(self.val_x.clone()), None);
        loss::weighted_mean(&logits, &self.val_onehot, None)
    }
}

/// Per-example weights w_i = sigmoid(phi_i) on an MLP, batches given.
struct WeightedMlp {
    net: Network,
    data: MlpData,
    batches: Vec<Tensor<1, Int>>,
}

impl InnerProblem for WeightedMlp {
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
        self.inner_gradient_from(theta, &step_row(self, phi, step), step)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.data.validation_loss(&self.net, theta)
    }

    /// The weights of each step's batch: [steps, b].
    fn step_commentary(&self, phi: &Tensor<1>, steps: Range<usize>) -> Tensor<2> {
        let count = steps.len();
        let (indices, b) = step_batch_indices(&self.batches, steps);
        sigmoid(phi.clone().select(0, indices)).reshape([count, b])
    }

    fn inner_gradient_from(
        &self,
        theta: &Tensor<1>,
        weights: &Tensor<1>,
        step: usize,
    ) -> Tensor<1> {
        let batch = &self.batches[step % self.batches.len()];
        let x = self.data.x.clone().select(0, batch.clone());
        let targets = self.data.onehot.clone().select(0, batch.clone());
        let (logits, trace) = self.net.forward(theta, Input::Flat(x), None);
        let dlogits = loss::weighted_mean_backward(&logits, &targets, Some(weights));
        self.net.backward(theta, &trace, dlogits)
    }
}

/// Label blending with a C x C logit matrix on an MLP, over the whole train set.
struct BlendedMlp {
    net: Network,
    data: MlpData,
    /// x of each example's partner.
    partner_x: Tensor<2>,
    partner_onehot: Tensor<2>,
    /// y_i * C + y_pairs_i: where each example's lambda logit sits in flat phi.
    phi_index: Tensor<1, Int>,
}

impl BlendedMlp {
    fn new(net: Network, data: MlpData, pairs: &[i64], classes: usize, device: &Device) -> Self {
        let pairs_t =
            Tensor::<1, Int>::from_data(TensorData::new(pairs.to_vec(), [pairs.len()]), device);
        let labels = loss::labels_of(&data.onehot);
        let phi_index: Vec<i64> = labels
            .iter()
            .zip(pairs)
            .map(|(&y, &p)| y * classes as i64 + labels[p as usize])
            .collect();
        Self {
            partner_x: data.x.clone().select(0, pairs_t.clone()),
            partner_onehot: data.onehot.clone().select(0, pairs_t),
            phi_index: Tensor::from_data(TensorData::new(phi_index, [pairs.len()]), device),
            net,
            data,
        }
    }
}

impl BlendedMlp {
    /// Blended inputs and soft targets under phi.
    fn blend(&self, phi: &Tensor<1>) -> (Tensor<2>, Tensor<2>) {
        // lambda_i = 1 - 0.5 sigmoid(phi[y_i, y_pair]), [N, 1]
        let lambda = sigmoid(phi.clone().select(0, self.phi_index.clone()))
            .mul_scalar(-0.5)
            .add_scalar(1.0)
            .unsqueeze_dim(1);
        let other = lambda.clone().neg().add_scalar(1.0);
        let x = self.data.x.clone() * lambda.clone() + self.partner_x.clone() * other.clone();
        let targets = self.data.onehot.clone() * lambda + self.partner_onehot.clone() * other;
        (x, targets)
    }
}

impl InnerProblem for BlendedMlp {
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, _step: usize) -> Tensor<1> {
        let (x, targets) = self.blend(phi);
        let (logits, trace) = self.net.forward(theta, Input::Flat(x), None);
        let dlogits = loss::weighted_mean_backward(&logits, &targets, None);
        self.net.backward(theta, &trace, dlogits)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.data.validation_loss(&self.net, theta)
    }
}

/// The student MLP as a plain burn-nn module (no explicit backward passes), for the
/// finite-difference fallback that any burn model would take.
#[derive(Module, Debug)]
struct NnMlp {
    layers: Vec<Linear>,
}

impl NnMlp {
    /// The MLP with `widths` (input first) and the problem's flat weights (per layer: weight
    /// [out, in], then bias), its parameters trainable on the autodiff `device`.
    fn new(widths: &[usize], theta: &[f32], device: &Device) -> Self {
        let device = device.clone().autodiff();
        let mut offset = 0;
        let mut take = |n: usize| {
            let values = theta[offset..offset + n].to_vec();
            offset += n;
            values
        };
        let layers = widths
            .windows(2)
            .map(|pair| {
                let (fan_in, out) = (pair[0], pair[1]);
                // burn's Linear computes x W + b with W [in, out].
                let weight = Tensor::<2>::from_data(
                    TensorData::new(take(out * fan_in), [out, fan_in]),
                    &device,
                )
                .transpose()
                .detach()
                .require_grad();
                let bias = Tensor::<1>::from_data(TensorData::new(take(out), [out]), &device)
                    .require_grad();
                Linear {
                    weight: Param::from_tensor(weight),
                    bias: Some(Param::from_tensor(bias)),
                }
            })
            .collect();
        Self { layers }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len().saturating_sub(1);
        self.layers.iter().enumerate().fold(x, |x, (i, layer)| {
            let y = layer.forward(x);
            if i < last { relu(y) } else { y }
        })
    }
}
