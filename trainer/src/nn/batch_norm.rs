//! Batch normalisation with batch statistics (the convention inside inner steps and for L_V),
//! over [batch, c, h, w] per channel.

use super::{Tensor, cpu};

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
    if let (Some(xv), Some([g, b])) = (cpu::CpuValues::of(x), cpu::all_of([gamma, beta])) {
        let shape = x.dims();
        let out = kernels::forward(xv.values(), shape, g.values(), b.values());
        return (
            cpu::tensor(out.y, shape),
            BatchNormCache {
                normalized: cpu::tensor(out.normalized, shape),
                inv_std: cpu::tensor(out.inv_std, [1, c, 1, 1]),
            },
        );
    }
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
    if let (Some([x_hat, dyv]), Some([inv_std, g])) = (
        cpu::all_of([&cache.normalized, &dy]),
        cpu::all_of([&cache.inv_std.clone().reshape([c]), gamma]),
    ) {
        let shape = dy.dims();
        let (dx, dgamma, dbeta) = kernels::backward(
            x_hat.values(),
            inv_std.values(),
            g.values(),
            dyv.values(),
            shape,
        );
        return BatchNormGrads {
            dx: cpu::tensor(dx, shape),
            dgamma: cpu::tensor(dgamma, [c]),
            dbeta: cpu::tensor(dbeta, [c]),
        };
    }
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
    // None: x_dot is not on the CPU backend; Some(None): there is no x_dot.
    let x_dot_values = match x_dot {
        None => Some(None),
        Some(t) => cpu::CpuValues::of(t).map(Some),
    };
    if let (Some(x_dot_values), Some([xh]), Some([inv_std, g, g_dot, b_dot])) = (
        x_dot_values,
        cpu::all_of([&x_hat]),
        cpu::all_of([
            &cache.inv_std.clone().reshape([c]),
            gamma,
            gamma_dot,
            beta_dot,
        ]),
    ) {
        let shape = x_hat.dims();
        let out = kernels::forward_tangent(
            xh.values(),
            inv_std.values(),
            x_dot_values.as_ref().map(cpu::CpuValues::values),
            [g.values(), g_dot.values(), b_dot.values()],
            shape,
        );
        return (
            cpu::tensor(out.y, shape),
            BatchNormTangent {
                normalized_dot: cpu::tensor(out.normalized, shape),
                inv_std_dot: cpu::tensor(out.inv_std, [1, c, 1, 1]),
            },
        );
    }
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
    if let (Some([xh, xh_dot, dyv, dyv_dot]), Some([inv_std, inv_std_dot, g, g_dot])) = (
        cpu::all_of([&cache.normalized, &tangent.normalized_dot, dy, &dy_dot]),
        cpu::all_of([
            &cache.inv_std.clone().reshape([c]),
            &tangent.inv_std_dot.clone().reshape([c]),
            gamma,
            gamma_dot,
        ]),
    ) {
        let shape = dy.dims();
        let (dx, dgamma, dbeta) = kernels::backward_tangent(
            [xh.values(), xh_dot.values()],
            [inv_std.values(), inv_std_dot.values()],
            [g.values(), g_dot.values()],
            [dyv.values(), dyv_dot.values()],
            shape,
        );
        return BatchNormGrads {
            dx: cpu::tensor(dx, shape),
            dgamma: cpu::tensor(dgamma, [c]),
            dbeta: cpu::tensor(dbeta, [c]),
        };
    }
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

/// The CPU kernels: each layer function in a few passes over row-major [n, c, h, w] values
/// instead of a dozen burn ops. A plane is one example's channel (h * w contiguous values);
/// per-channel sums add planes' sums in f64.
mod kernels {
    use rayon::prelude::*;

    use super::EPSILON;
    use crate::nn::cpu::{PARALLEL_MIN_ELEMENTS, for_each_chunk, for_each_chunk_pair};

    /// A forward's (or its tangent's) three outputs.
    pub struct Outputs {
        pub y: Vec<f32>,
        pub normalized: Vec<f32>,
        /// [c]
        pub inv_std: Vec<f32>,
    }

    /// Where the planes of a [n, c, h, w] tensor lie.
    #[derive(Clone, Copy)]
    struct Planes {
        n: usize,
        c: usize,
        len: usize,
    }

    impl Planes {
        fn of([n, c, h, w]: [usize; 4]) -> Self {
            Self { n, c, len: h * w }
        }

        /// Plane `p` of `values`.
        fn get(self, values: &[f32], p: usize) -> &[f32] {
            &values[p * self.len..(p + 1) * self.len]
        }

        /// Elements per channel.
        fn count(self) -> f32 {
            (self.n * self.len) as f32
        }

        /// Each channel's K sums, from `plane_sums(p)`, plane p's K sums; channels run in
        /// parallel when the tensor is large.
        fn channel_sums<const K: usize>(
            self,
            plane_sums: impl Fn(usize) -> [f32; K] + Sync,
        ) -> Vec<[f32; K]> {
            let sum_channel = |ch: usize| {
                let mut acc = [0.0f64; K];
                for b in 0..self.n {
                    for (a, t) in acc.iter_mut().zip(plane_sums(b * self.c + ch)) {
                        *a += f64::from(t);
                    }
                }
                acc.map(|a| a as f32)
            };
            if self.n * self.c * self.len < PARALLEL_MIN_ELEMENTS {
                (0..self.c).map(sum_channel).collect()
            } else {
                (0..self.c).into_par_iter().map(sum_channel).collect()
            }
        }

        /// A tensor of this shape, written plane by plane by `kernel(p, channel, out)`.
        fn map(self, kernel: impl Fn(usize, usize, &mut [f32]) + Send + Sync) -> Vec<f32> {
            let mut out = vec![0.0f32; self.n * self.c * self.len];
            for_each_chunk(&mut out, self.len, |p, out| kernel(p, p % self.c, out));
            out
        }

        /// Two tensors of this shape, written together.
        fn map2(
            self,
            kernel: impl Fn(usize, usize, &mut [f32], &mut [f32]) + Send + Sync,
        ) -> (Vec<f32>, Vec<f32>) {
            let size = self.n * self.c * self.len;
            let (mut a, mut b) = (vec![0.0f32; size], vec![0.0f32; size]);
            for_each_chunk_pair((&mut a, self.len), (&mut b, self.len), |p, a, b| {
                kernel(p, p % self.c, a, b)
            });
            (a, b)
        }
    }

    /// sum_i f(a_i, b_i) in eight lanes, so the compiler can vectorise the additions.
    fn sum_of(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
        let mut lanes = [0.0f32; 8];
        let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = a_chunks
            .remainder()
            .iter()
            .zip(b_chunks.remainder())
            .map(|(&x, &y)| f(x, y))
            .sum();
        for (x, y) in a_chunks.zip(b_chunks) {
            for k in 0..8 {
                lanes[k] += f(x[k], y[k]);
            }
        }
        lanes.iter().sum::<f32>() + tail
    }

    pub fn forward(x: &[f32], shape: [usize; 4], gamma: &[f32], beta: &[f32]) -> Outputs {
        let planes = Planes::of(shape);
        let count = planes.count();
        let mean: Vec<f32> = planes
            .channel_sums(|p| {
                let v = planes.get(x, p);
                [sum_of(v, v, |a, _| a)]
            })
            .iter()
            .map(|[s]| s / count)
            .collect();
        let inv_std: Vec<f32> = planes
            .channel_sums(|p| {
                let (v, m) = (planes.get(x, p), mean[p % planes.c]);
                [sum_of(v, v, |a, _| (a - m) * (a - m))]
            })
            .iter()
            .map(|[s]| 1.0 / (s / count + EPSILON).sqrt())
            .collect();
        let (y, normalized) = planes.map2(|p, ch, y, x_hat| {
            let (m, r, g, b) = (mean[ch], inv_std[ch], gamma[ch], beta[ch]);
            for ((y, x_hat), &x) in y.iter_mut().zip(x_hat.iter_mut()).zip(planes.get(x, p)) {
                *x_hat = (x - m) * r;
                *y = *x_hat * g + b;
            }
        });
        Outputs {
            y,
            normalized,
            inv_std,
        }
    }

    /// (dx, dgamma, dbeta)
    pub fn backward(
        x_hat: &[f32],
        inv_std: &[f32],
        gamma: &[f32],
        dy: &[f32],
        shape: [usize; 4],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let planes = Planes::of(shape);
        let count = planes.count();
        let sums = planes.channel_sums(|p| {
            let (dy, x_hat) = (planes.get(dy, p), planes.get(x_hat, p));
            [sum_of(dy, dy, |a, _| a), sum_of(dy, x_hat, |a, b| a * b)]
        });
        let dx = planes.map(|p, ch, dx| {
            let [sum_dy, sum_dy_xhat] = sums[ch];
            let (mean_dy, mean_dy_xhat) = (sum_dy / count, sum_dy_xhat / count);
            let scale = inv_std[ch] * gamma[ch];
            let inputs = planes.get(dy, p).iter().zip(planes.get(x_hat, p));
            for (dx, (&dy, &x_hat)) in dx.iter_mut().zip(inputs) {
                *dx = (dy - mean_dy - x_hat * mean_dy_xhat) * scale;
            }
        });
        let (dbeta, dgamma) = sums.iter().map(|[a, b]| (*a, *b)).unzip();
        (dx, dgamma, dbeta)
    }

    /// The tangent of [`forward`] along `x_dot` (None: zero) and `[gamma, gamma_dot,
    /// beta_dot]`'s last two: y_dot, the normalized input's tangent and inv_std's.
    pub fn forward_tangent(
        x_hat: &[f32],
        inv_std: &[f32],
        x_dot: Option<&[f32]>,
        [gamma, gamma_dot, beta_dot]: [&[f32]; 3],
        shape: [usize; 4],
    ) -> Outputs {
        let planes = Planes::of(shape);
        let count = planes.count();
        let Some(x_dot) = x_dot else {
            let y = planes.map(|p, ch, y| {
                for (y, &x_hat) in y.iter_mut().zip(planes.get(x_hat, p)) {
                    *y = x_hat * gamma_dot[ch] + beta_dot[ch];
                }
            });
            return Outputs {
                y,
                normalized: vec![0.0; x_hat.len()],
                inv_std: vec![0.0; inv_std.len()],
            };
        };
        let sums = planes.channel_sums(|p| {
            let (x_dot, x_hat) = (planes.get(x_dot, p), planes.get(x_hat, p));
            [
                sum_of(x_dot, x_dot, |a, _| a),
                sum_of(x_hat, x_dot, |a, b| a * b),
            ]
        });
        let (y, normalized) = planes.map2(|p, ch, y, normalized_dot| {
            let [sum_dot, sum_spread] = sums[ch];
            let (mean_dot, spread, r) = (sum_dot / count, sum_spread / count, inv_std[ch]);
            let (g, g_dot, b_dot) = (gamma[ch], gamma_dot[ch], beta_dot[ch]);
            let inputs = planes.get(x_dot, p).iter().zip(planes.get(x_hat, p));
            for ((y, n_dot), (&x_dot, &x_hat)) in y.iter_mut().zip(normalized_dot).zip(inputs) {
                *n_dot = (x_dot - mean_dot - x_hat * spread) * r;
                *y = x_hat * g_dot + *n_dot * g + b_dot;
            }
        });
        let inv_std_dot = sums
            .iter()
            .zip(inv_std)
            .map(|([_, spread], r)| -(r * r) * spread / count)
            .collect();
        Outputs {
            y,
            normalized,
            inv_std: inv_std_dot,
        }
    }

    /// The tangent of [`backward`]: each pair is (value, tangent).
    pub fn backward_tangent(
        [x_hat, x_hat_dot]: [&[f32]; 2],
        [inv_std, inv_std_dot]: [&[f32]; 2],
        [gamma, gamma_dot]: [&[f32]; 2],
        [dy, dy_dot]: [&[f32]; 2],
        shape: [usize; 4],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let planes = Planes::of(shape);
        let count = planes.count();
        let sums = planes.channel_sums(|p| {
            let (dy, dy_dot) = (planes.get(dy, p), planes.get(dy_dot, p));
            let (x_hat, x_hat_dot) = (planes.get(x_hat, p), planes.get(x_hat_dot, p));
            [
                sum_of(dy, dy, |a, _| a),
                sum_of(dy, x_hat, |a, b| a * b),
                sum_of(dy_dot, dy_dot, |a, _| a),
                sum_of(dy_dot, x_hat, |a, b| a * b) + sum_of(dy, x_hat_dot, |a, b| a * b),
            ]
        });
        let dx = planes.map(|p, ch, dx| {
            let [sum_dy, sum_dy_xhat, sum_dy_dot, sum_dy_xhat_dot] = sums[ch];
            let (mean_dy, mean_dy_xhat) = (sum_dy / count, sum_dy_xhat / count);
            let (mean_dy_dot, mean_dy_xhat_dot) = (sum_dy_dot / count, sum_dy_xhat_dot / count);
            let scale = inv_std[ch] * gamma[ch];
            let scale_dot = inv_std_dot[ch] * gamma[ch] + inv_std[ch] * gamma_dot[ch];
            let values = planes.get(dy, p).iter().zip(planes.get(x_hat, p));
            let tangents = planes.get(dy_dot, p).iter().zip(planes.get(x_hat_dot, p));
            for (dx, ((&dy, &x_hat), (&dy_dot, &x_hat_dot))) in
                dx.iter_mut().zip(values.zip(tangents))
            {
                let centered = dy - mean_dy - x_hat * mean_dy_xhat;
                let centered_dot =
                    dy_dot - mean_dy_dot - x_hat_dot * mean_dy_xhat - x_hat * mean_dy_xhat_dot;
                *dx = centered * scale_dot + centered_dot * scale;
            }
        });
        let (dbeta, dgamma) = sums.iter().map(|[_, _, a, b]| (*a, *b)).unzip();
        (dx, dgamma, dbeta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::*;

    #[test]
    fn cpu_kernels_match_burns_ops() {
        // Values on the autodiff device take burn's ops; their copies on the CPU backend take
        // the kernels. Batch 40 crosses the kernels' threshold for running in parallel.
        for shape in [[4, 3, 5, 5], [40, 8, 11, 11]] {
            let [_, c, _, _] = shape;
            let (x, gamma, beta) = (random(shape) * 3.0 + 1.0, random([c]), random([c]));
            let (x_dot, gamma_dot, beta_dot) = (random(shape), random([c]), random([c]));
            let (dy, dy_dot) = (random(shape), random(shape));
            let (y, cache) = forward(&x, &gamma, &beta);
            let (y_cpu, cache_cpu) = forward(&on_cpu(&x), &on_cpu(&gamma), &on_cpu(&beta));
            assert!(cpu::CpuValues::of(&y_cpu).is_some(), "the CPU kernel ran");
            assert_close(&y_cpu, &y, 1e-5, "y");
            assert_close(&cache_cpu.inv_std, &cache.inv_std, 1e-5, "inv_std");
            let same = |a: BatchNormGrads, b: BatchNormGrads, what: &str| {
                assert_close(&a.dx, &b.dx, 1e-4, &format!("{what} dx"));
                assert_close(&a.dgamma, &b.dgamma, 1e-4, &format!("{what} dgamma"));
                assert_close(&a.dbeta, &b.dbeta, 1e-4, &format!("{what} dbeta"));
            };
            same(
                backward(&cache_cpu, &on_cpu(&gamma), on_cpu(&dy)),
                backward(&cache, &gamma, dy.clone()),
                "backward",
            );
            for x_dot in [None, Some(&x_dot)] {
                let (y_dot, tangent) =
                    forward_tangent(&cache, x_dot, &gamma, &gamma_dot, &beta_dot);
                let (y_dot_cpu, tangent_cpu) = forward_tangent(
                    &cache_cpu,
                    x_dot.map(on_cpu).as_ref(),
                    &on_cpu(&gamma),
                    &on_cpu(&gamma_dot),
                    &on_cpu(&beta_dot),
                );
                assert_close(&y_dot_cpu, &y_dot, 1e-4, "y_dot");
                same(
                    backward_tangent(
                        &cache_cpu,
                        &tangent_cpu,
                        &on_cpu(&gamma),
                        &on_cpu(&gamma_dot),
                        &on_cpu(&dy),
                        on_cpu(&dy_dot),
                    ),
                    backward_tangent(&cache, &tangent, &gamma, &gamma_dot, &dy, dy_dot.clone()),
                    "backward tangent",
                );
            }
        }
    }

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
