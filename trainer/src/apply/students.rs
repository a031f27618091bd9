//! Training fresh students, with a commentary or without, and measuring them.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use schema::arch::MaskRange;
use schema::report::{ArmReport, CurvePoint, RunReport, Spread};

use super::ApplyOptions;
use crate::commentary::blending::{blend, blend_with};
use crate::commentary::masks::apply_masks;
use crate::commentary::weighting::WeightSource;
use crate::data::tensors::{LabelledImages, index_tensor};
use crate::hypergrad::optim::OptState;
use crate::models::{Input, Network};
use crate::nn::loss;
use crate::stop::Stopped;

/// A loaded commentary, ready to shape a student's training.
pub(crate) enum Commentary {
    Weighting {
        source: WeightSource,
        phi: Tensor<1>,
    },
    Blending {
        phi: Tensor<1>,
    },
    Masks {
        mask_net: Network,
        phi: Tensor<1>,
        range: MaskRange,
    },
    /// The "random blending" baseline: lambda ~ U(0.5, 1) per pair, drawn each batch.
    RandomBlending,
    /// The class-weights reference arm: each example weighs its class's entry of `weights`.
    ClassWeights {
        weights: Tensor<1>,
    },
}

/// Examples evaluated per forward pass (bounds memory on large splits).
pub(crate) const EVAL_CHUNK: usize = 500;

pub(crate) fn accuracy_and_loss(
    net: &Network,
    theta: &Tensor<1>,
    data: &LabelledImages,
) -> (f64, f64) {
    let n = data.len();
    let (mut correct, mut loss_sum) = (0f64, 0f64);
    let mut start = 0;
    while start < n {
        let len = EVAL_CHUNK.min(n - start);
        let images = data.images.clone().narrow(0, start, len);
        let onehot = data.onehot.clone().narrow(0, start, len);
        let (logits, _) = net.forward(theta, Input::Image(images), None);
        let hits = logits
            .clone()
            .argmax(1)
            .equal(onehot.clone().argmax(1))
            .int()
            .sum()
            .into_scalar::<i64>();
        correct += hits as f64;
        loss_sum += f64::from(loss::weighted_mean(&logits, &onehot, None).into_scalar::<f32>())
            * len as f64;
        start += len;
    }
    (correct / n.max(1) as f64, loss_sum / n.max(1) as f64)
}

pub(crate) struct Splits {
    pub train: LabelledImages,
    pub pool: Vec<i64>,
    pub validation: LabelledImages,
    pub test: LabelledImages,
}

/// Trains one student from `seed`, with the commentary or without (checking
/// `options.stop` before every step).
pub(crate) fn train_student(
    student: &Network,
    splits: &Splits,
    commentary: Option<&Commentary>,
    seed: u64,
    options: &ApplyOptions,
    device: &Device,
) -> Result<(RunReport, Tensor<1>), Stopped> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut theta = student.init(&mut rng, device);
    let adam = options.optimizer();
    let mut state = OptState::new();
    let mut curve = Vec::new();
    let b = options.evaluation.batch_size as usize;
    let steps = options.steps();
    for step in 0..steps {
        options.stop.check()?;
        let chosen: Vec<i64> = (0..b)
            .map(|_| splits.pool[rng.random_range(0..splits.pool.len())])
            .collect();
        let batch_indices = index_tensor(&chosen, device);
        let batch = splits.train.select(&batch_indices);
        let (images, targets, weights) = match commentary {
            None => (batch.images, batch.onehot, None),
            Some(Commentary::Weighting { source, phi }) => {
                let w = source.weights(phi, &batch, &batch_indices, step).detach();
                (batch.images, batch.onehot, Some(w))
            }
            Some(Commentary::ClassWeights { weights }) => {
                let w = (batch.onehot.clone() * weights.clone().unsqueeze_dim::<2>(0))
                    .sum_dim(1)
                    .reshape([b]);
                (batch.images, batch.onehot, Some(w))
            }
            Some(Commentary::Masks {
                mask_net,
                phi,
                range,
            }) => {
                let masked = apply_masks(mask_net, phi, &batch.images, *range).detach();
                (masked, batch.onehot, None)
            }
            Some(Commentary::RandomBlending) => {
                let mut pairs: Vec<i64> = (0..b as i64).collect();
                pairs.shuffle(&mut rng);
                let lambda: Vec<f32> = (0..b).map(|_| rng.random_range(0.5f32..1.0)).collect();
                let (images, targets) = blend_with(
                    &batch,
                    &index_tensor(&pairs, device),
                    Tensor::from_data(TensorData::new(lambda, [b]), device),
                );
                (images, targets, None)
            }
            Some(Commentary::Blending { phi }) => {
                let mut pairs: Vec<i64> = (0..b as i64).collect();
                pairs.shuffle(&mut rng);
                let (images, targets) = blend(phi, &batch, &index_tensor(&pairs, device));
                (images.detach(), targets.detach(), None)
            }
        };
        let grad = student.loss_gradient(&theta, Input::Image(images), &targets, weights.as_ref());
        let (next, next_state) = adam.step(&theta, &state, grad);
        theta = next.detach();
        state = next_state.detached();
        if (step + 1) % (options.evaluation.eval_every.max(1) as usize) == 0 || step + 1 == steps {
            let (val_accuracy, val_loss) = accuracy_and_loss(student, &theta, &splits.validation);
            curve.push(CurvePoint {
                step: step as u64 + 1,
                val_loss,
                val_accuracy,
            });
        }
    }
    let (test_accuracy, test_loss) = accuracy_and_loss(student, &theta, &splits.test);
    let report = RunReport {
        seed,
        final_val_accuracy: curve.last().map_or(0.0, |p| p.val_accuracy),
        curve,
        test_accuracy,
        test_loss,
        wall_s: started.elapsed().as_secs_f64(),
    };
    Ok((report, theta))
}

pub(crate) fn arm(runs: Vec<RunReport>) -> ArmReport {
    let test: Vec<f64> = runs.iter().map(|r| r.test_accuracy).collect();
    let val: Vec<f64> = runs.iter().map(|r| r.final_val_accuracy).collect();
    ArmReport {
        test_accuracy: Spread::of(&test),
        final_val_accuracy: Spread::of(&val),
        runs,
    }
}
