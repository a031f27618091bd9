//! `/healthz`, `/readyz`, `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use schema::api::{Health, RunState};
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};

use crate::registry::app::SharedState;
use crate::registry::auth::Auth;
use crate::registry::db::entities::{commentary, dataset, run};
use crate::registry::error::{ApiError, ApiResult, ErrorKind};

fn health(status: &str) -> Json<Health> {
    Json(Health {
        status: status.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    health("ok")
}

/// The database and the blob store answer.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, body = Health),
    (status = 503, body = schema::api::ErrorBody),
))]
pub async fn readyz(State(state): State<SharedState>) -> ApiResult<Json<Health>> {
    // The cause goes to the log only: its text may name hosts, users and paths.
    let unavailable = |what: &str, cause: &dyn std::fmt::Display| {
        tracing::warn!("not ready: {what}: {cause}");
        ApiError::new(
            ErrorKind::NotReady,
            format!("{what} (the cause is in the server's log)"),
        )
    };
    if let Err(e) = state.db.ping().await {
        return Err(unavailable("the database does not answer", &e));
    }
    if let Err(e) = state.store.check().await {
        return Err(unavailable(
            "the blob store does not answer",
            &format!("{e:#}"),
        ));
    }
    Ok(health("ready"))
}

/// Prometheus text format: request counts by status class, stored objects, runs by state.
/// A read like any other: under `--private-reads` it needs a token.
pub async fn metrics(State(state): State<SharedState>, _auth: Auth) -> ApiResult<Response> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP commentary_http_requests_total HTTP requests answered, by status class."
    );
    let _ = writeln!(out, "# TYPE commentary_http_requests_total counter");
    for (i, counter) in state.metrics.requests.iter().enumerate() {
        let _ = writeln!(
            out,
            "commentary_http_requests_total{{status=\"{}xx\"}} {}",
            i + 1,
            counter.load(Ordering::Relaxed)
        );
    }
    let datasets = dataset::Entity::find().count(&state.db).await?;
    let commentaries = commentary::Entity::find().count(&state.db).await?;
    let _ = writeln!(
        out,
        "# HELP commentary_datasets Datasets stored.\n# TYPE commentary_datasets gauge\ncommentary_datasets {datasets}"
    );
    let _ = writeln!(
        out,
        "# HELP commentary_commentaries Commentaries stored.\n# TYPE commentary_commentaries gauge\ncommentary_commentaries {commentaries}"
    );
    let _ = writeln!(
        out,
        "# HELP commentary_runs Learning runs by state.\n# TYPE commentary_runs gauge"
    );
    for s in RunState::ALL {
        let n = run::Entity::find()
            .filter(run::Column::State.eq(s.as_str()))
            .count(&state.db)
            .await?;
        let _ = writeln!(out, "commentary_runs{{state=\"{s}\"}} {n}");
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
