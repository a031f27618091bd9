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

/// d(loss)/dw for kernels of size `k`.
fn weight_gradient(x: &Tensor<4>, dy: &Tensor<4>, k: usize, geometry: ConvGeometry) -> Tensor<4> {
    let ConvGeometry { stride, padding } = geometry;
    let c_in = x.dims()[1];
    let c_out = dy.dims()[1];
    // dw[o, i, kh, kw] = sum_{b, y, x} dy[b, o, y, x] * x_padded[b, i, y*s + kh, x*s + kw]: a
    // convolution of the input (batch as channels) with dy as the kernel, dilated by the stride.
    conv2d(
        x.clone().swap_dims(0, 1),
        dy.clone().swap_dims(0, 1),
        None,
        ConvOptions::new([1, 1], [padding, padding], [stride, stride], 1),
    )
    .slice([0..c_in, 0..c_out, 0..k, 0..k])
    .swap_dims(0, 1)
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
