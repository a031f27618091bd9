//! Algorithm 2: implicit differentiation at the current theta.
//!
//! hypergradient = -(d/d phi)[ g(theta, phi) . p ] with p ~ H^{-1} grad_theta L_V held constant,
//! H the Hessian of the inner loss. p comes from a truncated Neumann series,
//! p = alpha sum_{j=0..J} (I - alpha H)^j grad_theta L_V (J = 0 gives alpha * grad), or from
//! conjugate gradients on (H + damping I) p = grad_theta L_V, which stops with an error on
//! negative curvature instead of returning garbage. Hessian-vector products and the mixed
//! product are exact, from the problem's [`super::InnerLinearisation`]: by default the backward
//! of <g(theta), v> through the explicit backward passes, for label blending the student's
//! hand-written tangent passes.

use burn::tensor::Tensor;

use super::{InnerProblem, dot, scalar, validation_gradient};
use crate::stop::{Stop, Stopped};

/// How the inverse Hessian is approximated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InverseHessian {
    /// J Neumann terms with step alpha.
    Neumann { terms: usize, alpha: f64 },
    /// Conjugate gradients on (H + damping I).
    ConjugateGradient {
        iterations: usize,
        damping: f64,
        tolerance: f64,
    },
}

/// Why an IFT hypergradient could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IftError {
    #[error(
        "conjugate gradients met negative curvature (d^T (H + damping I) d = {curvature:.3e} at \
         iteration {iteration}): theta is not near a minimum of the inner loss; train the \
         student longer or raise the damping"
    )]
    NegativeCurvature { iteration: usize, curvature: f32 },
    #[error("the hypergradient is not finite (the inner problem diverged)")]
    NotFinite,
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// The result of one IFT hypergradient.
pub struct IftOutput {
    pub val_loss: f32,
    pub hypergrad: Tensor<1>,
}

/// The IFT hypergradient at `theta` (the inner loss of step `step`).
pub fn hypergradient(
    problem: &dyn InnerProblem,
    theta: &Tensor<1>,
    phi: &Tensor<1>,
    step: usize,
    method: InverseHessian,
) -> Result<IftOutput, IftError> {
    let (v0, val_loss) = validation_gradient(problem, theta);
    let at = problem.linearise(theta, phi, step);
    let hvp = |v: &Tensor<1>| at.hessian_vector_product(v);
    let p = match method {
        InverseHessian::Neumann { terms, alpha } => {
            let alpha = alpha as f32;
            let mut term = v0.clone();
            let mut sum = v0.clone();
            for _ in 0..terms {
                term = term.clone() - hvp(&term).mul_scalar(alpha);
                sum = sum + term.clone();
            }
            sum.mul_scalar(alpha)
        }
        InverseHessian::ConjugateGradient {
            iterations,
            damping,
            tolerance,
        } => conjugate_gradient(&hvp, &v0, iterations, damping as f32, tolerance as f32)?,
    };
    let hypergrad = at.mixed_product(&p).neg();
    if !scalar(&hypergrad.clone().abs().sum()).is_finite() {
        return Err(IftError::NotFinite);
    }
    Ok(IftOutput {
        val_loss,
        hypergrad,
    })
}

/// Where online learning stands: the student, the commentary and both optimisers' states.
#[derive(Clone)]
pub struct OnlineState {
    pub theta: Tensor<1>,
    pub phi: Tensor<1>,
    pub inner: super::optim::OptState,
    pub outer: super::optim::OptState,
}

impl OnlineState {
    /// A fresh start from `theta` and `phi`.
    pub fn new(theta: Tensor<1>, phi: Tensor<1>) -> Self {
        use super::optim::OptState;
        Self {
            theta: theta.detach(),
            phi: phi.detach(),
            inner: OptState::new(),
            outer: OptState::new(),
        }
    }
}

/// Online implicit differentiation: runs the student steps in `steps` (a range, so training can
/// go on in blocks) and gives phi an outer step after every `every` of them (the paper's code:
/// one Neumann term, a hyper-step after each student step). Returns (step, L_V) of each
/// hyper-step. `stop` is checked before every student step.
#[allow(clippy::too_many_arguments)]
pub fn learn_online(
    problem: &dyn InnerProblem,
    state: &mut OnlineState,
    inner: super::optim::InnerOptimizer,
    outer: super::optim::InnerOptimizer,
    steps: std::ops::Range<usize>,
    every: usize,
    method: InverseHessian,
    stop: &Stop,
) -> Result<Vec<(usize, f32)>, IftError> {
    let every = every.max(1);
    let mut val_losses = Vec::new();
    for step in steps {
        stop.check()?;
        let grad = problem.inner_gradient(&state.theta, &state.phi, step);
        let (next, next_state) = inner.step(&state.theta, &state.inner, grad);
        state.theta = next.detach();
        state.inner = next_state.detached();
        if (step + 1).is_multiple_of(every) {
            let out = hypergradient(problem, &state.theta, &state.phi, step, method)?;
            let (next, next_state) = outer.step(&state.phi, &state.outer, out.hypergrad);
            state.phi = next.detach();
            state.outer = next_state.detached();
            val_losses.push((step, out.val_loss));
        }
    }
    Ok(val_losses)
}

/// Solves (H + damping I) x = b by conjugate gradients.
fn conjugate_gradient(
    hvp: &dyn Fn(&Tensor<1>) -> Tensor<1>,
    b: &Tensor<1>,
    iterations: usize,
    damping: f32,
    tolerance: f32,
) -> Result<Tensor<1>, IftError> {
    let mut x = Tensor::zeros(b.dims(), &b.device());
    let mut residual = b.clone();
    let mut direction = b.clone();
    let mut rr = scalar(&dot(residual.clone(), residual.clone()));
    let target = tolerance * tolerance * rr;
    for iteration in 0..iterations {
        if rr <= target || rr == 0.0 {
            break;
        }
        let a_d = hvp(&direction) + direction.clone().mul_scalar(damping);
        let curvature = scalar(&dot(direction.clone(), a_d.clone()));
        if curvature <= 0.0 || !curvature.is_finite() {
            return Err(IftError::NegativeCurvature {
                iteration,
                curvature,
            });
        }
        let step = rr / curvature;
        x = x + direction.clone().mul_scalar(step);
        residual = residual - a_d.mul_scalar(step);
        let rr_next = scalar(&dot(residual.clone(), residual.clone()));
        direction = residual.clone() + direction.mul_scalar(rr_next / rr);
        rr = rr_next;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::device;
    use burn::tensor::TensorData;

    /// Inner loss 0.5 theta^T A theta with A = diag(a) scaled by phi[0], validation loss c.theta.
    struct Quadratic {
        a: Vec<f32>,
        c: Vec<f32>,
    }

    impl Quadratic {
        fn vector(&self, values: &[f32]) -> Tensor<1> {
            Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &device())
        }
    }

    impl InnerProblem for Quadratic {
        fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, _step: usize) -> Tensor<1> {
            theta.clone() * self.vector(&self.a) * phi.clone()
        }

        fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
            dot(theta.clone(), self.vector(&self.c))
        }
    }

    #[test]
    fn conjugate_gradients_solve_a_positive_definite_system() {
        let problem = Quadratic {
            a: vec![2.0, 4.0],
            c: vec![1.0, 1.0],
        };
        let theta = problem.vector(&[0.5, -1.0]);
        let phi = problem.vector(&[1.0]);
        let method = InverseHessian::ConjugateGradient {
            iterations: 10,
            damping: 0.0,
            tolerance: 1e-6,
        };
        let out = hypergradient(&problem, &theta, &phi, 0, method).expect("positive definite");
        // p = A^-1 c = (0.5, 0.25); d/dphi [phi (A theta) . p] = (A theta) . p = 0.5 - 1.0.
        let value = scalar(&out.hypergrad);
        assert!((value - 0.5).abs() < 1e-5, "hypergradient {value}");
    }

    /// Inner loss 0.5 ||theta - phi||^2, validation loss 0.5 ||theta - c||^2: the best phi is c.
    struct Target {
        c: Vec<f32>,
    }

    impl InnerProblem for Target {
        fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, _step: usize) -> Tensor<1> {
            theta.clone() - phi.clone()
        }

        fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
            let c =
                Tensor::<1>::from_data(TensorData::new(self.c.clone(), [self.c.len()]), &device());
            let d = theta.clone() - c;
            dot(d.clone(), d).mul_scalar(0.5)
        }
    }

    #[test]
    fn online_ift_drives_phi_to_the_validation_optimum() {
        use crate::hypergrad::optim::InnerOptimizer;
        let problem = Target {
            c: vec![1.0, -2.0, 0.5],
        };
        let zeros = Tensor::<1>::zeros([3], &device());
        let sgd = InnerOptimizer::Sgd {
            lr: 0.2,
            momentum: 0.0,
        };
        let outer = InnerOptimizer::Sgd {
            lr: 0.5,
            momentum: 0.0,
        };
        let method = InverseHessian::Neumann {
            terms: 1,
            alpha: 0.5,
        };
        let mut state = OnlineState::new(zeros.clone(), zeros);
        // In two blocks, as `learn` runs it.
        let mut val_losses = learn_online(
            &problem,
            &mut state,
            sgd,
            outer,
            0..150,
            1,
            method,
            &Stop::never(),
        )
        .expect("learn");
        val_losses.extend(
            learn_online(
                &problem,
                &mut state,
                sgd,
                outer,
                150..400,
                1,
                method,
                &Stop::never(),
            )
            .expect("learn"),
        );
        assert_eq!(val_losses.len(), 400);
        let phi = crate::nn::testing::values(&state.phi);
        for (got, want) in phi.iter().zip(&problem.c) {
            assert!((got - want).abs() < 1e-2, "phi {phi:?} vs {:?}", problem.c);
        }
        let (first, last) = (val_losses[0].1, val_losses[val_losses.len() - 1].1);
        assert!(last < 1e-3 * first, "L_V {first} -> {last}");
    }

    #[test]
    fn negative_curvature_is_reported_not_returned() {
        let problem = Quadratic {
            a: vec![1.0, -4.0],
            c: vec![1.0, 1.0],
        };
        let theta = problem.vector(&[0.5, 0.5]);
        let phi = problem.vector(&[1.0]);
        let method = InverseHessian::ConjugateGradient {
            iterations: 10,
            damping: 0.1,
            tolerance: 1e-6,
        };
        let err = hypergradient(&problem, &theta, &phi, 0, method)
            .err()
            .expect("indefinite");
        assert!(
            matches!(err, IftError::NegativeCurvature { iteration: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("negative curvature"));
    }
}
