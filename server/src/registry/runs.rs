//! Learning runs as database rows: queued -> running (leased) -> succeeded | failed | cancelled.
//! A lease has a secret and an expiry; heartbeats extend it; an expired lease re-queues the run
//! until `max_attempts` leases were taken, then fails it with the last error kept. Every state
//! change and progress report is stored as an event, so any replica can stream them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use schema::api::{
    Evaluation, EventBody, Lease, Progress, RunEvent, RunInfo, RunRequest, RunState,
};
use schema::{CommentaryKind, LearnConfig};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set, TransactionTrait as _,
};

use super::SharedState;
use super::commentaries::{self, Checked};
use super::datasets;
use super::db::entities::{run, run_event};
use super::error::{ApiError, ApiResult};

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The API view of a row.
pub fn info(model: &run::Model) -> ApiResult<RunInfo> {
    let bad = |what: String| ApiError::internal(anyhow::anyhow!("stored run {}: {what}", model.id));
    let config: LearnConfig =
        serde_json::from_str(&model.config).map_err(|e| bad(e.to_string()))?;
    let evaluation: Evaluation =
        serde_json::from_str(&model.evaluation).map_err(|e| bad(e.to_string()))?;
    let progress: Option<Progress> = match &model.progress {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    Ok(RunInfo {
        id: model.id.clone(),
        dataset: schema::Sha256::parse(&model.dataset_digest).map_err(|e| bad(e.to_string()))?,
        kind: model.kind.parse().map_err(bad)?,
        algorithm: model.algorithm.parse().map_err(bad)?,
        config,
        evaluation,
        state: model.state.parse().map_err(bad)?,
        attempts: model.attempts.max(0) as u32,
        max_attempts: model.max_attempts.max(0) as u32,
        error: model.error.clone(),
        progress,
        commentary_id: model.commentary_id.clone(),
        worker: model.worker.clone(),
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

/// Checks a run request and queues it.
pub async fn create(state: &SharedState, request: RunRequest) -> ApiResult<run::Model> {
    let digest = datasets::parse_digest(&request.dataset)?;
    let stored = datasets::find(state, &digest).await?;
    validate(&request, &stored)?;
    let id = uuid::Uuid::now_v7().to_string();
    let at = now();
    let model = run::ActiveModel {
        id: Set(id.clone()),
        dataset_digest: Set(digest.to_string()),
        kind: Set(request.kind.as_str().to_string()),
        algorithm: Set(request.algorithm.to_string()),
        config: Set(to_json(&request.config)?),
        evaluation: Set(to_json(&request.evaluation)?),
        state: Set(RunState::Queued.as_str().to_string()),
        attempts: Set(0),
        max_attempts: Set(state.config.max_attempts as i32),
        lease: Set(None),
        lease_expires_at: Set(None),
        worker: Set(None),
        error: Set(None),
        progress: Set(None),
        commentary_id: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    };
    let txn = state.db.begin().await?;
    let model = model.insert(&txn).await?;
    append(
        &txn,
        &id,
        &[EventBody::State {
            state: RunState::Queued,
            message: None,
        }],
    )
    .await?;
    txn.commit().await?;
    Ok(model)
}

/// Refuses requests that cannot work, before they wait in the queue.
fn validate(request: &RunRequest, stored: &super::db::entities::dataset::Model) -> ApiResult<()> {
    use schema::Algorithm;
    let config = &request.config;
    let invalid = |m: String| Err(ApiError::unprocessable("invalid_run", m));
    match (request.kind, request.algorithm) {
        (CommentaryKind::ExampleWeighting, Algorithm::Ift) if !config.tabular => {
            return invalid(
                "example weighting with a teacher network is learned by bptt (the teacher's time input needs the trajectory)".into(),
            );
        }
        (CommentaryKind::LabelBlending, Algorithm::Bptt) => {
            return invalid("label blending is learned by ift".into());
        }
        _ => {}
    }
    if config.inner_steps == 0 || config.meta_steps == 0 || config.batch_size == 0 {
        return invalid("inner_steps, meta_steps and batch_size must be positive".into());
    }
    let summary: schema::DatasetSummary =
        serde_json::from_str(&stored.summary).map_err(anyhow::Error::from)?;
    if summary.split("train").is_none() {
        return invalid(format!(
            "dataset {} has no train split to learn from",
            summary.digest
        ));
    }
    let e = &request.evaluation;
    if !e.seeds.is_empty() && (e.steps == 0 || e.batch_size == 0 || e.eval_every == 0) {
        return invalid("evaluation steps, eval_every and batch_size must be positive".into());
    }
    Ok(())
}

/// JSON for text columns.
fn to_json(value: &impl serde::Serialize) -> ApiResult<String> {
    serde_json::to_string(value).map_err(ApiError::internal)
}

/// Stores events for a run.
async fn append(db: &impl ConnectionTrait, run_id: &str, events: &[EventBody]) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let at = now();
    let rows = events
        .iter()
        .map(|body| {
            Ok(run_event::ActiveModel {
                run_id: Set(run_id.to_string()),
                body: Set(serde_json::to_string(body).map_err(anyhow::Error::from)?),
                at: Set(at),
                ..Default::default()
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    run_event::Entity::insert_many(rows).exec(db).await?;
    Ok(())
}

/// The run `id`, or 404.
pub async fn find(state: &SharedState, id: &str) -> ApiResult<run::Model> {
    run::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id:?}")))
}

/// Runs, newest first, optionally of one dataset or state.
pub async fn list(
    state: &SharedState,
    dataset: Option<&schema::Sha256>,
    run_state: Option<RunState>,
    offset: u64,
    limit: u64,
) -> ApiResult<(Vec<RunInfo>, bool)> {
    let mut query = run::Entity::find().order_by_desc(run::Column::Id);
    if let Some(digest) = dataset {
        query = query.filter(run::Column::DatasetDigest.eq(digest.to_string()));
    }
    if let Some(s) = run_state {
        query = query.filter(run::Column::State.eq(s.as_str()));
    }
    let (models, more) = super::db::page(&state.db, query, offset, limit).await?;
    let items = models.iter().map(info).collect::<ApiResult<Vec<_>>>()?;
    Ok((items, more))
}

/// Events of a run after `after` (the SSE id), oldest first.
pub async fn events_after(
    state: &SharedState,
    run_id: &str,
    after: i64,
    limit: u64,
) -> ApiResult<Vec<RunEvent>> {
    let rows = run_event::Entity::find()
        .filter(run_event::Column::RunId.eq(run_id))
        .filter(run_event::Column::Seq.gt(after))
        .order_by_asc(run_event::Column::Seq)
        .limit(limit)
        .all(&state.db)
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(RunEvent {
                seq: row.seq,
                run_id: row.run_id,
                at: row.at,
                body: serde_json::from_str(&row.body).map_err(anyhow::Error::from)?,
            })
        })
        .collect()
}

/// Changes state with a conditional update (`from` must still hold), recording an event.
/// Returns whether this call made the change.
async fn transition(
    db: &impl ConnectionTrait,
    id: &str,
    from: &[RunState],
    to: RunState,
    error: Option<&str>,
    extra: impl FnOnce(sea_orm::UpdateMany<run::Entity>) -> sea_orm::UpdateMany<run::Entity>,
) -> ApiResult<bool> {
    let mut update = run::Entity::update_many()
        .col_expr(run::Column::State, Expr::value(to.as_str()))
        .col_expr(run::Column::UpdatedAt, Expr::value(now()))
        .filter(run::Column::Id.eq(id))
        .filter(run::Column::State.is_in(from.iter().map(|s| s.as_str())));
    if let Some(error) = error {
        update = update.col_expr(run::Column::Error, Expr::value(error));
    }
    if to != RunState::Running {
        update = update
            .col_expr(run::Column::Lease, Expr::value(Option::<String>::None))
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            );
    }
    update = extra(update);
    let done = update.exec(db).await?.rows_affected == 1;
    if done {
        append(
            db,
            id,
            &[EventBody::State {
                state: to,
                message: error.map(str::to_string),
            }],
        )
        .await?;
    }
    Ok(done)
}

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
        let expires = now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let txn = state.db.begin().await?;
        let taken = transition(
            &txn,
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
        txn.commit().await?;
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
async fn leased(state: &SharedState, id: &str, lease: &str) -> ApiResult<run::Model> {
    let model = find(state, id).await?;
    if model.lease.as_deref() != Some(lease) {
        let why = match model.state.parse::<RunState>() {
            Ok(RunState::Cancelled) => "the run was cancelled".to_string(),
            Ok(s) => format!("the lease is no longer valid (the run is {s})"),
            Err(_) => "the lease is no longer valid".to_string(),
        };
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "lease_lost",
            why,
        ));
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
    let expires = now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let updated = run::Entity::update_many()
        .col_expr(run::Column::LeaseExpiresAt, Expr::value(expires))
        .col_expr(run::Column::UpdatedAt, Expr::value(now()))
        .filter(run::Column::Id.eq(id))
        .filter(run::Column::Lease.eq(lease))
        .exec(&state.db)
        .await?;
    if updated.rows_affected != 1 {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "lease_lost",
            "the lease is no longer valid",
        ));
    }
    Ok(RunState::Running)
}

/// Stores a worker's events; the last progress report is also kept on the run.
pub async fn post_events(
    state: &SharedState,
    id: &str,
    lease: &str,
    events: &[EventBody],
) -> ApiResult<()> {
    leased(state, id, lease).await?;
    let txn = state.db.begin().await?;
    append(&txn, id, events).await?;
    if let Some(progress) = events.iter().rev().find_map(|e| match e {
        EventBody::Progress(p) => Some(p),
        _ => None,
    }) {
        run::Entity::update_many()
            .col_expr(
                run::Column::Progress,
                Expr::value(serde_json::to_string(progress).map_err(anyhow::Error::from)?),
            )
            .col_expr(run::Column::UpdatedAt, Expr::value(now()))
            .filter(run::Column::Id.eq(id))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Publishes the run's artifact and marks it succeeded, in one transaction.
pub async fn complete(
    state: &SharedState,
    id: &str,
    lease: &str,
    upload: commentaries::Upload,
) -> ApiResult<String> {
    let model = leased(state, id, lease).await?;
    let checked: Checked = commentaries::check(state, upload).await?;
    if checked.manifest.dataset.digest.to_string() != model.dataset_digest
        || checked.manifest.kind.as_str() != model.kind
    {
        return Err(ApiError::unprocessable(
            "invalid_artifact",
            format!(
                "the artifact is a {} commentary for {}, but run {id} learns a {} commentary for {}",
                checked.manifest.kind,
                checked.manifest.dataset.digest,
                model.kind,
                model.dataset_digest
            ),
        ));
    }
    let commentary_id = uuid::Uuid::now_v7().to_string();
    commentaries::store_blobs(state, &commentary_id, &checked).await?;
    let txn = state.db.begin().await?;
    commentaries::insert_row(&txn, &commentary_id, &checked, Some(id.to_string())).await?;
    let lease_owned = lease.to_string();
    let cid = commentary_id.clone();
    let done = transition(
        &txn,
        id,
        &[RunState::Running],
        RunState::Succeeded,
        None,
        move |u| {
            u.col_expr(run::Column::CommentaryId, Expr::value(cid))
                .filter(run::Column::Lease.eq(lease_owned))
        },
    )
    .await?;
    if !done {
        drop(txn);
        for file in commentaries::FILES {
            state
                .store
                .delete(&super::store::commentary_key(&commentary_id, file))
                .await?;
        }
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "lease_lost",
            "the lease expired or the run was cancelled before it completed",
        ));
    }
    txn.commit().await?;
    tracing::info!(run = id, commentary = %commentary_id, "run succeeded");
    Ok(commentary_id)
}

/// A worker reports that the run failed (not retried: the failure is the run's own).
pub async fn fail(state: &SharedState, id: &str, lease: &str, error: &str) -> ApiResult<()> {
    leased(state, id, lease).await?;
    let lease_owned = lease.to_string();
    let done = transition(
        &state.db,
        id,
        &[RunState::Running],
        RunState::Failed,
        Some(error),
        move |u| u.filter(run::Column::Lease.eq(lease_owned)),
    )
    .await?;
    if done {
        tracing::warn!(run = id, error, "run failed");
    }
    Ok(())
}

/// Cancels a queued or running run (a running one stops at its next heartbeat).
pub async fn cancel(state: &SharedState, id: &str) -> ApiResult<run::Model> {
    let model = find(state, id).await?;
    let current: RunState = model
        .state
        .parse()
        .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))?;
    if current.is_terminal() {
        return Err(ApiError::conflict(format!("run {id} already {current}")));
    }
    transition(
        &state.db,
        id,
        &[RunState::Queued, RunState::Running],
        RunState::Cancelled,
        None,
        |u| u,
    )
    .await?;
    find(state, id).await
}

/// Re-queues (or fails, after the last attempt) running runs whose lease expired.
pub async fn reap(state: &SharedState) -> ApiResult<()> {
    let expired = run::Entity::find()
        .filter(run::Column::State.eq(RunState::Running.as_str()))
        .filter(run::Column::LeaseExpiresAt.lt(now()))
        .all(&state.db)
        .await?;
    for model in expired {
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
        let moved = transition(
            &state.db,
            &model.id,
            &[RunState::Running],
            to,
            Some(&error),
            move |u| u.filter(run::Column::Lease.eq(lease)),
        )
        .await?;
        if moved {
            tracing::warn!(run = %model.id, "{error}; run {to}");
        }
    }
    Ok(())
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
