//! What `apply` loads before training: the splits as the commentary's recorded validation
//! protocol asks, the commentary itself, the class weights of the reference arm, and the
//! dataset's corruption record.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use schema::arch::CommentarySpec;
use schema::artifact::{TimeInput, Validation, VerifiedArtifact};
use schema::corruption::{CORRUPTION_FILE, CorruptionRecord};

use super::students::{Commentary, Splits};
use super::{ApplyError, ApplyOptions};
use crate::commentary::masks::mask_network;
use crate::commentary::weighting::{WeightSource, teacher_network};
use crate::data::Dataset;
use crate::data::corrupt::read_corruption;
use crate::data::tensors::{LabelledImages, index_tensor, to_tensors};

/// Classes whose largest over smallest count exceeds this get the class-weights arm.
const IMBALANCE_FOR_CLASS_WEIGHTS: f64 = 2.0;

/// The splits as the commentary's recorded validation protocol asks, plus the trusted
/// validation examples (when they are a split of their own) for the train+val arm.
pub(super) fn load_splits(
    dataset: &Dataset,
    artifact: &VerifiedArtifact,
    forced: bool,
    options: &ApplyOptions,
    device: &Device,
) -> Result<(Splits, Option<LabelledImages>, String), ApplyError> {
    let manifest = &artifact.manifest;
    let classes = dataset.classes().len();
    let test_split = dataset.load_split("test").map_err(|_| {
        ApplyError::Invalid(format!(
            "the dataset has no test split (its splits are {:?})",
            dataset.split_names()
        ))
    })?;
    let train = to_tensors(&dataset.load_split("train")?, classes, device);
    let n = train.len();
    let (validation, pool, trusted, described) = match &manifest.validation {
        Validation::Split { split, .. } => {
            let val = dataset.load_split(split).map_err(|_| {
                ApplyError::Invalid(format!(
                    "the commentary was validated on split {split:?}, which this dataset lacks (its splits are {:?})",
                    dataset.split_names()
                ))
            })?;
            let val = to_tensors(&val, classes, device);
            let described = format!("{split}, {} examples", val.len());
            (val.clone(), (0..n as i64).collect(), Some(val), described)
        }
        Validation::Holdout { indices, .. } => {
            let held: Vec<i64> = if forced {
                let count = indices.len().min(n / 5).max(1);
                crate::data::tensors::holdout_indices(n, count, manifest.config.seed)
                    .into_iter()
                    .map(|i| i as i64)
                    .collect()
            } else {
                indices.iter().map(|&i| i as i64).collect()
            };
            let set: std::collections::HashSet<i64> = held.iter().copied().collect();
            let pool: Vec<i64> = (0..n as i64).filter(|i| !set.contains(i)).collect();
            let described = format!("train (a hold-out of {} examples)", held.len());
            (
                train.select(&index_tensor(&held, device)),
                pool,
                None,
                described,
            )
        }
    };
    let mut pool = pool;
    if let Some(keep) = options.train_examples {
        pool.shuffle(&mut StdRng::seed_from_u64(manifest.config.seed ^ 0x5EED));
        pool.truncate(keep);
        pool.sort_unstable();
    }
    if pool.is_empty() {
        return Err(ApplyError::Invalid(
            "no training examples are left after the validation split".into(),
        ));
    }
    let splits = Splits {
        validation,
        test: to_tensors(&test_split, classes, device),
        train,
        pool,
    };
    Ok((splits, trusted, described))
}

/// The commentary in `artifact` as the students use it.
pub(super) fn load_commentary(
    artifact: &VerifiedArtifact,
    forced: bool,
    options: &ApplyOptions,
    device: &Device,
) -> Result<Commentary, ApplyError> {
    let manifest = &artifact.manifest;
    let (shape, classes) = (manifest.dataset.shape, manifest.dataset.classes.len());
    let phi = |names: &[String]| -> Result<Tensor<1>, ApplyError> {
        let mut values = Vec::new();
        for name in names {
            let tensor = artifact
                .tensors
                .get(name)
                .and_then(|t| t.as_f32())
                .ok_or_else(|| ApplyError::Invalid(format!("tensor {name:?} is missing")))?;
            values.extend_from_slice(tensor);
        }
        Ok(Tensor::from_data(
            TensorData::new(values.clone(), [values.len()]),
            device,
        ))
    };
    Ok(match &manifest.architecture.commentary {
        CommentarySpec::Teacher {
            net,
            label_input,
            label_head,
        } => {
            let teacher = teacher_network(net, shape, classes, *label_input, *label_head);
            let names: Vec<String> = teacher.params().iter().map(|p| p.name.clone()).collect();
            let horizon = teacher_horizon(
                manifest.time_input,
                options.steps(),
                manifest.config.inner_steps as usize,
            );
            Commentary::Weighting {
                phi: phi(&names)?,
                source: WeightSource::Teacher {
                    net: teacher,
                    label_input: *label_input,
                    label_head: *label_head,
                    horizon,
                },
            }
        }
        CommentarySpec::Table if forced => {
            return Err(ApplyError::Invalid(
                "a per-example weight table names examples of the dataset it was learned on; it cannot be applied to \
                 another dataset, even with --force"
                    .into(),
            ));
        }
        CommentarySpec::Table => Commentary::Weighting {
            phi: phi(&["commentary.logits".to_owned()])?,
            source: WeightSource::Table,
        },
        CommentarySpec::MaskNet { net, range } => {
            let mask_net = mask_network(net, shape);
            let names: Vec<String> = mask_net.params().iter().map(|p| p.name.clone()).collect();
            Commentary::Masks {
                phi: phi(&names)?,
                mask_net,
                range: *range,
            }
        }
        CommentarySpec::BlendMatrix => Commentary::Blending {
            phi: phi(&["commentary.logits".to_owned()])?,
        },
    })
}

/// S in a teacher's time input i/S when it serves a training of `steps`: that training's length
/// (progress), or for format 1 artifacts the K = `inner_steps` it was learned with (i/K, clamped
/// to 1 after it).
pub(super) fn teacher_horizon(time_input: TimeInput, steps: usize, inner_steps: usize) -> usize {
    match time_input {
        TimeInput::Progress => steps.max(1),
        TimeInput::ClampedIteration => inner_steps.max(1),
    }
}

/// Inverse-frequency class weights (mean 1 over the pool), when the pool's classes are
/// imbalanced beyond [`IMBALANCE_FOR_CLASS_WEIGHTS`].
pub(super) fn class_weights(splits: &Splits, classes: usize, device: &Device) -> Option<Tensor<1>> {
    let labels = splits
        .train
        .select(&index_tensor(&splits.pool, device))
        .labels();
    let mut counts = vec![0usize; classes];
    for l in labels {
        counts[l as usize] += 1;
    }
    let present: Vec<usize> = counts.iter().copied().filter(|&c| c > 0).collect();
    let (max, min) = (
        present.iter().max().copied().unwrap_or(0),
        present.iter().min().copied().unwrap_or(0),
    );
    if min == 0 || (max as f64) / (min as f64) <= IMBALANCE_FOR_CLASS_WEIGHTS {
        return None;
    }
    let n = splits.pool.len() as f32;
    let weights: Vec<f32> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n / (present.len() as f32 * c as f32)
            }
        })
        .collect();
    Some(Tensor::from_data(
        TensorData::new(weights, [classes]),
        device,
    ))
}

/// The corruption record to score against: the given file, else `corruption.json` in the
/// dataset folder when there is one.
pub(super) fn corruption_record(
    dataset_path: Option<&Path>,
    options: &ApplyOptions,
    digest: &schema::Sha256,
) -> Result<Option<CorruptionRecord>, ApplyError> {
    let path = match (&options.corruption, dataset_path) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) if dir.join(CORRUPTION_FILE).is_file() => dir.join(CORRUPTION_FILE),
        _ => return Ok(None),
    };
    Ok(Some(read_corruption(&path, digest)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::loss;
    use crate::nn::testing::{device, random, values};
    use schema::ImageShape;
    use schema::arch::NetSpec;

    #[test]
    fn a_progress_teacher_stretches_to_the_training_it_serves_and_a_format_1_one_is_clamped() {
        assert_eq!(teacher_horizon(TimeInput::Progress, 1500, 100), 1500);
        assert_eq!(teacher_horizon(TimeInput::ClampedIteration, 1500, 100), 100);
        let shape = ImageShape {
            height: 4,
            width: 4,
            channels: 1,
        };
        let teacher = teacher_network(&NetSpec::Mlp { hidden: vec![5] }, shape, 3, false, false);
        let phi = teacher.init(&mut StdRng::seed_from_u64(2), &device());
        let labels = index_tensor(&[0, 1, 2, 0], &device());
        let examples = LabelledImages {
            images: random([4, 1, 4, 4]),
            onehot: loss::one_hot(&labels, 3),
        };
        let source = |horizon| WeightSource::Teacher {
            net: teacher.clone(),
            label_input: false,
            label_head: false,
            horizon,
        };
        let at = |horizon, step| values(&source(horizon).weights(&phi, &examples, &labels, step));
        // Halfway through a 100-step and a 1,000-step training: the same time input.
        assert_eq!(at(100, 50), at(1000, 500));
        assert_ne!(at(100, 50), at(100, 0), "the time input matters");
        // Past its horizon a clamped teacher stays at 1.
        assert_eq!(at(100, 100), at(100, 400));
    }
}
