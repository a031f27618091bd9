//! Max and average pooling (no padding). Backward passes use scatter and a transposed
//! convolution, both differentiable, since burn's own pooling backward ops are not.

use std::sync::Arc;

use burn::tensor::module::{avg_pool2d, conv_transpose2d, max_pool2d_with_indices};
use burn::tensor::ops::{AvgPoolOptions, ConvTransposeOptions, MaxPoolOptions};
use burn::tensor::{Device, IndexingUpdateOp, Int, TensorData};

use super::{Tensor, cpu};

/// What max-pool backward needs: the argmax of each window.
pub struct MaxPoolCache {
    input_shape: [usize; 4],
    output_shape: [usize; 4],
    argmax: Argmax,
}

/// Each window's argmax as a flat index into its input plane, [batch, c, out_h, out_w].
enum Argmax {
    /// From burn's pooling op (any backend, autodiff included); boxed, as a tensor handle is
    /// twenty times the size of the other variant.
    Tensor(Box<Tensor<4, Int>>),
    /// From the CPU kernel: read directly by the CPU backward and tangent, made a tensor only
    /// when burn's ops need it.
    Cpu(Arc<[u32]>),
}

impl MaxPoolCache {
    /// The argmax as an index tensor on `device`.
    fn indices(&self, device: &Device) -> Tensor<4, Int> {
        match &self.argmax {
            Argmax::Tensor(indices) => (**indices).clone(),
            Argmax::Cpu(indices) => {
                let values: Vec<i64> = indices.iter().map(|&i| i64::from(i)).collect();
                Tensor::from_data(TensorData::new(values, self.output_shape), device)
            }
        }
    }

    /// The argmax as the CPU kernels read it, when the forward ran on the CPU kernel.
    fn cpu_indices(&self) -> Option<&[u32]> {
        match &self.argmax {
            Argmax::Cpu(indices) => Some(indices),
            Argmax::Tensor(_) => None,
        }
    }
}

/// Output size of a pool or convolution along one axis.
pub fn out_size(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding - kernel) / stride + 1
}

/// # Shapes
/// x [batch, c, h, w] -> [batch, c, (h-k)/s+1, (w-k)/s+1]
pub fn max_pool(x: &Tensor<4>, kernel: usize, stride: usize) -> (Tensor<4>, MaxPoolCache) {
    let input_shape = x.dims();
    let [b, c, h, w] = input_shape;
    let output_shape = [
        b,
        c,
        out_size(h, kernel, stride, 0),
        out_size(w, kernel, stride, 0),
    ];
    if let Some(values) = cpu::CpuValues::of(x) {
        let (y, argmax) = kernels::max_pool(values.values(), input_shape, kernel, stride);
        let cache = MaxPoolCache {
            input_shape,
            output_shape,
            argmax: Argmax::Cpu(argmax.into()),
        };
        return (cpu::tensor(y, output_shape), cache);
    }
    let mut options = MaxPoolOptions::new([kernel, kernel]);
    options.stride = [stride, stride];
    let (y, indices) = max_pool2d_with_indices(x.clone(), options);
    let cache = MaxPoolCache {
        input_shape,
        output_shape,
        argmax: Argmax::Tensor(Box::new(indices)),
    };
    (y, cache)
}

/// Forward-mode derivative of [`max_pool`] along `x_dot`: each window passes on its argmax's
/// tangent (the backward, [`max_pool_backward`], is linear in dy, so its tangent is itself).
pub fn max_pool_tangent(cache: &MaxPoolCache, x_dot: &Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = cache.input_shape;
    let [_, _, oh, ow] = cache.output_shape;
    if let (Some(indices), Some(x_dot)) = (cache.cpu_indices(), cpu::CpuValues::of(x_dot)) {
        let y_dot = kernels::gather(x_dot.values(), indices, h * w, oh * ow);
        return cpu::tensor(y_dot, cache.output_shape);
    }
    x_dot
        .clone()
        .reshape([b, c, h * w])
        .gather(2, cache.indices(&x_dot.device()).reshape([b, c, oh * ow]))
        .reshape([b, c, oh, ow])
}

/// Backward of [`max_pool`]: each upstream gradient goes to its window's argmax (summed where
/// windows overlap).
pub fn max_pool_backward(cache: &MaxPoolCache, dy: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = cache.input_shape;
    let [_, _, oh, ow] = cache.output_shape;
    if let (Some(indices), Some(dy)) = (cache.cpu_indices(), cpu::CpuValues::of(&dy)) {
        let dx = kernels::scatter_add(dy.values(), indices, h * w, oh * ow);
        return cpu::tensor(dx, cache.input_shape);
    }
    let zeros = Tensor::<3>::zeros([b, c, h * w], &dy.device());
    let indices = cache.indices(&dy.device()).reshape([b, c, oh * ow]);
    zeros
        .scatter(
            2,
            indices,
            dy.reshape([b, c, oh * ow]),
            IndexingUpdateOp::Add,
        )
        .reshape([b, c, h, w])
}

/// The CPU kernels of max pooling, on row-major [batch, c, h, w] values, one plane (one
/// example's channel) at a time.
mod kernels {
    use crate::nn::cpu::{for_each_chunk, for_each_chunk_pair};

    /// Max over each `kernel` x `kernel` window at `stride`, and the window's argmax in its
    /// plane (the last NaN if there is one, as burn and PyTorch do; else the first maximum).
    pub fn max_pool(
        x: &[f32],
        [b, c, h, w]: [usize; 4],
        kernel: usize,
        stride: usize,
    ) -> (Vec<f32>, Vec<u32>) {
        let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
        let mut y = vec![0.0f32; b * c * oh * ow];
        let mut argmax = vec![0u32; y.len()];
        for_each_chunk_pair((&mut y, oh * ow), (&mut argmax, oh * ow), |p, y, argmax| {
            let plane = &x[p * h * w..(p + 1) * h * w];
            for i in 0..oh {
                for j in 0..ow {
                    let first = i * stride * w + j * stride;
                    let (mut best, mut at, mut nan) = (plane[first], first as u32, false);
                    for r in 0..kernel {
                        let row = first + r * w;
                        for (q, &v) in plane[row..row + kernel].iter().enumerate() {
                            // Selects, not branches: which element wins is unpredictable.
                            let take = v > best;
                            best = if take { v } else { best };
                            at = if take { (row + q) as u32 } else { at };
                            nan |= v.is_nan();
                        }
                    }
                    if nan {
                        (best, at) = last_nan(plane, first, w, kernel);
                    }
                    y[i * ow + j] = best;
                    argmax[i * ow + j] = at;
                }
            }
        });
        (y, argmax)
    }

    /// A window's last NaN and its index (a NaN wins a max pool, as in burn and PyTorch).
    fn last_nan(plane: &[f32], first: usize, w: usize, kernel: usize) -> (f32, u32) {
        let mut found = (f32::NAN, first as u32);
        for r in 0..kernel {
            let row = first + r * w;
            for (q, v) in plane[row..row + kernel].iter().enumerate() {
                if v.is_nan() {
                    found = (*v, (row + q) as u32);
                }
            }
        }
        found
    }

    /// out[p, o] = x[p, argmax[p, o]] for planes of `plane_in` inputs and `plane_out` outputs.
    pub fn gather(x: &[f32], argmax: &[u32], plane_in: usize, plane_out: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; argmax.len()];
        for_each_chunk(&mut out, plane_out, |p, out| {
            let plane = &x[p * plane_in..(p + 1) * plane_in];
            for (o, &at) in out
                .iter_mut()
                .zip(&argmax[p * plane_out..(p + 1) * plane_out])
            {
                *o = plane[at as usize];
            }
        });
        out
    }

    /// dx[p, argmax[p, o]] += dy[p, o]: [`gather`]'s transpose.
    pub fn scatter_add(dy: &[f32], argmax: &[u32], plane_in: usize, plane_out: usize) -> Vec<f32> {
        let mut dx = vec![0.0f32; argmax.len() / plane_out * plane_in];
        for_each_chunk(&mut dx, plane_in, |p, dx| {
            let range = p * plane_out..(p + 1) * plane_out;
            for (&g, &at) in dy[range.clone()].iter().zip(&argmax[range]) {
                dx[at as usize] += g;
            }
        });
        dx
    }
}

/// # Shapes
/// x [batch, c, h, w] -> [batch, c, (h-k)/s+1, (w-k)/s+1]
pub fn avg_pool(x: &Tensor<4>, kernel: usize, stride: usize) -> Tensor<4> {
    let mut options = AvgPoolOptions::new([kernel, kernel]);
    options.stride = [stride, stride];
    avg_pool2d(x.clone(), options)
}

/// Backward of [`avg_pool`] to an input of `input_shape`: a transposed depthwise convolution
/// with a constant 1/k^2 kernel.
pub fn avg_pool_backward(
    input_shape: [usize; 4],
    kernel: usize,
    stride: usize,
    dy: Tensor<4>,
) -> Tensor<4> {
    let [_, c, h, w] = input_shape;
    let [_, _, oh, ow] = dy.dims();
    let weight = Tensor::<4>::ones([c, 1, kernel, kernel], &dy.device())
        .div_scalar((kernel * kernel) as f32);
    let pad_h = h - ((oh - 1) * stride + kernel);
    let pad_w = w - ((ow - 1) * stride + kernel);
    conv_transpose2d(
        dy,
        weight,
        None,
        ConvTransposeOptions::new([stride, stride], [0, 0], [pad_h, pad_w], [1, 1], c),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::*;

    /// burn's pooling op and its scatter and gather, on the same CPU tensors the kernels read.
    fn burn_max_pool(x: &Tensor<4>, kernel: usize, stride: usize) -> MaxPoolCache {
        let mut options = MaxPoolOptions::new([kernel, kernel]);
        options.stride = [stride, stride];
        let (y, indices) = max_pool2d_with_indices(x.clone(), options);
        MaxPoolCache {
            input_shape: x.dims(),
            output_shape: y.dims(),
            argmax: Argmax::Tensor(Box::new(indices)),
        }
    }

    #[test]
    fn cpu_kernels_match_burns_ops_with_ties_and_overlapping_windows() {
        for (shape, kernel, stride) in [
            ([2, 3, 7, 7], 3, 2),
            ([3, 2, 8, 6], 2, 2),
            ([1, 2, 5, 9], 3, 1),
        ] {
            // ReLU's zeros make ties, where the first maximum must win in both routes.
            let x = on_cpu(&random(shape).clamp_min(0.0));
            let (y, cache) = max_pool(&x, kernel, stride);
            assert!(cache.cpu_indices().is_some(), "the CPU kernel ran");
            let reference = burn_max_pool(&x, kernel, stride);
            let (mut options, device) = (MaxPoolOptions::new([kernel, kernel]), x.device());
            options.stride = [stride, stride];
            assert_eq!(
                values(&y),
                values(&max_pool2d_with_indices(x.clone(), options).0)
            );
            let argmax = |c: &MaxPoolCache| {
                c.indices(&device)
                    .to_data()
                    .iter::<i64>()
                    .collect::<Vec<_>>()
            };
            assert_eq!(argmax(&cache), argmax(&reference), "argmax");
            let x_dot = on_cpu(&random(shape));
            assert_eq!(
                values(&max_pool_tangent(&cache, &x_dot)),
                values(&max_pool_tangent(&reference, &x_dot)),
                "tangent"
            );
            let dy = on_cpu(&random(y.dims()));
            assert_close(
                &max_pool_backward(&cache, dy.clone()),
                &max_pool_backward(&reference, dy),
                1e-6,
                "backward",
            );
        }
    }

    #[test]
    fn cpu_kernel_lets_the_last_nan_of_a_window_win_as_burn_does() {
        let mut v = values(&random([1, 1, 5, 5]));
        (v[6], v[8], v[12]) = (f32::NAN, f32::NAN, 1e9);
        let x = on_cpu(&Tensor::<1>::from_floats(v.as_slice(), &device()).reshape([1, 1, 5, 5]));
        let (y, cache) = max_pool(&x, 3, 2);
        let reference = burn_max_pool(&x, 3, 2);
        let argmax = |c: &MaxPoolCache| {
            let indices = c.indices(&x.device()).to_data();
            indices.iter::<i64>().collect::<Vec<_>>()
        };
        assert_eq!(argmax(&cache), argmax(&reference));
        let nan: Vec<bool> = values(&y).iter().map(|v| v.is_nan()).collect();
        assert_eq!(nan, [true, true, false, false], "NaN propagates");
    }

    #[test]
    fn cpu_kernels_hand_autodiff_tensors_to_burn() {
        // The forward ran on the CPU kernel, the upstream gradient is tracked: burn's scatter
        // must take it, so the backward stays differentiable.
        let x = on_cpu(&random([2, 3, 7, 7]));
        let (y, cache) = max_pool(&x, 3, 2);
        let dy = leaf(&random(y.dims()));
        let dx = max_pool_backward(&cache, dy.clone());
        let grads = (dx * random(x.dims())).sum().backward();
        assert!(
            dy.grad(&grads).is_some(),
            "the backward is differentiable in dy"
        );
    }

    #[test]
    fn max_pool_backward_matches_autodiff_with_overlapping_windows() {
        let x = random([2, 3, 7, 7]);
        let (y, cache) = max_pool(&x, 3, 2);
        let dy = random(y.dims());
        let xl = leaf(&x);
        let grads = (max_pool(&xl, 3, 2).0 * dy.clone()).sum().backward();
        assert_close(
            &max_pool_backward(&cache, dy),
            &xl.grad(&grads).expect("x"),
            1e-6,
            "dx",
        );
    }

    #[test]
    fn pool_backwards_are_differentiable_in_the_upstream_gradient() {
        // The argmax is piecewise constant in x, so only the upstream gradient varies here.
        let (x, v) = (random([2, 3, 7, 7]), random([2, 3, 7, 7]));
        let (_, cache) = max_pool(&x, 3, 2);
        check_second_order(&[2 * 3 * 3 * 3], |t| {
            let dy = t[0].clone().reshape([2, 3, 3, 3]);
            let dx = max_pool_backward(&cache, dy.clone()) + avg_pool_backward(x.dims(), 3, 2, dy);
            (dx * v.clone()).sum()
        });
    }

    #[test]
    fn avg_pool_backward_matches_autodiff() {
        let x = random([2, 3, 8, 7]);
        let dy = random(avg_pool(&x, 3, 2).dims());
        let xl = leaf(&x);
        let grads = (avg_pool(&xl, 3, 2) * dy.clone()).sum().backward();
        assert_close(
            &avg_pool_backward(x.dims(), 3, 2, dy),
            &xl.grad(&grads).expect("x"),
            1e-5,
            "dx",
        );
    }

    #[test]
    fn max_pool_tangent_matches_autodiff() {
        let shape = [2, 3, 7, 7];
        let (x, x_dot) = (random([2 * 3 * 7 * 7]), random([2 * 3 * 7 * 7]));
        let (_, cache) = max_pool(&x.clone().reshape(shape), 3, 2);
        let tangent = flat(max_pool_tangent(&cache, &x_dot.clone().reshape(shape)));
        check_tangent(
            &[x],
            &[x_dot],
            |t| flat(max_pool(&t[0].clone().reshape(shape), 3, 2).0),
            &tangent,
            "forward",
        );
    }
}
