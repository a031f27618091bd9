//! `learn`: the meta-learning loop that turns a dataset into a commentary artifact.
//!
//! Example weighting (teacher network, BPTT): each meta-step initialises a fresh student, trains
//! it K steps on batches from the training pool under the teacher's weights, measures L_V on the
//! held-out validation examples, and moves the teacher along d L_V / d phi with Adam. The best
//! teacher (lowest L_V) is kept, so a time limit or an interruption never loses progress; a
//! checkpoint after every meta-step lets a restarted run resume where it stopped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use schema::arch::{ArchitectureSpec, CommentarySpec};
use schema::artifact::{
    ArtifactError, ArtifactManifest, DatasetRef, HypergradientMethod, Provenance,
    Tensor as FileTensor, TensorMap, TensorValues, decode_tensors, encode_tensors, write_artifact,
};
use schema::{Algorithm, CommentaryKind, DatasetSummary, LearnConfig, Sha256};

use crate::commentary::blending::{LabelBlending, blend_proportions};
use crate::commentary::masks::{AttentionMasking, mask_network, masks};
use crate::commentary::weighting::{
    LabelledImages, TeacherWeighting, WeightSource, teacher_network,
};
use crate::data::{DataError, Dataset, SplitData};
use crate::device::ComputeDevice;
use crate::hypergrad::ift::{self, InverseHessian, OnlineState};
use crate::hypergrad::optim::{InnerOptimizer, OptState};
use crate::hypergrad::{InnerProblem, bptt};
use crate::models::Network;
use crate::nn::loss;

/// Why learning (or applying) a commentary failed.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The request cannot work for this dataset or is not a valid combination.
    #[error("{0}")]
    Invalid(String),
}

/// What to learn.
#[derive(Debug, Clone)]
pub struct LearnRequest {
    pub kind: CommentaryKind,
    pub algorithm: Algorithm,
    pub config: LearnConfig,
    pub device: ComputeDevice,
    pub run_id: Option<String>,
    /// Set from outside (a cancelled server run) to stop after the current meta-step, as the
    /// time limit does.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Reported after every meta-step.
#[derive(Debug, Clone)]
pub struct Progress {
    pub meta_step: usize,
    pub meta_steps: usize,
    pub val_loss: f32,
    pub best_val_loss: f32,
    pub elapsed: Duration,
}

/// The train split in canonical order, split into a training pool and validation examples.
pub struct PreparedData {
    pub summary: DatasetSummary,
    pub train: LabelledImages,
    /// Canonical indices of the validation examples (sorted).
    pub validation_indices: Vec<u64>,
    /// Canonical indices the student trains on.
    pub pool: Vec<i64>,
}

/// Pixels (HWC u8) to a [n, c, h, w] tensor in [0, 1], labels to one-hot.
pub fn to_tensors(split: &SplitData, classes: usize, device: &Device) -> LabelledImages {
    let (h, w, c) = (
        split.shape.height as usize,
        split.shape.width as usize,
        split.shape.channels as usize,
    );
    let n = split.len();
    let mut chw = vec![0f32; split.pixels.len()];
    for i in 0..n {
        let image = split.image(i);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    chw[((i * c + ch) * h + y) * w + x] =
                        f32::from(image[(y * w + x) * c + ch]) / 255.0;
                }
            }
        }
    }
    let labels: Vec<i64> = split.labels.iter().map(|&l| i64::from(l)).collect();
    LabelledImages {
        images: Tensor::from_data(TensorData::new(chw, [n, c, h, w]), device),
        onehot: loss::one_hot(
            &Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device),
            classes,
        ),
    }
}

/// Loads the train split and holds out `config.validation_examples` of it (seeded).
pub fn prepare(
    dataset: &Dataset,
    config: &LearnConfig,
    device: &Device,
) -> Result<PreparedData, LearnError> {
    let summary = dataset.summarize()?;
    let split = dataset.load_split("train")?;
    let n = split.len();
    let wanted = match config.validation_examples {
        Some(explicit) => explicit as usize,
        None => (n / 5).clamp(1, 1000),
    };
    let batch = config.batch_size as usize;
    if wanted == 0 || batch == 0 {
        return Err(LearnError::Invalid(
            "validation_examples and batch_size must be positive".into(),
        ));
    }
    if n < wanted + batch {
        return Err(LearnError::Invalid(format!(
            "the train split has {n} examples: too few to hold out {wanted} for validation and still fill a batch of {batch} \
             (lower validation_examples)"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(config.seed));
    let mut validation: Vec<u64> = order[..wanted].iter().map(|&i| i as u64).collect();
    validation.sort_unstable();
    let mut pool: Vec<i64> = order[wanted..].iter().map(|&i| i as i64).collect();
    pool.sort_unstable();
    Ok(PreparedData {
        train: to_tensors(&split, summary.classes.len(), device),
        summary,
        validation_indices: validation,
        pool,
    })
}

fn indices(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// The random stream of meta-step `step`: derived from the seed, so a resumed run continues
/// exactly as an uninterrupted one.
fn step_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64 + 1))
}

/// Checkpoint file inside the output directory.
const CHECKPOINT: &str = ".learn-checkpoint.safetensors";

/// Everything a run needs to continue: the next meta-step, the best L_V so far, and named
/// vectors (phi, best phi, optimiser moments, ...).
#[derive(Default)]
struct Checkpoint {
    next_step: usize,
    best_val_loss: f32,
    vectors: BTreeMap<String, Vec<f32>>,
}

impl Checkpoint {
    fn save(&self, dir: &Path, fingerprint: &str) -> Result<(), LearnError> {
        let mut map = TensorMap::new();
        for (name, values) in &self.vectors {
            let tensor = FileTensor::f32(vec![values.len()], values.clone())
                .map_err(|e| LearnError::Invalid(e.to_string()))?;
            map.insert(name.clone(), tensor);
        }
        let metadata = [
            ("next_step".to_owned(), self.next_step.to_string()),
            ("best_val_loss".to_owned(), self.best_val_loss.to_string()),
            ("fingerprint".to_owned(), fingerprint.to_owned()),
        ];
        let bytes =
            encode_tensors(&map, metadata).map_err(|e| LearnError::Invalid(e.to_string()))?;
        schema::artifact::write_atomically(&dir.join(CHECKPOINT), &bytes)?;
        Ok(())
    }

    /// The checkpoint in `dir` if it belongs to the same request (same fingerprint).
    fn load(dir: &Path, fingerprint: &str) -> Option<Self> {
        let bytes = std::fs::read(dir.join(CHECKPOINT)).ok()?;
        let metadata = schema::artifact::decode_metadata(&bytes).ok()?;
        if metadata.get("fingerprint").map(String::as_str) != Some(fingerprint) {
            return None;
        }
        let vectors = decode_tensors(&bytes)
            .ok()?
            .into_iter()
            .filter_map(|(name, t)| t.as_f32().map(|v| (name, v.to_vec())))
            .collect();
        Some(Self {
            next_step: metadata.get("next_step")?.parse().ok()?,
            best_val_loss: metadata.get("best_val_loss")?.parse().ok()?,
            vectors,
        })
    }

    fn tensor(&self, name: &str, len: usize, device: &Device) -> Option<Tensor<1>> {
        self.vectors
            .get(name)
            .filter(|v| v.len() == len)
            .map(|v| vector(v, device))
    }

    /// A stored vector, empty when absent.
    fn vector(&self, name: &str) -> Vec<f32> {
        self.vectors.get(name).cloned().unwrap_or_default()
    }

    /// Records the L_V of meta-step `step`, measured with `phi`, keeping the best phi so far.
    fn record(&mut self, step: usize, val_loss: f32, phi: &Tensor<1>) -> Result<(), LearnError> {
        if !val_loss.is_finite() {
            return Err(LearnError::Invalid(format!(
                "the validation loss became {val_loss} at meta-step {step}: lower inner_lr or outer_lr"
            )));
        }
        if val_loss < self.best_val_loss {
            self.best_val_loss = val_loss;
            self.put("best_phi", phi);
        }
        self.vectors
            .entry("val_losses".to_owned())
            .or_default()
            .push(val_loss);
        self.next_step = step + 1;
        Ok(())
    }

    fn put(&mut self, name: &str, t: &Tensor<1>) {
        self.vectors.insert(name.to_owned(), to_vec(t));
    }

    /// An optimiser state stored under `prefix`.
    fn state(&self, prefix: &str, len: usize, device: &Device) -> OptState {
        OptState {
            step: self.next_step,
            first: self.tensor(&format!("{prefix}.first"), len, device),
            second: self.tensor(&format!("{prefix}.second"), len, device),
        }
    }

    fn put_state(&mut self, prefix: &str, state: &OptState) {
        if let Some(t) = &state.first {
            self.put(&format!("{prefix}.first"), t);
        }
        if let Some(t) = &state.second {
            self.put(&format!("{prefix}.second"), t);
        }
    }
}

fn vector(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

fn to_vec(t: &Tensor<1>) -> Vec<f32> {
    t.to_data().iter::<f32>().collect()
}

/// What every learning loop shares.
struct Run<'a> {
    request: &'a LearnRequest,
    data: &'a PreparedData,
    device: Device,
    out: &'a Path,
    fingerprint: String,
    started: Instant,
}

impl Run<'_> {
    fn config(&self) -> &LearnConfig {
        &self.request.config
    }

    /// Whether the time limit is reached or a stop was requested.
    fn out_of_time(&self) -> bool {
        let stopped = (self.request.stop.as_ref()).is_some_and(|s| s.load(Ordering::Relaxed));
        stopped
            || self
                .config()
                .time_limit_s
                .is_some_and(|l| self.started.elapsed() >= Duration::from_secs(l))
    }

    /// The checkpoint of an interrupted run of the same request when `usable`, else a fresh one
    /// that `start` fills.
    fn resume_or_start(
        &self,
        usable: impl Fn(&Checkpoint) -> bool,
        start: impl FnOnce(&mut Checkpoint),
    ) -> Checkpoint {
        match Checkpoint::load(self.out, &self.fingerprint) {
            Some(checkpoint) if usable(&checkpoint) => {
                let step = checkpoint.next_step;
                tracing::info!(
                    meta_step = step,
                    "resuming from checkpoint at meta-step {step}"
                );
                checkpoint
            }
            _ => {
                let mut fresh = Checkpoint {
                    best_val_loss: f32::INFINITY,
                    ..Checkpoint::default()
                };
                start(&mut fresh);
                fresh
            }
        }
    }

    /// Saves the checkpoint, reports progress, and says whether to stop (time is up).
    fn end_meta_step(
        &self,
        checkpoint: &Checkpoint,
        step: usize,
        val_loss: f32,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<bool, LearnError> {
        checkpoint.save(self.out, &self.fingerprint)?;
        on_progress(&Progress {
            meta_step: step,
            meta_steps: self.config().meta_steps as usize,
            val_loss,
            best_val_loss: checkpoint.best_val_loss,
            elapsed: self.started.elapsed(),
        });
        let stop = self.out_of_time();
        if stop {
            tracing::info!(
                meta_step = step,
                "time limit reached; keeping the best commentary so far"
            );
        }
        Ok(stop)
    }

    /// A fresh-student network for the dataset (parameters named `student.*`).
    fn student(&self) -> Network {
        let data = self.data;
        Network::new(
            &self.config().student,
            "student.",
            data.train.shape(),
            0,
            data.summary.classes.len(),
        )
    }

    /// A fixed sample of validation examples for L_V.
    fn validation(&self, rng: &mut StdRng) -> LabelledImages {
        let mut chosen: Vec<i64> = self
            .data
            .validation_indices
            .iter()
            .map(|&i| i as i64)
            .collect();
        chosen.shuffle(rng);
        chosen.truncate(self.config().validation_batch_size.max(1) as usize);
        self.data.train.select(&indices(&chosen, &self.device))
    }
}

/// What a learning loop produced: the commentary's tensors (parameters and insights) and
/// metrics.
struct Learned {
    tensors: TensorMap,
    val_losses: Vec<f32>,
    best_val_loss: f32,
}

/// Learns a commentary on `dataset` and writes the artifact to `out`.
pub fn learn(
    dataset: &Dataset,
    request: &LearnRequest,
    out: &Path,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<ArtifactManifest, LearnError> {
    let spec = request.config.commentary_spec(request.kind);
    match (&spec, request.algorithm) {
        (CommentarySpec::Teacher { .. } | CommentarySpec::Table, Algorithm::Bptt)
        | (CommentarySpec::BlendMatrix, Algorithm::Ift)
        | (CommentarySpec::MaskNet { .. }, _) => {}
        (CommentarySpec::Teacher { .. }, Algorithm::Ift) => {
            return Err(LearnError::Invalid(
                "example weighting with a teacher network is learned by BPTT (the teacher's time input i/T needs the \
                 trajectory); use --algorithm bptt"
                    .into(),
            ));
        }
        (CommentarySpec::BlendMatrix, Algorithm::Bptt) => {
            return Err(LearnError::Invalid(
                "label blending is learned by IFT while the student trains; use --algorithm ift"
                    .into(),
            ));
        }
        (other, algorithm) => {
            return Err(LearnError::Invalid(format!(
                "learning {} ({other:?}) by {algorithm} is not available in this build yet; example weighting with a \
                 teacher network or a table (bptt), label blending (ift) and attention masks (ift or bptt) are",
                request.kind
            )));
        }
    }
    let config = &request.config;
    let device = crate::device::burn_device(request.device);
    let data = prepare(dataset, config, &device)?;
    std::fs::create_dir_all(out).map_err(|source| ArtifactError::Io {
        path: out.to_owned(),
        source,
    })?;
    // A run may be resumed with more or fewer meta-steps or another time limit; anything else
    // changed starts afresh.
    let resumable = LearnConfig {
        meta_steps: 0,
        time_limit_s: None,
        ..config.clone()
    };
    let fingerprint = Sha256::of(
        format!(
            "{}|{}|{}|{resumable:?}",
            data.summary.digest, request.kind, request.algorithm
        )
        .as_bytes(),
    )
    .hex();
    let run = Run {
        request,
        data: &data,
        device,
        out,
        fingerprint,
        started: Instant::now(),
    };
    let learned = match &spec {
        CommentarySpec::Teacher { net, label_input } => {
            learn_weighting(&run, Some((net, *label_input)), on_progress)?
        }
        CommentarySpec::Table => learn_weighting(&run, None, on_progress)?,
        CommentarySpec::MaskNet { net } => learn_masks(&run, net, request.algorithm, on_progress)?,
        _ => learn_blending(&run, on_progress)?,
    };
    let shape = data.train.shape();
    let mut metrics = BTreeMap::new();
    metrics.insert("best_val_loss".to_owned(), f64::from(learned.best_val_loss));
    if let (Some(first), Some(last)) = (learned.val_losses.first(), learned.val_losses.last()) {
        metrics.insert("first_val_loss".to_owned(), f64::from(*first));
        metrics.insert("last_val_loss".to_owned(), f64::from(*last));
    }
    metrics.insert(
        "meta_steps_done".to_owned(),
        learned.val_losses.len() as f64,
    );
    let manifest = ArtifactManifest {
        format_version: schema::artifact::FORMAT_VERSION,
        kind: request.kind,
        algorithm: request.algorithm,
        dataset: DatasetRef {
            digest: data.summary.digest,
            shape,
            classes: data.summary.classes.clone(),
            train_examples: data.train.len() as u64,
        },
        validation_indices: data.validation_indices.clone(),
        architecture: ArchitectureSpec {
            student: config.student.clone(),
            commentary: spec.clone(),
        },
        config: config.clone(),
        hypergradient: HypergradientMethod::Exact,
        metrics,
        provenance: Provenance {
            trainer_version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: match request.device {
                ComputeDevice::Cpu => "flex".to_owned(),
                other => other.to_string(),
            },
            device: request.device.to_string(),
            seed: config.seed,
            run_id: request.run_id.clone(),
            created_at: chrono::Utc::now(),
        },
        tensors_sha256: Sha256([0; 32]),
    };
    let written = write_artifact(out, manifest, &learned.tensors)?;
    let _ = std::fs::remove_file(out.join(CHECKPOINT));
    Ok(written)
}

/// BPTT meta-steps, shared by example weighting and attention masks: each meta-step builds its
/// inner problem with `make_problem` (fresh batches from the step's seeded stream), trains a
/// fresh student K steps, and moves phi along d L_V / d phi with Adam.
fn learn_bptt<'a>(
    run: &Run<'_>,
    phi_len: usize,
    initial_phi: impl FnOnce() -> Tensor<1>,
    steps: usize,
    on_progress: &mut dyn FnMut(&Progress),
    make_problem: &dyn Fn(&mut StdRng) -> Box<dyn InnerProblem + 'a>,
    student: &Network,
) -> Result<OnlineResult, LearnError> {
    let (config, device) = (run.config(), &run.device);
    let inner = InnerOptimizer::from_config(config);
    let outer = outer_optimizer(config);
    let mut checkpoint = run.resume_or_start(
        |c| c.tensor("phi", phi_len, device).is_some(),
        |fresh| {
            let phi = initial_phi();
            fresh.put("phi", &phi);
            fresh.put("best_phi", &phi);
        },
    );
    let mut phi = checkpoint
        .tensor("phi", phi_len, device)
        .unwrap_or_else(|| Tensor::zeros([phi_len], device));
    let mut outer_state = checkpoint.state("outer", phi_len, device);
    while checkpoint.next_step < config.meta_steps as usize {
        let step = checkpoint.next_step;
        let mut rng = step_rng(config.seed, step);
        let problem = make_problem(&mut rng);
        let theta0 = student.init(&mut rng, device);
        let result = bptt::hypergradient(problem.as_ref(), &theta0, &phi, inner, steps);
        checkpoint.record(step, result.val_loss, &phi)?;
        let (next, state) = outer.step(&phi, &outer_state, result.hypergrad);
        phi = next.detach();
        outer_state = state.detached();
        checkpoint.put("phi", &phi);
        checkpoint.put_state("outer", &outer_state);
        if run.end_meta_step(&checkpoint, step, result.val_loss, on_progress)? {
            break;
        }
    }
    Ok(OnlineResult {
        best_phi: checkpoint.vector("best_phi"),
        val_losses: checkpoint.vector("val_losses"),
        best_val_loss: checkpoint.best_val_loss,
    })
}

/// Example weighting: BPTT meta-steps, each with a fresh student. `teacher` None learns a
/// per-example table instead of a teacher network.
fn learn_weighting(
    run: &Run<'_>,
    teacher: Option<(&schema::arch::NetSpec, bool)>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Learned, LearnError> {
    let (config, data, device) = (run.config(), run.data, &run.device);
    let shape = data.train.shape();
    let classes = data.summary.classes.len();
    let student = run.student();
    let (steps, batch) = (
        config.inner_steps.max(1) as usize,
        config.batch_size as usize,
    );
    let teacher = teacher.map(|(net, label_input)| {
        (
            teacher_network(net, shape, classes, label_input),
            label_input,
        )
    });
    let source = match &teacher {
        Some((net, label_input)) => WeightSource::Teacher {
            net: net.clone(),
            label_input: *label_input,
            horizon: steps,
        },
        None => WeightSource::Table,
    };
    let phi_len = source.phi_len(data.train.len());
    let initial_phi = || match &teacher {
        Some((net, _)) => net.init(&mut step_rng(config.seed, usize::MAX - 1), device),
        // A table starts at w = 0.5 for every example.
        None => Tensor::zeros([phi_len], device),
    };
    let result = learn_bptt(
        run,
        phi_len,
        initial_phi,
        steps,
        on_progress,
        &|rng| {
            let chosen: Vec<i64> = (0..steps * batch)
                .map(|_| data.pool[rng.random_range(0..data.pool.len())])
                .collect();
            Box::new(TeacherWeighting {
                student: student.clone(),
                source: source.clone(),
                train: data.train.clone(),
                validation: run.validation(rng),
                batches: chosen.chunks(batch).map(|b| indices(b, device)).collect(),
            })
        },
        &student,
    )?;
    let best_phi = result.best_phi;
    let mut tensors = match &teacher {
        Some((net, _)) => parameter_tensors(net, &best_phi)?,
        None => {
            let mut map = TensorMap::new();
            map.insert(
                "commentary.logits".into(),
                FileTensor::f32(vec![phi_len], best_phi.clone()).map_err(insight_error)?,
            );
            map
        }
    };
    weighting_insights(
        &source,
        &vector(&best_phi, device),
        data,
        steps,
        &mut tensors,
    )?;
    Ok(Learned {
        tensors,
        val_losses: result.val_losses,
        best_val_loss: result.best_val_loss,
    })
}

/// Adam on the commentary parameters.
fn outer_optimizer(config: &LearnConfig) -> InnerOptimizer {
    InnerOptimizer::Adam {
        lr: config.outer_lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    }
}

/// What a learning loop (BPTT or online IFT) produced.
struct OnlineResult {
    best_phi: Vec<f32>,
    val_losses: Vec<f32>,
    best_val_loss: f32,
}

/// Online IFT, shared by label blending and attention masks: one student trains
/// `meta_steps` x `inner_steps` steps while phi takes a hyper-step every `hyper_step_every`
/// steps; progress and checkpoints come per block of `inner_steps`.
fn learn_online_ift(
    run: &Run<'_>,
    problem: &dyn InnerProblem,
    student: &Network,
    initial_phi: Tensor<1>,
    rng: &mut StdRng,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<OnlineResult, LearnError> {
    let (config, device) = (run.config(), &run.device);
    let inner = InnerOptimizer::from_config(config);
    let outer = outer_optimizer(config);
    let method = InverseHessian::Neumann {
        terms: config.neumann_terms as usize,
        alpha: config.neumann_lr,
    };
    let every = config.hyper_step_every.max(1) as usize;
    let block = config.inner_steps.max(1) as usize;
    let phi_len = initial_phi.dims()[0];
    let mut checkpoint = run.resume_or_start(
        |c| {
            c.tensor("phi", phi_len, device).is_some()
                && c.tensor("theta", student.len(), device).is_some()
        },
        |fresh| {
            fresh.put("phi", &initial_phi);
            fresh.put("best_phi", &initial_phi);
            fresh.put("theta", &student.init(rng, device));
        },
    );
    let theta = checkpoint
        .tensor("theta", student.len(), device)
        .unwrap_or_else(|| student.init(rng, device));
    let phi = checkpoint
        .tensor("phi", phi_len, device)
        .unwrap_or_else(|| Tensor::zeros([phi_len], device));
    let mut state = OnlineState {
        inner: OptState {
            step: checkpoint.next_step * block,
            ..checkpoint.state("inner", student.len(), device)
        },
        outer: OptState {
            step: checkpoint.next_step * block / every,
            ..checkpoint.state("outer", phi_len, device)
        },
        ..OnlineState::new(theta, phi)
    };
    let meta_steps = config.meta_steps as usize;
    while checkpoint.next_step < meta_steps {
        let block_index = checkpoint.next_step;
        let steps = block_index * block..(block_index + 1) * block;
        let block_losses =
            ift::learn_online(problem, &mut state, inner, outer, steps, every, method)
                .map_err(|e| LearnError::Invalid(format!("in block {block_index}: {e}")))?;
        let val_loss = match block_losses.last() {
            Some(&(_, v)) => v,
            None => crate::hypergrad::scalar(&problem.validation_loss(&state.theta)),
        };
        checkpoint.record(block_index, val_loss, &state.phi)?;
        checkpoint.put("phi", &state.phi);
        checkpoint.put("theta", &state.theta);
        checkpoint.put_state("inner", &state.inner);
        checkpoint.put_state("outer", &state.outer);
        if run.end_meta_step(&checkpoint, block_index, val_loss, on_progress)? {
            break;
        }
    }
    Ok(OnlineResult {
        best_phi: checkpoint.vector("best_phi"),
        val_losses: checkpoint.vector("val_losses"),
        best_val_loss: checkpoint.best_val_loss,
    })
}

fn insight_error(e: schema::artifact::TensorError) -> LearnError {
    LearnError::Invalid(e.to_string())
}

/// Label blending by online IFT, starting from M = 0 (lambda = 0.75 for every pair).
fn learn_blending(
    run: &Run<'_>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Learned, LearnError> {
    let (config, data, device) = (run.config(), run.data, &run.device);
    let classes = data.summary.classes.len();
    let student = run.student();
    let mut rng = step_rng(config.seed, usize::MAX - 2);
    let problem = LabelBlending {
        student: student.clone(),
        train: data.train.clone(),
        validation: run.validation(&mut rng),
        pool: data.pool.clone(),
        batch_size: config.batch_size as usize,
        seed: config.seed,
    };
    let phi_len = classes * classes;
    let result = learn_online_ift(
        run,
        &problem,
        &student,
        Tensor::zeros([phi_len], device),
        &mut rng,
        on_progress,
    )?;
    let mut tensors = TensorMap::new();
    tensors.insert(
        "commentary.logits".into(),
        FileTensor::f32(vec![classes, classes], result.best_phi.clone()).map_err(insight_error)?,
    );
    let proportions =
        to_vec(&blend_proportions(&vector(&result.best_phi, device), classes).reshape([phi_len]));
    tensors.insert(
        "insight.blend".into(),
        FileTensor::f32(vec![classes, classes], proportions).map_err(insight_error)?,
    );
    Ok(Learned {
        tensors,
        val_losses: result.val_losses,
        best_val_loss: result.best_val_loss,
    })
}

/// Examples whose masks the insight tensors record.
const MASK_SAMPLE: usize = 32;

/// Attention masks by online IFT.
fn learn_masks(
    run: &Run<'_>,
    mask_spec: &schema::arch::NetSpec,
    algorithm: Algorithm,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Learned, LearnError> {
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
    };
    let initial = mask_net.init(&mut rng, device);
    let result = match algorithm {
        Algorithm::Ift => {
            learn_online_ift(run, &problem, &student, initial, &mut rng, on_progress)?
        }
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
    let mut sample: Vec<i64> = data.validation_indices.iter().map(|&i| i as i64).collect();
    sample.truncate(MASK_SAMPLE);
    let examples = data.train.select(&indices(&sample, device));
    let n = sample.len();
    let (h, w, c) = (
        shape.height as usize,
        shape.width as usize,
        shape.channels as usize,
    );
    let masks = masks(
        &mask_net,
        &vector(&result.best_phi, device),
        &examples.images,
    );
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
    Ok(Learned {
        tensors,
        val_losses: result.val_losses,
        best_val_loss: result.best_val_loss,
    })
}

/// Splits flat parameters into the named tensors of `net`.
fn parameter_tensors(net: &Network, values: &[f32]) -> Result<TensorMap, LearnError> {
    let mut map = TensorMap::new();
    for slot in net.params() {
        let part = values[slot.offset..slot.offset + slot.len].to_vec();
        let tensor = FileTensor::f32(slot.shape.clone(), part)
            .map_err(|e| LearnError::Invalid(e.to_string()))?;
        map.insert(slot.name.clone(), tensor);
    }
    Ok(map)
}

/// Examples whose weights the insight tensors record.
const INSIGHT_SAMPLE: usize = 256;
/// Points of the curriculum recorded (as fractions of T).
const INSIGHT_POINTS: usize = 5;

/// Weights of a fixed sample of training examples at several iterations, with their classes
/// and canonical indices, and the mean weight per class at each iteration.
fn weighting_insights(
    source: &WeightSource,
    phi: &Tensor<1>,
    data: &PreparedData,
    horizon: usize,
    tensors: &mut TensorMap,
) -> Result<(), LearnError> {
    let device = phi.device();
    let mut sample = data.pool.clone();
    sample.shuffle(&mut StdRng::seed_from_u64(0x1A51_6475));
    sample.truncate(INSIGHT_SAMPLE);
    sample.sort_unstable();
    let sample_indices = indices(&sample, &device);
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
    Ok(())
}
