//! `AppState`: what every handler shares (configuration, database, blob store, caches, limits).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::DatabaseConnection;

use super::auth::RateLimits;
use super::config::ServeConfig;
use super::datasets::ExampleCache;
use super::row_cache::RowCache;
use super::store::{BlobCache, BlobStore};

/// What every handler shares.
pub struct AppState {
    /// How the server was started.
    pub config: ServeConfig,
    /// The registry's database (SQLite or PostgreSQL).
    pub db: DatabaseConnection,
    /// Where dataset archives and artifacts are kept.
    pub store: BlobStore,
    /// Where uploads are staged while they stream in and are decoded.
    pub staging_dir: PathBuf,
    /// Writes without a token are allowed (loopback bind, no --require-token).
    pub anonymous_writes: bool,
    /// The in-process workers' credential (never stored; valid for this process only).
    pub internal_token: String,
    /// Per-caller request rate limits.
    pub limiter: RateLimits,
    /// Request counters for `/metrics`.
    pub metrics: Metrics,
    /// Published commentary rows and their detail JSON, for a short while.
    pub commentary_rows: RowCache,
    /// Small blobs in memory (commentary tensors).
    pub blob_cache: BlobCache,
    /// Decoded datasets for example images (a small cache).
    pub examples: ExampleCache,
    /// Turns true when the server shuts down (ends SSE streams).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Scratch space of the in-process workers.
    pub(crate) fn data_dir_scratch(&self) -> PathBuf {
        self.config.data_dir.join("work")
    }
}

/// Request counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub requests: [AtomicU64; 5],
}

impl Metrics {
    /// Counts one response with this status.
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }
}
