//! The fallback for networks without explicit backward passes (any burn model): implicit
//! differentiation with finite-difference Hessian-vector products. Results are approximate and
//! labelled so (`HypergradientMethod::FiniteDifference` in manifests).
//!
//! Only first-order autodiff of the inner loss is needed:
//! - H v ~ (grad L_T(theta + eps v) - grad L_T(theta - eps v)) / (2 eps);
//! - d/d phi [grad_theta L_T(theta, phi) . p] ~ d/d phi [(L_T(theta + eps p, phi)
//!   - L_T(theta - eps p, phi)) / (2 eps)], a first-order gradient in phi.

use burn::tensor::Tensor;

use super::ift::InverseHessian;
use super::{dot, leaf};

/// An inner problem known only through its losses (first-order differentiable).
pub trait LossProblem {
    /// The inner loss L_T(theta, phi) at inner step `step`, a one-element tensor.
    fn inner_loss(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1>;
    /// The validation loss L_V(theta).
    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1>;
}

/// The default relative step: differences move theta by `step` x max(||theta||, 1) along the
/// direction; 1e-3 is small enough to rarely cross a ReLU kink (1e-2 did, measurably), large
/// enough for f32. Problem files may set their own (`finite_difference_step`).
pub const DEFAULT_STEP: f32 = schema::problem::DEFAULT_FINITE_DIFFERENCE_STEP;

fn gradient(loss: impl Fn(&Tensor<1>) -> Tensor<1>, at: &Tensor<1>) -> Tensor<1> {
    let at_leaf = leaf(at);
    let grads = loss(&at_leaf).backward();
    at_leaf
        .grad(&grads)
        .unwrap_or_else(|| Tensor::zeros(at.dims(), &at.device()))
}

fn norm(v: &Tensor<1>) -> f32 {
    super::scalar(&dot(v.clone(), v.clone())).sqrt()
}

/// The step size for a difference along `v` at `theta`.
fn epsilon(theta: &Tensor<1>, v: &Tensor<1>, step: f32) -> f32 {
    step * norm(theta).max(1.0) / norm(v).max(1e-12)
}

/// Approximate H v by central differences of the inner loss's gradient, `relative_step` as in
/// [`DEFAULT_STEP`].
pub fn hessian_vector_product(
    problem: &dyn LossProblem,
    theta: &Tensor<1>,
    phi: &Tensor<1>,
    step: usize,
    v: &Tensor<1>,
    relative_step: f32,
) -> Tensor<1> {
    let eps = epsilon(theta, v, relative_step);
    let phi = phi.clone().detach();
    let loss = |t: &Tensor<1>| problem.inner_loss(t, &phi, step);
    let plus = gradient(loss, &(theta.clone() + v.clone().mul_scalar(eps)));
    let minus = gradient(loss, &(theta.clone() - v.clone().mul_scalar(eps)));
    (plus - minus).div_scalar(2.0 * eps)
}

/// The approximate IFT hypergradient (Neumann series only: conjugate gradients on
/// finite-difference products are too noisy to trust) and L_V.
pub fn hypergradient(
    problem: &dyn LossProblem,
    theta: &Tensor<1>,
    phi: &Tensor<1>,
    step: usize,
    method: InverseHessian,
    relative_step: f32,
) -> (Tensor<1>, f32) {
    let theta = theta.clone().detach();
    let val_leaf = leaf(&theta);
    let val_loss = problem.validation_loss(&val_leaf);
    let value = super::scalar(&val_loss);
    let grads = val_loss.backward();
    let v0 = val_leaf
        .grad(&grads)
        .unwrap_or_else(|| Tensor::zeros(theta.dims(), &theta.device()));
    let (terms, alpha) = match method {
        InverseHessian::Neumann { terms, alpha } => (terms, alpha as f32),
        InverseHessian::ConjugateGradient { iterations, .. } => (iterations.min(10), 1e-2),
    };
    let mut term = v0.clone();
    let mut sum = v0;
    for _ in 0..terms {
        term = term.clone()
            - hessian_vector_product(problem, &theta, phi, step, &term, relative_step)
                .mul_scalar(alpha);
        sum = sum + term.clone();
    }
    let p = sum.mul_scalar(alpha);
    let eps = epsilon(&theta, &p, relative_step);
    let phi_leaf = leaf(phi);
    let difference = (problem.inner_loss(
        &(theta.clone() + p.clone().mul_scalar(eps)),
        &phi_leaf,
        step,
    ) - problem.inner_loss(&(theta - p.mul_scalar(eps)), &phi_leaf, step))
    .div_scalar(2.0 * eps);
    let grads = difference.backward();
    let hypergrad = phi_leaf
        .grad(&grads)
        .map(Tensor::neg)
        .unwrap_or_else(|| Tensor::zeros(phi.dims(), &phi.device()));
    (hypergrad, value)
}
