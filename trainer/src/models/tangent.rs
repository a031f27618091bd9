//! Forward-over-reverse: the directional derivative of the explicit gradient along a parameter
//! direction v, layer by layer, from each layer's tangent rules (beside its forward and
//! backward in `crate::nn`). With g = dL/dtheta, the tangent of g is H v (H the Hessian of the
//! loss), and the tangent of each example's loss is what a per-example weight's adjoint needs.
//! BPTT's reverse step needs exactly these, H^T a = H a for its adjoint a (H is symmetric), and
//! gets them here without recording an autodiff graph of the forward and backward passes.

use burn::tensor::Tensor;

use super::backward::concat_gradients;
use super::network::{Input, Layer, Network, Recorded, Trace};
use crate::nn::{activation, batch_norm, conv, linear, loss, pool};

/// The derivatives of the explicit gradient g = dL/dtheta along a parameter direction v.
pub struct GradientTangent {
    /// H v.
    pub gradient_dot: Tensor<1>,
    /// Each example's cross-entropy moved along v, [batch] (unweighted, not divided by the
    /// batch size): d/dw_i <g, v> = loss_dot_i / batch for L = mean_i w_i CE_i.
    pub loss_dot: Tensor<1>,
    /// The logits moved along v, [batch, classes].
    pub logits_dot: Tensor<2>,
    /// Where asked for: dL/dinput moved along v, flattened to [batch, features] (what the
    /// adjoint of an input that depends on phi, as a blended image does, needs).
    pub input_gradient_dot: Option<Tensor<2>>,
}

/// Per layer, the tangents of the forward values its backward reads.
enum LayerTangent {
    /// The tangent of the layer's input; None where the input is a constant.
    Conv {
        input_dot: Option<Tensor<4>>,
    },
    BatchNorm {
        tangent: batch_norm::BatchNormTangent,
    },
    /// ReLU, max pool and flatten: their backwards read only values that do not move.
    Fixed,
    Linear {
        input_dot: Option<Tensor<2>>,
    },
}

/// The student's forward pass at one theta and one batch, kept so that tangent passes along
/// several directions (a Hessian-vector product, then a mixed product) share it.
pub struct Linearisation<'a> {
    net: &'a Network,
    theta: Tensor<1>,
    logits: Tensor<2>,
    trace: Trace,
    targets: Tensor<2>,
    weights: Option<Tensor<1>>,
}

impl Linearisation<'_> {
    /// The logits of the batch, [batch, classes].
    pub fn logits(&self) -> &Tensor<2> {
        &self.logits
    }

    /// The gradient's derivatives along `theta_dot`; with `input_gradient`, also the
    /// input gradient's.
    pub fn tangent(&self, theta_dot: &Tensor<1>, input_gradient: bool) -> GradientTangent {
        let net = self.net;
        let (logits_dot, tangents) = net.forward_tangent(&self.theta, theta_dot, &self.trace);
        let weights = self.weights.as_ref();
        let dlogits = loss::weighted_mean_backward(&self.logits, &self.targets, weights);
        let (dlogits_dot, loss_dot) =
            loss::weighted_mean_backward_tangent(&self.logits, &logits_dot, &self.targets, weights);
        let (gradient_dot, input_gradient_dot) = net.backward_tangent(
            &self.theta,
            theta_dot,
            &self.trace,
            &tangents,
            (dlogits, dlogits_dot),
            input_gradient,
        );
        GradientTangent {
            gradient_dot,
            loss_dot,
            logits_dot,
            input_gradient_dot,
        }
    }
}

impl Network {
    /// The forward pass of [`Network::loss_gradient`] (with `extra` appended before the last
    /// layer) for constant inputs, targets and weights, ready for tangent passes.
    pub fn linearise(
        &self,
        theta: &Tensor<1>,
        input: Input,
        extra: Option<&Tensor<2>>,
        targets: &Tensor<2>,
        weights: Option<&Tensor<1>>,
    ) -> Linearisation<'_> {
        let (logits, trace) = self.forward(theta, input, extra);
        Linearisation {
            net: self,
            theta: theta.clone(),
            logits,
            trace,
            targets: targets.clone(),
            weights: weights.cloned(),
        }
    }

    /// For L = mean_i w_i CE_i over `input` (weights `weights`, [batch]): the adjoints of theta
    /// and of the weights through g = dL/dtheta, for g's adjoint `adjoint` = a: (H a,
    /// d<g, a>/dw_i = (CE_i moved along a) / batch), what a weighting student's BPTT reverse
    /// step needs.
    pub fn weight_adjoints(
        &self,
        theta: &Tensor<1>,
        adjoint: &Tensor<1>,
        input: Input,
        targets: &Tensor<2>,
        weights: &Tensor<1>,
    ) -> (Tensor<1>, Tensor<1>) {
        let batch = targets.dims()[0] as f32;
        let tangent =
            self.loss_gradient_tangent(theta, adjoint, input, None, targets, Some(weights));
        (tangent.gradient_dot, tangent.loss_dot.div_scalar(batch))
    }

    /// The derivatives of [`Network::loss_gradient`] along `theta_dot`: one
    /// [`Linearisation::tangent`].
    pub fn loss_gradient_tangent(
        &self,
        theta: &Tensor<1>,
        theta_dot: &Tensor<1>,
        input: Input,
        extra: Option<&Tensor<2>>,
        targets: &Tensor<2>,
        weights: Option<&Tensor<1>>,
    ) -> GradientTangent {
        self.linearise(theta, input, extra, targets, weights)
            .tangent(theta_dot, false)
    }

    /// The logits' tangent along `theta_dot` (the input held), and the per-layer tangents the
    /// backward's tangent reads.
    fn forward_tangent(
        &self,
        theta: &Tensor<1>,
        theta_dot: &Tensor<1>,
        trace: &Trace,
    ) -> (Tensor<2>, Vec<LayerTangent>) {
        let mut image_dot: Option<Tensor<4>> = None;
        let mut flat_dot: Option<Tensor<2>> = None;
        let mut tangents = Vec::with_capacity(self.layers.len());
        for (layer, step) in self.layers.iter().zip(&trace.steps) {
            match (layer, step) {
                (
                    Layer::Conv {
                        weight,
                        bias,
                        geometry,
                    },
                    Recorded::Conv { input },
                ) => {
                    let y_dot = conv::forward_tangent(
                        input,
                        image_dot.as_ref(),
                        &self.slice(theta, *weight),
                        &self.slice(theta_dot, *weight),
                        &self.slice(theta_dot, *bias),
                        *geometry,
                    );
                    tangents.push(LayerTangent::Conv {
                        input_dot: image_dot.replace(y_dot),
                    });
                }
                (Layer::BatchNorm { gamma, beta }, Recorded::BatchNorm { cache }) => {
                    let (y_dot, tangent) = batch_norm::forward_tangent(
                        cache,
                        image_dot.as_ref(),
                        &self.slice(theta, *gamma),
                        &self.slice(theta_dot, *gamma),
                        &self.slice(theta_dot, *beta),
                    );
                    image_dot = Some(y_dot);
                    tangents.push(LayerTangent::BatchNorm { tangent });
                }
                (Layer::Relu, Recorded::Relu4 { input }) => {
                    image_dot = image_dot.map(|d| activation::relu_backward(input, d));
                    tangents.push(LayerTangent::Fixed);
                }
                (Layer::Relu, Recorded::Relu2 { input }) => {
                    flat_dot = flat_dot.map(|d| activation::relu_backward(input, d));
                    tangents.push(LayerTangent::Fixed);
                }
                (Layer::MaxPool { .. }, Recorded::MaxPool { cache }) => {
                    image_dot = image_dot.map(|d| pool::max_pool_tangent(cache, &d));
                    tangents.push(LayerTangent::Fixed);
                }
                (Layer::Flatten, Recorded::Flatten { .. }) => {
                    flat_dot = image_dot.take().map(|d| activation::flatten(&d));
                    tangents.push(LayerTangent::Fixed);
                }
                (Layer::Flatten, Recorded::Identity) => tangents.push(LayerTangent::Fixed),
                (Layer::Linear { weight, bias }, Recorded::Linear { input }) => {
                    // Appended extra inputs are constants: their tangent is zero.
                    let input_dot = flat_dot.take().map(|d| {
                        let [batch, width] = input.dims();
                        let moving = d.dims()[1];
                        if moving < width {
                            let zeros = Tensor::zeros([batch, width - moving], &d.device());
                            Tensor::cat(vec![d, zeros], 1)
                        } else {
                            d
                        }
                    });
                    flat_dot = Some(linear::forward_tangent(
                        input,
                        input_dot.as_ref(),
                        &self.slice(theta, *weight),
                        &self.slice(theta_dot, *weight),
                        &self.slice(theta_dot, *bias),
                    ));
                    tangents.push(LayerTangent::Linear { input_dot });
                }
                _ => unreachable!("trace does not match the layers"),
            }
        }
        let logits_dot = flat_dot.expect("a network ends in a linear layer");
        (logits_dot, tangents)
    }

    /// The tangent of [`Network::backward`], given the logits' gradient and its tangent; with
    /// `input_gradient`, also the input gradient's tangent, flattened. Of the backward itself
    /// only the chain of input gradients is computed (each layer's tangent reads its upstream
    /// gradient), not the parameter gradients.
    fn backward_tangent(
        &self,
        theta: &Tensor<1>,
        theta_dot: &Tensor<1>,
        trace: &Trace,
        tangents: &[LayerTangent],
        (dlogits, dlogits_dot): (Tensor<2>, Tensor<2>),
        input_gradient: bool,
    ) -> (Tensor<1>, Option<Tensor<2>>) {
        let mut grads_dot: Vec<Option<Tensor<1>>> = vec![None; self.params.len()];
        let mut put = |index: usize, grad_dot: Tensor<1>| grads_dot[index] = Some(grad_dot);
        let mut d_flat = Some((dlogits, dlogits_dot));
        let mut d_image: Option<(Tensor<4>, Tensor<4>)> = None;
        let first_param_layer = self.first_param_layer();
        let layers = self.layers.iter().zip(&trace.steps).zip(tangents);
        for (position, ((layer, step), tangent)) in layers.enumerate().rev() {
            let need_input_grad = input_gradient || Some(position) != first_param_layer;
            match (layer, step, tangent) {
                (
                    Layer::Linear { weight, bias },
                    Recorded::Linear { input },
                    LayerTangent::Linear { input_dot },
                ) => {
                    let (dy, dy_dot) = d_flat.take().expect("gradient for linear output");
                    let (w, w_dot) = (self.slice(theta, *weight), self.slice(theta_dot, *weight));
                    let g_dot = linear::backward_tangent(
                        input,
                        input_dot.as_ref(),
                        &w,
                        &w_dot,
                        &dy,
                        dy_dot,
                        need_input_grad,
                    );
                    let dx = need_input_grad.then(|| linear::input_gradient(&w, &dy));
                    put(*weight, g_dot.dw.flatten(0, 1));
                    put(*bias, g_dot.db);
                    d_flat = dx.zip(g_dot.dx).map(|(dx, dx_dot)| {
                        (
                            self.without_extra_inputs(dx),
                            self.without_extra_inputs(dx_dot),
                        )
                    });
                }
                (Layer::Flatten, Recorded::Flatten { shape }, _) => {
                    d_image = d_flat.take().map(|(d, d_dot)| {
                        (
                            activation::flatten_backward(d, *shape),
                            activation::flatten_backward(d_dot, *shape),
                        )
                    });
                }
                (Layer::Flatten, Recorded::Identity, _) => {}
                (Layer::Relu, Recorded::Relu2 { input }, _) => {
                    d_flat = d_flat.take().map(|(d, d_dot)| {
                        (
                            activation::relu_backward(input, d),
                            activation::relu_backward(input, d_dot),
                        )
                    });
                }
                (Layer::Relu, Recorded::Relu4 { input }, _) => {
                    d_image = d_image.take().map(|(d, d_dot)| {
                        (
                            activation::relu_backward(input, d),
                            activation::relu_backward(input, d_dot),
                        )
                    });
                }
                (Layer::MaxPool { .. }, Recorded::MaxPool { cache }, _) => {
                    d_image = d_image.take().map(|(d, d_dot)| {
                        (
                            pool::max_pool_backward(cache, d),
                            pool::max_pool_backward(cache, d_dot),
                        )
                    });
                }
                (
                    Layer::BatchNorm { gamma, beta },
                    Recorded::BatchNorm { cache },
                    LayerTangent::BatchNorm { tangent },
                ) => {
                    let (dy, dy_dot) = d_image.take().expect("gradient for batch-norm output");
                    let gamma_value = self.slice(theta, *gamma);
                    let g_dot = batch_norm::backward_tangent(
                        cache,
                        tangent,
                        &gamma_value,
                        &self.slice(theta_dot, *gamma),
                        &dy,
                        dy_dot,
                    );
                    let g = batch_norm::backward(cache, &gamma_value, dy);
                    put(*gamma, g_dot.dgamma);
                    put(*beta, g_dot.dbeta);
                    d_image = Some((g.dx, g_dot.dx));
                }
                (
                    Layer::Conv {
                        weight,
                        bias,
                        geometry,
                    },
                    Recorded::Conv { input },
                    LayerTangent::Conv { input_dot },
                ) => {
                    let (dy, dy_dot) = d_image.take().expect("gradient for conv output");
                    let (w, w_dot) = (self.slice(theta, *weight), self.slice(theta_dot, *weight));
                    let g_dot = conv::backward_tangent(
                        input,
                        input_dot.as_ref(),
                        &w,
                        &w_dot,
                        &dy,
                        dy_dot,
                        *geometry,
                        need_input_grad,
                    );
                    let dx = need_input_grad
                        .then(|| conv::input_gradient(input.dims(), &w, dy, *geometry));
                    put(*weight, g_dot.dw.flatten(0, 3));
                    put(*bias, g_dot.db);
                    d_image = dx.zip(g_dot.dx);
                }
                _ => unreachable!("trace does not match the layers"),
            }
        }
        let input_gradient_dot = if input_gradient {
            let image = d_image.map(|(_, d_dot)| activation::flatten(&d_dot));
            image.or(d_flat.map(|(_, d_dot)| d_dot))
        } else {
            None
        };
        (concat_gradients(grads_dot), input_gradient_dot)
    }
}
