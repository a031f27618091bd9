//! A sequential network over one flat parameter vector.
//!
//! All parameters live in one 1-D tensor theta, in the order and shapes that
//! `schema::arch::NetSpec::parameter_shapes` gives; layers read their slices by offset. One
//! flat vector makes optimiser steps, dot products and trajectory storage single tensor ops.

use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use schema::ImageShape;
use schema::arch::{CBR_CHANNELS, NetSpec};

use crate::nn::{activation, batch_norm, conv, linear, pool};

/// A network's input: images, or already-flat feature vectors (MLPs only).
#[derive(Clone)]
pub enum Input {
    /// [batch, c, h, w]
    Image(Tensor<4>),
    /// [batch, features]
    Flat(Tensor<2>),
}

impl Input {
    fn batch(&self) -> usize {
        match self {
            Self::Image(x) => x.dims()[0],
            Self::Flat(x) => x.dims()[0],
        }
    }
}

/// One layer; parameter fields are indices into [`Network::params`].
#[derive(Debug, Clone)]
pub(super) enum Layer {
    Conv {
        weight: usize,
        bias: usize,
        geometry: conv::ConvGeometry,
    },
    BatchNorm {
        gamma: usize,
        beta: usize,
    },
    Relu,
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    Flatten,
    Linear {
        weight: usize,
        bias: usize,
    },
}

/// A parameter's place in theta.
#[derive(Debug, Clone)]
pub struct ParamSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
}

/// The sequential network of a [`NetSpec`] on a given input.
#[derive(Debug, Clone)]
pub struct Network {
    pub(super) layers: Vec<Layer>,
    pub(super) params: Vec<ParamSlot>,
    /// Values appended to the last linear layer's input (e.g. a one-hot label).
    pub(super) extra_inputs: usize,
    /// Total parameter count (the length of theta).
    len: usize,
}

/// Per-layer values the backward pass needs, recorded by [`Network::forward`].
pub struct Trace {
    pub(super) steps: Vec<Recorded>,
}

pub(super) enum Recorded {
    Conv {
        input: Tensor<4>,
    },
    /// Boxed: four tensor handles, against one for most other layers.
    BatchNorm {
        cache: Box<batch_norm::BatchNormCache>,
    },
    Relu4 {
        input: Tensor<4>,
    },
    Relu2 {
        input: Tensor<2>,
    },
    MaxPool {
        cache: pool::MaxPoolCache,
    },
    Flatten {
        shape: [usize; 4],
    },
    /// The input of a linear layer, with the extra inputs already appended.
    Linear {
        input: Tensor<2>,
    },
    /// A flat input passed through a Flatten layer unchanged.
    Identity,
}

impl Network {
    /// The network of `spec` with `prefix`-named parameters on `input` images, `extra_inputs`
    /// appended before the last layer, and `outputs` units out.
    pub fn new(
        spec: &NetSpec,
        prefix: &str,
        input: ImageShape,
        extra_inputs: usize,
        outputs: usize,
    ) -> Self {
        let shapes = spec.parameter_shapes(prefix, input, extra_inputs, outputs);
        let mut params = Vec::with_capacity(shapes.len());
        let mut offset = 0;
        for (name, shape) in shapes {
            let len = shape.iter().product();
            params.push(ParamSlot {
                name,
                shape,
                offset,
                len,
            });
            offset += len;
        }
        let layers = match spec {
            NetSpec::Mlp { hidden } => {
                let mut layers = vec![Layer::Flatten];
                for i in 0..=hidden.len() {
                    if i > 0 {
                        layers.push(Layer::Relu);
                    }
                    layers.push(Layer::Linear {
                        weight: 2 * i,
                        bias: 2 * i + 1,
                    });
                }
                layers
            }
            NetSpec::Cbr => {
                let (mut h, mut w) = (input.height as usize, input.width as usize);
                let mut layers = Vec::new();
                for (n, k) in [(0usize, 5usize), (1, 3)] {
                    let geometry = conv::ConvGeometry {
                        stride: 2,
                        padding: 2,
                    };
                    layers.push(Layer::Conv {
                        weight: 4 * n,
                        bias: 4 * n + 1,
                        geometry,
                    });
                    layers.push(Layer::BatchNorm {
                        gamma: 4 * n + 2,
                        beta: 4 * n + 3,
                    });
                    layers.push(Layer::Relu);
                    h = pool::out_size(h, k, 2, 2);
                    w = pool::out_size(w, k, 2, 2);
                    // A pool is skipped when the map is smaller than its window.
                    if h >= 3 && w >= 3 {
                        layers.push(Layer::MaxPool {
                            kernel: 3,
                            stride: 2,
                        });
                        h = pool::out_size(h, 3, 2, 0);
                        w = pool::out_size(w, 3, 2, 0);
                    }
                }
                debug_assert_eq!(CBR_CHANNELS.len(), 2);
                layers.push(Layer::Flatten);
                layers.push(Layer::Linear { weight: 8, bias: 9 });
                layers
            }
        };
        Self {
            layers,
            params,
            extra_inputs,
            len: offset,
        }
    }

    /// The parameters' names, shapes and offsets, in theta order.
    pub fn params(&self) -> &[ParamSlot] {
        &self.params
    }

    /// The length of theta.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// PyTorch's default initialisation: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    /// batch-norm gamma 1 and beta 0, drawn from `rng` so a seed reproduces it on any device.
    pub fn init(&self, rng: &mut impl Rng, device: &Device) -> Tensor<1> {
        let mut values = Vec::with_capacity(self.len);
        for (index, slot) in self.params.iter().enumerate() {
            if slot.name.contains(".bn") {
                let fill = if slot.name.ends_with(".weight") {
                    1.0
                } else {
                    0.0
                };
                values.extend(std::iter::repeat_n(fill, slot.len));
                continue;
            }
            // A bias's fan-in is its weight's (the slot just before it).
            let weight = if slot.name.ends_with(".bias") {
                &self.params[index - 1]
            } else {
                slot
            };
            let fan_in: usize = weight.shape[1..].iter().product();
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            values.extend((0..slot.len).map(|_| rng.random_range(-bound..=bound)));
        }
        Tensor::from_data(TensorData::new(values, [self.len]), device)
    }

    pub(super) fn slice<const D: usize>(&self, theta: &Tensor<1>, index: usize) -> Tensor<D> {
        let slot = &self.params[index];
        let shape: [usize; D] = std::array::from_fn(|i| slot.shape[i]);
        theta
            .clone()
            .narrow(0, slot.offset, slot.len)
            .reshape(shape)
    }

    /// Logits [batch, outputs] for `input`, with `extra` [batch, extra_inputs] appended before
    /// the last layer, and the trace the backward pass needs.
    pub fn forward(
        &self,
        theta: &Tensor<1>,
        input: Input,
        extra: Option<&Tensor<2>>,
    ) -> (Tensor<2>, Trace) {
        let mut image = None;
        let mut flat = None;
        match input {
            Input::Image(x) => image = Some(x),
            Input::Flat(x) => flat = Some(x),
        }
        let mut steps = Vec::with_capacity(self.layers.len());
        let last_linear = self
            .layers
            .iter()
            .rposition(|l| matches!(l, Layer::Linear { .. }));
        for (position, layer) in self.layers.iter().enumerate() {
            match layer {
                Layer::Conv {
                    weight,
                    bias,
                    geometry,
                } => {
                    let x = image.take().expect("conv needs an image input");
                    let y = conv::forward(
                        &x,
                        &self.slice(theta, *weight),
                        &self.slice(theta, *bias),
                        *geometry,
                    );
                    steps.push(Recorded::Conv { input: x });
                    image = Some(y);
                }
                Layer::BatchNorm { gamma, beta } => {
                    let x = image.take().expect("batch norm needs an image input");
                    let (y, cache) = batch_norm::forward(
                        &x,
                        &self.slice(theta, *gamma),
                        &self.slice(theta, *beta),
                    );
                    steps.push(Recorded::BatchNorm {
                        cache: Box::new(cache),
                    });
                    image = Some(y);
                }
                Layer::Relu => match (image.take(), flat.take()) {
                    (Some(x), _) => {
                        image = Some(activation::relu(&x));
                        steps.push(Recorded::Relu4 { input: x });
                    }
                    (None, Some(x)) => {
                        flat = Some(activation::relu(&x));
                        steps.push(Recorded::Relu2 { input: x });
                    }
                    (None, None) => unreachable!("relu without input"),
                },
                Layer::MaxPool { kernel, stride } => {
                    let x = image.take().expect("pool needs an image input");
                    let (y, cache) = pool::max_pool(&x, *kernel, *stride);
                    steps.push(Recorded::MaxPool { cache });
                    image = Some(y);
                }
                Layer::Flatten => match image.take() {
                    Some(x) => {
                        steps.push(Recorded::Flatten { shape: x.dims() });
                        flat = Some(activation::flatten(&x));
                    }
                    None => steps.push(Recorded::Identity),
                },
                Layer::Linear { weight, bias } => {
                    let mut x = flat.take().expect("linear needs a flat input");
                    if Some(position) == last_linear
                        && let Some(extra) = extra
                    {
                        x = Tensor::cat(vec![x, extra.clone()], 1);
                    }
                    flat = Some(linear::forward(
                        &x,
                        &self.slice(theta, *weight),
                        &self.slice(theta, *bias),
                    ));
                    steps.push(Recorded::Linear { input: x });
                }
            }
        }
        let logits = flat.expect("a network ends in a linear layer");
        (logits, Trace { steps })
    }

    /// Batch size of an input (for callers that build targets).
    pub fn batch_of(input: &Input) -> usize {
        input.batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::loss;
    use crate::nn::testing::*;
    use burn::tensor::activation::softmax;

    fn check_network(spec: NetSpec, input: ImageShape, extra: usize) {
        let device = device();
        let net = Network::new(&spec, "s.", input, extra, 4);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
        let theta = net.init(&mut rng, &device);
        assert_eq!(theta.dims(), [net.len()]);
        let x = random([
            3,
            input.channels as usize,
            input.height as usize,
            input.width as usize,
        ]);
        let extra_t = (extra > 0).then(|| random([3, extra]));
        let targets = softmax(random([3, 4]), 1);

        // Explicit gradient vs autodiff.
        let leaf_theta = leaf(&theta);
        let (logits, _) = net.forward(&leaf_theta, Input::Image(x.clone()), extra_t.as_ref());
        let grads = loss::weighted_mean(&logits, &targets, None).backward();
        let autodiff = leaf_theta.grad(&grads).expect("theta grad");
        let (logits, trace) = net.forward(&theta, Input::Image(x.clone()), extra_t.as_ref());
        let dlogits = loss::weighted_mean_backward(&logits, &targets, None);
        let explicit = net.backward(&theta, &trace, dlogits);
        assert_close(&explicit, &autodiff, 1e-4, "gradient");

        // Hessian-vector products (autodiff through the explicit gradient) vs central finite
        // differences of the explicit gradient, one parameter tensor's direction at a time.
        // ReLU and max-pool make the gradient piecewise smooth: a step that crosses a kink
        // spoils the difference, so each direction tries shrinking steps and keeps the best.
        let gradient_at = |t: &Tensor<1>| {
            let (logits, trace) = net.forward(t, Input::Image(x.clone()), extra_t.as_ref());
            let d = loss::weighted_mean_backward(&logits, &targets, None);
            net.backward(t, &trace, d)
        };
        for slot in net.params() {
            let mut v = vec![0.0f32; net.len()];
            let direction = values(&random([slot.len]));
            v[slot.offset..slot.offset + slot.len].copy_from_slice(&direction);
            let v = Tensor::<1>::from_data(TensorData::new(v, [net.len()]), &device);
            let leaf_theta = leaf(&theta);
            let grads = (gradient_at(&leaf_theta) * v.clone()).sum().backward();
            let hvp = leaf_theta.grad(&grads).expect("hvp");
            // The hand-written forward-over-reverse pass: the same H v.
            let tangent = net.loss_gradient_tangent(
                &theta,
                &v,
                Input::Image(x.clone()),
                extra_t.as_ref(),
                &targets,
                None,
            );
            // Against the norm, floored as the finite differences below are: conv biases before
            // batch norm have an H v of rounding noise only.
            let norm = |t: &Tensor<1>| values(t).iter().map(|x| x * x).sum::<f32>().sqrt();
            let gap = norm(&(tangent.gradient_dot.clone() - hvp.clone())) / norm(&hvp).max(0.1);
            assert!(
                gap <= 1e-3,
                "{spec:?} tangent pass H v along {}: {gap}",
                slot.name
            );
            let fd_error = |hvp: &Tensor<1>| {
                [1e-3f32, 1e-4, 1e-5]
                    .into_iter()
                    .map(|h| {
                        let plus = gradient_at(&(theta.clone() + v.clone() * h));
                        let minus = gradient_at(&(theta.clone() - v.clone() * h));
                        let fd = (plus - minus).div_scalar(2.0 * h);
                        // Conv biases before batch norm have no effect: both sides are ~0 there.
                        let scale = values(&fd)
                            .iter()
                            .map(|x| x * x)
                            .sum::<f32>()
                            .sqrt()
                            .max(0.1);
                        let diff = values(&(hvp.clone() - fd))
                            .iter()
                            .map(|x| x * x)
                            .sum::<f32>()
                            .sqrt();
                        diff / scale
                    })
                    .fold(f32::INFINITY, f32::min)
            };
            for (route, product) in [("autodiff", &hvp), ("tangent pass", &tangent.gradient_dot)] {
                let error = fd_error(product);
                assert!(
                    error < 2e-2,
                    "{spec:?} {route} Hessian-vector product along {}: relative error {error}",
                    slot.name
                );
            }
        }
    }

    #[test]
    fn mlp_gradient_and_hessian_vector_products_are_right() {
        let shape = ImageShape {
            height: 4,
            width: 4,
            channels: 1,
        };
        check_network(NetSpec::Mlp { hidden: vec![8, 6] }, shape, 0);
        check_network(NetSpec::Mlp { hidden: vec![5] }, shape, 3);
    }

    #[test]
    fn cbr_gradient_and_hessian_vector_products_are_right() {
        check_network(
            NetSpec::Cbr,
            ImageShape {
                height: 28,
                width: 28,
                channels: 2,
            },
            0,
        );
        check_network(
            NetSpec::Cbr,
            ImageShape {
                height: 8,
                width: 8,
                channels: 3,
            },
            2,
        );
    }

    /// The tangent pass's per-example loss tangents are the weights' adjoints of <g, v>.
    #[test]
    fn loss_tangents_are_the_weight_adjoints() {
        let device = device();
        let shape = ImageShape {
            height: 12,
            width: 12,
            channels: 1,
        };
        let net = Network::new(&NetSpec::Cbr, "s.", shape, 0, 4);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
        let theta = net.init(&mut rng, &device);
        let x = random([6, 1, 12, 12]);
        let targets = softmax(random([6, 4]), 1);
        let weights = burn::tensor::activation::sigmoid(random([6]));
        let v = random([net.len()]);
        let weights_leaf = leaf(&weights);
        let gradient = net.loss_gradient(
            &theta,
            Input::Image(x.clone()),
            &targets,
            Some(&weights_leaf),
        );
        let grads = (gradient * v.clone()).sum().backward();
        let autodiff = weights_leaf.grad(&grads).expect("weights grad");
        let tangent =
            net.loss_gradient_tangent(&theta, &v, Input::Image(x), None, &targets, Some(&weights));
        assert_close(
            &tangent.loss_dot.div_scalar(6.0),
            &autodiff,
            1e-3,
            "weight adjoints",
        );
    }
}
