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

/// The tangents of the forward's intermediates that [`backward_tangent`] needs.
pub struct BatchNormTangent {
    /// The tangent of the normalized input.
    normalized_dot: Tensor<4>,
    /// The tangent of 1 / sqrt(var + eps), [1, c, 1, 1].
    inv_std_dot: Tensor<4>,
}

/// Forward-mode derivative of [`forward`] (whose values `cache` holds) along `x_dot` (None: the
/// input is a constant), `gamma_dot` and `beta_dot`. With r = 1 / sqrt(var + eps): the tangent of the normalized
/// input is r (x' - mean(x') - x_hat mean(x_hat x')), and r' = -r^2 mean(x_hat x').
pub fn forward_tangent(
    cache: &BatchNormCache,
    x_dot: Option<&Tensor<4>>,
    gamma: &Tensor<1>,
    gamma_dot: &Tensor<1>,
    beta_dot: &Tensor<1>,
) -> (Tensor<4>, BatchNormTangent) {
    let x_hat = cache.normalized.clone();
    let [_, c, _, _] = x_hat.dims();
    let x_dot = x_dot.cloned().unwrap_or_else(|| x_hat.zeros_like());
    let inv_std = cache.inv_std.clone();
    let mean_dot = x_dot.clone().mean_dims(&[0, 2, 3]);
    let spread = (x_hat.clone() * x_dot.clone()).mean_dims(&[0, 2, 3]);
    let normalized_dot =
        (x_dot.clone() - mean_dot - x_hat.clone() * spread.clone()) * inv_std.clone();
    let inv_std_dot = (inv_std.clone() * inv_std).neg() * spread;
    let y_dot = x_hat * gamma_dot.clone().reshape([1, c, 1, 1])
        + normalized_dot.clone() * gamma.clone().reshape([1, c, 1, 1])
        + beta_dot.clone().reshape([1, c, 1, 1]);
    (
        y_dot,
        BatchNormTangent {
            normalized_dot,
            inv_std_dot,
        },
    )
}

/// Forward-mode derivative of [`backward`] when the forward's input moves as `tangent` says
/// and gamma and dy move along `gamma_dot` and `dy_dot`.
pub fn backward_tangent(
    cache: &BatchNormCache,
    tangent: &BatchNormTangent,
    gamma: &Tensor<1>,
    gamma_dot: &Tensor<1>,
    dy: &Tensor<4>,
    dy_dot: Tensor<4>,
) -> BatchNormGrads {
    let [n, c, h, w] = dy.dims();
    let count = (n * h * w) as f32;
    let x_hat = cache.normalized.clone();
    let x_hat_dot = tangent.normalized_dot.clone();
    let mean_dy_xhat = (dy.clone() * x_hat.clone())
        .sum_dims(&[0, 2, 3])
        .div_scalar(count);
    let centered = dy.clone()
        - dy.clone().sum_dims(&[0, 2, 3]).div_scalar(count)
        - x_hat.clone() * mean_dy_xhat.clone();
    let sum_dy_dot = dy_dot.clone().sum_dims(&[0, 2, 3]);
    let sum_dy_xhat_dot =
        (dy_dot.clone() * x_hat.clone() + dy.clone() * x_hat_dot.clone()).sum_dims(&[0, 2, 3]);
    let centered_dot = dy_dot
        - sum_dy_dot.clone().div_scalar(count)
        - x_hat_dot * mean_dy_xhat
        - x_hat * sum_dy_xhat_dot.clone().div_scalar(count);
    let gamma = gamma.clone().reshape([1, c, 1, 1]);
    let scale = cache.inv_std.clone() * gamma.clone();
    let scale_dot = tangent.inv_std_dot.clone() * gamma
        + cache.inv_std.clone() * gamma_dot.clone().reshape([1, c, 1, 1]);
    BatchNormGrads {
        dx: centered * scale_dot + centered_dot * scale,
        dgamma: sum_dy_xhat_dot.reshape([c]),
        dbeta: sum_dy_dot.reshape([c]),
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

    #[test]
    fn tangents_match_autodiff() {
        let shape = [4, 3, 5, 5];
        let n = 4 * 3 * 5 * 5;
        let point = [
            random([n]) * 3.0 + 1.0,
            random([3]),
            random([3]),
            random([n]),
        ];
        let direction: Vec<Tensor<1>> = point.iter().map(|t| random(t.dims())).collect();
        let x = |t: &[Tensor<1>]| t[0].clone().reshape(shape);
        let dy = |t: &[Tensor<1>]| t[3].clone().reshape(shape);
        let (_, cache) = forward(&x(&point), &point[1], &point[2]);
        let (y_dot, tangent) = forward_tangent(
            &cache,
            Some(&x(&direction)),
            &point[1],
            &direction[1],
            &direction[2],
        );
        check_tangent(
            &point,
            &direction,
            |t| flat(forward(&x(t), &t[1], &t[2]).0),
            &flat(y_dot),
            "forward",
        );
        let flat_grads = |g: BatchNormGrads| Tensor::cat(vec![flat(g.dx), g.dgamma, g.dbeta], 0);
        let grads_dot = backward_tangent(
            &cache,
            &tangent,
            &point[1],
            &direction[1],
            &dy(&point),
            dy(&direction),
        );
        check_tangent(
            &point,
            &direction,
            |t| {
                let (_, cache) = forward(&x(t), &t[1], &t[2]);
                flat_grads(backward(&cache, &t[1], dy(t)))
            },
            &flat_grads(grads_dot),
            "backward",
        );
    }
}
