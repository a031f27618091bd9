//! The hypergradient engine: differentiating the student's validation loss with respect to the
//! commentary parameters phi.
//!
//! - [`bptt`]: backpropagation through training (the paper's Algorithm 1), reversing the
//!   trajectory one step at a time so memory grows with K x |theta|, not K x activations.
//! - [`ift`]: implicit differentiation with a Neumann-series (or conjugate-gradient) inverse
//!   Hessian (Algorithm 2).
//! - [`problem`]: the `commentary hypergrad` problem files that let any framework check us.

pub mod bptt;
pub mod finite;
pub mod ift;
pub mod optim;
pub mod problem;

use burn::tensor::Tensor;

/// A student being trained under a commentary: what the engine needs from it.
pub trait InnerProblem {
    /// The inner-loss gradient g(theta, phi) at inner step `step` (0-based), written so that it
    /// is differentiable in both theta and phi.
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1>;

    /// The validation loss L_V(theta), differentiable in theta.
    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1>;
}

/// d L_V / d theta at `theta`, and L_V.
pub fn validation_gradient(problem: &dyn InnerProblem, theta: &Tensor<1>) -> (Tensor<1>, f32) {
    let leaf = leaf(theta);
    let loss = problem.validation_loss(&leaf);
    let value = scalar(&loss);
    let grads = loss.backward();
    let grad = leaf
        .grad(&grads)
        .unwrap_or_else(|| Tensor::zeros(theta.dims(), &theta.device()));
    (grad, value)
}

/// A fresh autodiff leaf holding `t`'s values. The engine keeps everything else without
/// autodiff (burn's autodiff retains the state of every op until a backward pass, so a
/// K-step forward trajectory run under it would grow memory with K); leaves are lifted only
/// where a gradient is taken, and tensors without autodiff act as constants there.
pub fn leaf(t: &Tensor<1>) -> Tensor<1> {
    t.clone().detach().autodiff().require_grad()
}

/// `t` without autodiff tracking (a no-op for tensors that have none).
pub fn plain(t: &Tensor<1>) -> Tensor<1> {
    t.clone().detach().without_autodiff()
}

/// The value of a one-element tensor.
pub fn scalar(t: &Tensor<1>) -> f32 {
    t.to_data().iter::<f32>().next().unwrap_or(f32::NAN)
}

/// <a, b> as a one-element tensor.
pub fn dot(a: Tensor<1>, b: Tensor<1>) -> Tensor<1> {
    (a * b).sum()
}
