//! Attention masks: a mask network m(x; phi) -> [0, 1]^{H x W} (a sigmoid on H*W outputs). The
//! student trains on x * m(x) (the mask multiplies every channel) and is validated and tested on
//! unmasked x, so the masks learn which regions help a student generalise.

use std::ops::Range;

use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::{Int, Tensor, TensorData};
use schema::ImageShape;
use schema::arch::{MaskRange, NetSpec};

use rand::Rng as _;
use rand::rngs::StdRng;
use schema::Algorithm;

use super::insights;
use crate::data::tensors::LabelledImages;
use crate::hypergrad::{InnerProblem, step_row};
use crate::learn::checkpoint::vector;
use crate::learn::loops::{Run, learn_bptt, learn_online_ift, step_rng};
use crate::learn::truncated::learn_truncated;
use crate::learn::{LearnError, Learned, Progress, parameter_tensors};
use crate::models::{Input, Network};

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

/// Masks [n, h, w] for `images` [n, c, h, w] from the mask network's outputs z, in `range`
/// (see [`MaskRange`]: `half` 1 + 0.5 tanh(z), `full` 1.5 sigmoid(z + ln 2), both exactly 1 at
/// z = 0; `unit` sigmoid(z)).
pub fn masks(
    mask_net: &Network,
    phi: &Tensor<1>,
    images: &Tensor<4>,
    range: MaskRange,
) -> Tensor<3> {
    let [n, _, h, w] = images.dims();
    let (logits, _) = mask_net.forward(phi, Input::Image(images.clone()), None);
    let m = match range {
        MaskRange::Half => tanh(logits).mul_scalar(0.5).add_scalar(1.0),
        MaskRange::Full => sigmoid(logits.add_scalar(std::f32::consts::LN_2)).mul_scalar(1.5),
        MaskRange::Unit => sigmoid(logits),
    };
    m.reshape([n, h, w])
}

/// `images` multiplied by their masks (every channel).
pub fn apply_masks(
    mask_net: &Network,
    phi: &Tensor<1>,
    images: &Tensor<4>,
    range: MaskRange,
) -> Tensor<4> {
    let [n, _, h, w] = images.dims();
    images.clone() * masks(mask_net, phi, images, range).reshape([n, 1, h, w])
}

/// Initial mask-network parameters under which every mask is exactly 1 (centred masks): the
/// last layer's weights and biases are zero, so z = 0 whatever the image. Training starts
/// from the unmasked student and moves away only as far as L_V rewards.
pub fn neutral_init(mask_net: &Network, phi: Tensor<1>) -> Tensor<1> {
    // The last layer's two tensors (weight, then bias) are the last two slots of phi.
    let mut offsets: Vec<usize> = mask_net.params().iter().map(|s| s.offset).collect();
    offsets.sort_unstable();
    let Some(&start) = offsets.iter().rev().nth(1) else {
        return phi;
    };
    let len = phi.dims()[0];
    let mut values: Vec<f32> = phi.to_data().iter::<f32>().collect();
    values[start..len].iter_mut().for_each(|v| *v = 0.0);
    Tensor::from_data(TensorData::new(values, [len]), &phi.device())
}

/// Examples the mask network sees per batch when BPTT masks many steps at once (bounds its
/// activation memory).
const MASK_BATCH_EXAMPLES: usize = 256;

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
    /// The masks' range (see [`masks`]).
    pub range: MaskRange,
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
        self.inner_gradient_from(theta, &step_row(self, phi, step), step)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.validation.mean_loss(&self.student, theta)
    }

    fn validation_loss_gradient(&self, theta: &Tensor<1>) -> (Tensor<1>, f32) {
        self.validation.mean_loss_gradient(&self.student, theta)
    }

    /// The masks of each step's batch, flattened: [steps, batch x h x w].
    fn step_commentary(&self, phi: &Tensor<1>, steps: Range<usize>) -> Tensor<2> {
        let count = steps.len();
        let images = Tensor::cat(steps.map(|step| self.batch(step).images).collect(), 0);
        let masks = masks(&self.mask_net, phi, &images, self.range);
        let per_step = masks.shape().num_elements() / count.max(1);
        masks.reshape([count, per_step])
    }

    fn inner_gradient_from(&self, theta: &Tensor<1>, masks: &Tensor<1>, step: usize) -> Tensor<1> {
        let batch = self.batch(step);
        let [b, _, h, w] = batch.images.dims();
        let masked = batch.images.clone() * masks.clone().reshape([b, 1, h, w]);
        self.student
            .loss_gradient(theta, Input::Image(masked), &batch.onehot, None)
    }

    fn steps_per_commentary_batch(&self) -> usize {
        (MASK_BATCH_EXAMPLES / self.batch_size.max(1)).max(1)
    }
}

/// Learns attention masks by online IFT, BPTT (a fresh student per meta-step) or truncated
/// BPTT (one student, the mask network updated through each window).
pub(crate) fn learn(
    run: &Run<'_>,
    mask_spec: &NetSpec,
    range: MaskRange,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Learned, LearnError> {
    let algorithm = run.request.algorithm;
    let (config, data, device) = (run.config(), run.data, &run.device);
    let shape = data.train.shape();
    let student = run.student();
    let mask_net = mask_network(mask_spec, shape);
    let mut rng = step_rng(config.seed, usize::MAX - 3);
    let problem = AttentionMasking {
        student: student.clone(),
        mask_net: mask_net.clone(),
        train: data.train.clone(),
        validation: run.validation(&mut rng),
        pool: data.pool.clone(),
        batch_size: config.batch_size as usize,
        seed: config.seed,
        range,
    };
    let random = mask_net.init(&mut rng, device);
    let initial = if range.starts_at_one() {
        neutral_init(&mask_net, random)
    } else {
        random
    };
    let result = match algorithm {
        Algorithm::Ift => {
            learn_online_ift(run, &problem, &student, initial, &mut rng, on_progress)?
        }
        Algorithm::TruncatedBptt => learn_truncated(
            run,
            initial,
            &student,
            &|_, rng| {
                Box::new(AttentionMasking {
                    seed: rng.random(),
                    validation: run.validation(rng),
                    ..problem.clone()
                })
            },
            on_progress,
        )?,
        Algorithm::Bptt => {
            let steps = config.inner_steps.max(1) as usize;
            let make_problem = |rng: &mut StdRng| -> Box<dyn InnerProblem + '_> {
                // Each meta-step draws its own batches.
                Box::new(AttentionMasking {
                    seed: rng.random(),
                    validation: run.validation(rng),
                    ..problem.clone()
                })
            };
            learn_bptt(
                run,
                initial.dims()[0],
                || initial,
                steps,
                on_progress,
                &make_problem,
                &student,
            )?
        }
    };
    let mut tensors = parameter_tensors(&mask_net, &result.best_phi)?;
    insights::masks_sample(
        &mask_net,
        &vector(&result.best_phi, device),
        range,
        data,
        config.insight_masks as usize,
        &mut tensors,
    )?;
    Ok(Learned {
        tensors,
        val_losses: result.val_losses,
        best_val_loss: result.best_val_loss,
    })
}
