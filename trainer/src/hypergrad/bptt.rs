//! Algorithm 1: backpropagation through training.
//!
//! The forward pass trains the student for K steps without recording a graph and stores each
//! theta_k and optimiser state (K x |theta| memory). The reverse pass walks back one step at a
//! time: it rebuilds step k's graph (inner gradient through the explicit backward, then the
//! optimiser update), and one first-order `backward()` of <step outputs, adjoints> gives the
//! adjoints of theta_k and the state, plus step k's contribution to d L_V / d phi.

use burn::tensor::Tensor;

use super::optim::{InnerOptimizer, OptState};
use super::{InnerProblem, dot, validation_gradient};

/// The result of one BPTT hypergradient.
pub struct BpttOutput {
    /// L_V at the end of training.
    pub val_loss: f32,
    /// d L_V / d phi.
    pub hypergrad: Tensor<1>,
    /// theta after K steps.
    pub final_theta: Tensor<1>,
}

fn zeros_like(t: &Tensor<1>) -> Tensor<1> {
    Tensor::zeros(t.dims(), &t.device())
}

/// Trains from `theta0` for `steps` inner steps under `phi` and returns d L_V / d phi.
pub fn hypergradient(
    problem: &dyn InnerProblem,
    theta0: &Tensor<1>,
    phi: &Tensor<1>,
    optimizer: InnerOptimizer,
    steps: usize,
) -> BpttOutput {
    let started = std::time::Instant::now();
    let phi_const = phi.clone().detach();
    let mut trajectory: Vec<(Tensor<1>, OptState)> = Vec::with_capacity(steps);
    let mut theta = theta0.clone().detach();
    let mut state = OptState::new();
    for k in 0..steps {
        let grad = problem.inner_gradient(&theta, &phi_const, k);
        let (next, next_state) = optimizer.step(&theta, &state, grad);
        trajectory.push((theta, state));
        theta = next.detach();
        state = next_state.detached();
    }
    let final_theta = theta.clone();
    let (mut theta_adjoint, val_loss) = validation_gradient(problem, &theta);
    let forward_done = started.elapsed();
    let mut state_adjoint: Vec<Tensor<1>> = state.tensors().iter().map(zeros_like).collect();
    let mut hypergrad = zeros_like(phi);
    for k in (0..steps).rev() {
        let Some((theta_k, state_k)) = trajectory.pop() else {
            break;
        };
        let theta_leaf = theta_k.require_grad();
        let state_leaves: Vec<Tensor<1>> = state_k
            .tensors()
            .into_iter()
            .map(Tensor::require_grad)
            .collect();
        let phi_leaf = phi_const.clone().require_grad();
        let grad = problem.inner_gradient(&theta_leaf, &phi_leaf, k);
        let (next, next_state) = optimizer.step(
            &theta_leaf,
            &state_k.with_tensors(state_leaves.clone()),
            grad,
        );
        let mut objective = dot(next, theta_adjoint.clone());
        for (tensor, adjoint) in next_state.tensors().into_iter().zip(&state_adjoint) {
            objective = objective + dot(tensor, adjoint.clone());
        }
        let grads = objective.backward();
        theta_adjoint = theta_leaf
            .grad(&grads)
            .unwrap_or_else(|| zeros_like(&theta_leaf));
        state_adjoint = state_leaves
            .iter()
            .map(|leaf| leaf.grad(&grads).unwrap_or_else(|| zeros_like(leaf)))
            .collect();
        if let Some(g) = phi_leaf.grad(&grads) {
            hypergrad = hypergrad + g;
        }
    }
    tracing::debug!(
        steps,
        forward_s = forward_done.as_secs_f64(),
        reverse_s = (started.elapsed() - forward_done).as_secs_f64(),
        "bptt hypergradient"
    );
    BpttOutput {
        val_loss,
        hypergrad,
        final_theta,
    }
}
