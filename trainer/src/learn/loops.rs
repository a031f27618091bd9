//! The generic meta-loops every kind shares, with checkpoints, progress and the time limit:
//! BPTT with a fresh student per meta-step (the paper's Algorithm 1) and online IFT
//! (Algorithm 2); truncated BPTT is in `super::truncated`.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use schema::LearnConfig;

use super::checkpoint::Checkpoint;
use super::{LearnError, LearnRequest, Progress};
use crate::data::tensors::{LabelledImages, PreparedData, index_tensor};
use crate::hypergrad::ift::{self, InverseHessian, OnlineState};
use crate::hypergrad::optim::{InnerOptimizer, OptState};
use crate::hypergrad::{InnerProblem, bptt};
use crate::models::Network;
use crate::stop::Stop;

/// The random stream of meta-step `step`: derived from the seed, so a resumed run continues
/// exactly as an uninterrupted one.
pub(crate) fn step_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64 + 1))
}

/// What every learning loop shares.
pub(crate) struct Run<'a> {
    pub request: &'a LearnRequest,
    pub data: &'a PreparedData,
    pub device: Device,
    pub out: &'a Path,
    pub fingerprint: String,
    pub started: Instant,
}

impl Run<'_> {
    pub fn config(&self) -> &LearnConfig {
        &self.request.config
    }

    /// Whether the time limit is reached.
    pub fn out_of_time(&self) -> bool {
        self.config()
            .time_limit_s
            .is_some_and(|l| self.started.elapsed() >= Duration::from_secs(l))
    }

    /// The stop request the inner loops check.
    pub fn stop(&self) -> &Stop {
        &self.request.stop
    }

    /// The checkpoint of an interrupted run of the same request when `usable`, else a fresh one
    /// that `start` fills.
    pub fn resume_or_start(
        &self,
        usable: impl Fn(&Checkpoint) -> bool,
        start: impl FnOnce(&mut Checkpoint),
    ) -> Checkpoint {
        match Checkpoint::load(self.out, &self.fingerprint) {
            Some(checkpoint) if usable(&checkpoint) => {
                let step = checkpoint.next_step;
                tracing::info!(
                    meta_step = step,
                    "resuming from checkpoint at meta-step {step}"
                );
                checkpoint
            }
            _ => {
                let mut fresh = Checkpoint {
                    best_val_loss: f32::INFINITY,
                    ..Checkpoint::default()
                };
                start(&mut fresh);
                fresh
            }
        }
    }

    /// Saves the checkpoint, reports progress, and says whether to stop (time is up).
    pub fn end_meta_step(
        &self,
        checkpoint: &Checkpoint,
        step: usize,
        val_loss: f32,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<bool, LearnError> {
        self.end_block(
            checkpoint,
            step,
            self.config().meta_steps as usize,
            val_loss,
            on_progress,
        )
    }

    /// [`Self::end_meta_step`] for loops whose progress unit is a block (`steps` in all).
    pub fn end_block(
        &self,
        checkpoint: &Checkpoint,
        step: usize,
        steps: usize,
        val_loss: f32,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<bool, LearnError> {
        checkpoint.save(self.out, &self.fingerprint)?;
        on_progress(&Progress {
            meta_step: step,
            meta_steps: steps,
            val_loss,
            best_val_loss: checkpoint.best_val_loss,
            elapsed: self.started.elapsed(),
        });
        let stop = self.out_of_time();
        if stop {
            tracing::info!(
                meta_step = step,
                "time limit reached; keeping the best commentary so far"
            );
        }
        Ok(stop)
    }

    /// A fresh-student network for the dataset (parameters named `student.*`).
    pub fn student(&self) -> Network {
        let data = self.data;
        Network::new(
            &self.config().student,
            "student.",
            data.train.shape(),
            0,
            data.summary.classes.len(),
        )
    }

    /// A fixed sample of validation examples for L_V.
    pub fn validation(&self, rng: &mut StdRng) -> LabelledImages {
        let mut chosen: Vec<i64> = (0..self.data.validation.len() as i64).collect();
        chosen.shuffle(rng);
        chosen.truncate(self.config().validation_batch_size.max(1) as usize);
        chosen.sort_unstable();
        self.data
            .validation
            .select(&index_tensor(&chosen, &self.device))
    }
}

/// BPTT meta-steps, shared by example weighting and attention masks: each meta-step builds its
/// inner problem with `make_problem` (fresh batches from the step's seeded stream), trains a
/// fresh student K steps, and moves phi along d L_V / d phi with Adam.
pub(crate) fn learn_bptt<'a>(
    run: &Run<'_>,
    phi_len: usize,
    initial_phi: impl FnOnce() -> Tensor<1>,
    steps: usize,
    on_progress: &mut dyn FnMut(&Progress),
    make_problem: &dyn Fn(&mut StdRng) -> Box<dyn InnerProblem + 'a>,
    student: &Network,
) -> Result<OnlineResult, LearnError> {
    let (config, device) = (run.config(), &run.device);
    let inner = InnerOptimizer::from_config(config);
    let outer = outer_optimizer(config);
    let mut checkpoint = run.resume_or_start(
        |c| c.tensor("phi", phi_len, device).is_some(),
        |fresh| {
            let phi = initial_phi();
            fresh.put("phi", &phi);
            fresh.put("best_phi", &phi);
        },
    );
    let mut phi = checkpoint
        .tensor("phi", phi_len, device)
        .unwrap_or_else(|| Tensor::zeros([phi_len], device));
    let mut outer_state = checkpoint.state("outer", phi_len, device);
    while checkpoint.next_step < config.meta_steps as usize {
        let step = checkpoint.next_step;
        let mut rng = step_rng(config.seed, step);
        let problem = make_problem(&mut rng);
        let theta0 = student.init(&mut rng, device);
        let result = bptt::stoppable(
            problem.as_ref(),
            &theta0,
            &OptState::new(),
            &phi,
            inner,
            steps,
            run.stop(),
        )?;
        checkpoint.record(step, result.val_loss, &phi)?;
        let (next, state) = outer.step(&phi, &outer_state, result.hypergrad);
        phi = next.detach();
        outer_state = state.detached();
        checkpoint.put("phi", &phi);
        checkpoint.put_state("outer", &outer_state);
        if run.end_meta_step(&checkpoint, step, result.val_loss, on_progress)? {
            break;
        }
    }
    Ok(OnlineResult {
        best_phi: checkpoint.vector("best_phi"),
        val_losses: checkpoint.vector("val_losses"),
        best_val_loss: checkpoint.best_val_loss,
    })
}

/// Adam on the commentary parameters.
pub(crate) fn outer_optimizer(config: &LearnConfig) -> InnerOptimizer {
    InnerOptimizer::Adam {
        lr: config.outer_lr,
        beta1: config.outer_beta1,
        beta2: config.outer_beta2,
        eps: config.outer_eps,
    }
}

/// What a learning loop (BPTT or online IFT) produced.
pub(crate) struct OnlineResult {
    pub best_phi: Vec<f32>,
    pub val_losses: Vec<f32>,
    pub best_val_loss: f32,
}

/// Online IFT, shared by label blending and attention masks: one student trains
/// `meta_steps` x `inner_steps` steps while phi takes a hyper-step every `hyper_step_every`
/// steps; progress and checkpoints come per block of `inner_steps`.
pub(crate) fn learn_online_ift(
    run: &Run<'_>,
    problem: &dyn InnerProblem,
    student: &Network,
    initial_phi: Tensor<1>,
    rng: &mut StdRng,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<OnlineResult, LearnError> {
    let (config, device) = (run.config(), &run.device);
    let inner = InnerOptimizer::from_config(config);
    let outer = outer_optimizer(config);
    let method = InverseHessian::Neumann {
        terms: config.neumann_terms as usize,
        alpha: config.neumann_lr,
    };
    let every = config.hyper_step_every.max(1) as usize;
    let block = config.inner_steps.max(1) as usize;
    let phi_len = initial_phi.dims()[0];
    let mut checkpoint = run.resume_or_start(
        |c| {
            c.tensor("phi", phi_len, device).is_some()
                && c.tensor("theta", student.len(), device).is_some()
        },
        |fresh| {
            fresh.put("phi", &initial_phi);
            fresh.put("best_phi", &initial_phi);
            fresh.put("theta", &student.init(rng, device));
        },
    );
    let theta = checkpoint
        .tensor("theta", student.len(), device)
        .unwrap_or_else(|| student.init(rng, device));
    let phi = checkpoint
        .tensor("phi", phi_len, device)
        .unwrap_or_else(|| Tensor::zeros([phi_len], device));
    let mut state = OnlineState {
        inner: OptState {
            step: checkpoint.next_step * block,
            ..checkpoint.state("inner", student.len(), device)
        },
        outer: OptState {
            step: checkpoint.next_step * block / every,
            ..checkpoint.state("outer", phi_len, device)
        },
        ..OnlineState::new(theta, phi)
    };
    let meta_steps = config.meta_steps as usize;
    while checkpoint.next_step < meta_steps {
        let block_index = checkpoint.next_step;
        let steps = block_index * block..(block_index + 1) * block;
        let block_losses = ift::learn_online(
            problem,
            &mut state,
            inner,
            outer,
            steps,
            every,
            method,
            run.stop(),
        )
        .map_err(|e| match e {
            ift::IftError::Stopped(stopped) => LearnError::Stopped(stopped),
            e => LearnError::Invalid(format!("in block {block_index}: {e}")),
        })?;
        let val_loss = match block_losses.last() {
            Some(&(_, v)) => v,
            None => crate::hypergrad::scalar(&problem.validation_loss(&state.theta)),
        };
        checkpoint.record(block_index, val_loss, &state.phi)?;
        checkpoint.put("phi", &state.phi);
        checkpoint.put("theta", &state.theta);
        checkpoint.put_state("inner", &state.inner);
        checkpoint.put_state("outer", &state.outer);
        if run.end_meta_step(&checkpoint, block_index, val_loss, on_progress)? {
            break;
        }
    }
    Ok(OnlineResult {
        best_phi: checkpoint.vector("best_phi"),
        val_losses: checkpoint.vector("val_losses"),
        best_val_loss: checkpoint.best_val_loss,
    })
}
