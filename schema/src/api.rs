//! REST request and response bodies of the registry (`/v1/...`), shared by the server, the CLI
//! client and remote workers so both ends agree on one definition. docs/registry.md describes
//! the routes; the server's `/openapi.json` is generated from these types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::artifact::ArtifactManifest;
pub use crate::evaluation::Evaluation;
use crate::report::ApplyReport;
use crate::{Algorithm, CommentaryKind, DatasetSummary, LearnConfig, Sha256};

/// The one error shape of every failed request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `not_found`, `invalid_dataset`, `payload_too_large`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// One page of a list; pass `next_cursor` back as `?cursor=` for the next page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A stored dataset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatasetInfo {
    pub digest: Sha256,
    /// The name given at upload (not unique; the digest is the identity).
    pub name: String,
    pub summary: DatasetSummary,
    /// Size of the archive as uploaded.
    pub archive_bytes: u64,
    /// Commentaries stored for this dataset.
    pub commentaries: u64,
    pub created_at: DateTime<Utc>,
}

/// The lifecycle of a learning run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the run can change state no more.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown run state {s:?}"))
    }
}

/// `POST /v1/runs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The dataset's digest (`sha256:<hex>` or bare hex); it must be stored.
    pub dataset: String,
    pub kind: CommentaryKind,
    /// Unset: [`Algorithm::default_for`] the kind (truncated-bptt for example weighting on a
    /// dataset with a trusted `val` split); the run records the algorithm it resolved to.
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    #[serde(default)]
    pub config: LearnConfig,
    #[serde(default)]
    pub evaluation: Evaluation,
}

impl RunRequest {
    /// The algorithm this request runs on a dataset with `splits`.
    pub fn resolved_algorithm(&self, splits: &[&str]) -> Algorithm {
        self.algorithm.unwrap_or_else(|| {
            let trusted = self.config.validation_split.is_some() || splits.contains(&"val");
            Algorithm::default_for(self.kind, trusted)
        })
    }
}

/// A learning run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunInfo {
    pub id: String,
    pub dataset: Sha256,
    pub kind: CommentaryKind,
    pub algorithm: Algorithm,
    pub config: LearnConfig,
    pub evaluation: Evaluation,
    pub state: RunState,
    /// Leases taken so far (a lease that expires re-queues the run).
    pub attempts: u32,
    pub max_attempts: u32,
    /// The last error (kept when a re-queued run later fails for good).
    pub error: Option<String>,
    /// The last progress report.
    pub progress: Option<Progress>,
    /// The published commentary once the run succeeded.
    pub commentary_id: Option<String>,
    /// Who holds the lease while running.
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `202` answer of `POST /v1/runs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunCreated {
    pub id: String,
    pub state: RunState,
}

/// A meta-step progress report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub phase: Phase,
    /// Meta-steps done (learning) or students trained (evaluating).
    pub step: u64,
    pub total: u64,
    /// The validation loss L_V after this meta-step (learning only).
    pub val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Learning,
    Evaluating,
    /// The run succeeded and its commentary is published (step = total).
    Done,
}

/// One stored progress event of a run (also the SSE `data`; the SSE `id` is `seq`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunEvent {
    pub seq: i64,
    pub run_id: String,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened. The SSE event name is the `type`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The run changed state.
    State {
        state: RunState,
        message: Option<String>,
    },
    Progress(Progress),
    /// A line for people (e.g. "training a student (baseline, seed 1)").
    Log {
        message: String,
    },
}

/// `POST /v1/runs/lease`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseRequest {
    /// A name for the worker (shown on the run).
    pub worker: String,
}

/// `200` answer of `POST /v1/runs/lease` (`204` when nothing is queued).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    /// Present with every later call for this run; a lease that expired is refused (409).
    pub lease: String,
    pub run: RunInfo,
    /// Heartbeat at least this often (seconds) or the run is re-queued.
    pub ttl_s: u64,
}

/// Body of heartbeat, events and fail calls: the lease it is made under.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseRef {
    pub lease: String,
}

/// `200` answer of a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// `running`, or `cancelled` when someone cancelled the run (stop and call fail).
    pub state: RunState,
    pub ttl_s: u64,
}

/// Most events one `POST /v1/runs/{id}/events` may carry (workers send larger backlogs in
/// several calls, so a batch stays well under the JSON body limit).
pub const MAX_EVENTS_PER_POST: usize = 1_000;

/// `POST /v1/runs/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventsPost {
    pub lease: String,
    pub events: Vec<EventBody>,
}

/// `POST /v1/runs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailPost {
    pub lease: String,
    pub error: String,
}

/// A stored commentary in lists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommentaryInfo {
    pub id: String,
    pub dataset: Sha256,
    pub kind: CommentaryKind,
    pub algorithm: Algorithm,
    /// sha256 of `tensors.safetensors`; its bare hex, quoted, is the artifact's strong ETag.
    pub tensors_sha256: Sha256,
    pub tensors_bytes: u64,
    /// Test-accuracy gain of students trained with it over without (from its apply report).
    pub improvement: Option<f64>,
    /// Its apply report found it hurts beyond noise (z < -2): never picked as "best".
    #[serde(default)]
    pub harmful: bool,
    /// This registry measured the improvement itself: the commentary was learned and evaluated
    /// by its own workers (it has a run). An uploaded commentary's report is the uploader's
    /// claim: unverified, ranked after every verified one.
    #[serde(default)]
    pub verified: bool,
    pub run_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `GET /v1/commentaries/{id}`: the list entry plus the manifest and apply report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommentaryDetail {
    #[serde(flatten)]
    pub info: CommentaryInfo,
    pub manifest: ArtifactManifest,
    pub report: Option<ApplyReport>,
}

/// One train example's learned weight (`GET /v1/commentaries/{id}/examples`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExampleWeight {
    /// Index in the train split's canonical order (as in the dataset's example images).
    pub index: u64,
    pub label: u32,
    /// The label's class name.
    pub class: String,
    /// The weight, averaged over training progress 0, 0.25, 0.5, 0.75 and 1.
    pub weight: f32,
}

/// The lowest-weighted train examples first: the suspected mislabeled ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExampleWeights {
    /// Train examples weighed in all.
    pub total: u64,
    pub items: Vec<ExampleWeight>,
}

impl ExampleWeights {
    /// The items as CSV: a header `index,label,class,weight`, then one row each (the class
    /// quoted, its quotes doubled).
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("index,label,class,weight\n");
        for e in &self.items {
            let class = e.class.replace('"', "\"\"");
            csv.push_str(&format!(
                "{},{},\"{class}\",{}\n",
                e.index, e.label, e.weight
            ));
        }
        csv
    }
}

/// A tensor in JSON, for pages and quick looks (`GET /v1/commentaries/{id}/insights`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JsonTensor {
    pub shape: Vec<usize>,
    /// Values in row-major order, as f64.
    pub values: Vec<f64>,
}

/// `GET /v1/commentaries/{id}/insights`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Insights {
    pub kind: CommentaryKind,
    pub classes: Vec<String>,
    /// The commentary's insight tensors by name (without the `insight.` prefix), plus the blend
    /// matrix for label blending.
    pub tensors: BTreeMap<String, JsonTensor>,
    pub report: Option<ApplyReport>,
}

/// Scopes of bearer tokens: each includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown scope {other:?}; expected read, write or admin"
            )),
        }
    }
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}
