//! Batch normalisation with batch statistics (the convention inside inner steps and for L_V),
//! over [batch, c, h, w] per channel.

use super::Tensor;

pub const EPSILON: f32 = 1e-5;

/// What the backward pass needs.
pub struct BatchNormCache {
    /// (x - mean) / sqrt(var + eps)
    normalized: Tensor<4>,
    /// 1 / sqrt(var + eps), [1, c, 1, 1]
    inv_std: Tensor<4>,
}

/// # Shapes
/// x [batch, c, h, w], gamma and beta [c] -> [batch, c, h, w]
pub fn forward(x: &Tensor<4>, gamma: &Tensor<1>, beta: &Tensor<1>) -> (Tensor<4>, BatchNormCache) {
    let [_, c, _, _] = x.dims();
    let mean = x.clone().mean_dims(&[0, 2, 3]);
    let centered = x.clone() - mean;
    let var = centered.clone().square().mean_dims(&[0, 2, 3]);
    let inv_std = var.add_scalar(EPSILON).sqrt().recip();
    let normalized = centered * inv_std.clone();
    let y = normalized.clone() * gamma.clone().reshape([1, c, 1, 1])
        + beta.clone().reshape([1, c, 1, 1]);
    (
        y,
        BatchNormCache {
            normalized,
            inv_std,
        },
    )
}

/// Gradients of batch norm.
pub struct BatchNormGrads {
    pub dx: Tensor<4>,
    pub dgamma: Tensor<1>,
    pub dbeta: Tensor<1>,
}

/// Backward of [`forward`]: dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat)).
pub fn backward(cache: &BatchNormCache, gamma: &Tensor<1>, dy: Tensor<4>) -> BatchNormGrads {
    let [n, c, h, w] = dy.dims();
    let count = (n * h * w) as f32;
    let x_hat = cache.normalized.clone();
    // [1, c, 1, 1] sums, shared by the parameter gradients and the means in dx.
    let sum_dy = dy.clone().sum_dims(&[0, 2, 3]);
    let sum_dy_xhat = (dy.clone() * x_hat.clone()).sum_dims(&[0, 2, 3]);
    let dx =
        (dy - sum_dy.clone().div_scalar(count) - x_hat * sum_dy_xhat.clone().div_scalar(count))
            * (cache.inv_std.clone() * gamma.clone().reshape([1, c, 1, 1]));
    BatchNormGrads {
        dx,
        dgamma: sum_dy_xhat.reshape([c]),
        dbeta: sum_dy.reshape([c]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::*;

    #[test]
    fn backward_is_differentiable() {
        let (vx, vg, vb) = (random([4, 3, 2, 2]), random([3]), random([3]));
        check_second_order(&[48, 3, 3, 48], |t| {
            let x = t[0].clone().reshape([4, 3, 2, 2]);
            let dy = t[3].clone().reshape([4, 3, 2, 2]);
            let (_, cache) = forward(&x, &t[1], &t[2]);
            let g = backward(&cache, &t[1], dy);
            (g.dx * vx.clone()).sum() + (g.dgamma * vg.clone()).sum() + (g.dbeta * vb.clone()).sum()
        });
    }

    #[test]
    fn backward_matches_autodiff() {
        let (x, gamma, beta) = (random([4, 3, 5, 5]) * 3.0 + 1.0, random([3]), random([3]));
        let dy = random([4, 3, 5, 5]);
        let (xl, gl, bl) = (leaf(&x), leaf(&gamma), leaf(&beta));
        let grads = (forward(&xl, &gl, &bl).0 * dy.clone()).sum().backward();
        let (_, cache) = forward(&x, &gamma, &beta);
        let explicit = backward(&cache, &gamma, dy);
        assert_close(&explicit.dx, &xl.grad(&grads).expect("x"), 1e-4, "dx");
        assert_close(
            &explicit.dgamma,
            &gl.grad(&grads).expect("gamma"),
            1e-4,
            "dgamma",
        );
        assert_close(
            &explicit.dbeta,
            &bl.grad(&grads).expect("beta"),
            1e-4,
            "dbeta",
        );
    }
}
