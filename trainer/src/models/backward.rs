//! The network's explicit backward pass: d(loss)/d(theta) layer by layer from the values
//! [`Network::forward`] recorded, written in burn ops so it is itself differentiable (what
//! BPTT and IFT differentiate through).

use burn::tensor::Tensor;

use super::network::{Input, Layer, Network, Recorded, Trace};
use crate::nn::{activation, batch_norm, conv, linear, loss, pool};

impl Network {
    /// d/d(theta) of the (optionally weighted) mean cross-entropy of `input` against `targets`:
    /// the student's training gradient, by the explicit backward, so it is differentiable in
    /// theta, the targets and the weights.
    pub fn loss_gradient(
        &self,
        theta: &Tensor<1>,
        input: Input,
        targets: &Tensor<2>,
        weights: Option<&Tensor<1>>,
    ) -> Tensor<1> {
        let (logits, trace) = self.forward(theta, input, None);
        let dlogits = loss::weighted_mean_backward(&logits, targets, weights);
        self.backward(theta, &trace, dlogits)
    }

    /// d(loss)/d(theta) as a flat [len] tensor, given d(loss)/d(logits). Written in burn ops, so
    /// the result is differentiable in theta and in `dlogits`.
    pub fn backward(&self, theta: &Tensor<1>, trace: &Trace, dlogits: Tensor<2>) -> Tensor<1> {
        let mut grads: Vec<Option<Tensor<1>>> = vec![None; self.params.len()];
        let mut put = |index: usize, grad: Tensor<1>| grads[index] = Some(grad);
        let mut d_flat = Some(dlogits);
        let mut d_image: Option<Tensor<4>> = None;
        let first_param_layer = self.first_param_layer();
        for (position, (layer, step)) in self.layers.iter().zip(&trace.steps).enumerate().rev() {
            let need_input_grad = Some(position) != first_param_layer;
            match (layer, step) {
                (Layer::Linear { weight, bias }, Recorded::Linear { input }) => {
                    let dy = d_flat.take().expect("gradient for linear output");
                    let g =
                        linear::backward(input, &self.slice(theta, *weight), dy, need_input_grad);
                    put(*weight, g.dw.flatten(0, 1));
                    put(*bias, g.db);
                    d_flat = g.dx.map(|dx| self.without_extra_inputs(dx));
                }
                (Layer::Flatten, Recorded::Flatten { shape }) => {
                    d_image = d_flat
                        .take()
                        .map(|d| activation::flatten_backward(d, *shape));
                }
                (Layer::Flatten, Recorded::Identity) => {}
                (Layer::Relu, Recorded::Relu2 { input }) => {
                    d_flat = d_flat.take().map(|d| activation::relu_backward(input, d));
                }
                (Layer::Relu, Recorded::Relu4 { input }) => {
                    d_image = d_image.take().map(|d| activation::relu_backward(input, d));
                }
                (Layer::MaxPool { .. }, Recorded::MaxPool { cache }) => {
                    d_image = d_image.take().map(|d| pool::max_pool_backward(cache, d));
                }
                (Layer::BatchNorm { gamma, beta }, Recorded::BatchNorm { cache }) => {
                    let dy = d_image.take().expect("gradient for batch-norm output");
                    let g = batch_norm::backward(cache, &self.slice(theta, *gamma), dy);
                    put(*gamma, g.dgamma);
                    put(*beta, g.dbeta);
                    d_image = Some(g.dx);
                }
                (
                    Layer::Conv {
                        weight,
                        bias,
                        geometry,
                    },
                    Recorded::Conv { input },
                ) => {
                    let dy = d_image.take().expect("gradient for conv output");
                    let g = conv::backward(
                        input,
                        &self.slice(theta, *weight),
                        dy,
                        *geometry,
                        need_input_grad,
                    );
                    put(*weight, g.dw.flatten(0, 3));
                    put(*bias, g.db);
                    d_image = g.dx;
                }
                _ => unreachable!("trace does not match the layers"),
            }
        }
        concat_gradients(grads)
    }

    /// The gradient of a linear layer's input without the columns of the appended extra inputs.
    pub(super) fn without_extra_inputs(&self, dx: Tensor<2>) -> Tensor<2> {
        let [batch, width] = dx.dims();
        if self.extra_inputs > 0 && width > self.extra_inputs && batch > 0 {
            dx.narrow(1, 0, width - self.extra_inputs)
        } else {
            dx
        }
    }

    /// The index of the first layer with parameters: no gradient flows to its input.
    pub(super) fn first_param_layer(&self) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| matches!(l, Layer::Conv { .. } | Layer::Linear { .. }))
    }
}

/// Per-parameter gradients (in theta order) as one flat vector.
pub(super) fn concat_gradients(grads: Vec<Option<Tensor<1>>>) -> Tensor<1> {
    let parts: Vec<Tensor<1>> = grads
        .into_iter()
        .map(|g| g.expect("every parameter gets a gradient"))
        .collect();
    Tensor::cat(parts, 0)
}
