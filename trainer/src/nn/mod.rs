//! Differentiable layers with explicit backward passes.
//!
//! burn's autodiff is first-order only. Each layer here has a forward pass and a backward pass
//! written in burn tensor ops, so the gradient g(theta, phi) a network computes is itself a burn
//! expression: one first-order `backward()` through it gives exact hypergradients, and
//! Hessian-vector products are the backward of <g, v>. Every explicit backward is tested against
//! burn's autodiff. Each layer's `*_tangent` functions are the forward-mode derivatives of its
//! forward and backward, which `crate::models` chains into H v without an autodiff graph; they
//! are tested against autodiff too (`testing::check_tangent`).
//!
//! Tensors may live on an autodiff device or not; the functions do not care.

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub(crate) mod cpu;
pub mod linear;
pub mod loss;
pub mod pool;

pub use burn::tensor::Tensor;

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for comparing explicit backward passes with burn's autodiff.

    use std::cell::RefCell;

    use burn::tensor::{Tensor, TensorData};
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    thread_local! {
        /// Each test runs on its own thread, so each sees the same sequence: tests are
        /// deterministic whatever order they run in.
        static RNG: RefCell<StdRng> = RefCell::new(StdRng::seed_from_u64(7));
    }

    pub fn device() -> burn::tensor::Device {
        burn::tensor::Device::flex().autodiff()
    }

    /// Standard-normal-ish values (sum of uniforms), deterministic per test.
    pub fn random<const D: usize>(shape: [usize; D]) -> Tensor<D> {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = RNG.with(|rng| {
            let mut rng = rng.borrow_mut();
            (0..count)
                .map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 1.7)
                .collect()
        });
        Tensor::from_data(TensorData::new(values, shape), &device())
    }

    /// The same values on the CPU backend without autodiff, where the CPU kernels run.
    pub fn on_cpu<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
        Tensor::from_data(t.to_data(), &burn::tensor::Device::flex())
    }

    /// A fresh leaf that records its gradient.
    pub fn leaf<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
        Tensor::from_data(t.to_data(), &device()).require_grad()
    }

    pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
        t.to_data().try_to_vec::<f32>().expect("f32 tensor")
    }

    /// Checks second-order correctness of an explicit backward pass: `f` maps flat inputs to a
    /// scalar built from the backward's outputs; burn's autodiff of `f` must agree with central
    /// finite differences of `f` along a random direction.
    pub fn check_second_order(shapes: &[usize], f: impl Fn(&[Tensor<1>]) -> Tensor<1>) {
        let inputs: Vec<Tensor<1>> = shapes.iter().map(|&n| random([n])).collect();
        let leaves: Vec<Tensor<1>> = inputs.iter().map(leaf).collect();
        let grads = f(&leaves).backward();
        let direction: Vec<Tensor<1>> = shapes.iter().map(|&n| random([n])).collect();
        let analytic: f32 = leaves
            .iter()
            .zip(&direction)
            // An input the backward does not depend on has no gradient: zero.
            .filter_map(|(l, u)| l.grad(&grads).map(|g| values(&(g * u.clone()).sum())[0]))
            .sum();
        let h = 1e-2;
        let shifted = |sign: f32| -> Vec<Tensor<1>> {
            inputs
                .iter()
                .zip(&direction)
                .map(|(x, u)| x.clone() + u.clone() * (sign * h))
                .collect()
        };
        let numeric = (values(&f(&shifted(1.0)))[0] - values(&f(&shifted(-1.0)))[0]) / (2.0 * h);
        assert!(
            (analytic - numeric).abs() <= 1e-2 * numeric.abs().max(1.0),
            "second order: autodiff {analytic} vs finite differences {numeric}"
        );
    }

    /// Checks a forward-mode derivative against burn's autodiff: `tangent` must be the
    /// directional derivative of `f` (flat inputs to a flat output) at `inputs` along
    /// `directions`. Through a random probe u: <u, tangent> = sum_i <d<u, f>/d input_i,
    /// direction_i>, the right side by one reverse pass.
    pub fn check_tangent(
        inputs: &[Tensor<1>],
        directions: &[Tensor<1>],
        f: impl Fn(&[Tensor<1>]) -> Tensor<1>,
        tangent: &Tensor<1>,
        what: &str,
    ) {
        let leaves: Vec<Tensor<1>> = inputs.iter().map(leaf).collect();
        let output = f(&leaves);
        assert_eq!(output.dims(), tangent.dims(), "{what}: tangent shape");
        let probe = random(output.dims());
        let grads = (output * probe.clone()).sum().backward();
        let expected: f32 = leaves
            .iter()
            .zip(directions)
            .filter_map(|(l, d)| l.grad(&grads).map(|g| values(&(g * d.clone()).sum())[0]))
            .sum();
        let actual = values(&(tangent.clone() * probe).sum())[0];
        assert!(
            (actual - expected).abs() <= 1e-3 * expected.abs().max(1.0),
            "{what}: tangent {actual} vs autodiff {expected}"
        );
    }

    /// A tensor's values as one flat tensor.
    pub fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
        let n: usize = t.dims().iter().product();
        t.reshape([n])
    }

    /// ||actual - expected|| / ||expected|| (L2).
    pub fn relative_error<const D: usize>(actual: &Tensor<D>, expected: &Tensor<D>) -> f32 {
        assert_eq!(actual.dims(), expected.dims(), "shapes");
        let (a, e) = (values(actual), values(expected));
        let diff: f32 = a
            .iter()
            .zip(&e)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt();
        let norm: f32 = e.iter().map(|y| y * y).sum::<f32>().sqrt().max(1e-6);
        diff / norm
    }

    /// Asserts two tensors agree to a relative tolerance (on the L2 norm of the difference).
    pub fn assert_close<const D: usize>(
        actual: &Tensor<D>,
        expected: &Tensor<D>,
        tol: f32,
        what: &str,
    ) {
        let error = relative_error(actual, expected);
        assert!(error <= tol, "{what}: relative error {error} > {tol}");
    }
}
