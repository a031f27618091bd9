//! Insight tensors: what the pages and the API show of a learned commentary (curricula,
//! per-example weights, masks), computed once when the artifact is written and stored under
//! the `insight.` prefix.

use burn::tensor::Tensor;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use schema::arch::MaskRange;
use schema::artifact::{Tensor as FileTensor, TensorMap, TensorValues};

use super::masks::masks;
use super::weighting::{WeightSource, time_input};
use crate::data::tensors::{PreparedData, index_tensor};
use crate::learn::LearnError;
use crate::learn::checkpoint::to_vec;
use crate::learn::insight_error;
use crate::models::Network;

/// Masks, images, canonical train indices and labels of the first `count` training examples
/// (`LearnConfig::insight_masks`).
pub(crate) fn masks_sample(
    mask_net: &Network,
    phi: &Tensor<1>,
    range: MaskRange,
    data: &PreparedData,
    count: usize,
    tensors: &mut TensorMap,
) -> Result<(), LearnError> {
    let device = phi.device();
    let shape = data.train.shape();
    let mut sample = data.pool.clone();
    sample.truncate(count);
    let examples = data.train.select(&index_tensor(&sample, &device));
    let n = sample.len();
    let (h, w, c) = (
        shape.height as usize,
        shape.width as usize,
        shape.channels as usize,
    );
    let masks = masks(mask_net, phi, &examples.images, range);
    tensors.insert(
        "insight.masks".into(),
        FileTensor::f32(vec![n, h, w], to_vec(&masks.reshape([n * h * w])))
            .map_err(insight_error)?,
    );
    tensors.insert(
        "insight.images".into(),
        FileTensor::f32(
            vec![n, c, h, w],
            to_vec(&examples.images.clone().reshape([n * c * h * w])),
        )
        .map_err(insight_error)?,
    );
    tensors.insert(
        "insight.indices".into(),
        FileTensor::new(vec![n], TensorValues::I64(sample)).map_err(insight_error)?,
    );
    tensors.insert(
        "insight.labels".into(),
        FileTensor::new(vec![n], TensorValues::I64(examples.labels())).map_err(insight_error)?,
    );
    Ok(())
}

/// Points of the curriculum recorded (as fractions of T).
const INSIGHT_POINTS: usize = 5;

/// Weights of a fixed sample of `count` training examples (`LearnConfig::insight_examples`,
/// weighed as one batch) at several iterations, with their classes and canonical indices, and
/// the mean weight per class at each iteration.
pub(crate) fn weighting(
    source: &WeightSource,
    phi: &Tensor<1>,
    data: &PreparedData,
    horizon: usize,
    count: usize,
    tensors: &mut TensorMap,
) -> Result<(), LearnError> {
    let device = phi.device();
    let mut sample = data.pool.clone();
    sample.shuffle(&mut StdRng::seed_from_u64(0x1A51_6475));
    sample.truncate(count);
    sample.sort_unstable();
    let sample_indices = index_tensor(&sample, &device);
    let batch = data.train.select(&sample_indices);
    let classes = data.summary.classes.len();
    let labels = batch.labels();
    let iterations: Vec<i64> = (0..INSIGHT_POINTS)
        .map(|p| (p * horizon / (INSIGHT_POINTS - 1)) as i64)
        .collect();
    let mut weights = Vec::with_capacity(INSIGHT_POINTS * sample.len());
    let mut class_means = Vec::with_capacity(INSIGHT_POINTS * classes);
    for &iteration in &iterations {
        let w = to_vec(&source.weights(
            &phi.clone().detach(),
            &batch,
            &sample_indices,
            iteration as usize,
        ));
        for class in 0..classes {
            let members: Vec<f32> = w
                .iter()
                .zip(&labels)
                .filter(|(_, l)| **l == class as i64)
                .map(|(w, _)| *w)
                .collect();
            class_means.push(if members.is_empty() {
                f32::NAN
            } else {
                members.iter().sum::<f32>() / members.len() as f32
            });
        }
        weights.extend(w);
    }
    let invalid = |e: schema::artifact::TensorError| LearnError::Invalid(e.to_string());
    tensors.insert(
        "insight.weights".into(),
        FileTensor::f32(vec![INSIGHT_POINTS, sample.len()], weights).map_err(invalid)?,
    );
    tensors.insert(
        "insight.class_mean_weights".into(),
        FileTensor::f32(vec![INSIGHT_POINTS, classes], class_means).map_err(invalid)?,
    );
    // The teacher's time input at each point, exactly as computed for the weights, so a port
    // of the teacher (the Python client) can recompute them without knowing the horizon.
    let progress: Vec<f32> = iterations
        .iter()
        .map(|&i| time_input(i as usize, horizon))
        .collect();
    tensors.insert(
        "insight.progress".into(),
        FileTensor::f32(vec![INSIGHT_POINTS], progress).map_err(invalid)?,
    );
    tensors.insert(
        "insight.iterations".into(),
        FileTensor::new(vec![INSIGHT_POINTS], TensorValues::I64(iterations)).map_err(invalid)?,
    );
    tensors.insert(
        "insight.indices".into(),
        FileTensor::new(vec![sample.len()], TensorValues::I64(sample.clone())).map_err(invalid)?,
    );
    tensors.insert(
        "insight.labels".into(),
        FileTensor::new(vec![sample.len()], TensorValues::I64(labels)).map_err(invalid)?,
    );
    let all = example_weights(source, phi, data, horizon);
    tensors.insert(
        "insight.example_weights".into(),
        FileTensor::f32(vec![all.len()], all).map_err(invalid)?,
    );
    let all_labels = data.train.labels();
    tensors.insert(
        "insight.example_labels".into(),
        FileTensor::new(vec![all_labels.len()], TensorValues::I64(all_labels)).map_err(invalid)?,
    );
    Ok(())
}

/// Examples a teacher weighs per pass when scoring the whole train split.
const SCORING_CHUNK: usize = 512;

/// Every train example's weight (canonical order) averaged over the progress points 0, 0.25,
/// 0.5, 0.75 and 1: what the suspected-mislabeled list ranks (a table's weights directly).
pub(crate) fn example_weights(
    source: &WeightSource,
    phi: &Tensor<1>,
    data: &PreparedData,
    horizon: usize,
) -> Vec<f32> {
    let device = phi.device();
    let phi = phi.clone().detach();
    let n = data.train.len();
    let all: Vec<i64> = (0..n as i64).collect();
    if matches!(source, WeightSource::Table) {
        return to_vec(&source.weights(&phi, &data.train, &index_tensor(&all, &device), 0));
    }
    let mut sums = vec![0f32; n];
    for chunk in all.chunks(SCORING_CHUNK) {
        let indices = index_tensor(chunk, &device);
        let examples = data.train.select(&indices);
        for p in 0..INSIGHT_POINTS {
            let step = p * horizon / (INSIGHT_POINTS - 1);
            let w = to_vec(&source.weights(&phi, &examples, &indices, step));
            for (&i, w) in chunk.iter().zip(w) {
                sums[i as usize] += w / INSIGHT_POINTS as f32;
            }
        }
    }
    sums
}
