//! Attention masks: a mask network m(x; phi) -> [0, 1]^{H x W} (a sigmoid on H*W outputs). The
//! student trains on x * m(x) (the mask multiplies every channel) and is validated and tested on
//! unmasked x, so the masks learn which regions help a student generalise.

use burn::tensor::activation::sigmoid;
use burn::tensor::{Int, Tensor, TensorData};
use schema::ImageShape;
use schema::arch::NetSpec;

use super::weighting::LabelledImages;
use crate::hypergrad::InnerProblem;
use crate::models::{Input, Network};
use crate::nn::loss;

/// The mask network for images of `shape`.
pub fn mask_network(net: &NetSpec, shape: ImageShape) -> Network {
    Network::new(
        net,
        "commentary.",
        shape,
        0,
        (shape.height * shape.width) as usize,
    )
}

/// Masks [n, h, w] in [0, 1] for `images` [n, c, h, w].
pub fn masks(mask_net: &Network, phi: &Tensor<1>, images: &Tensor<4>) -> Tensor<3> {
    let [n, _, h, w] = images.dims();
    let (logits, _) = mask_net.forward(phi, Input::Image(images.clone()), None);
    sigmoid(logits).reshape([n, h, w])
}

/// `images` multiplied by their masks (every channel).
pub fn apply_masks(mask_net: &Network, phi: &Tensor<1>, images: &Tensor<4>) -> Tensor<4> {
    let [n, _, h, w] = images.dims();
    images.clone() * masks(mask_net, phi, images).reshape([n, 1, h, w])
}

/// Training a student on masked images, as an inner problem.
#[derive(Clone)]
pub struct AttentionMasking {
    pub student: Network,
    pub mask_net: Network,
    pub train: LabelledImages,
    pub validation: LabelledImages,
    pub pool: Vec<i64>,
    pub batch_size: usize,
    pub seed: u64,
}

impl AttentionMasking {
    /// The batch of inner step `step` (deterministic).
    pub fn batch(&self, step: usize) -> LabelledImages {
        let device = self.train.images.device();
        let (chosen, _) = super::step_batch(&self.pool, self.batch_size, self.seed, step);
        self.train.select(&Tensor::<1, Int>::from_data(
            TensorData::new(chosen, [self.batch_size]),
            &device,
        ))
    }
}

impl InnerProblem for AttentionMasking {
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
        let batch = self.batch(step);
        let masked = apply_masks(&self.mask_net, phi, &batch.images);
        let (logits, trace) = self.student.forward(theta, Input::Image(masked), None);
        let dlogits = loss::weighted_mean_backward(&logits, &batch.onehot, None);
        self.student.backward(theta, &trace, dlogits)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.validation.mean_loss(&self.student, theta)
    }
}
