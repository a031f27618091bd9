//! `learn`: turns a dataset into a commentary artifact. This module checks the request, loads
//! the data with its validation protocol, hands over to the kind's learner
//! (`commentary::{weighting, blending, masks}`) and assembles the manifest.
//!
//! - [`loops`]: the generic meta-loops (BPTT, online IFT); [`truncated`]: truncated BPTT;
//! - [`checkpoint`]: the checkpoint a restarted run resumes from.
//!
//! The best commentary so far is kept (the final one under truncated BPTT), so a time limit or
//! an interruption never loses progress.

pub(crate) mod checkpoint;
pub(crate) mod loops;
pub(crate) mod truncated;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use schema::arch::{ArchitectureSpec, CommentarySpec};
use schema::artifact::{
    ArtifactError, ArtifactManifest, DatasetRef, HypergradientMethod, Provenance,
    Tensor as FileTensor, TensorMap, TimeInput, write_artifact,
};
use schema::{Algorithm, CommentaryKind, LearnConfig, Sha256};

use crate::commentary::{blending, masks, weighting};
use crate::data::tensors::prepare;
use crate::data::{DataError, Dataset};
use crate::device::ComputeDevice;
use crate::models::Network;
use crate::stop::{Stop, Stopped};
use checkpoint::CHECKPOINT;
use loops::Run;

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
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// What to learn.
#[derive(Debug, Clone)]
pub struct LearnRequest {
    pub kind: CommentaryKind,
    pub algorithm: Algorithm,
    pub config: LearnConfig,
    pub device: ComputeDevice,
    pub run_id: Option<String>,
    /// Set from outside (a cancelled or lost server run, a shutdown): learning ends within an
    /// inner step with [`LearnError::Stopped`] and writes no artifact (the time limit, unlike
    /// it, keeps the best commentary so far).
    pub stop: Stop,
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

/// What a learning loop produced: the commentary's tensors (parameters and insights) and
/// metrics.
pub(crate) struct Learned {
    pub tensors: TensorMap,
    pub val_losses: Vec<f32>,
    pub best_val_loss: f32,
}

/// Learns a commentary on `dataset` and writes the artifact to `out`.
pub fn learn(
    dataset: &Dataset,
    request: &LearnRequest,
    out: &Path,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<ArtifactManifest, LearnError> {
    let spec = request.config.commentary_spec(request.kind);
    request
        .config
        .validate(request.kind, request.algorithm)
        .map_err(|e| LearnError::Invalid(e.to_string()))?;
    let config = &request.config;
    let device = crate::device::burn_device(request.device);
    let data = prepare(dataset, config, &device)?;
    request
        .config
        .validate_for(
            request.kind,
            request.algorithm,
            data.train.shape(),
            data.summary.classes.len(),
        )
        .map_err(|e| LearnError::Invalid(e.to_string()))?;
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
        CommentarySpec::Teacher {
            net,
            label_input,
            label_head,
        } => weighting::learn(&run, Some((net, *label_input, *label_head)), on_progress)?,
        CommentarySpec::Table => weighting::learn(&run, None, on_progress)?,
        CommentarySpec::MaskNet { net, range } => masks::learn(&run, net, *range, on_progress)?,
        CommentarySpec::BlendMatrix => blending::learn(&run, on_progress)?,
    };
    let shape = data.train.shape();
    let mut metrics = BTreeMap::new();
    metrics.insert("best_val_loss".to_owned(), f64::from(learned.best_val_loss));
    if let (Some(first), Some(last)) = (learned.val_losses.first(), learned.val_losses.last()) {
        metrics.insert("first_val_loss".to_owned(), f64::from(*first));
        metrics.insert("last_val_loss".to_owned(), f64::from(*last));
    }
    // Under truncated BPTT the curve has a point per block of a student's training.
    let points_per_meta_step = match request.algorithm {
        Algorithm::TruncatedBptt => truncated::truncated_blocks(config),
        _ => 1,
    };
    metrics.insert(
        "meta_steps_done".to_owned(),
        (learned.val_losses.len() / points_per_meta_step) as f64,
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
        validation: data.validation_ref.clone(),
        time_input: TimeInput::Progress,
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

/// Splits flat parameters into the named tensors of `net`.
pub(crate) fn parameter_tensors(net: &Network, values: &[f32]) -> Result<TensorMap, LearnError> {
    let mut map = TensorMap::new();
    for slot in net.params() {
        let part = values[slot.offset..slot.offset + slot.len].to_vec();
        let tensor = FileTensor::f32(slot.shape.clone(), part)
            .map_err(|e| LearnError::Invalid(e.to_string()))?;
        map.insert(slot.name.clone(), tensor);
    }
    Ok(map)
}

/// A tensor that could not be built (a shape mismatch: a bug, reported rather than a panic).
pub(crate) fn insight_error(e: schema::artifact::TensorError) -> LearnError {
    LearnError::Invalid(e.to_string())
}
