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
    let dx = need_dx.then(|| input_gradient(w, &dy));
    let dw = dy.clone().transpose().matmul(x.clone());
    let db = dy.sum_dim(0).squeeze_dim(0);
    LinearGrads { dx, dw, db }
}

/// d(loss)/dx alone: dy W.
pub fn input_gradient(w: &Tensor<2>, dy: &Tensor<2>) -> Tensor<2> {
    dy.clone().matmul(w.clone())
}

/// Forward-mode derivative of [`forward`] along `x_dot` (None: the input is a constant), `w_dot`
/// and `b_dot`.
pub fn forward_tangent(
    x: &Tensor<2>,
    x_dot: Option<&Tensor<2>>,
    w: &Tensor<2>,
    w_dot: &Tensor<2>,
    b_dot: &Tensor<1>,
) -> Tensor<2> {
    let y_dot = forward(x, w_dot, b_dot);
    match x_dot {
        Some(x_dot) => y_dot + x_dot.clone().matmul(w.clone().transpose()),
        None => y_dot,
    }
}

/// Forward-mode derivative of [`backward`] when x, w and dy move along `x_dot` (None:
/// constant), `w_dot` and `dy_dot` (each gradient is bilinear in its two factors).
pub fn backward_tangent(
    x: &Tensor<2>,
    x_dot: Option<&Tensor<2>>,
    w: &Tensor<2>,
    w_dot: &Tensor<2>,
    dy: &Tensor<2>,
    dy_dot: Tensor<2>,
    need_dx: bool,
) -> LinearGrads {
    let dx = need_dx.then(|| dy_dot.clone().matmul(w.clone()) + dy.clone().matmul(w_dot.clone()));
    let mut dw = dy_dot.clone().transpose().matmul(x.clone());
    if let Some(x_dot) = x_dot {
        dw = dw + dy.clone().transpose().matmul(x_dot.clone());
    }
    let db = dy_dot.sum_dim(0).squeeze_dim(0);
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

    #[test]
    fn tangents_match_autodiff() {
        let point = [
            random([5 * 4]),
            random([3 * 4]),
            random([3]),
            random([5 * 3]),
        ];
        let direction: Vec<Tensor<1>> = point.iter().map(|t| random(t.dims())).collect();
        let x = |t: &[Tensor<1>]| t[0].clone().reshape([5, 4]);
        let w = |t: &[Tensor<1>]| t[1].clone().reshape([3, 4]);
        let dy = |t: &[Tensor<1>]| t[3].clone().reshape([5, 3]);
        let y_dot = forward_tangent(
            &x(&point),
            Some(&x(&direction)),
            &w(&point),
            &w(&direction),
            &direction[2],
        );
        check_tangent(
            &point,
            &direction,
            |t| flat(forward(&x(t), &w(t), &t[2])),
            &flat(y_dot),
            "forward",
        );
        let flat_grads =
            |g: LinearGrads| Tensor::cat(vec![flat(g.dx.expect("dx")), flat(g.dw), g.db], 0);
        let grads_dot = backward_tangent(
            &x(&point),
            Some(&x(&direction)),
            &w(&point),
            &w(&direction),
            &dy(&point),
            dy(&direction),
            true,
        );
        check_tangent(
            &point,
            &direction,
            |t| flat_grads(backward(&x(t), &w(t), dy(t), true)),
            &flat_grads(grads_dot),
            "backward",
        );
    }
}
