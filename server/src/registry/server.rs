//! Start-up and shutdown: opens storage, binds, and serves the router plus the in-process
//! workers and the lease reaper until stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use super::app::{AppState, Metrics};
use super::config::ServeConfig;
use super::row_cache::RowCache;
use super::store::{BlobCache, BlobStore};
use super::{auth, datasets, db, listener, routes, runs, supervisor, sweep};

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

/// Opens what handlers share: the data folder (with an emptied staging folder), the database
/// (migrated) and the blob store. `anonymous_writes`: writes without a token are allowed (the
/// caller knows whether it binds to loopback); `shutdown` turns true when the server stops.
pub async fn open_state(
    config: ServeConfig,
    anonymous_writes: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<AppState> {
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
    tracing::debug!(database = %db::redact(&url), store = %store.location, "storage open");
    Ok(AppState {
        shutdown,
        limiter: auth::RateLimits::new(config.write_rate_limit, config.read_rate_limit),
        blob_cache: BlobCache::new(config.blob_cache_bytes),
        commentary_rows: RowCache::new(config.row_cache_ttl),
        examples: datasets::ExampleCache::new(config.example_cache_bytes),
        config,
        db,
        store,
        staging_dir,
        anonymous_writes,
        internal_token: auth::new_token_secret(),
        metrics: Metrics::default(),
    })
}

/// A registry on a non-loopback address with no token is readable by anyone who can reach it
/// and writable by no one: say so where the operator looks.
async fn warn_if_open(state: &AppState, addr: SocketAddr) {
    use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
    let tokens = db::entities::token::Entity::find()
        .filter(db::entities::token::Column::RevokedAt.is_null())
        .count(&state.db)
        .await
        .unwrap_or(0);
    if tokens == 0 {
        let reads = if state.config.private_reads {
            "nobody can read (reads are private)"
        } else {
            "anyone who can reach it can read everything"
        };
        tracing::warn!(
            %addr,
            "listening on a non-loopback address with no token: {reads}, and nobody can write until \
             `commentary token create --scope write` makes a token"
        );
    }
}

/// Opens storage, binds, and starts serving plus the in-process workers and the lease reaper.
pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    let anonymous_writes = addr.ip().is_loopback() && !config.require_token;
    let workers = config.workers;
    let device = config.device;
    let url = db::database_url(config.database_url.as_deref(), &config.data_dir);
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let state = Arc::new(open_state(config, anonymous_writes, stop.clone()).await?);
    tracing::info!(
        %addr,
        database = %db::redact(&url),
        store = %state.store.location,
        anonymous_writes,
        "registry listening"
    );

    if !addr.ip().is_loopback() {
        warn_if_open(&state, addr).await;
    }

    let app = routes::router(state.clone());
    let limits = listener::ConnectionLimits {
        max_connections: state.config.max_connections,
        header_timeout: state.config.header_timeout,
    };
    let mut background = tokio::task::JoinSet::new();
    background.spawn(runs::reap_forever(state.clone(), stop.clone()));
    background.spawn(sweep::sweep_forever(state.clone(), stop.clone()));
    background.spawn(auth::prune_forever(state.clone(), stop.clone()));
    let base = format!("http://{addr}");
    for n in 0..workers {
        let child = supervisor::ChildWorker {
            name: format!("in-process-{n}"),
            server: base.clone(),
            token: state.internal_token.clone(),
            device,
            scratch: state.data_dir_scratch(),
            limits: state.config.limits,
        };
        background.spawn(child.supervise(stop.clone()));
    }
    let task = tokio::spawn(async move {
        let served = listener::serve(listener, app, limits, stop)
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
