//! The hypergradient engine: differentiating the student's validation loss with respect to the
//! commentary parameters phi.
//!
//! - [`bptt`]: backpropagation through training (the paper's Algorithm 1), reversing the
//!   trajectory one step at a time so memory grows with K x |theta|, not K x activations.
//! - [`ift`]: implicit differentiation with a Neumann-series (or conjugate-gradient) inverse
//!   Hessian (Algorithm 2).
//! - [`finite`] and [`module`]: the approximate fallback for arbitrary burn modules
//!   (finite-difference Hessian-vector products).
//!
//! The `commentary hypergrad` problem files that let any framework check us are a verification
//! harness over this engine, not part of it: [`crate::verify`].

pub mod bptt;
pub mod finite;
pub mod ift;
pub mod module;
pub mod optim;

use std::ops::Range;

use burn::tensor::{Int, Tensor};

/// A student being trained under a commentary: what the engine needs from it.
pub trait InnerProblem {
    /// The inner-loss gradient g(theta, phi) at inner step `step` (0-based), written so that it
    /// is differentiable in both theta and phi.
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1>;

    /// The validation loss L_V(theta), differentiable in theta.
    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1>;

    /// d L_V / d theta at `theta` (a constant) and L_V. The default differentiates
    /// [`Self::validation_loss`] by autodiff; a student's mean cross-entropy overrides it with
    /// the explicit backward ([`crate::data::tensors::LabelledImages::mean_loss_gradient`]),
    /// which builds no autodiff graph.
    fn validation_loss_gradient(&self, theta: &Tensor<1>) -> (Tensor<1>, f32) {
        autodiff_validation_gradient(self, theta)
    }

    /// What inner steps `steps` read of phi, one row per step ([steps.len(), m], differentiable
    /// in phi): per-example weights, masks. BPTT evaluates these for many steps in one batch
    /// and differentiates them once per batch at the end, so a commentary network (a teacher)
    /// runs on a few large batches per meta-step instead of twice per inner step.
    ///
    /// The default row is phi itself (m = |phi|): right for any problem, but it stores K x |phi|
    /// values, so problems with a large phi override this and [`Self::inner_gradient_from`].
    fn step_commentary(&self, phi: &Tensor<1>, steps: Range<usize>) -> Tensor<2> {
        phi.clone().unsqueeze_dim::<2>(0).repeat_dim(0, steps.len())
    }

    /// The inner gradient at `step` from that step's row of [`Self::step_commentary`],
    /// differentiable in theta and the row; agrees with `inner_gradient` (default: the row is
    /// phi).
    fn inner_gradient_from(&self, theta: &Tensor<1>, row: &Tensor<1>, step: usize) -> Tensor<1> {
        self.inner_gradient(theta, row, step)
    }

    /// The adjoints of theta and of the step's row through the inner gradient: for `adjoint` =
    /// a, the adjoint of g(theta, row) at `step`, returns ((dg/dtheta)^T a, (dg/drow)^T a),
    /// what BPTT's reverse step needs. The default differentiates [`Self::inner_gradient_from`]
    /// by autodiff; a student trained by the explicit backward overrides it with the
    /// hand-written tangent pass ([`crate::models::Network::loss_gradient_tangent`]), which
    /// records no graph.
    fn inner_gradient_adjoints(
        &self,
        theta: &Tensor<1>,
        row: &Tensor<1>,
        step: usize,
        adjoint: &Tensor<1>,
    ) -> (Tensor<1>, Tensor<1>) {
        let (theta_leaf, row_leaf) = (leaf(theta), leaf(row));
        let gradient = self.inner_gradient_from(&theta_leaf, &row_leaf, step);
        let grads = dot(gradient, plain(adjoint)).backward();
        let adjoint_of = |leaf: &Tensor<1>| {
            leaf.grad(&grads)
                .unwrap_or_else(|| Tensor::zeros(leaf.dims(), &leaf.device()))
        };
        (adjoint_of(&theta_leaf), adjoint_of(&row_leaf))
    }

    /// The inner gradient at (theta, phi, step) for IFT's products with its derivatives. The
    /// default differentiates [`Self::inner_gradient`] by autodiff for each product; label
    /// blending overrides it with the student's tangent passes over one shared forward pass.
    fn linearise<'a>(
        &'a self,
        theta: &Tensor<1>,
        phi: &Tensor<1>,
        step: usize,
    ) -> Box<dyn InnerLinearisation + 'a> {
        Box::new(AutodiffLinearisation {
            problem: self,
            theta: plain(theta),
            phi: plain(phi),
            step,
        })
    }

    /// How many steps BPTT passes to one [`Self::step_commentary`] call: a bound on the batch a
    /// commentary network sees (and so on its activation memory).
    fn steps_per_commentary_batch(&self) -> usize {
        16
    }
}

/// The inner gradient g(theta, phi) at one point, for the products implicit differentiation
/// takes with its derivatives.
pub trait InnerLinearisation {
    /// (dg/dtheta) v = H v, H the Hessian of the inner loss.
    fn hessian_vector_product(&self, v: &Tensor<1>) -> Tensor<1>;

    /// (dg/dphi)^T p = d<g, p>/dphi, p held constant.
    fn mixed_product(&self, p: &Tensor<1>) -> Tensor<1>;
}

/// [`InnerLinearisation`] by one autodiff backward of <g, v> per product.
struct AutodiffLinearisation<'a, P: ?Sized> {
    problem: &'a P,
    theta: Tensor<1>,
    phi: Tensor<1>,
    step: usize,
}

impl<P: InnerProblem + ?Sized> InnerLinearisation for AutodiffLinearisation<'_, P> {
    fn hessian_vector_product(&self, v: &Tensor<1>) -> Tensor<1> {
        let theta = leaf(&self.theta);
        let grad = self.problem.inner_gradient(&theta, &self.phi, self.step);
        gradient_or_zeros(&theta, dot(grad, plain(v)))
    }

    fn mixed_product(&self, p: &Tensor<1>) -> Tensor<1> {
        let phi = leaf(&self.phi);
        let grad = self.problem.inner_gradient(&self.theta, &phi, self.step);
        gradient_or_zeros(&phi, dot(grad, plain(p)))
    }
}

/// d objective / d leaf by one backward pass; zeros where the objective does not reach it.
pub fn gradient_or_zeros(leaf: &Tensor<1>, objective: Tensor<1>) -> Tensor<1> {
    leaf.grad(&objective.backward())
        .unwrap_or_else(|| Tensor::zeros(leaf.dims(), &leaf.device()))
}

/// The canonical indices of the batches of inner steps `steps` (step k trains on
/// `batches[k % len]`), concatenated, and the batch size (all batches have one size): what a
/// [`InnerProblem::step_commentary`] over per-example weights gathers.
pub fn step_batch_indices(
    batches: &[Tensor<1, Int>],
    steps: Range<usize>,
) -> (Tensor<1, Int>, usize) {
    let chosen: Vec<Tensor<1, Int>> = steps
        .map(|step| batches[step % batches.len()].clone())
        .collect();
    let per_step = chosen.first().map_or(0, |batch| batch.dims()[0]);
    (Tensor::cat(chosen, 0), per_step)
}

/// One step's row of [`InnerProblem::step_commentary`] as a vector.
pub fn step_row(problem: &dyn InnerProblem, phi: &Tensor<1>, step: usize) -> Tensor<1> {
    let rows = problem.step_commentary(phi, step..step + 1);
    let m = rows.dims()[1];
    rows.reshape([m])
}

/// d L_V / d theta at `theta`, and L_V.
pub fn validation_gradient(problem: &dyn InnerProblem, theta: &Tensor<1>) -> (Tensor<1>, f32) {
    problem.validation_loss_gradient(&plain(theta))
}

/// [`InnerProblem::validation_loss_gradient`] by autodiff of the validation loss.
pub fn autodiff_validation_gradient<P: InnerProblem + ?Sized>(
    problem: &P,
    theta: &Tensor<1>,
) -> (Tensor<1>, f32) {
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
