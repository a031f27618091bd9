//! 2-D convolution with bias (square kernel, equal stride and padding on both axes).
//! Backward: the input gradient is a transposed convolution, the weight gradient a convolution
//! of the input with the upstream gradient (or, for small windows or batches, one GEMM of the
//! input's windows); all differentiable.

use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};

use super::{Tensor, cpu};

/// Stride and padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: usize,
    pub padding: usize,
}

/// # Shapes
/// x [batch, c_in, h, w], w [c_out, c_in, k, k], b [c_out] -> [batch, c_out, h', w']
pub fn forward(x: &Tensor<4>, w: &Tensor<4>, b: &Tensor<1>, geometry: ConvGeometry) -> Tensor<4> {
    convolve(x, w, Some(b), geometry)
}

/// [`forward`] with an optional bias.
fn convolve(
    x: &Tensor<4>,
    w: &Tensor<4>,
    b: Option<&Tensor<1>>,
    geometry: ConvGeometry,
) -> Tensor<4> {
    let ConvGeometry { stride, padding } = geometry;
    let all_on_cpu = cpu::all_of([w]).is_some() && b.is_none_or(|b| cpu::all_of([b]).is_some());
    if let (Some(xv), true) = (cpu::CpuValues::of(x), all_on_cpu) {
        // The input's windows as columns, a row of ones for the bias, and one batched GEMM
        // against [w | b]: three ops instead of burn's convolution (docs/engine.md).
        let [batch, c_in, h, width] = x.dims();
        let [c_out, _, k, _] = w.dims();
        let (oh, ow) = (
            super::pool::out_size(h, k, stride, padding),
            super::pool::out_size(width, k, stride, padding),
        );
        let window = c_in * k * k;
        let columns =
            kernels::windows(xv.values(), x.dims(), k, geometry, kernels::Layout::Columns);
        let bias = match b {
            Some(b) => b.clone().reshape([c_out, 1]),
            None => Tensor::zeros([c_out, 1], &w.device()),
        };
        let weights = Tensor::cat(vec![w.clone().reshape([c_out, window]), bias], 1);
        return weights
            .reshape([1, c_out, window + 1])
            .matmul(cpu::tensor(columns, [batch, window + 1, oh * ow]))
            .reshape([batch, c_out, oh, ow]);
    }
    conv2d(
        x.clone(),
        w.clone(),
        b.cloned(),
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
/// h' x w'), [`weight_gradient`] convolves; below either, it unfolds and multiplies. Measured
/// with burn's own unfold on the CPU backend (release, `cargo run --release -p trainer --example layer_costs`): CBR's first
/// layer (c_in k^2 = 25) at batch 8 took 432 us by convolution against 263 us unfolded, at batch
/// 128 17.1 ms against 5.6 ms; its second (288 values per window) 361 against 239 us at batch 8
/// (128 positions) but 3.6 against 4.4 ms at batch 128 (2,048 positions). With the windows
/// kernel the two routes measured within noise of each other at batch 128 (docs/engine.md), so
/// the choice stands.
const UNFOLD_MAX_WINDOW: usize = 64;
const UNFOLD_MAX_POSITIONS: usize = 512;

/// The padded input's windows as rows [b h' w', c_in k^2] for an output of `oh` x `ow` (a
/// strided view, copied once; windows past the output's size, where the stride leaves a
/// remainder, are dropped).
fn window_rows(
    x: &Tensor<4>,
    k: usize,
    geometry: ConvGeometry,
    (oh, ow): (usize, usize),
    on_cpu: bool,
) -> Tensor<2> {
    let ConvGeometry { stride, padding: p } = geometry;
    let [batch, c_in, h, w] = x.dims();
    let natural = (
        super::pool::out_size(h, k, stride, p),
        super::pool::out_size(w, k, stride, p),
    );
    if let (Some(xv), true) = (cpu::CpuValues::of(x), natural == (oh, ow) && on_cpu) {
        let rows = kernels::windows(xv.values(), x.dims(), k, geometry, kernels::Layout::Rows);
        return cpu::tensor(rows, [batch * oh * ow, c_in * k * k]);
    }
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
    // The windows kernel's rows live on the CPU backend: only for a dy there too.
    let rows = window_rows(x, k, geometry, (oh, ow), cpu::all_of([dy]).is_some());
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
        Some(x_dot) => y_dot + convolve(x_dot, w, None, geometry),
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

/// The CPU kernel of the convolutions: the padded input's k x k windows copied out (im2col),
/// for a GEMM to multiply.
mod kernels {
    use super::ConvGeometry;
    use crate::nn::cpu::for_each_chunk;

    /// How [`windows`] lays out one example's windows.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Layout {
        /// [positions, c_in k^2] per example: the rows the weight gradient multiplies.
        Rows,
        /// [c_in k^2 + 1, positions] per example, the last row all ones (for the bias): the
        /// columns the forward multiplies.
        Columns,
    }

    /// Every window of `x` [batch, c_in, h, w] (zero outside the input) for the output
    /// positions of `geometry`, example after example, in `layout`.
    pub fn windows(
        x: &[f32],
        [batch, c_in, h, w]: [usize; 4],
        k: usize,
        ConvGeometry { stride, padding }: ConvGeometry,
        layout: Layout,
    ) -> Vec<f32> {
        let oh = (h + 2 * padding - k) / stride + 1;
        let ow = (w + 2 * padding - k) / stride + 1;
        let (window, positions) = (c_in * k * k, oh * ow);
        // The input coordinate of window offset `r` at output `i`, if inside `0..size`.
        let inside = |i: usize, r: usize, size: usize| {
            (i * stride + r)
                .checked_sub(padding)
                .filter(|&at| at < size)
        };
        // The outputs j whose window offset q falls inside a row of w values.
        let columns_inside = |q: usize| {
            let first = (0..ow).find(|&j| inside(j, q, w).is_some()).unwrap_or(ow);
            let end = (first..ow)
                .find(|&j| inside(j, q, w).is_none())
                .unwrap_or(ow);
            first..end
        };
        let plane_len = h * w;
        match layout {
            Layout::Columns => {
                let mut out = vec![0.0f32; batch * (window + 1) * positions];
                for_each_chunk(&mut out, (window + 1) * positions, |b, out| {
                    let example = &x[b * c_in * plane_len..(b + 1) * c_in * plane_len];
                    for c in 0..c_in {
                        let plane = &example[c * plane_len..(c + 1) * plane_len];
                        for r in 0..k {
                            for q in 0..k {
                                let js = columns_inside(q);
                                let row = &mut out[(c * k * k + r * k + q) * positions..];
                                for i in 0..oh {
                                    let Some(y) = inside(i, r, h) else { continue };
                                    let source = &plane[y * w..(y + 1) * w];
                                    for j in js.clone() {
                                        row[i * ow + j] = source[j * stride + q - padding];
                                    }
                                }
                            }
                        }
                    }
                    out[window * positions..].fill(1.0);
                });
                out
            }
            Layout::Rows => {
                let mut out = vec![0.0f32; batch * positions * window];
                for_each_chunk(&mut out, positions * window, |b, out| {
                    let example = &x[b * c_in * plane_len..(b + 1) * c_in * plane_len];
                    for i in 0..oh {
                        for j in 0..ow {
                            // The window's columns inside the input, as offsets q.
                            let q_first = (0..k).find(|&q| inside(j, q, w).is_some());
                            let Some(q_first) = q_first else { continue };
                            let q_end = (q_first..k)
                                .find(|&q| inside(j, q, w).is_none())
                                .unwrap_or(k);
                            let x_first = j * stride + q_first - padding;
                            let row = &mut out[(i * ow + j) * window..(i * ow + j + 1) * window];
                            for c in 0..c_in {
                                let plane = &example[c * plane_len..(c + 1) * plane_len];
                                for r in 0..k {
                                    let Some(y) = inside(i, r, h) else { continue };
                                    let start = c * k * k + r * k;
                                    row[start + q_first..start + q_end].copy_from_slice(
                                        &plane[y * w + x_first..y * w + x_first + q_end - q_first],
                                    );
                                }
                            }
                        }
                    }
                });
                out
            }
        }
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

    #[test]
    fn cpu_kernels_match_burns_convolution() {
        // Tensors on the autodiff device take burn's ops; their copies on the CPU backend take
        // the windows kernel. Batch 24 of the last case crosses the parallel threshold.
        for (input, c_out, k, stride, padding) in [
            ([2, 3, 7, 6], 4, 3, 2, 2),
            ([3, 1, 9, 9], 5, 5, 2, 2),
            ([2, 2, 5, 5], 3, 3, 1, 0),
            ([24, 4, 12, 12], 6, 3, 1, 1),
        ] {
            let geometry = ConvGeometry { stride, padding };
            let (x, w, b) = (
                random(input),
                random([c_out, input[1], k, k]),
                random([c_out]),
            );
            let y = forward(&on_cpu(&x), &on_cpu(&w), &on_cpu(&b), geometry);
            assert!(cpu::CpuValues::of(&y).is_some(), "the CPU kernel ran");
            assert_close(&y, &forward(&x, &w, &b, geometry), 1e-5, "forward");
            let dy = random(y.dims());
            assert_close(
                &weight_gradient_unfolded(&on_cpu(&x), &on_cpu(&dy), k, geometry),
                &weight_gradient_unfolded(&x, &dy, k, geometry),
                1e-5,
                "weight gradient",
            );
        }
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
