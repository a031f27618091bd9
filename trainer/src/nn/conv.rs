//! 2-D convolution with bias (square kernel, equal stride and padding on both axes).
//! Backward: the input gradient is a transposed convolution, the weight gradient a convolution
//! of the input with the upstream gradient; both differentiable.

use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

use super::Tensor;

/// Stride and padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: usize,
    pub padding: usize,
}

/// # Shapes
/// x [batch, c_in, h, w], w [c_out, c_in, k, k], b [c_out] -> [batch, c_out, h', w']
pub fn forward(x: &Tensor<4>, w: &Tensor<4>, b: &Tensor<1>, geometry: ConvGeometry) -> Tensor<4> {
    let ConvGeometry { stride, padding } = geometry;
    conv2d(
        x.clone(),
        w.clone(),
        Some(b.clone()),
        ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
    )
}

/// Gradients of a convolution.
pub struct ConvGrads {
    pub dx: Option<Tensor<4>>,
    pub dw: Tensor<4>,
    pub db: Tensor<1>,
}

/// Backward of [`forward`] for the upstream gradient `dy` [batch, c_out, h', w'].
pub fn backward(
    x: &Tensor<4>,
    w: &Tensor<4>,
    dy: Tensor<4>,
    geometry: ConvGeometry,
    need_dx: bool,
) -> ConvGrads {
    let ConvGeometry { stride, padding } = geometry;
    let [batch, _, h, width] = x.dims();
    let [c_out, c_in, k, _] = w.dims();
    let [_, _, oh, ow] = dy.dims();
    let dx = need_dx.then(|| {
        // The transposed convolution's natural output size, padded out to the input size.
        let extra_h = h + 2 * padding - ((oh - 1) * stride + k);
        let extra_w = width + 2 * padding - ((ow - 1) * stride + k);
        conv_transpose2d(
            dy.clone(),
            w.clone(),
            None,
            ConvTransposeOptions::new(
                [stride, stride],
                [padding, padding],
                [extra_h, extra_w],
                [1, 1],
                1,
            ),
        )
    });
    // dw[o, i, kh, kw] = sum_{b, y, x} dy[b, o, y, x] * x_padded[b, i, y*s + kh, x*s + kw]: a
    // convolution of the input (batch as channels) with dy as the kernel, dilated by the stride.
    let dw = conv2d(
        x.clone().swap_dims(0, 1),
        dy.clone().swap_dims(0, 1),
        None,
        ConvOptions::new([1, 1], [padding, padding], [stride, stride], 1),
    )
    .slice([0..c_in, 0..c_out, 0..k, 0..k])
    .swap_dims(0, 1);
    let dy_flat = dy.reshape([batch, c_out, oh * ow]);
    let db = dy_flat.sum_dims(&[0, 2]).reshape([c_out]);
    ConvGrads { dx, dw, db }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::*;

    fn check(input: [usize; 4], c_out: usize, k: usize, geometry: ConvGeometry) {
        let x = random(input);
        let w = random([c_out, input[1], k, k]);
        let b = random([c_out]);
        let dy = random(forward(&x, &w, &b, geometry).dims());
        let (xl, wl, bl) = (leaf(&x), leaf(&w), leaf(&b));
        let grads = (forward(&xl, &wl, &bl, geometry) * dy.clone())
            .sum()
            .backward();
        let explicit = backward(&x, &w, dy, geometry, true);
        assert_close(
            &explicit.dx.expect("dx"),
            &xl.grad(&grads).expect("x"),
            1e-4,
            "dx",
        );
        assert_close(&explicit.dw, &wl.grad(&grads).expect("w"), 1e-4, "dw");
        assert_close(&explicit.db, &bl.grad(&grads).expect("b"), 1e-4, "db");
    }

    /// Second order: autodiff through the explicit backward agrees with finite differences.
    #[test]
    fn backward_is_differentiable() {
        let geometry = ConvGeometry {
            stride: 2,
            padding: 2,
        };
        let (vx, vw, vb) = (random([2, 3, 6, 6]), random([4, 3, 3, 3]), random([4]));
        check_second_order(&[2 * 3 * 6 * 6, 4 * 3 * 3 * 3, 2 * 4 * 4 * 4], |t| {
            let x = t[0].clone().reshape([2, 3, 6, 6]);
            let w = t[1].clone().reshape([4, 3, 3, 3]);
            let dy = t[2].clone().reshape([2, 4, 4, 4]);
            let g = backward(&x, &w, dy, geometry, true);
            (g.dx.expect("dx") * vx.clone()).sum()
                + (g.dw * vw.clone()).sum()
                + (g.db * vb.clone()).sum()
        });
    }

    #[test]
    fn backward_matches_autodiff_for_cbr_geometries() {
        // CBR's layers on 28x28 and on maps where the stride does not divide evenly.
        check(
            [2, 2, 28, 28],
            4,
            5,
            ConvGeometry {
                stride: 2,
                padding: 2,
            },
        );
        check(
            [2, 3, 6, 6],
            5,
            3,
            ConvGeometry {
                stride: 2,
                padding: 2,
            },
        );
        check(
            [2, 3, 7, 5],
            2,
            3,
            ConvGeometry {
                stride: 2,
                padding: 2,
            },
        );
        check(
            [1, 2, 5, 5],
            3,
            3,
            ConvGeometry {
                stride: 1,
                padding: 0,
            },
        );
    }
}
