//! Truncated (online) BPTT: one student trained for the whole run, phi updated through each
//! window of its last `unroll_steps` steps, with checkpoints and progress per block.

use burn::tensor::Tensor;
use rand::rngs::StdRng;
use schema::LearnConfig;

use super::loops::{OnlineResult, Run, outer_optimizer, step_rng};
use super::{LearnError, Progress};
use crate::hypergrad::optim::{InnerOptimizer, OptState};
use crate::hypergrad::{InnerProblem, bptt};
use crate::models::Network;

/// A window of truncated BPTT: the student steps it unrolls, counted over the student's whole
/// training (so a teacher's time input is the run's progress).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub first_step: usize,
    pub steps: usize,
}

/// Progress reports (and checkpoints) per student under truncated BPTT.
const TRUNCATED_BLOCKS: usize = 10;

/// A student's steps, the steps per window, and the windows, under `config`.
fn window_plan(config: &LearnConfig) -> (usize, usize, usize) {
    let total = config.inner_steps.max(1) as usize;
    let unroll = (config.unroll_steps.max(1) as usize).min(total);
    (total, unroll, total.div_ceil(unroll))
}

/// Blocks (progress reports, L_V curve points) per student under truncated BPTT.
pub(crate) fn truncated_blocks(config: &LearnConfig) -> usize {
    TRUNCATED_BLOCKS.min(window_plan(config).2)
}

/// Truncated (online) BPTT: `meta_steps` students in sequence, each trained `inner_steps`
/// steps from a fresh initialisation with phi carried over; after every window of
/// `unroll_steps` steps phi takes one outer Adam step along the exact hypergradient through
/// that window (from the window's theta and optimiser state). `make_window` builds the
/// window's inner problem (its batches and validation sample, from the window's seeded
/// stream). Keeps the final phi; progress and checkpoints come per block of windows.
pub(crate) fn learn_truncated<'a>(
    run: &Run<'_>,
    initial_phi: Tensor<1>,
    student: &Network,
    make_window: &dyn Fn(Window, &mut StdRng) -> Box<dyn InnerProblem + 'a>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<OnlineResult, LearnError> {
    let (config, device) = (run.config(), &run.device);
    let inner = InnerOptimizer::from_config(config);
    let outer = outer_optimizer(config);
    let (total, unroll, windows) = window_plan(config);
    let blocks = truncated_blocks(config);
    let all_blocks = blocks * config.meta_steps as usize;
    let phi_len = initial_phi.dims()[0];
    let theta_len = student.len();
    let mut checkpoint = run.resume_or_start(
        |c| c.tensor("phi", phi_len, device).is_some(),
        |fresh| fresh.put("phi", &initial_phi),
    );
    let mut phi = checkpoint
        .tensor("phi", phi_len, device)
        .unwrap_or_else(|| initial_phi.clone());
    let mut outer_state = checkpoint.state("outer", phi_len, device);
    let mut theta = checkpoint.tensor("theta", theta_len, device);
    let mut inner_state = checkpoint.state("inner", theta_len, device);
    while checkpoint.next_step < all_blocks {
        let global_block = checkpoint.next_step;
        let (student_index, block) = (global_block / blocks, global_block % blocks);
        let first_window = block * windows / blocks;
        let last_window = (block + 1) * windows / blocks;
        let mut theta_now = match (block, theta.take()) {
            (0, _) | (_, None) => {
                inner_state = OptState::new();
                student.init(&mut step_rng(config.seed, student_index), device)
            }
            (_, Some(theta)) => {
                // The stored state's step count is the block's (see Checkpoint::state).
                inner_state.step = first_window * unroll;
                theta
            }
        };
        let mut losses = Vec::with_capacity(last_window - first_window);
        for w in first_window..last_window {
            let first_step = w * unroll;
            let window = Window {
                first_step,
                steps: unroll.min(total - first_step),
            };
            let mut rng = step_rng(config.seed ^ 0x7E57_0000, student_index * windows + w);
            let problem = make_window(window, &mut rng);
            let result = bptt::stoppable(
                problem.as_ref(),
                &theta_now,
                &inner_state,
                &phi,
                inner,
                window.steps,
                run.stop(),
            )?;
            if !result.val_loss.is_finite() {
                return Err(LearnError::Invalid(format!(
                    "the validation loss became {} at student step {} of student {student_index}: lower inner_lr or outer_lr",
                    result.val_loss,
                    first_step + window.steps
                )));
            }
            losses.push(result.val_loss);
            outer_state.step = student_index * windows + w;
            let (next, state) = outer.step(&phi, &outer_state, result.hypergrad);
            phi = next.detach();
            outer_state = state.detached();
            theta_now = result.final_theta.detach();
            inner_state = result.final_state.detached();
        }
        let val_loss = losses.iter().sum::<f32>() / losses.len().max(1) as f32;
        checkpoint.record(global_block, val_loss, &phi)?;
        checkpoint.put("phi", &phi);
        checkpoint.put("theta", &theta_now);
        checkpoint.put_state("outer", &outer_state);
        checkpoint.put_state("inner", &inner_state);
        theta = Some(theta_now);
        if run.end_block(&checkpoint, global_block, all_blocks, val_loss, on_progress)? {
            break;
        }
    }
    let val_losses = checkpoint.vector("val_losses");
    Ok(OnlineResult {
        best_phi: checkpoint.vector("phi"),
        best_val_loss: val_losses.last().copied().unwrap_or(f32::NAN),
        val_losses,
    })
}
