//! Algorithm 1: backpropagation through training.
//!
//! The forward pass trains the student for K steps without recording a graph and stores each
//! theta_k, optimiser state and inner gradient g_k (K x |theta| memory). The reverse pass walks
//! back one step at a time in two parts. The optimiser update is elementwise: one small
//! autodiff `backward()` of <step outputs, adjoints> with theta_k, the state and g_k as leaves
//! gives their adjoints. The inner gradient's adjoint a then reaches theta_k and the step's
//! commentary row through [`InnerProblem::inner_gradient_adjoints`]: H a and d<g, a>/d row,
//! which the weighting student computes by its hand-written tangent pass, with no graph of the
//! forward and backward passes. The rows (of [`InnerProblem::step_commentary`]) are computed,
//! and differentiated in phi, in batches of steps: a teacher network runs on a few large
//! batches per meta-step rather than twice per inner step on a batch of 8.

use burn::tensor::Tensor;

use super::optim::{InnerOptimizer, OptState};
use super::{InnerProblem, dot, leaf, plain, validation_gradient};
use crate::stop::{Stop, Stopped};

/// The result of one BPTT hypergradient.
pub struct BpttOutput {
    /// L_V at the end of training.
    pub val_loss: f32,
    /// d L_V / d phi.
    pub hypergrad: Tensor<1>,
    /// theta after K steps.
    pub final_theta: Tensor<1>,
    /// The optimiser state after K steps (where truncated BPTT continues training).
    pub final_state: OptState,
}

/// The stored trajectory: theta_k, the optimiser state and the inner gradient g_k of each step,
/// packed into one host buffer per step. One allocation per step (instead of one device tensor
/// per vector, amid the step's temporaries) keeps memory growth at the bytes stored: about
/// 0.3 MiB per step for a 20k-parameter student with Adam, where device tensors fragmented the
/// heap to twice that. Storing g_k saves the reverse step a forward and backward pass.
struct Trajectory {
    /// Per step: theta, the state's tensors and g_k, concatenated; the state's step count; and
    /// which state tensors exist (first, second).
    steps: Vec<(Vec<f32>, usize, bool, bool)>,
}

impl Trajectory {
    fn with_capacity(steps: usize) -> Self {
        Self {
            steps: Vec::with_capacity(steps),
        }
    }

    fn push(&mut self, theta: &Tensor<1>, state: &OptState, gradient: &Tensor<1>) {
        let mut packed = Vec::with_capacity(theta.dims()[0] * (2 + state.tensors().len()));
        let tensors = std::iter::once(theta.clone())
            .chain(state.tensors())
            .chain(std::iter::once(gradient.clone()));
        for t in tensors {
            packed.extend(t.to_data().iter::<f32>());
        }
        self.steps.push((
            packed,
            state.step,
            state.first.is_some(),
            state.second.is_some(),
        ));
    }

    /// The last stored step as device tensors: theta, the state and the inner gradient.
    fn pop(&mut self, device: &burn::tensor::Device) -> Option<(Tensor<1>, OptState, Tensor<1>)> {
        let (packed, step, has_first, has_second) = self.steps.pop()?;
        let parts = 2 + usize::from(has_first) + usize::from(has_second);
        let len = packed.len() / parts;
        let mut tensors = packed.chunks(len).map(|chunk| {
            Tensor::from_data(burn::tensor::TensorData::new(chunk.to_vec(), [len]), device)
        });
        let theta = tensors.next()?;
        let first = if has_first { tensors.next() } else { None };
        let second = if has_second { tensors.next() } else { None };
        let gradient = tensors.next()?;
        Some((
            theta,
            OptState {
                step,
                first,
                second,
            },
            gradient,
        ))
    }
}

fn zeros_like(t: &Tensor<1>) -> Tensor<1> {
    Tensor::zeros(t.dims(), &t.device())
}

/// Each step's row of [`InnerProblem::step_commentary`], computed (without a graph) in batches
/// of `chunk` steps.
struct StepCommentary {
    chunks: Vec<Tensor<2>>,
    chunk: usize,
}

impl StepCommentary {
    fn compute(problem: &dyn InnerProblem, phi: &Tensor<1>, steps: usize) -> Self {
        let chunk = problem.steps_per_commentary_batch().max(1);
        let chunks = (0..steps)
            .step_by(chunk)
            .map(|start| problem.step_commentary(phi, start..(start + chunk).min(steps)))
            .collect();
        Self { chunks, chunk }
    }

    fn row(&self, step: usize) -> Tensor<1> {
        let rows = &self.chunks[step / self.chunk];
        let (i, m) = (step % self.chunk, rows.dims()[1]);
        rows.clone().narrow(0, i, 1).reshape([m])
    }
}

/// Trains from `theta0` for `steps` inner steps under `phi` and returns d L_V / d phi.
///
/// phi reaches each step through its row of [`InnerProblem::step_commentary`]: the reverse pass
/// collects d L_V / d row_k step by step, and each batch of rows is differentiated in phi once,
/// when the reverse pass has left it.
pub fn hypergradient(
    problem: &dyn InnerProblem,
    theta0: &Tensor<1>,
    phi: &Tensor<1>,
    optimizer: InnerOptimizer,
    steps: usize,
) -> BpttOutput {
    hypergradient_from(problem, theta0, &OptState::new(), phi, optimizer, steps)
}

/// [`hypergradient`] from a student part-way through training: theta0 with optimiser state
/// `state0` (truncated BPTT's window; the state is a constant, as theta0 is).
pub fn hypergradient_from(
    problem: &dyn InnerProblem,
    theta0: &Tensor<1>,
    state0: &OptState,
    phi: &Tensor<1>,
    optimizer: InnerOptimizer,
    steps: usize,
) -> BpttOutput {
    let never = Stop::never();
    match stoppable(problem, theta0, state0, phi, optimizer, steps, &never) {
        Ok(out) => out,
        Err(Stopped) => unreachable!("Stop::never() is never requested"),
    }
}

/// [`hypergradient_from`], checking `stop` before every inner step of both passes (what the
/// learning loops call, so a cancelled run ends within an inner step).
pub fn stoppable(
    problem: &dyn InnerProblem,
    theta0: &Tensor<1>,
    state0: &OptState,
    phi: &Tensor<1>,
    optimizer: InnerOptimizer,
    steps: usize,
    stop: &Stop,
) -> Result<BpttOutput, Stopped> {
    let started = std::time::Instant::now();
    let phi_const = plain(phi);
    let commentary = StepCommentary::compute(problem, &phi_const, steps);
    let mut trajectory = Trajectory::with_capacity(steps);
    let mut theta = plain(theta0);
    let mut state = state0.with_tensors(state0.tensors().iter().map(plain).collect());
    for k in 0..steps {
        stop.check()?;
        let grad = problem.inner_gradient_from(&theta, &commentary.row(k), k);
        trajectory.push(&theta, &state, &grad);
        let (next, next_state) = optimizer.step(&theta, &state, grad);
        theta = plain(&next);
        state = next_state.detached();
    }
    let final_theta = theta.clone();
    let final_state = state.clone();
    let trajectory_done = started.elapsed();
    let (mut theta_adjoint, val_loss) = validation_gradient(problem, &theta);
    let forward_done = started.elapsed();
    let mut state_adjoint: Vec<Tensor<1>> = state.tensors().iter().map(zeros_like).collect();
    let mut hypergrad = zeros_like(phi);
    // d L_V / d row_k for the steps of the batch being reversed, last step first.
    let mut row_adjoints: Vec<Tensor<1>> = Vec::with_capacity(commentary.chunk);
    for k in (0..steps).rev() {
        stop.check()?;
        let Some((theta_k, state_k, grad_k)) = trajectory.pop(&theta.device()) else {
            break;
        };
        let theta_leaf = leaf(&theta_k);
        let grad_leaf = leaf(&grad_k);
        let state_leaves: Vec<Tensor<1>> =
            state_k.tensors().into_iter().map(|t| leaf(&t)).collect();
        let (next, next_state) = optimizer.step(
            &theta_leaf,
            &state_k.with_tensors(state_leaves.clone()),
            grad_leaf.clone(),
        );
        let mut objective = dot(next, theta_adjoint.clone());
        for (tensor, adjoint) in next_state.tensors().into_iter().zip(&state_adjoint) {
            objective = objective + dot(tensor, adjoint.clone());
        }
        let grads = objective.backward();
        let adjoint_of = |leaf: &Tensor<1>| leaf.grad(&grads).unwrap_or_else(|| zeros_like(leaf));
        let direct_adjoint = adjoint_of(&theta_leaf);
        let grad_adjoint = adjoint_of(&grad_leaf);
        state_adjoint = state_leaves.iter().map(adjoint_of).collect();
        let (through_gradient, row_adjoint) =
            problem.inner_gradient_adjoints(&theta_k, &commentary.row(k), k, &grad_adjoint);
        theta_adjoint = direct_adjoint + through_gradient;
        row_adjoints.push(row_adjoint);
        if k % commentary.chunk == 0 {
            let end = k + row_adjoints.len();
            row_adjoints.reverse();
            let adjoints = Tensor::stack(std::mem::take(&mut row_adjoints), 0);
            let phi_leaf = leaf(&phi_const);
            let rows = problem.step_commentary(&phi_leaf, k..end);
            let grads = (rows * adjoints).sum().backward();
            if let Some(g) = phi_leaf.grad(&grads) {
                hypergrad = hypergrad + g;
            }
        }
    }
    tracing::debug!(
        steps,
        trajectory_s = trajectory_done.as_secs_f64(),
        forward_s = forward_done.as_secs_f64(),
        reverse_s = (started.elapsed() - forward_done).as_secs_f64(),
        "bptt hypergradient"
    );
    Ok(BpttOutput {
        val_loss,
        hypergrad,
        final_theta,
        final_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypergrad::scalar;
    use crate::nn::testing::{device, values};
    use burn::tensor::TensorData;

    /// Inner loss 0.5 ||theta - phi||^2, validation loss 0.5 ||theta - c||^2.
    struct Target {
        c: f32,
    }

    impl InnerProblem for Target {
        fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, _step: usize) -> Tensor<1> {
            theta.clone() - phi.clone()
        }

        fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
            (theta.clone().sub_scalar(self.c))
                .powi_scalar(2)
                .sum()
                .mul_scalar(0.5)
        }
    }

    #[test]
    fn bptt_matches_the_closed_form_of_a_linear_inner_problem() {
        // SGD from theta_0 = 0: theta_K = phi (1 - (1 - lr)^K), so
        // dL_V/dphi = (theta_K - c)(1 - (1 - lr)^K).
        let (lr, steps, phi_value, c) = (0.1f32, 7usize, 0.8f32, 2.0f32);
        let problem = Target { c };
        let phi = Tensor::<1>::from_data(TensorData::new(vec![phi_value], [1]), &device());
        let theta0 = Tensor::<1>::zeros([1], &device());
        let sgd = InnerOptimizer::Sgd {
            lr: f64::from(lr),
            momentum: 0.0,
        };
        let out = hypergradient(&problem, &theta0, &phi, sgd, steps);
        let shrink = 1.0 - (1.0 - lr).powi(steps as i32);
        let theta_k = phi_value * shrink;
        assert!((values(&out.final_theta)[0] - theta_k).abs() < 1e-6);
        assert!((out.val_loss - 0.5 * (theta_k - c).powi(2)).abs() < 1e-6);
        let expected = (theta_k - c) * shrink;
        assert!(
            (scalar(&out.hypergrad) - expected).abs() < 1e-5,
            "{} vs {expected}",
            scalar(&out.hypergrad)
        );
    }
}
