//! `commentary hypergrad`: solving hypergradient problem files with the engine. The file
//! format and its parser live in `schema::problem` (burn-free, fuzzed).
//!
//! `file` writes answers; `problems` states the two
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
use schema::problem::{ProblemFile, ProblemInverse, ProblemOptimizer, ProblemTask};

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

/// A parsed and validated problem, ready to solve.
pub struct Problem(ProblemFile);

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

    /// Validates a problem held in memory.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProblemError> {
        ProblemFile::parse(bytes)
            .map(Self)
            .map_err(|e| ProblemError::Invalid(e.0))
    }

    /// Solves the problem on `device` (an autodiff device) with exact hypergradients.
    pub fn solve(&self, device: &Device) -> Result<Solution, ProblemError> {
        self.solve_with(device, false)
    }

    /// Solves the problem; with `approximate`, IFT problems use finite-difference
    /// Hessian-vector products (the fallback for models without explicit backward passes).
    pub fn solve_with(&self, device: &Device, approximate: bool) -> Result<Solution, ProblemError> {
        let d = self.0.widths[0];
        let classes = *self.0.widths.last().unwrap_or(&1);
        let hidden = self.0.widths[1..self.0.widths.len() - 1]
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
            &self.0.train_x,
            &self.0.train_y,
            &self.0.val_x,
            &self.0.val_y,
            d,
            classes,
        );
        let theta = Tensor::<1>::from_data(
            TensorData::new(self.0.theta.clone(), [self.0.theta.len()]),
            device,
        );
        let phi = Tensor::<1>::from_data(
            TensorData::new(self.0.phi.clone(), [self.0.phi.len()]),
            device,
        );
        let (hypergrad, val_loss) = match &self.0.task {
            ProblemTask::WeightBptt { .. } if approximate => {
                return Err(invalid(
                    "finite-difference hypergradients apply to IFT problems (blend-ift) only",
                ));
            }
            ProblemTask::WeightBptt {
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
                    InnerOptimizer::from(*optimizer),
                    problem.batches.len(),
                );
                (out.hypergrad, out.val_loss)
            }
            ProblemTask::BlendIft {
                pairs,
                inverse,
                finite_difference_step,
            } => {
                let problem = BlendedMlp::new(net, data, pairs, device);
                if approximate {
                    // The fallback for arbitrary burn modules, here a burn-nn MLP with the
                    // problem's weights: only its first-order autodiff is used.
                    let student = NnMlp::new(&self.0.widths, &self.0.theta, device);
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
                        fallback.hypergradient(
                            &theta,
                            &phi,
                            0,
                            InverseHessian::from(*inverse),
                            *finite_difference_step,
                        )
                    })
                    .map_err(|e| invalid(e.to_string()))?
                } else {
                    let out = ift::hypergradient(
                        &problem,
                        &theta,
                        &phi,
                        0,
                        InverseHessian::from(*inverse),
                    )?;
                    (out.hypergrad, out.val_loss)
                }
            }
        };
        let hypergrad = hypergrad.to_data().iter::<f32>().collect();
        Ok(Solution {
            hypergrad,
            shape: self.0.phi_shape.clone(),
            val_loss,
            method: if approximate {
                HypergradientMethod::FiniteDifference
            } else {
                HypergradientMethod::Exact
            },
            finite_difference_step: match &self.0.task {
                ProblemTask::BlendIft {
                    finite_difference_step,
                    ..
                } if approximate => Some(*finite_difference_step),
                _ => None,
            },
        })
    }
}

impl From<ProblemOptimizer> for InnerOptimizer {
    fn from(optimizer: ProblemOptimizer) -> Self {
        match optimizer {
            ProblemOptimizer::Sgd { lr, momentum } => Self::Sgd { lr, momentum },
            ProblemOptimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
            },
        }
    }
}

impl From<ProblemInverse> for InverseHessian {
    fn from(inverse: ProblemInverse) -> Self {
        match inverse {
            ProblemInverse::Neumann { terms, alpha } => Self::Neumann { terms, alpha },
            ProblemInverse::ConjugateGradient {
                iterations,
                damping,
                tolerance,
            } => Self::ConjugateGradient {
                iterations,
                damping,
                tolerance,
            },
        }
    }
}
