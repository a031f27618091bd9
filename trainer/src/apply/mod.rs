//! `apply`: train fresh students with and without a commentary, side by side, and report how
//! much the commentary helps (accuracy curves, final test accuracy, steps to reach the
//! baseline's final validation accuracy), beside the reference arms a sceptical practitioner
//! would ask for, and flag a commentary that hurts.
//!
//! - `load`: the splits by the recorded validation protocol, the commentary, the reference arms'
//!   inputs;
//! - `students`: training and measuring one student;
//! - `masks`: the mask report (where masks point, the removal test);
//! - [`scoring`]: low weights as a detector of flipped labels.

mod load;
mod masks;
pub mod scoring;
mod students;

use std::path::{Path, PathBuf};
use std::time::Instant;

use schema::api::Evaluation;
use schema::arch::NetSpec;
use schema::artifact::verify_artifact;
use schema::report::{ApplyReport, HARMFUL_Z, ReferenceArm, gain_z};

use crate::data::Dataset;
use crate::device::ComputeDevice;
use crate::hypergrad::optim::InnerOptimizer;
use crate::models::Network;
use load::{class_weights, corruption_record, load_commentary, load_splits};
use students::{Commentary, Splits, arm, train_student};

use crate::stop::Stop;

/// Why a commentary could not be applied: the same kinds of failure as learning.
pub use crate::learn::LearnError as ApplyError;

/// How to train the students.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The student to train; None trains the one the commentary was learned with.
    pub student: Option<NetSpec>,
    /// Seeds, steps, batch size and the students' Adam (recorded in the report).
    pub evaluation: Evaluation,
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
    /// Checked before every student step: a stop ends `apply` with `Stopped`.
    pub stop: Stop,
}

impl Default for ApplyOptions {
    /// The registry's evaluation defaults, on the CPU.
    fn default() -> Self {
        Self {
            student: None,
            evaluation: Evaluation::default(),
            train_examples: None,
            device: ComputeDevice::Cpu,
            force: false,
            corruption: None,
            references: true,
            stop: Stop::never(),
        }
    }
}

impl ApplyOptions {
    /// The students' optimiser: Adam with the evaluation's settings.
    pub fn optimizer(&self) -> InnerOptimizer {
        let e = &self.evaluation;
        InnerOptimizer::Adam {
            lr: e.lr,
            beta1: e.adam_beta1,
            beta2: e.adam_beta2,
            eps: e.adam_eps,
        }
    }

    /// Student training steps per arm.
    pub(crate) fn steps(&self) -> usize {
        self.evaluation.steps as usize
    }
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
    if options.evaluation.seeds.is_empty() {
        return Err(ApplyError::Invalid("apply needs at least one seed".into()));
    }
    options
        .evaluation
        .validate()
        .map_err(|e| ApplyError::Invalid(e.to_string()))?;
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
    for &seed in &options.evaluation.seeds {
        let train = |splits: &Splits, commentary: Option<&Commentary>| {
            train_student(&student, splits, commentary, seed, options, &device)
        };
        if random_blending {
            on_run("random blending", seed);
            random.push(train(&splits, Some(&Commentary::RandomBlending))?.0);
        }
        if let Some(merged_splits) = &train_val {
            on_run("train+val", seed);
            merged.push(train(merged_splits, None)?.0);
        }
        if let Some(class_weighting) = &class_weighting {
            on_run("class weights", seed);
            weighted.push(train(&splits, Some(class_weighting))?.0);
        }
        on_run("baseline", seed);
        let (report, theta) = train(&splits, None)?;
        baseline.push(report);
        baseline_thetas.push(theta);
        on_run("with commentary", seed);
        with.push(train(&splits, Some(&commentary))?.0);
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
            masks::Removal {
                seed: manifest.config.seed,
                fraction: options.evaluation.mask_removed_fraction,
            },
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
        steps: u64::from(options.evaluation.steps),
        eval_every: u64::from(options.evaluation.eval_every),
        batch_size: u64::from(options.evaluation.batch_size),
        evaluation: Some(options.evaluation.clone()),
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
