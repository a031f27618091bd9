//! `commentary serve`: the registry, configured from flags and `COMMENTARY_*` variables; and
//! `StorageArgs`, where it keeps its data (shared with `commentary token`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytesize::ByteSize;
use clap::Args;
use trainer::data::Limits;
use trainer::device::ComputeDevice;

use crate::registry::config::ServeConfig;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "COMMENTARY_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    storage: StorageArgs,
    /// Blob store URL (s3://bucket/prefix, gs://..., az://...); default: <data-dir>/blobs.
    #[arg(long, env = "COMMENTARY_STORE_URL")]
    store: Option<String>,
    /// In-process learning workers (0: runs wait for `commentary worker`s).
    #[arg(long, env = "COMMENTARY_WORKERS", default_value_t = 1)]
    workers: usize,
    /// Device of the in-process workers: cpu, wgpu or cuda.
    #[arg(long, env = "COMMENTARY_DEVICE", default_value = "cpu")]
    device: ComputeDevice,
    /// A run whose worker sends no heartbeat for this long is re-queued (e.g. 60s).
    #[arg(long, env = "COMMENTARY_LEASE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Leases a run may take; when the last one expires the run fails.
    #[arg(long, env = "COMMENTARY_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Reads need a token too.
    #[arg(long, env = "COMMENTARY_PRIVATE_READS")]
    private_reads: bool,
    /// Writes need a token even when bound to loopback.
    #[arg(long, env = "COMMENTARY_REQUIRE_TOKEN")]
    require_token: bool,
    /// Largest dataset upload accepted (e.g. 4GiB).
    #[arg(long, env = "COMMENTARY_MAX_UPLOAD_BYTES", default_value = "4GiB")]
    max_upload_bytes: ByteSize,
    /// Most bytes an uploaded archive may expand to.
    #[arg(long, env = "COMMENTARY_MAX_EXPANDED_BYTES", default_value = "16GiB")]
    max_expanded_bytes: ByteSize,
    /// Most entries an uploaded archive may hold.
    #[arg(long, env = "COMMENTARY_MAX_ENTRIES", default_value_t = Limits::default().max_entries)]
    max_entries: u64,
    /// Longest a JSON request may take (uploads, downloads and SSE are not limited).
    #[arg(long, env = "COMMENTARY_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Write requests per second per token or address (0: no limit); bursts of twice that.
    #[arg(long, env = "COMMENTARY_WRITE_RATE_LIMIT", default_value_t = 20)]
    write_rate_limit: u32,
    /// Read requests per second per token or address (0: no limit).
    #[arg(long, env = "COMMENTARY_READ_RATE_LIMIT", default_value_t = 0)]
    read_rate_limit: u32,
    /// Memory for serving small blobs (commentary tensors) from RAM; 0 disables.
    #[arg(long, env = "COMMENTARY_BLOB_CACHE_BYTES", default_value = "256MiB")]
    blob_cache_bytes: ByteSize,
}

/// Where the registry keeps its data.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Data directory: the SQLite database, local blobs, scratch space.
    #[arg(long, env = "COMMENTARY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Database URL (postgres://...); default: SQLite at <data-dir>/commentary.db.
    #[arg(long, env = "COMMENTARY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServeConfig::new(args.storage.data_dir);
    config.addr = args.addr;
    config.workers = args.workers;
    config.device = args.device;
    config.database_url = args.storage.database_url;
    config.store_url = args.store;
    config.lease_ttl = args.lease_ttl;
    config.max_attempts = args.max_attempts.max(1);
    config.private_reads = args.private_reads;
    config.require_token = args.require_token;
    config.max_upload_bytes = args.max_upload_bytes.as_u64();
    config.limits.max_expanded_bytes = args.max_expanded_bytes.as_u64();
    config.limits.max_entries = args.max_entries;
    config.request_timeout = args.request_timeout;
    config.write_rate_limit = args.write_rate_limit;
    config.read_rate_limit = args.read_rate_limit;
    config.blob_cache_bytes = args.blob_cache_bytes.as_u64();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let server = crate::registry::server::start(config).await?;
        // Tests and scripts read this line to find a port-0 server.
        println!("listening on http://{}", server.addr);
        server.run_until_signal().await
    });
    // A learning step still running on a blocking thread must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}
