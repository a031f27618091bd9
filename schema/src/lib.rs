//! Types that cross a process boundary: the dataset digest, dataset summaries, the learning
//! configuration, and the commentary artifact format (manifest + tensors) with its verifier.
//!
//! Everything here is shared by the trainer, the server and clients, so one definition fixes the
//! wire and file formats for all of them. See `docs/` for the formats in prose.

pub mod api;
pub mod arch;
pub mod artifact;
pub mod bounds;
pub mod config;
pub mod corruption;
pub mod dataset;
pub mod digest;
pub mod evaluation;
pub mod problem;
pub mod report;
pub mod wire;

pub use bounds::ConfigError;
pub use config::{Algorithm, CommentaryKind, LearnConfig, Optimizer};
pub use dataset::{DatasetFormat, DatasetSummary, ImageShape, SplitSummary};
pub use digest::{DigestParseError, Sha256};
