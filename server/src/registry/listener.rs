//! Accepting connections with bounds: at most `max_connections` at once (past that, new ones
//! wait in the listen queue instead of exhausting file descriptors), and a request head must
//! arrive within `header_timeout`, which also closes keep-alive connections left idle that long
//! and connections that never finish their head (slowloris). Graceful shutdown: stop
//! accepting, let requests in flight finish (SSE streams end on the shutdown signal).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use super::routes::{MAX_HEADERS, MAX_URI_BYTES};

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let slots = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(slots));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's own limits sit above the router's, so oversized heads up to them get the
        // registry's JSON 414/431 rather than hyper's empty answer.
        .max_headers(MAX_HEADERS * 4)
        .max_buf_size((MAX_URI_BYTES * 16).max(8192 + 1));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout)
        .max_header_list_size(u32::try_from(MAX_URI_BYTES * 16).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit?,
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or the peer gave up: wait a moment, go on.
                    tracing::warn!("cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let service =
            app.clone()
                .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                    let mut request = request.map(axum::body::Body::new);
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        let (builder, mut stop) = (builder.clone(), stop.clone());
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            // hyper's timer starts with the first byte (the protocol is sniffed before it):
            // a connection that sends nothing is closed here.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
        });
    }
    // Every connection gives its permit back when it ends.
    let all = u32::try_from(slots).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("shutting down with requests still in flight after {DRAIN:?}");
    }
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
