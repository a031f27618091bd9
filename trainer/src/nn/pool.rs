//! Max and average pooling (no padding). Backward passes use scatter and a transposed
//! convolution, both differentiable, since burn's own pooling backward ops are not.

use burn::tensor::module::{avg_pool2d, conv_transpose2d, max_pool2d_with_indices};
use burn::tensor::ops::{AvgPoolOptions, ConvTransposeOptions, MaxPoolOptions};
use burn::tensor::{IndexingUpdateOp, Int};

use super::Tensor;

/// What max-pool backward needs: the argmax of each window.
pub struct MaxPoolCache {
    input_shape: [usize; 4],
    /// [batch, c, out_h, out_w], flat indices into each input plane.
    indices: Tensor<4, Int>,
}

/// Output size of a pool or convolution along one axis.
pub fn out_size(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding - kernel) / stride + 1
}

/// # Shapes
/// x [batch, c, h, w] -> [batch, c, (h-k)/s+1, (w-k)/s+1]
pub fn max_pool(x: &Tensor<4>, kernel: usize, stride: usize) -> (Tensor<4>, MaxPoolCache) {
    let mut options = MaxPoolOptions::new([kernel, kernel]);
    options.stride = [stride, stride];
    let (y, indices) = max_pool2d_with_indices(x.clone(), options);
    let cache = MaxPoolCache {
        input_shape: x.dims(),
        indices,
    };
    (y, cache)
}

/// Forward-mode derivative of [`max_pool`] along `x_dot`: each window passes on its argmax's
/// tangent (the backward, [`max_pool_backward`], is linear in dy, so its tangent is itself).
pub fn max_pool_tangent(cache: &MaxPoolCache, x_dot: &Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = cache.input_shape;
    let [_, _, oh, ow] = cache.indices.dims();
    x_dot
        .clone()
        .reshape([b, c, h * w])
        .gather(2, cache.indices.clone().reshape([b, c, oh * ow]))
        .reshape([b, c, oh, ow])
}

/// Backward of [`max_pool`]: each upstream gradient goes to its window's argmax (summed where
/// windows overlap).
pub fn max_pool_backward(cache: &MaxPoolCache, dy: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = cache.input_shape;
    let [_, _, oh, ow] = dy.dims();
    let zeros = Tensor::<3>::zeros([b, c, h * w], &dy.device());
    let indices = cache.indices.clone().reshape([b, c, oh * ow]);
    zeros
        .scatter(
            2,
            indices,
            dy.reshape([b, c, oh * ow]),
            IndexingUpdateOp::Add,
        )
        .reshape([b, c, h, w])
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
