//! Fully connected layer: y = x W^T + b, W stored [out, in] as in PyTorch.

use super::Tensor;

/// # Shapes
/// x [batch, in], w [out, in], b [out] -> [batch, out]
pub fn forward(x: &Tensor<2>, w: &Tensor<2>, b: &Tensor<1>) -> Tensor<2> {
    x.clone().matmul(w.clone().transpose()) + b.clone().unsqueeze_dim(0)
}

/// Gradients of a linear layer.
pub struct LinearGrads {
    /// Gradient for the input, when asked for.
    pub dx: Option<Tensor<2>>,
    pub dw: Tensor<2>,
    pub db: Tensor<1>,
}

/// Backward of [`forward`] for the upstream gradient `dy` [batch, out].
pub fn backward(x: &Tensor<2>, w: &Tensor<2>, dy: Tensor<2>, need_dx: bool) -> LinearGrads {
    let dx = need_dx.then(|| dy.clone().matmul(w.clone()));
    let dw = dy.clone().transpose().matmul(x.clone());
    let db = dy.sum_dim(0).squeeze_dim(0);
    LinearGrads { dx, dw, db }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::*;

    #[test]
    fn backward_matches_autodiff() {
        let (x, w, b, dy) = (random([5, 4]), random([3, 4]), random([3]), random([5, 3]));
        let (xl, wl, bl) = (leaf(&x), leaf(&w), leaf(&b));
        let grads = (forward(&xl, &wl, &bl) * dy.clone()).sum().backward();
        let explicit = backward(&x, &w, dy, true);
        assert_close(
            &explicit.dx.expect("dx"),
            &xl.grad(&grads).expect("x"),
            1e-5,
            "dx",
        );
        assert_close(&explicit.dw, &wl.grad(&grads).expect("w"), 1e-5, "dw");
        assert_close(&explicit.db, &bl.grad(&grads).expect("b"), 1e-5, "db");
    }
}
