//! Algorithm 2: implicit differentiation at the current theta.
//!
//! hypergradient = -(d/d phi)[ g(theta, phi) . p ] with p ~ H^{-1} grad_theta L_V held constant,
//! H the Hessian of the inner loss. p comes from a truncated Neumann series,
//! p = alpha sum_{j=0..J} (I - alpha H)^j grad_theta L_V (J = 0 gives alpha * grad), or from
//! conjugate gradients on (H + damping I) p = grad_theta L_V, which stops with an error on
//! negative curvature instead of returning garbage. Hessian-vector products are exact: the
//! backward of <g(theta), v> through the explicit backward passes.

use burn::tensor::Tensor;

use super::{InnerProblem, dot, scalar, validation_gradient};

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
}

/// The result of one IFT hypergradient.
pub struct IftOutput {
    pub val_loss: f32,
    pub hypergrad: Tensor<1>,
}

/// H v: the Hessian of the inner loss (at inner step `step`) times `v`, exactly.
pub fn hessian_vector_product(
    problem: &dyn InnerProblem,
    theta: &Tensor<1>,
    phi: &Tensor<1>,
    step: usize,
    v: &Tensor<1>,
) -> Tensor<1> {
    let leaf = theta.clone().detach().require_grad();
    let grad = problem.inner_gradient(&leaf, &phi.clone().detach(), step);
    let grads = dot(grad, v.clone().detach()).backward();
    leaf.grad(&grads)
        .unwrap_or_else(|| Tensor::zeros(theta.dims(), &theta.device()))
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
    let hvp = |v: &Tensor<1>| hessian_vector_product(problem, theta, phi, step, v);
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
    let phi_leaf = phi.clone().detach().require_grad();
    let grad = problem.inner_gradient(&theta.clone().detach(), &phi_leaf, step);
    let grads = dot(grad, p.detach()).backward();
    let hypergrad = phi_leaf
        .grad(&grads)
        .map(Tensor::neg)
        .unwrap_or_else(|| Tensor::zeros(phi.dims(), &phi.device()));
    if !scalar(&hypergrad.clone().abs().sum()).is_finite() {
        return Err(IftError::NotFinite);
    }
    Ok(IftOutput {
        val_loss,
        hypergrad,
    })
}

/// Online implicit differentiation: the student trains for `steps` inner steps and phi takes
/// an outer step after every `every` of them (the paper's code: one Neumann term, a hyper-step
/// after each student step).
#[derive(Debug, Clone, Copy)]
pub struct OnlineSchedule {
    pub steps: usize,
    pub every: usize,
    pub method: InverseHessian,
}

/// The outcome of [`learn_online`].
pub struct OnlineOutcome {
    pub phi: Tensor<1>,
    pub theta: Tensor<1>,
    /// (inner step, L_V) at each hyper-step.
    pub val_losses: Vec<(usize, f32)>,
}

/// Trains a student from `theta0` while learning phi by IFT hyper-steps; `on_hyper_step` sees
/// each (inner step, L_V) as it happens and may stop early by returning false.
pub fn learn_online(
    problem: &dyn InnerProblem,
    theta0: &Tensor<1>,
    phi0: &Tensor<1>,
    inner: super::optim::InnerOptimizer,
    outer: super::optim::InnerOptimizer,
    schedule: OnlineSchedule,
    on_hyper_step: &mut dyn FnMut(usize, f32) -> bool,
) -> Result<OnlineOutcome, IftError> {
    use super::optim::OptState;
    let every = schedule.every.max(1);
    let (mut theta, mut phi) = (theta0.clone().detach(), phi0.clone().detach());
    let (mut inner_state, mut outer_state) = (OptState::new(), OptState::new());
    let mut val_losses = Vec::new();
    for step in 0..schedule.steps {
        let grad = problem.inner_gradient(&theta, &phi, step);
        let (next, state) = inner.step(&theta, &inner_state, grad);
        theta = next.detach();
        inner_state = state.detached();
        if (step + 1) % every == 0 {
            let out = hypergradient(problem, &theta, &phi, step, schedule.method)?;
            let (next, state) = outer.step(&phi, &outer_state, out.hypergrad);
            phi = next.detach();
            outer_state = state.detached();
            val_losses.push((step, out.val_loss));
            if !on_hyper_step(step, out.val_loss) {
                break;
            }
        }
    }
    Ok(OnlineOutcome {
        phi,
        theta,
        val_losses,
    })
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
        let schedule = OnlineSchedule {
            steps: 400,
            every: 1,
            method: InverseHessian::Neumann {
                terms: 1,
                alpha: 0.5,
            },
        };
        let sgd = InnerOptimizer::Sgd {
            lr: 0.2,
            momentum: 0.0,
        };
        let outer = InnerOptimizer::Sgd {
            lr: 0.5,
            momentum: 0.0,
        };
        let mut seen = 0;
        let out = learn_online(
            &problem,
            &zeros,
            &zeros,
            sgd,
            outer,
            schedule,
            &mut |_, _| {
                seen += 1;
                true
            },
        )
        .expect("learn");
        assert_eq!(seen, 400);
        let phi = crate::nn::testing::values(&out.phi);
        for (got, want) in phi.iter().zip(&problem.c) {
            assert!((got - want).abs() < 1e-2, "phi {phi:?} vs {:?}", problem.c);
        }
        let (first, last) = (
            out.val_losses[0].1,
            out.val_losses[out.val_losses.len() - 1].1,
        );
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
