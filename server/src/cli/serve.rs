//! `commentary serve`: the registry, configured from flags and `COMMENTARY_*` variables; and
//! `StorageArgs`, where it keeps its data (shared with `commentary token`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytesize::ByteSize;
use clap::Args;
use trainer::device::ComputeDevice;

use super::limits::LimitArgs;
use crate::registry::config::ServeConfig;

/// Every default below is `ServeConfig::default()`'s, written there once.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  commentary serve
  commentary serve --addr 0.0.0.0:8080 --require-token --workers 2 --device cuda
  commentary serve --database-url postgres://commentary@db/commentary --store s3://bucket/prefix")]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "COMMENTARY_ADDR", default_value_t = defaults().addr)]
    addr: SocketAddr,
    #[command(flatten)]
    storage: StorageArgs,
    /// Blob store URL (s3://bucket/prefix, gs://..., az://...); default: <data-dir>/blobs.
    #[arg(long, env = "COMMENTARY_STORE_URL")]
    store: Option<String>,
    /// In-process learning workers (0: runs wait for `commentary worker`s).
    #[arg(long, env = "COMMENTARY_WORKERS", default_value_t = defaults().workers)]
    workers: usize,
    /// Device of the in-process workers.
    #[arg(long, env = "COMMENTARY_DEVICE", default_value_t = defaults().device, value_parser = super::values::device())]
    device: ComputeDevice,
    /// A run whose worker sends no heartbeat for this long is re-queued (e.g. 60s).
    #[arg(long, env = "COMMENTARY_LEASE_TTL", default_value_t = defaults().lease_ttl.into())]
    lease_ttl: humantime::Duration,
    /// Leases a run may take; when the last one expires the run fails.
    #[arg(long, env = "COMMENTARY_MAX_ATTEMPTS", default_value_t = defaults().max_attempts)]
    max_attempts: u32,
    /// Reads need a token too.
    #[arg(long, env = "COMMENTARY_PRIVATE_READS")]
    private_reads: bool,
    /// Writes need a token even when bound to loopback.
    #[arg(long, env = "COMMENTARY_REQUIRE_TOKEN")]
    require_token: bool,
    /// Largest dataset upload accepted (e.g. 4GiB).
    #[arg(long, env = "COMMENTARY_MAX_UPLOAD_BYTES", default_value_t = ByteSize::b(defaults().max_upload_bytes))]
    max_upload_bytes: ByteSize,
    /// Largest JSON request body (run requests, worker events).
    #[arg(long, env = "COMMENTARY_MAX_JSON_BYTES", default_value_t = ByteSize::b(defaults().max_json_bytes))]
    max_json_bytes: ByteSize,
    /// Runs one caller (token, or address without one) may have queued at once (0: no limit).
    #[arg(long, env = "COMMENTARY_MAX_QUEUED_RUNS", default_value_t = defaults().max_queued_runs)]
    max_queued_runs: u32,
    /// Where people reach the registry, when a proxy stands in front of it
    /// (`https://registry.example`): its pages pass the Origin checks, and `https` makes the
    /// login cookie Secure.
    #[arg(long, env = "COMMENTARY_PUBLIC_URL", value_parser = web_origin)]
    public_url: Option<reqwest::Url>,
    /// The orphan sweep removes blobs no row references once they are older than this.
    #[arg(long, env = "COMMENTARY_SWEEP_AGE", default_value_t = defaults().sweep_age.into())]
    sweep_age: humantime::Duration,
    /// The divergence rule: a run recording a loss above this many times ln(classes) (what a
    /// uniform guess scores), or not finite, fails instead of publishing.
    #[arg(long, env = "COMMENTARY_DIVERGENCE_FACTOR", default_value_t = defaults().divergence_factor, value_parser = positive_factor)]
    divergence_factor: f64,
    /// Caps on decoding uploads, also used by the in-process workers.
    #[command(flatten)]
    limits: LimitArgs,
    /// Longest a JSON request may take (uploads, downloads and SSE are not limited).
    #[arg(long, env = "COMMENTARY_REQUEST_TIMEOUT", default_value_t = defaults().request_timeout.into())]
    request_timeout: humantime::Duration,
    /// Connections served at once; more wait in the listen queue (keep it below the open-file
    /// limit, `ulimit -n`).
    #[arg(long, env = "COMMENTARY_MAX_CONNECTIONS", default_value_t = defaults().max_connections)]
    max_connections: usize,
    /// A request's head must arrive within this; idle keep-alive connections close after it.
    #[arg(long, env = "COMMENTARY_HEADER_TIMEOUT", default_value_t = defaults().header_timeout.into())]
    header_timeout: humantime::Duration,
    /// Write requests per second per token or address (0: no limit); bursts of twice that.
    #[arg(long, env = "COMMENTARY_WRITE_RATE_LIMIT", default_value_t = defaults().write_rate_limit)]
    write_rate_limit: u32,
    /// Read requests per second per token or address (0: no limit).
    #[arg(long, env = "COMMENTARY_READ_RATE_LIMIT", default_value_t = defaults().read_rate_limit)]
    read_rate_limit: u32,
    /// How long a published commentary's row is served from memory (the longest another
    /// replica's delete can go unseen here); 0 disables.
    #[arg(long, env = "COMMENTARY_ROW_CACHE_TTL", default_value_t = defaults().row_cache_ttl.into())]
    row_cache_ttl: humantime::Duration,
    /// Memory for serving small blobs (commentary tensors) from RAM; 0 disables.
    #[arg(long, env = "COMMENTARY_BLOB_CACHE_BYTES", default_value_t = ByteSize::b(defaults().blob_cache_bytes))]
    blob_cache_bytes: ByteSize,
    /// Memory for decoded splits drawn as example images (pages and the examples route); a
    /// split larger than this is not drawn (422).
    #[arg(long, env = "COMMENTARY_EXAMPLE_CACHE_BYTES", default_value_t = ByteSize::b(defaults().example_cache_bytes))]
    example_cache_bytes: ByteSize,
}

fn defaults() -> ServeConfig {
    ServeConfig::default()
}

/// Where the registry keeps its data.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Data directory: the SQLite database, local blobs, scratch space.
    #[arg(long, env = "COMMENTARY_DATA_DIR", default_value_os_t = defaults().data_dir)]
    pub data_dir: PathBuf,
    /// Database URL (postgres://...); default: SQLite at <data-dir>/commentary.db.
    #[arg(long, env = "COMMENTARY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl ServeArgs {
    /// The configuration these flags describe.
    fn config(self) -> ServeConfig {
        ServeConfig {
            addr: self.addr,
            data_dir: self.storage.data_dir,
            workers: self.workers,
            device: self.device,
            database_url: self.storage.database_url,
            store_url: self.store,
            lease_ttl: self.lease_ttl.into(),
            max_attempts: self.max_attempts.max(1),
            private_reads: self.private_reads,
            require_token: self.require_token,
            max_upload_bytes: self.max_upload_bytes.as_u64(),
            max_json_bytes: self.max_json_bytes.as_u64(),
            max_queued_runs: self.max_queued_runs,
            divergence_factor: self.divergence_factor,
            public_url: self.public_url,
            sweep_age: self.sweep_age.into(),
            limits: self.limits.limits(),
            request_timeout: self.request_timeout.into(),
            max_connections: self.max_connections,
            header_timeout: self.header_timeout.into(),
            write_rate_limit: self.write_rate_limit,
            read_rate_limit: self.read_rate_limit,
            row_cache_ttl: self.row_cache_ttl.into(),
            blob_cache_bytes: self.blob_cache_bytes.as_u64(),
            example_cache_bytes: self.example_cache_bytes.as_u64(),
        }
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config();
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

/// `--divergence-factor`: a finite number above 1 (at 1 or below, an untrained student fails).
fn positive_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 1.0 => Ok(v),
        _ => Err(format!("{text:?} is not a finite number above 1")),
    }
}

/// `--public-url`: an `http://` or `https://` URL.
fn web_origin(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        _ => Err(format!("{text:?} is not an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// `serve` with no flags runs on `ServeConfig::default()`.
    #[test]
    fn flags_default_to_the_serve_config_defaults() {
        let cli = crate::cli::Cli::try_parse_from(["commentary", "serve"]).expect("parse");
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(format!("{:?}", args.config()), format!("{:?}", defaults()));
    }
}
