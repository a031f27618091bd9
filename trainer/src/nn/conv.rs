//! 2-D convolution with bias (square kernel, equal stride and padding on both axes).
//! Backward: the input gradient is a transposed convolution, the weight gradient a convolution
//! of the input with the upstream gradient (or, for small windows or batches, one GEMM of the
//! input's windows); all differentiable.

use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};

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
    ConvGrads {
        dx: need_dx.then(|| input_gradient(x.dims(), w, dy.clone(), geometry)),
        dw: weight_gradient(x, &dy, w.dims()[2], geometry),
        db: bias_gradient(dy),
    }
}

/// d(loss)/dx for an input of shape `input`: the transposed convolution of `dy` with `w`.
pub fn input_gradient(
    input: [usize; 4],
    w: &Tensor<4>,
    dy: Tensor<4>,
    geometry: ConvGeometry,
) -> Tensor<4> {
    let ConvGeometry { stride, padding } = geometry;
    let [_, _, h, width] = input;
    let k = w.dims()[2];
    let [_, _, oh, ow] = dy.dims();
    // The transposed convolution's natural output size, padded out to the input size.
    let extra_h = h + 2 * padding - ((oh - 1) * stride + k);
    let extra_w = width + 2 * padding - ((ow - 1) * stride + k);
    conv_transpose2d(
        dy,
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
}

/// Above this many values per window (c_in k^2) and this many output positions (batch x
/// h' x w'), [`weight_gradient`] convolves; below either, it unfolds and multiplies. Measured on
/// the CPU backend (release, `cargo run --release -p trainer --example layer_costs`): CBR's
/// first layer (c_in k^2 = 25) at batch 8 took 432 us by convolution against 263 us unfolded,
/// at batch 128 17.1 ms against 5.6 ms; its second (288 values per window) 361 against 239 us
/// at batch 8 (128 positions) but 3.6 against 4.4 ms at batch 128 (2,048 positions).
const UNFOLD_MAX_WINDOW: usize = 64;
const UNFOLD_MAX_POSITIONS: usize = 512;

/// The padded input's windows as rows [b h' w', c_in k^2] for an output of `oh` x `ow` (a
/// strided view, copied once; windows past the output's size, where the stride leaves a
/// remainder, are dropped).
fn window_rows(x: &Tensor<4>, k: usize, geometry: ConvGeometry, oh: usize, ow: usize) -> Tensor<2> {
    let ConvGeometry { stride, padding: p } = geometry;
    let [batch, c_in, _, _] = x.dims();
    let padded = x
        .clone()
        .pad([(0, 0), (0, 0), (p, p), (p, p)], PadMode::Constant(0.0));
    // [b, c_in, h'', w+2p, k] then [b, c_in, h'', w'', k, k].
    let windows: Tensor<6> = padded.unfold::<5, _>(2, k, stride).unfold(3, k, stride);
    windows
        .slice([0..batch, 0..c_in, 0..oh, 0..ow, 0..k, 0..k])
        .permute([0, 2, 3, 1, 4, 5])
        .reshape([batch * oh * ow, c_in * k * k])
}

/// d(loss)/dw for kernels of size `k`, by whichever of the two routes suits the shapes (see
/// [`UNFOLD_MAX_WINDOW`]); both are plain tensor ops, so differentiable.
pub fn weight_gradient(
    x: &Tensor<4>,
    dy: &Tensor<4>,
    k: usize,
    geometry: ConvGeometry,
) -> Tensor<4> {
    let [batch, c_in, _, _] = x.dims();
    let [_, _, oh, ow] = dy.dims();
    if c_in * k * k <= UNFOLD_MAX_WINDOW || batch * oh * ow <= UNFOLD_MAX_POSITIONS {
        weight_gradient_unfolded(x, dy, k, geometry)
    } else {
        weight_gradient_convolved(x, dy, k, geometry)
    }
}

/// dw[o, i, kh, kw] = sum_{b, y, x} dy[b, o, y, x] * x_padded[b, i, y*s + kh, x*s + kw]: a
/// convolution of the input (batch as channels) with dy as the kernel, dilated by the stride.
pub fn weight_gradient_convolved(
    x: &Tensor<4>,
    dy: &Tensor<4>,
    k: usize,
    geometry: ConvGeometry,
) -> Tensor<4> {
    let ConvGeometry { stride, padding } = geometry;
    let c_in = x.dims()[1];
    let c_out = dy.dims()[1];
    conv2d(
        x.clone().swap_dims(0, 1),
        dy.clone().swap_dims(0, 1),
        None,
        ConvOptions::new([1, 1], [padding, padding], [stride, stride], 1),
    )
    .slice([0..c_in, 0..c_out, 0..k, 0..k])
    .swap_dims(0, 1)
}

/// The same sum as one GEMM: the padded input's windows (a strided view, copied once into
/// [b h' w', c_in k^2] rows) against dy as [c_out, b h' w'].
pub fn weight_gradient_unfolded(
    x: &Tensor<4>,
    dy: &Tensor<4>,
    k: usize,
    geometry: ConvGeometry,
) -> Tensor<4> {
    let [batch, c_in, _, _] = x.dims();
    let [_, c_out, oh, ow] = dy.dims();
    let rows = window_rows(x, k, geometry, oh, ow);
    dy.clone()
        .permute([1, 0, 2, 3])
        .reshape([c_out, batch * oh * ow])
        .matmul(rows)
        .reshape([c_out, c_in, k, k])
}

fn bias_gradient(dy: Tensor<4>) -> Tensor<1> {
    let [batch, c_out, oh, ow] = dy.dims();
    dy.reshape([batch, c_out, oh * ow])
        .sum_dims(&[0, 2])
        .reshape([c_out])
}

/// Forward-mode derivative of [`forward`]: the change of y when the input moves along `x_dot`
/// (None: the input is a constant) and the parameters along `w_dot`, `b_dot`. The convolution
/// is bilinear in (x, w), so this is two convolutions.
pub fn forward_tangent(
    x: &Tensor<4>,
    x_dot: Option<&Tensor<4>>,
    w: &Tensor<4>,
    w_dot: &Tensor<4>,
    b_dot: &Tensor<1>,
    geometry: ConvGeometry,
) -> Tensor<4> {
    let y_dot = forward(x, w_dot, b_dot, geometry);
    match x_dot {
        Some(x_dot) => {
            let ConvGeometry { stride, padding } = geometry;
            y_dot
                + conv2d(
                    x_dot.clone(),
                    w.clone(),
                    None,
                    ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
                )
        }
        None => y_dot,
    }
}

/// Forward-mode derivative of [`backward`]: the change of its gradients when x, w and dy move
/// along `x_dot` (None: constant), `w_dot` and `dy_dot`. [`backward`] is bilinear in (x, dy)
/// and in (w, dy), so each gradient's tangent is two of the same ops.
#[allow(clippy::too_many_arguments)]
pub fn backward_tangent(
    x: &Tensor<4>,
    x_dot: Option<&Tensor<4>>,
    w: &Tensor<4>,
    w_dot: &Tensor<4>,
    dy: &Tensor<4>,
    dy_dot: Tensor<4>,
    geometry: ConvGeometry,
    need_dx: bool,
) -> ConvGrads {
    let k = w.dims()[2];
    let dx = need_dx.then(|| {
        input_gradient(x.dims(), w, dy_dot.clone(), geometry)
            + input_gradient(x.dims(), w_dot, dy.clone(), geometry)
    });
    let mut dw = weight_gradient(x, &dy_dot, k, geometry);
    if let Some(x_dot) = x_dot {
        dw = dw + weight_gradient(x_dot, dy, k, geometry);
    }
    ConvGrads {
        dx,
        dw,
        db: bias_gradient(dy_dot),
    }
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

    fn flat_grads(g: ConvGrads) -> Tensor<1> {
        let mut parts = vec![flat(g.dw), g.db];
        parts.extend(g.dx.map(flat));
        Tensor::cat(parts, 0)
    }

    #[test]
    fn tangents_match_autodiff() {
        let geometry = ConvGeometry {
            stride: 2,
            padding: 2,
        };
        let (xs, ws, dys) = ([2, 3, 7, 7], [4, 3, 3, 3], [2, 4, 5, 5]);
        let point: Vec<Tensor<1>> = [xs.iter().product(), ws.iter().product(), 4]
            .into_iter()
            .chain([dys.iter().product()])
            .map(|n: usize| random([n]))
            .collect();
        let direction: Vec<Tensor<1>> = point.iter().map(|t| random(t.dims())).collect();
        let x = |t: &[Tensor<1>]| t[0].clone().reshape(xs);
        let w = |t: &[Tensor<1>]| t[1].clone().reshape(ws);
        let dy = |t: &[Tensor<1>]| t[3].clone().reshape(dys);
        let y_dot = forward_tangent(
            &x(&point),
            Some(&x(&direction)),
            &w(&point),
            &w(&direction),
            &direction[2],
            geometry,
        );
        check_tangent(
            &point,
            &direction,
            |t| flat(forward(&x(t), &w(t), &t[2], geometry)),
            &flat(y_dot),
            "forward",
        );
        for (moving_input, need_dx) in [(true, true), (false, true), (true, false)] {
            let mut direction = direction.clone();
            if !moving_input {
                direction[0] = direction[0].clone().zeros_like();
            }
            let grads_dot = backward_tangent(
                &x(&point),
                moving_input.then(|| x(&direction)).as_ref(),
                &w(&point),
                &w(&direction),
                &dy(&point),
                dy(&direction),
                geometry,
                need_dx,
            );
            check_tangent(
                &point,
                &direction,
                |t| flat_grads(backward(&x(t), &w(t), dy(t), geometry, need_dx)),
                &flat_grads(grads_dot),
                "backward",
            );
        }
    }

    #[test]
    fn both_weight_gradient_routes_agree() {
        let geometry = ConvGeometry {
            stride: 2,
            padding: 2,
        };
        for (input, c_out, k) in [
            ([3, 2, 9, 7], 4, 5),
            ([2, 8, 6, 6], 3, 3),
            ([5, 1, 28, 28], 2, 5),
        ] {
            let x = random(input);
            let dy = random(
                forward(
                    &x,
                    &random([c_out, input[1], k, k]),
                    &random([c_out]),
                    geometry,
                )
                .dims(),
            );
            assert_close(
                &weight_gradient_unfolded(&x, &dy, k, geometry),
                &weight_gradient_convolved(&x, &dy, k, geometry),
                1e-5,
                "unfolded against convolved",
            );
        }
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
