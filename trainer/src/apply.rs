//! `apply`: train fresh students with and without a commentary, side by side, and report how
//! much the commentary helps (accuracy curves, final test accuracy, steps to reach the
//! baseline's final validation accuracy).

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use schema::arch::{CommentarySpec, NetSpec};
use schema::artifact::verify_artifact;
use schema::report::{ApplyReport, ArmReport, CurvePoint, MaskReport, RunReport, Spread};

use crate::commentary::blending::{blend, blend_with};
use crate::commentary::masks::{apply_masks, mask_network, masks};
use crate::commentary::weighting::{LabelledImages, WeightSource, teacher_network};
use crate::data::Dataset;
use crate::device::ComputeDevice;
use crate::hypergrad::optim::{InnerOptimizer, OptState};
use crate::learn::to_tensors;
use crate::models::{Input, Network};
use crate::nn::loss;

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
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            student: None,
            seeds: vec![1, 2, 3],
            steps: 500,
            eval_every: 50,
            batch_size: 32,
            train_examples: None,
            lr: 1e-3,
            device: ComputeDevice::Cpu,
            force: false,
        }
    }
}

/// A loaded commentary, ready to shape a student's training.
enum Commentary {
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
    },
    /// The "random blending" baseline: lambda ~ U(0.5, 1) per pair, drawn each batch.
    RandomBlending,
}

/// Examples evaluated per forward pass (bounds memory on large splits).
const EVAL_CHUNK: usize = 500;

fn accuracy_and_loss(net: &Network, theta: &Tensor<1>, data: &LabelledImages) -> (f64, f64) {
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

struct Splits {
    train: LabelledImages,
    pool: Vec<i64>,
    validation: LabelledImages,
    test: LabelledImages,
}

fn index_tensor(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// Trains one student from `seed`, with the commentary or without.
fn train_student(
    student: &Network,
    splits: &Splits,
    commentary: Option<&Commentary>,
    seed: u64,
    options: &ApplyOptions,
    device: &Device,
) -> (RunReport, Tensor<1>) {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut theta = student.init(&mut rng, device);
    let adam = InnerOptimizer::Adam {
        lr: options.lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut state = OptState::new();
    let mut curve = Vec::new();
    let b = options.batch_size;
    for step in 0..options.steps {
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
            Some(Commentary::Masks { mask_net, phi }) => {
                let masked = apply_masks(mask_net, phi, &batch.images).detach();
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
        let (logits, trace) = student.forward(&theta, Input::Image(images), None);
        let dlogits = loss::weighted_mean_backward(&logits, &targets, weights.as_ref());
        let grad = student.backward(&theta, &trace, dlogits);
        let (next, next_state) = adam.step(&theta, &state, grad);
        theta = next.detach();
        state = next_state.detached();
        if (step + 1) % options.eval_every.max(1) == 0 || step + 1 == options.steps {
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
    (report, theta)
}

/// Share of the image removed in the removal test.
const REMOVED_FRACTION: f64 = 0.25;

/// Mask quality on the test split: the share of mask mass inside each digit's bounding box
/// (pixels brighter than 0.1 away from the border band where spurious patches sit), and the
/// accuracy of the baseline students when the most-masked 25% of pixels are removed versus a
/// random 25%.
fn mask_report(
    mask_net: &Network,
    phi: &Tensor<1>,
    student: &Network,
    baselines: &[Tensor<1>],
    test: &LabelledImages,
    seed: u64,
) -> MaskReport {
    let [n, _, h, w] = test.images.dims();
    let device = test.images.device();
    let band = crate::data::spurious::PATCH;
    let mut in_box = 0f64;
    let mut removed_masked = Vec::new();
    let mut removed_random = Vec::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let remove = (REMOVED_FRACTION * (h * w) as f64).round() as usize;
    let mut start = 0;
    let (mut keep_masked, mut keep_random) =
        (Vec::with_capacity(n * h * w), Vec::with_capacity(n * h * w));
    while start < n {
        let len = EVAL_CHUNK.min(n - start);
        let images = test.images.clone().narrow(0, start, len);
        let m: Vec<f32> = masks(mask_net, phi, &images)
            .reshape([len * h * w])
            .to_data()
            .iter::<f32>()
            .collect();
        // The brightest channel decides whether a pixel belongs to the object.
        let x: Vec<f32> = images
            .max_dim(1)
            .reshape([len * h * w])
            .to_data()
            .iter::<f32>()
            .collect();
        for i in 0..len {
            let (mi, xi) = (
                &m[i * h * w..(i + 1) * h * w],
                &x[i * h * w..(i + 1) * h * w],
            );
            let (mut top, mut left, mut bottom, mut right) = (h, w, 0, 0);
            for y in band.min(h)..h.saturating_sub(band) {
                for xx in band.min(w)..w.saturating_sub(band) {
                    if xi[y * w + xx] > 0.1 {
                        (top, left, bottom, right) =
                            (top.min(y), left.min(xx), bottom.max(y), right.max(xx));
                    }
                }
            }
            let total: f64 = mi.iter().map(|&v| f64::from(v)).sum();
            let inside: f64 = if top <= bottom {
                (top..=bottom)
                    .flat_map(|y| (left..=right).map(move |xx| y * w + xx))
                    .map(|p| f64::from(mi[p]))
                    .sum()
            } else {
                0.0
            };
            in_box += if total > 0.0 { inside / total } else { 0.0 };
            let mut order: Vec<usize> = (0..h * w).collect();
            order.sort_by(|&a, &b| mi[b].total_cmp(&mi[a]));
            let mut keep = vec![1f32; h * w];
            order[..remove].iter().for_each(|&p| keep[p] = 0.0);
            keep_masked.extend_from_slice(&keep);
            order.shuffle(&mut rng);
            let mut keep = vec![1f32; h * w];
            order[..remove].iter().for_each(|&p| keep[p] = 0.0);
            keep_random.extend_from_slice(&keep);
        }
        start += len;
    }
    let apply_keep = |keep: Vec<f32>| LabelledImages {
        images: test.images.clone()
            * Tensor::<4>::from_data(TensorData::new(keep, [n, 1, h, w]), &device),
        onehot: test.onehot.clone(),
    };
    let (masked_removed, random_removed) = (apply_keep(keep_masked), apply_keep(keep_random));
    for theta in baselines {
        removed_masked.push(accuracy_and_loss(student, theta, &masked_removed).0);
        removed_random.push(accuracy_and_loss(student, theta, &random_removed).0);
    }
    MaskReport {
        mass_in_box: in_box / n.max(1) as f64,
        removed_fraction: REMOVED_FRACTION,
        accuracy_most_masked_removed: Spread::of(&removed_masked),
        accuracy_random_removed: Spread::of(&removed_random),
    }
}

fn arm(runs: Vec<RunReport>) -> ArmReport {
    let test: Vec<f64> = runs.iter().map(|r| r.test_accuracy).collect();
    let val: Vec<f64> = runs.iter().map(|r| r.final_val_accuracy).collect();
    ArmReport {
        test_accuracy: Spread::of(&test),
        final_val_accuracy: Spread::of(&val),
        runs,
    }
}

/// Applies the commentary in `artifact_dir` to `dataset` and returns the report (also written to
/// the artifact as `report.json` by the caller).
pub fn apply(
    dataset: &Dataset,
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
    let device = crate::device::burn_device(options.device);
    let classes = summary.classes.len();
    let train_split = dataset.load_split("train")?;
    let shape = train_split.shape;
    if shape != manifest.dataset.shape || classes != manifest.dataset.classes.len() {
        return Err(ApplyError::Invalid(format!(
            "the commentary was learned on {} images with {} classes; this dataset has {shape} images with {classes} classes",
            manifest.dataset.shape,
            manifest.dataset.classes.len()
        )));
    }
    let test_split = dataset.load_split("test").map_err(|_| {
        ApplyError::Invalid(format!(
            "the dataset has no test split (its splits are {:?})",
            dataset.split_names()
        ))
    })?;
    let train = to_tensors(&train_split, classes, &device);
    let n = train.len() as u64;
    let validation_indices: Vec<i64> = if forced {
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut StdRng::seed_from_u64(manifest.config.seed));
        order.truncate(
            manifest
                .validation_indices
                .len()
                .min(train.len() / 5)
                .max(1),
        );
        order.sort_unstable();
        order
    } else {
        manifest
            .validation_indices
            .iter()
            .map(|&i| i as i64)
            .collect()
    };
    let held_out: std::collections::HashSet<i64> = validation_indices.iter().copied().collect();
    let mut pool: Vec<i64> = (0..n as i64).filter(|i| !held_out.contains(i)).collect();
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
        validation: train.select(&index_tensor(&validation_indices, &device)),
        test: to_tensors(&test_split, classes, &device),
        train,
        pool,
    };
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
            &device,
        ))
    };
    let commentary = match &manifest.architecture.commentary {
        CommentarySpec::Teacher { net, label_input } => {
            let teacher = teacher_network(net, shape, classes, *label_input);
            let names: Vec<String> = teacher.params().iter().map(|p| p.name.clone()).collect();
            let horizon = manifest.config.inner_steps.max(1) as usize;
            Commentary::Weighting {
                phi: phi(&names)?,
                source: WeightSource::Teacher {
                    net: teacher,
                    label_input: *label_input,
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
        CommentarySpec::MaskNet { net } => {
            let mask_net = mask_network(net, shape);
            let names: Vec<String> = mask_net.params().iter().map(|p| p.name.clone()).collect();
            Commentary::Masks {
                phi: phi(&names)?,
                mask_net,
            }
        }
        CommentarySpec::BlendMatrix => Commentary::Blending {
            phi: phi(&["commentary.logits".to_owned()])?,
        },
    };
    let student_spec = options
        .student
        .clone()
        .unwrap_or_else(|| manifest.architecture.student.clone());
    let student = Network::new(&student_spec, "student.", shape, 0, classes);
    let mut baseline = Vec::new();
    let mut with = Vec::new();
    let mut random = Vec::new();
    let mut baseline_thetas = Vec::new();
    let random_blending = matches!(commentary, Commentary::Blending { .. });
    for &seed in &options.seeds {
        if random_blending {
            on_run("random blending", seed);
            random.push(
                train_student(
                    &student,
                    &splits,
                    Some(&Commentary::RandomBlending),
                    seed,
                    options,
                    &device,
                )
                .0,
            );
        }
        on_run("baseline", seed);
        let (report, theta) = train_student(&student, &splits, None, seed, options, &device);
        baseline.push(report);
        baseline_thetas.push(theta);
        on_run("with commentary", seed);
        with.push(train_student(&student, &splits, Some(&commentary), seed, options, &device).0);
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
    let masks = match &commentary {
        Commentary::Masks { mask_net, phi } => Some(mask_report(
            mask_net,
            phi,
            &student,
            &baseline_thetas,
            &splits.test,
            manifest.config.seed,
        )),
        _ => None,
    };
    Ok(ApplyReport {
        kind: manifest.kind,
        dataset: summary.digest,
        student: student_spec.to_string(),
        steps: options.steps as u64,
        eval_every: options.eval_every as u64,
        batch_size: options.batch_size as u64,
        test_accuracy_gain: with_commentary.test_accuracy.mean - baseline.test_accuracy.mean,
        baseline,
        with_commentary,
        steps_to_baseline_accuracy,
        random_blending,
        masks,
        forced,
        wall_s: started.elapsed().as_secs_f64(),
    })
}
