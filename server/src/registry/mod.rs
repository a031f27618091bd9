//! The registry server (`commentary serve`): REST API, storage, learning runs and workers.
//!
//! - `db`: sea-orm entities and migrations (SQLite by default, PostgreSQL by URL);
//! - `store`: blobs through object_store (local directory, S3, GCS, Azure);
//! - `auth`: bearer tokens, the cookie login, rate limits;
//! - `datasets`, `runs`, `commentaries`: what the routes do, independent of HTTP;
//! - `routes`: the axum handlers and the OpenAPI document;
//! - `worker` / `client`: the learning worker and the HTTP client it (and the CLI) uses.

pub mod auth;
pub mod client;
pub mod commentaries;
pub mod datasets;
pub mod db;
pub mod error;
pub mod pages;
pub mod routes;
pub mod runs;
pub mod store;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use trainer::data::Limits;
use trainer::device::ComputeDevice;

use self::store::BlobStore;

/// Everything `commentary serve` is configured with (flags and `COMMENTARY_*` variables).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// In-process learning workers (0: runs wait for remote workers).
    pub workers: usize,
    /// Device of the in-process workers.
    pub device: ComputeDevice,
    /// None: SQLite at `<data_dir>/commentary.db`.
    pub database_url: Option<String>,
    /// None: `<data_dir>/blobs`.
    pub store_url: Option<String>,
    /// A running run whose worker has not sent a heartbeat for this long is re-queued.
    pub lease_ttl: Duration,
    /// Leases a run may take before an expiry fails it.
    pub max_attempts: u32,
    /// Reads without a token are refused.
    pub private_reads: bool,
    /// Writes need a token even on a loopback bind.
    pub require_token: bool,
    /// Largest accepted request body (dataset archives).
    pub max_upload_bytes: u64,
    /// Caps on decoding uploaded archives.
    pub limits: Limits,
    /// Longest a non-streaming request may take.
    pub request_timeout: Duration,
    /// Write requests per second per caller (token or address); 0 = no limit.
    pub write_rate_limit: u32,
    /// Read requests per second per caller; 0 = no limit.
    pub read_rate_limit: u32,
    /// Memory for caching small blobs (commentary tensors); 0 disables.
    pub blob_cache_bytes: u64,
}

impl ServeConfig {
    /// Defaults for a laptop: loopback, `./data`, one worker.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            workers: 1,
            device: ComputeDevice::Cpu,
            database_url: None,
            store_url: None,
            lease_ttl: Duration::from_secs(60),
            max_attempts: 3,
            private_reads: false,
            require_token: false,
            max_upload_bytes: 4 << 30,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(30),
            write_rate_limit: 20,
            read_rate_limit: 0,
            blob_cache_bytes: 256 << 20,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    pub config: ServeConfig,
    pub db: DatabaseConnection,
    pub store: BlobStore,
    /// Where uploads are staged while they stream in and are decoded.
    pub staging_dir: PathBuf,
    /// Writes without a token are allowed (loopback bind, no --require-token).
    pub anonymous_writes: bool,
    /// The in-process workers' credential (never stored; valid for this process only).
    pub internal_token: String,
    pub limiter: auth::RateLimits,
    pub metrics: Metrics,
    /// Small blobs in memory (commentary tensors).
    pub blob_cache: store::BlobCache,
    /// Decoded datasets for example images (a small cache).
    pub examples: datasets::ExampleCache,
    /// Turns true when the server shuts down (ends SSE streams).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub type SharedState = Arc<AppState>;

/// Request counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: [AtomicU64; 5],
}

impl Metrics {
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// A started server: its address, and a handle to stop it.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("the server task panicked")?
    }

    /// Runs until Ctrl-C / SIGTERM.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.stop().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// Opens storage, binds, and starts serving plus the in-process workers and the lease reaper.
pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let staging_dir = config.data_dir.join("staging");
    // Anything left here by a crash was never committed.
    let _ = std::fs::remove_dir_all(&staging_dir);
    std::fs::create_dir_all(&staging_dir)
        .with_context(|| format!("cannot create {}", staging_dir.display()))?;
    let url = db::database_url(config.database_url.as_deref(), &config.data_dir);
    let db = db::connect(&url).await?;
    let store = BlobStore::open(config.store_url.as_deref(), &config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    let anonymous_writes = addr.ip().is_loopback() && !config.require_token;
    let workers = config.workers;
    let device = config.device;
    let blob_cache_bytes = config.blob_cache_bytes;
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        shutdown: stop.clone(),
        limiter: auth::RateLimits::new(config.write_rate_limit, config.read_rate_limit),
        config,
        db,
        store,
        staging_dir,
        anonymous_writes,
        internal_token: auth::new_token_secret(),
        metrics: Metrics::default(),
        examples: datasets::ExampleCache::default(),
        blob_cache: store::BlobCache::new(blob_cache_bytes),
    });
    tracing::info!(
        %addr,
        database = %db::redact(&url),
        store = %state.store.location,
        anonymous_writes,
        "registry listening"
    );

    let app = routes::router(state.clone());
    let mut background = tokio::task::JoinSet::new();
    background.spawn(runs::reap_forever(state.clone(), stop.clone()));
    let base = format!("http://{addr}");
    for n in 0..workers {
        let client = client::Client::new(&base, Some(state.internal_token.clone()))?;
        let options = worker::WorkerOptions {
            name: format!("in-process-{n}"),
            device,
            poll: Duration::from_millis(500),
            scratch: state.data_dir_scratch(),
        };
        background.spawn(worker::work_forever(client, options, stop.clone()));
    }
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .context("the server stopped with an error");
        background.shutdown().await;
        served
    });
    Ok(Server {
        addr,
        shutdown,
        task,
    })
}

impl AppState {
    /// Scratch space of the in-process workers.
    fn data_dir_scratch(&self) -> PathBuf {
        self.config.data_dir.join("work")
    }
}
