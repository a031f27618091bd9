//! The two problem kinds (weight-bptt, blend-ift) as inner problems for the engine.
//!
//! Both train an MLP on flat [N, d] inputs: per-example weights w_i = sigmoid(phi_i) over given
//! batches, and label blending over the whole train set.

use std::ops::Range;

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::commentary::blending;
use crate::data::tensors::LabelledImages;
use crate::hypergrad::{InnerLinearisation, InnerProblem, step_batch_indices, step_row};
use crate::models::{Input, Network};
use crate::nn::loss;

/// Train and validation data of a problem on a device.
pub(super) struct MlpData {
    /// [N, d]
    x: Tensor<2>,
    /// [N, classes]
    onehot: Tensor<2>,
    /// [M, d]
    pub(super) val_x: Tensor<2>,
    /// [M, classes]
    pub(super) val_onehot: Tensor<2>,
}

impl MlpData {
    pub(super) fn new(
        device: &Device,
        x: &[f32],
        y: &[i64],
        val_x: &[f32],
        val_y: &[i64],
        d: usize,
        classes: usize,
    ) -> Self {
        let labels =
            |y: &[i64]| Tensor::<1, Int>::from_data(TensorData::new(y.to_vec(), [y.len()]), device);
        Self {
            x: Tensor::from_data(TensorData::new(x.to_vec(), [y.len(), d]), device),
            onehot: loss::one_hot(&labels(y), classes),
            val_x: Tensor::from_data(TensorData::new(val_x.to_vec(), [val_y.len(), d]), device),
            val_onehot: loss::one_hot(&labels(val_y), classes),
        }
    }

    fn validation_loss(&self, net: &Network, theta: &Tensor<1>) -> Tensor<1> {
        let (logits, _) = net.forward(theta, Input::Flat(self.val_x.clone()), None);
        loss::weighted_mean(&logits, &self.val_onehot, None)
    }
}

/// Per-example weights w_i = sigmoid(phi_i) on an MLP, batches given.
pub(super) struct WeightedMlp {
    pub(super) net: Network,
    pub(super) data: MlpData,
    /// The train indices of each inner step (step k uses `batches[k % K]`), [b] each.
    pub(super) batches: Vec<Tensor<1, Int>>,
}

impl InnerProblem for WeightedMlp {
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
        self.inner_gradient_from(theta, &step_row(self, phi, step), step)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.data.validation_loss(&self.net, theta)
    }

    /// The weights of each step's batch: [steps, b].
    fn step_commentary(&self, phi: &Tensor<1>, steps: Range<usize>) -> Tensor<2> {
        let count = steps.len();
        let (indices, b) = step_batch_indices(&self.batches, steps);
        sigmoid(phi.clone().select(0, indices)).reshape([count, b])
    }

    fn inner_gradient_from(
        &self,
        theta: &Tensor<1>,
        weights: &Tensor<1>,
        step: usize,
    ) -> Tensor<1> {
        let batch = &self.batches[step % self.batches.len()];
        let x = self.data.x.clone().select(0, batch.clone());
        let targets = self.data.onehot.clone().select(0, batch.clone());
        self.net
            .loss_gradient(theta, Input::Flat(x), &targets, Some(weights))
    }

    /// By the student's tangent pass, as the weighting kind does, so the float64 checks cover
    /// the hand-written second-order route.
    fn inner_gradient_adjoints(
        &self,
        theta: &Tensor<1>,
        weights: &Tensor<1>,
        step: usize,
        adjoint: &Tensor<1>,
    ) -> (Tensor<1>, Tensor<1>) {
        let batch = &self.batches[step % self.batches.len()];
        let x = self.data.x.clone().select(0, batch.clone());
        let targets = self.data.onehot.clone().select(0, batch.clone());
        self.net
            .weight_adjoints(theta, adjoint, Input::Flat(x), &targets, weights)
    }
}

/// Label blending with a C x C logit matrix on an MLP, over the whole train set: the
/// label-blending kind's own formula ([`blending::blend`]) with the train set as one batch.
pub(super) struct BlendedMlp {
    net: Network,
    pub(super) data: MlpData,
    /// The train set as [N, 1, 1, d] images, the shape [`blending::blend`] takes.
    train: LabelledImages,
    /// Each example's partner: a permutation of the train set, [N].
    pairs: Tensor<1, Int>,
}

impl BlendedMlp {
    pub(super) fn new(net: Network, data: MlpData, pairs: &[i64], device: &Device) -> Self {
        let [n, d] = data.x.dims();
        let train = LabelledImages {
            images: data.x.clone().reshape([n, 1, 1, d]),
            onehot: data.onehot.clone(),
        };
        Self {
            pairs: Tensor::from_data(TensorData::new(pairs.to_vec(), [pairs.len()]), device),
            train,
            net,
            data,
        }
    }

    /// Blended inputs [N, d] and soft targets [N, classes] under phi.
    pub(super) fn blend(&self, phi: &Tensor<1>) -> (Tensor<2>, Tensor<2>) {
        let (images, targets) = blending::blend(phi, &self.train, &self.pairs);
        let [n, _, _, d] = images.dims();
        (images.reshape([n, d]), targets)
    }
}

impl InnerProblem for BlendedMlp {
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, _step: usize) -> Tensor<1> {
        let (x, targets) = self.blend(phi);
        self.net
            .loss_gradient(theta, Input::Flat(x), &targets, None)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.data.validation_loss(&self.net, theta)
    }

    /// By the student's tangent passes, as the label-blending kind does, so the float64 checks
    /// cover the hand-written route.
    fn linearise<'a>(
        &'a self,
        theta: &Tensor<1>,
        phi: &Tensor<1>,
        _step: usize,
    ) -> Box<dyn InnerLinearisation + 'a> {
        Box::new(blending::BlendLinearisation::new(
            &self.net,
            theta,
            phi,
            self.train.clone(),
            self.pairs.clone(),
            |images| {
                let [n, _, _, d] = images.dims();
                Input::Flat(images.reshape([n, d]))
            },
        ))
    }
}
