//! `commentary hypergrad` problem files: hypergradient problems any framework can check us on.
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
//!
//! `file` reads and checks problem files and writes answers; `problems` states the two
//! problems as [`InnerProblem`](crate::hypergrad::InnerProblem)s for the engine; `nn_mlp` is
//! the same student as a plain burn-nn module, for the finite-difference fallback.

mod file;
mod nn_mlp;
mod problems;

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use schema::ImageShape;
use schema::arch::NetSpec;
use schema::artifact::HypergradientMethod;

use crate::hypergrad::bptt;
use crate::hypergrad::ift::{self, InverseHessian};
use crate::hypergrad::module::ModuleProblem;
use crate::hypergrad::optim::{InnerOptimizer, OptState};
use crate::models::Network;
use crate::nn::loss;
use nn_mlp::NnMlp;
use problems::{BlendedMlp, MlpData, WeightedMlp};

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
        /// With `--approximate`: the finite differences' relative step.
        finite_difference_step: f32,
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
    /// The relative step of an approximate solution (also written to the metadata).
    pub finite_difference_step: Option<f32>,
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
            Task::BlendIft {
                pairs,
                inverse,
                finite_difference_step,
            } => {
                let problem = BlendedMlp::new(net, data, pairs, device);
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
                    .and_then(|(fallback, theta)| {
                        fallback.hypergradient(&theta, &phi, 0, *inverse, *finite_difference_step)
                    })
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
            finite_difference_step: match &self.task {
                Task::BlendIft {
                    finite_difference_step,
                    ..
                } if approximate => Some(*finite_difference_step),
                _ => None,
            },
        })
    }
}
