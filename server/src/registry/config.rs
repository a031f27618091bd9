//! `ServeConfig`: everything `commentary serve` is configured with, and its laptop defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use trainer::data::Limits;
use trainer::device::ComputeDevice;

/// Everything `commentary serve` is configured with (flags and `COMMENTARY_*` variables).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// The SQLite database, local blobs and scratch space live here.
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
    /// Largest JSON request body (run requests, worker events); 413 beyond.
    pub max_json_bytes: u64,
    /// Runs one caller may have queued at once; 0 = no limit.
    pub max_queued_runs: u32,
    /// The divergence rule: a run recording a loss above this many times ln(classes), or not
    /// finite, fails instead of publishing.
    pub divergence_factor: f64,
    /// Caps on decoding uploaded archives.
    pub limits: Limits,
    /// Longest a non-streaming request may take; also the longest an upload's body may stall.
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// A request head must arrive within this (also closes idle keep-alive connections).
    pub header_timeout: Duration,
    /// Write requests per second per caller (token or address); 0 = no limit.
    pub write_rate_limit: u32,
    /// Read requests per second per caller; 0 = no limit.
    pub read_rate_limit: u32,
    /// How long a published commentary's row is served from memory: the longest another
    /// replica's delete of it can go unseen here; zero disables the cache.
    pub row_cache_ttl: Duration,
    /// Memory for caching small blobs (commentary tensors); 0 disables.
    pub blob_cache_bytes: u64,
    /// Memory for decoded splits drawn as example images; a larger split is not drawn.
    pub example_cache_bytes: u64,
    /// Blobs no row references are removed by the orphan sweep once older than this (long
    /// enough that no upload or publish still in progress is touched).
    pub sweep_age: Duration,
    /// Where people reach the registry when that is not the bound address (a TLS proxy):
    /// pages posted from it pass the Origin checks, and `https` makes the login cookie Secure.
    pub public_url: Option<reqwest::Url>,
}

impl ServeConfig {
    /// The defaults with data kept in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            ..Self::default()
        }
    }
}

impl Default for ServeConfig {
    /// Defaults for a laptop: loopback, `./data`, one worker. `commentary serve`'s flags read
    /// their defaults from here.
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            workers: 1,
            device: ComputeDevice::Cpu,
            database_url: None,
            store_url: None,
            lease_ttl: Duration::from_secs(60),
            max_attempts: 3,
            private_reads: false,
            require_token: false,
            max_upload_bytes: 4 << 30,
            max_json_bytes: 1 << 20,
            max_queued_runs: 100,
            divergence_factor: schema::report::DEFAULT_DIVERGENCE_FACTOR,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            header_timeout: Duration::from_secs(30),
            write_rate_limit: 20,
            read_rate_limit: 0,
            row_cache_ttl: Duration::from_secs(2),
            blob_cache_bytes: 256 << 20,
            example_cache_bytes: 512 << 20,
            public_url: None,
            sweep_age: Duration::from_secs(3600),
        }
    }
}
