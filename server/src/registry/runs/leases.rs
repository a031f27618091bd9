//! Leases: a worker takes the oldest queued run, heartbeats extend its lease, and the reaper
//! re-queues (or, after the last attempt, fails) runs whose lease expired.

use std::time::Duration;

use chrono::Utc;
use schema::api::{Lease, RunState};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};

use super::lifecycle::transition;
use super::queue::{find, info};
use crate::registry::app::SharedState;
use crate::registry::db::entities::run;
use crate::registry::error::{ApiError, ApiResult, ErrorKind};

/// Takes the oldest queued run for `worker`, or None.
pub async fn lease(state: &SharedState, worker: &str) -> ApiResult<Option<Lease>> {
    reap(state).await?;
    let ttl = state.config.lease_ttl;
    // Another replica may take the same row between our read and update; then try the next.
    for _ in 0..8 {
        let Some(candidate) = run::Entity::find()
            .filter(run::Column::State.eq(RunState::Queued.as_str()))
            .order_by_asc(run::Column::Id)
            .one(&state.db)
            .await?
        else {
            return Ok(None);
        };
        let secret = uuid::Uuid::new_v4().to_string();
        let expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let taken = transition(
            &state.db,
            &candidate.id,
            &[RunState::Queued],
            RunState::Running,
            None,
            |u| {
                u.col_expr(run::Column::Lease, Expr::value(secret.clone()))
                    .col_expr(run::Column::LeaseExpiresAt, Expr::value(expires))
                    .col_expr(run::Column::Worker, Expr::value(worker))
                    .col_expr(
                        run::Column::Attempts,
                        Expr::col(run::Column::Attempts).add(1),
                    )
            },
        )
        .await?;
        if taken {
            let model = find(state, &candidate.id).await?;
            tracing::info!(run = %model.id, worker, attempt = model.attempts, "run leased");
            return Ok(Some(Lease {
                lease: secret,
                run: info(&model)?,
                ttl_s: ttl.as_secs().max(1),
            }));
        }
    }
    Ok(None)
}

/// The run, if `lease` is its current lease; a lost lease is a 409.
pub(super) async fn leased(state: &SharedState, id: &str, lease: &str) -> ApiResult<run::Model> {
    let model = find(state, id).await?;
    if model.lease.as_deref() != Some(lease) {
        let why = match model.state.parse::<RunState>() {
            Ok(RunState::Cancelled) => "the run was cancelled".to_string(),
            Ok(s) => format!("the lease is no longer valid (the run is {s})"),
            Err(_) => "the lease is no longer valid".to_string(),
        };
        return Err(ApiError::new(ErrorKind::LeaseLost, why));
    }
    Ok(model)
}

/// Extends a lease. A cancelled run answers `cancelled` (once) so the worker stops.
pub async fn heartbeat(state: &SharedState, id: &str, lease: &str) -> ApiResult<RunState> {
    let model = find(state, id).await?;
    if model.state == RunState::Cancelled.as_str() && model.worker.is_some() {
        return Ok(RunState::Cancelled);
    }
    leased(state, id, lease).await?;
    let ttl = state.config.lease_ttl;
    let expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let updated = run::Entity::update_many()
        .col_expr(run::Column::LeaseExpiresAt, Expr::value(expires))
        .col_expr(run::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(run::Column::Id.eq(id))
        .filter(run::Column::Lease.eq(lease))
        .exec(&state.db)
        .await?;
    if updated.rows_affected != 1 {
        return Err(ApiError::new(
            ErrorKind::LeaseLost,
            "the lease is no longer valid",
        ));
    }
    Ok(RunState::Running)
}

/// Re-queues (or fails, after the last attempt) running runs whose lease expired.
pub async fn reap(state: &SharedState) -> ApiResult<()> {
    for model in expired_leases(state).await? {
        requeue_expired(state, &model).await?;
    }
    Ok(())
}

/// The running runs whose lease has expired by now.
pub async fn expired_leases(state: &SharedState) -> ApiResult<Vec<run::Model>> {
    Ok(run::Entity::find()
        .filter(run::Column::State.eq(RunState::Running.as_str()))
        .filter(run::Column::LeaseExpiresAt.lt(Utc::now()))
        .all(&state.db)
        .await?)
}

/// Re-queues (or fails) one run found expired, unless its lease changed or was renewed since:
/// the update re-checks lease and expiry, so a heartbeat landing after the read keeps its run.
/// Returns whether the run was moved.
pub async fn requeue_expired(state: &SharedState, model: &run::Model) -> ApiResult<bool> {
    let worker = model.worker.as_deref().unwrap_or("a worker");
    let last = model.attempts >= model.max_attempts;
    let error = format!(
        "lease expired: {worker} stopped sending heartbeats (attempt {} of {})",
        model.attempts, model.max_attempts
    );
    let to = if last {
        RunState::Failed
    } else {
        RunState::Queued
    };
    let lease = model.lease.clone();
    let now = Utc::now();
    let moved = transition(
        &state.db,
        &model.id,
        &[RunState::Running],
        to,
        Some(&error),
        move |u| {
            u.filter(run::Column::Lease.eq(lease))
                .filter(run::Column::LeaseExpiresAt.lt(now))
        },
    )
    .await?;
    if moved {
        tracing::warn!(run = %model.id, "{error}; run {to}");
    }
    Ok(moved)
}

/// Reaps expired leases every few seconds until shutdown.
pub async fn reap_forever(state: SharedState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period =
        (state.config.lease_ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if let Err(err) = reap(&state).await {
            tracing::warn!("reaping expired leases failed: {}", err.message);
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
