//! `apply`: train fresh students with and without a commentary, side by side, and report how
//! much the commentary helps (accuracy curves, final test accuracy, steps to reach the
//! baseline's final validation accuracy), beside the reference arms a sceptical practitioner
//! would ask for, and flag a commentary that hurts.
//!
//! - [`students`]: training and measuring one student;
//! - [`masks`]: the mask report (where masks point, the removal test);
//! - [`scoring`]: low weights as a detector of flipped labels.

mod masks;
pub mod scoring;
mod students;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use schema::arch::{CommentarySpec, NetSpec};
use schema::artifact::{TimeInput, Validation, VerifiedArtifact, verify_artifact};
use schema::corruption::{CORRUPTION_FILE, CorruptionRecord};
use schema::report::{ApplyReport, HARMFUL_Z, ReferenceArm, gain_z};

use crate::commentary::masks::mask_network;
use crate::commentary::weighting::{WeightSource, teacher_network};
use crate::data::Dataset;
use crate::data::corrupt::read_corruption;
use crate::data::tensors::{LabelledImages, index_tensor, to_tensors};
use crate::device::ComputeDevice;
use crate::hypergrad::optim::InnerOptimizer;
use crate::models::Network;
use students::{Commentary, Splits, arm, train_student};

/// Why a commentary could not be applied: the same kinds of failure as learning.
pub use crate::learn::LearnError as ApplyError;

/// How to train the students.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The student to train; None trains the one the commentary was learned with.
    pub student: Option<NetSpec>,
    pub seeds: Vec<u64>,
    pub steps: usize,
    pub eval_every: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub device: ComputeDevice,
    /// Apply even when the dataset's digest differs from the commentary's.
    pub force: bool,
    /// Train on a seeded random subset of this many examples (a small-data regime).
    pub train_examples: Option<usize>,
    /// The dataset's `corruption.json` (default: the one in the dataset folder, if any), to
    /// score per-example weights against the flipped labels.
    pub corruption: Option<PathBuf>,
    /// Also train the reference arms (train+val with a trusted split; class weights on
    /// imbalanced data).
    pub references: bool,
}

impl Default for ApplyOptions {
    /// The registry's evaluation defaults (`schema::api::Evaluation`), on the CPU.
    fn default() -> Self {
        let evaluation = schema::api::Evaluation::default();
        Self {
            student: None,
            seeds: evaluation.seeds,
            steps: evaluation.steps as usize,
            eval_every: evaluation.eval_every as usize,
            batch_size: evaluation.batch_size as usize,
            train_examples: None,
            lr: evaluation.lr,
            device: ComputeDevice::Cpu,
            force: false,
            corruption: None,
            references: true,
        }
    }
}

impl ApplyOptions {
    /// The students' optimiser: Adam with PyTorch's defaults at `lr`.
    pub fn optimizer(&self) -> InnerOptimizer {
        InnerOptimizer::Adam {
            lr: self.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Classes whose largest over smallest count exceeds this get the class-weights arm.
const IMBALANCE_FOR_CLASS_WEIGHTS: f64 = 2.0;

/// The splits as the commentary's recorded validation protocol asks, plus the trusted
/// validation examples (when they are a split of their own) for the train+val arm.
fn load_splits(
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
fn load_commentary(
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
                options.steps,
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
fn teacher_horizon(time_input: TimeInput, steps: usize, inner_steps: usize) -> usize {
    match time_input {
        TimeInput::Progress => steps.max(1),
        TimeInput::ClampedIteration => inner_steps.max(1),
    }
}

/// Inverse-frequency class weights (mean 1 over the pool), when the pool's classes are
/// imbalanced beyond [`IMBALANCE_FOR_CLASS_WEIGHTS`].
fn class_weights(splits: &Splits, classes: usize, device: &Device) -> Option<Tensor<1>> {
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
fn corruption_record(
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

/// Applies the commentary in `artifact_dir` to `dataset` and returns the report (also written to
/// the artifact as `report.json` by the caller). `dataset_path` is where `corruption.json` is
/// looked for.
pub fn apply(
    dataset: &Dataset,
    dataset_path: Option<&Path>,
    artifact_dir: &Path,
    options: &ApplyOptions,
    on_run: &mut dyn FnMut(&str, u64),
) -> Result<ApplyReport, ApplyError> {
    let started = Instant::now();
    if options.seeds.is_empty() || options.steps == 0 || options.batch_size == 0 {
        return Err(ApplyError::Invalid(
            "apply needs at least one seed, one step and a positive batch size".into(),
        ));
    }
    let artifact = verify_artifact(artifact_dir)?;
    let manifest = &artifact.manifest;
    let summary = dataset.summarize()?;
    let forced = summary.digest != manifest.dataset.digest;
    if forced && !options.force {
        return Err(ApplyError::Invalid(format!(
            "the commentary was learned on dataset {} but this dataset is {}; a commentary is tied to its data (its \
             validation indices and per-example parameters refer to it). Use --force to apply it anyway",
            manifest.dataset.digest, summary.digest
        )));
    }
    let record = corruption_record(dataset_path, options, &summary.digest)?;
    let device = crate::device::burn_device(options.device);
    let classes = summary.classes.len();
    let shape = summary
        .split("train")
        .map(|s| s.shape)
        .ok_or_else(|| ApplyError::Invalid("the dataset has no train split".into()))?;
    if shape != manifest.dataset.shape || classes != manifest.dataset.classes.len() {
        return Err(ApplyError::Invalid(format!(
            "the commentary was learned on {} images with {} classes; this dataset has {shape} images with {classes} classes",
            manifest.dataset.shape,
            manifest.dataset.classes.len()
        )));
    }
    let (splits, trusted, validation) = load_splits(dataset, &artifact, forced, options, &device)?;
    let commentary = load_commentary(&artifact, forced, options, &device)?;
    let student_spec = options
        .student
        .clone()
        .unwrap_or_else(|| manifest.architecture.student.clone());
    let student = Network::new(&student_spec, "student.", shape, 0, classes);
    let train_val = match (&trusted, options.references) {
        (Some(val), true) => {
            let n = splits.train.len() as i64;
            let mut pool = splits.pool.clone();
            pool.extend(n..n + val.len() as i64);
            Some(Splits {
                train: splits.train.concat(val),
                pool,
                validation: splits.validation.clone(),
                test: splits.test.clone(),
            })
        }
        _ => None,
    };
    let class_weighting = options
        .references
        .then(|| class_weights(&splits, classes, &device))
        .flatten()
        .map(|weights| Commentary::ClassWeights { weights });
    let mut baseline = Vec::new();
    let mut with = Vec::new();
    let mut random = Vec::new();
    let mut merged = Vec::new();
    let mut weighted = Vec::new();
    let mut baseline_thetas = Vec::new();
    let random_blending = matches!(commentary, Commentary::Blending { .. });
    for &seed in &options.seeds {
        let train = |splits: &Splits, commentary: Option<&Commentary>| {
            train_student(&student, splits, commentary, seed, options, &device)
        };
        if random_blending {
            on_run("random blending", seed);
            random.push(train(&splits, Some(&Commentary::RandomBlending)).0);
        }
        if let Some(merged_splits) = &train_val {
            on_run("train+val", seed);
            merged.push(train(merged_splits, None).0);
        }
        if let Some(class_weighting) = &class_weighting {
            on_run("class weights", seed);
            weighted.push(train(&splits, Some(class_weighting)).0);
        }
        on_run("baseline", seed);
        let (report, theta) = train(&splits, None);
        baseline.push(report);
        baseline_thetas.push(theta);
        on_run("with commentary", seed);
        with.push(train(&splits, Some(&commentary)).0);
    }
    let steps_to_baseline_accuracy = baseline
        .iter()
        .zip(&with)
        .map(|(b, w)| {
            w.curve
                .iter()
                .find(|p| p.val_accuracy >= b.final_val_accuracy)
                .map(|p| p.step)
        })
        .collect();
    let (baseline, with_commentary) = (arm(baseline), arm(with));
    let random_blending = random_blending.then(|| arm(random));
    let mut reference_arms = Vec::new();
    for (name, runs) in [("train+val", merged), ("class-weights", weighted)] {
        if !runs.is_empty() {
            reference_arms.push(ReferenceArm {
                name: name.to_owned(),
                arm: arm(runs),
            });
        }
    }
    let gain_over_best_reference = reference_arms
        .iter()
        .map(|r| r.arm.test_accuracy.mean)
        .max_by(f64::total_cmp)
        .map(|best| with_commentary.test_accuracy.mean - best);
    let masks = match &commentary {
        Commentary::Masks {
            mask_net,
            phi,
            range,
        } => Some(masks::mask_report(
            mask_net,
            phi,
            *range,
            &student,
            &baseline_thetas,
            &splits.test,
            manifest.config.seed,
        )),
        _ => None,
    };
    let label_noise = match (&record, artifact.tensors.get("insight.example_weights")) {
        (Some(record), Some(weights)) if !forced => weights
            .as_f32()
            .and_then(|w| scoring::noise_detection(w, record)),
        _ => None,
    };
    let z = gain_z(&with_commentary, &baseline);
    Ok(ApplyReport {
        kind: manifest.kind,
        dataset: summary.digest,
        student: student_spec.to_string(),
        steps: options.steps as u64,
        eval_every: options.eval_every as u64,
        batch_size: options.batch_size as u64,
        test_accuracy_gain: with_commentary.test_accuracy.mean - baseline.test_accuracy.mean,
        gain_z: z,
        harmful: z < HARMFUL_Z,
        validation: Some(validation),
        reference_arms,
        gain_over_best_reference,
        label_noise,
        baseline,
        with_commentary,
        steps_to_baseline_accuracy,
        random_blending,
        masks,
        forced,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tensors::LabelledImages;
    use crate::nn::loss;
    use crate::nn::testing::{device, random, values};
    use schema::ImageShape;

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
