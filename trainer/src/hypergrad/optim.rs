//! Differentiable inner optimisers with PyTorch semantics. A step is a burn expression of
//! (theta, state, gradient), so BPTT can differentiate through it.
//!
//! - SGD with momentum: buf_0 = g_0, buf_k = mu buf_{k-1} + g_k, theta -= lr buf
//!   (dampening 0, no Nesterov; momentum 0 is plain SGD).
//! - Adam: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, bias correction with t = k + 1,
//!   theta -= lr m_hat / (sqrt(v_hat) + eps). Where v_hat = 0 the derivative of the square root
//!   is taken as 0, which is the exact derivative of the update at g = 0.

use burn::tensor::Tensor;
use schema::{LearnConfig, Optimizer};

/// An inner optimiser and its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InnerOptimizer {
    Sgd {
        lr: f64,
        momentum: f64,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

/// Optimiser state after k steps: SGD keeps its momentum buffer, Adam its two moments.
#[derive(Clone)]
pub struct OptState {
    /// Steps taken so far (k).
    pub step: usize,
    /// SGD: the momentum buffer; Adam: the first moment m.
    pub first: Option<Tensor<1>>,
    /// Adam: the second moment v.
    pub second: Option<Tensor<1>>,
}

impl OptState {
    pub fn new() -> Self {
        Self {
            step: 0,
            first: None,
            second: None,
        }
    }

    /// The state's tensors in a fixed order (for storing and differentiating).
    pub fn tensors(&self) -> Vec<Tensor<1>> {
        self.first
            .iter()
            .chain(self.second.iter())
            .cloned()
            .collect()
    }

    /// The same state with its tensors replaced (in [`OptState::tensors`] order).
    pub fn with_tensors(&self, mut tensors: Vec<Tensor<1>>) -> Self {
        let second = self.second.as_ref().and_then(|_| tensors.pop());
        let first = self.first.as_ref().and_then(|_| tensors.pop());
        Self {
            step: self.step,
            first,
            second,
        }
    }

    /// The state without autodiff history.
    pub fn detached(&self) -> Self {
        Self {
            step: self.step,
            first: self.first.clone().map(Tensor::detach),
            second: self.second.clone().map(Tensor::detach),
        }
    }
}

impl Default for OptState {
    fn default() -> Self {
        Self::new()
    }
}

impl InnerOptimizer {
    /// The inner optimiser a learning config asks for.
    pub fn from_config(config: &LearnConfig) -> Self {
        match config.inner_optimizer {
            Optimizer::Sgd => Self::Sgd {
                lr: config.inner_lr,
                momentum: config.momentum,
            },
            Optimizer::Adam => Self::Adam {
                lr: config.inner_lr,
                beta1: config.adam_beta1,
                beta2: config.adam_beta2,
                eps: config.adam_eps,
            },
        }
    }

    /// One step: returns the new theta and state.
    pub fn step(
        &self,
        theta: &Tensor<1>,
        state: &OptState,
        grad: Tensor<1>,
    ) -> (Tensor<1>, OptState) {
        match *self {
            Self::Sgd { lr, momentum } => {
                let buffer = match (&state.first, momentum != 0.0) {
                    (Some(previous), true) => previous.clone().mul_scalar(momentum as f32) + grad,
                    _ => grad,
                };
                let theta = theta.clone() - buffer.clone().mul_scalar(lr as f32);
                let first = (momentum != 0.0).then_some(buffer);
                (
                    theta,
                    OptState {
                        step: state.step + 1,
                        first,
                        second: None,
                    },
                )
            }
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let t = (state.step + 1) as i32;
                let m = match &state.first {
                    Some(m) => {
                        m.clone().mul_scalar(beta1 as f32)
                            + grad.clone().mul_scalar((1.0 - beta1) as f32)
                    }
                    None => grad.clone().mul_scalar((1.0 - beta1) as f32),
                };
                let g2 = grad.clone() * grad;
                let v = match &state.second {
                    Some(v) => {
                        v.clone().mul_scalar(beta2 as f32) + g2.mul_scalar((1.0 - beta2) as f32)
                    }
                    None => g2.mul_scalar((1.0 - beta2) as f32),
                };
                let m_hat = m.clone().div_scalar((1.0 - beta1.powi(t)) as f32);
                let v_hat = v.clone().div_scalar((1.0 - beta2.powi(t)) as f32);
                let denominator = sqrt_zero_grad_at_zero(v_hat).add_scalar(eps as f32);
                let theta = theta.clone() - (m_hat / denominator).mul_scalar(lr as f32);
                (
                    theta,
                    OptState {
                        step: state.step + 1,
                        first: Some(m),
                        second: Some(v),
                    },
                )
            }
        }
    }
}

/// sqrt(x) for x >= 0 whose derivative at x = 0 is 0 instead of infinity.
fn sqrt_zero_grad_at_zero(x: Tensor<1>) -> Tensor<1> {
    let zero = x.clone().equal_elem(0.0);
    // Below the clamp the derivative is 0; the mask makes the value exactly 0 there too.
    x.clamp_min(f32::MIN_POSITIVE).sqrt().mask_fill(zero, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::*;
    use burn::tensor::TensorData;

    fn scalar_tensor(value: f32) -> Tensor<1> {
        Tensor::from_data(TensorData::new(vec![value], [1]), &device())
    }

    fn value(t: &Tensor<1>) -> f32 {
        values(t)[0]
    }

    /// d theta' / d g of Adam's first step, by autodiff.
    fn first_step_jacobian(optimizer: InnerOptimizer, g: f32) -> f32 {
        let grad = scalar_tensor(g).require_grad();
        let (theta, _) = optimizer.step(&scalar_tensor(0.5), &OptState::new(), grad.clone());
        let grads = theta.sum().backward();
        value(&grad.grad(&grads).expect("gradient"))
    }

    #[test]
    fn adam_first_step_jacobian_matches_its_closed_form() {
        let (lr, eps) = (1e-3f64, 1e-8f64);
        let adam = InnerOptimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps,
        };
        // Step 1: m_hat = g, v_hat = g^2, so theta' = theta - lr g / (|g| + eps) and
        // d theta'/d g = -lr eps / (|g| + eps)^2.
        for g in [0.0f64, 1e-30, 1.0] {
            let closed = -lr * eps / (g.abs() + eps).powi(2);
            let autodiff = f64::from(first_step_jacobian(adam, g as f32));
            // f32 cannot tell 1 + 1e-8 from 1, so near g = 1 compare on the scale of lr.
            let tolerance = 1e-4 * closed.abs().max(lr * 1e-2);
            assert!(
                (autodiff - closed).abs() <= tolerance,
                "g = {g}: autodiff {autodiff} vs closed form {closed}"
            );
        }
    }

    #[test]
    fn adam_later_step_jacobian_matches_its_closed_form() {
        let (lr, b1, b2, eps) = (0.01f64, 0.9f64, 0.99f64, 1e-8f64);
        let adam = InnerOptimizer::Adam {
            lr,
            beta1: b1,
            beta2: b2,
            eps,
        };
        let (m0, v0, g) = (0.2f64, 0.05f64, 0.3f64);
        let state = OptState {
            step: 3,
            first: Some(scalar_tensor(m0 as f32)),
            second: Some(scalar_tensor(v0 as f32)),
        };
        let grad = scalar_tensor(g as f32).require_grad();
        let (theta, _) = adam.step(&scalar_tensor(0.5), &state, grad.clone());
        let grads = theta.sum().backward();
        let autodiff = f64::from(value(&grad.grad(&grads).expect("gradient")));
        // t = 4: m = b1 m0 + (1-b1) g, v = b2 v0 + (1-b2) g^2, s = sqrt(v / c2).
        let (c1, c2) = (1.0 - b1.powi(4), 1.0 - b2.powi(4));
        let (m, v) = (b1 * m0 + (1.0 - b1) * g, b2 * v0 + (1.0 - b2) * g * g);
        let s = (v / c2).sqrt();
        let ds_dg = (1.0 - b2) * g / (c2 * s);
        let closed = -lr * ((1.0 - b1) / c1 / (s + eps) - (m / c1) / (s + eps).powi(2) * ds_dg);
        assert!(
            (autodiff - closed).abs() < 1e-4 * closed.abs(),
            "{autodiff} vs {closed}"
        );
    }

    #[test]
    fn sgd_momentum_follows_pytorch() {
        let sgd = InnerOptimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
        };
        let (theta, state) = sgd.step(&scalar_tensor(1.0), &OptState::new(), scalar_tensor(2.0));
        assert!((value(&theta) - 0.8).abs() < 1e-6); // buf_0 = g_0 = 2
        let (theta, _) = sgd.step(&theta, &state, scalar_tensor(1.0));
        assert!((value(&theta) - (0.8 - 0.1 * (0.9 * 2.0 + 1.0))).abs() < 1e-6);
    }
}
