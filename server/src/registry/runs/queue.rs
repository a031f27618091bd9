//! The run queue: creating runs (after validating the request), finding and listing them, and
//! their API view.

use chrono::Utc;
use schema::LearnConfig;
use schema::api::{Evaluation, EventBody, Progress, RunInfo, RunRequest, RunState};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};

use super::events::append;
use crate::registry::app::SharedState;
use crate::registry::datasets;
use crate::registry::db;
use crate::registry::db::entities::{dataset, run};
use crate::registry::error::{ApiError, ApiResult, ErrorKind};

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

/// Checks a run request and queues it for `creator` (a caller key, see `Caller::key`).
pub async fn create(
    state: &SharedState,
    request: RunRequest,
    creator: &str,
) -> ApiResult<run::Model> {
    let digest = datasets::parse_digest(&request.dataset)?;
    let stored = datasets::find(state, &digest).await?;
    let algorithm = validate(&request, &stored)?;
    check_queue_share(state, creator).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let at = Utc::now();
    let model = run::ActiveModel {
        id: Set(id.clone()),
        dataset_digest: Set(digest.to_string()),
        kind: Set(request.kind.as_str().to_string()),
        algorithm: Set(algorithm.to_string()),
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
        created_by: Set(Some(creator.to_string())),
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

/// Refuses a caller who already has `max_queued_runs` runs waiting (one caller cannot fill the
/// queue for everyone). Counted before the insert, so concurrent requests of one caller may
/// pass the cap by the few in flight; the cap is a guard against floods, not an exact quota.
async fn check_queue_share(state: &SharedState, creator: &str) -> ApiResult<()> {
    let cap = state.config.max_queued_runs;
    if cap == 0 {
        return Ok(());
    }
    let queued = run::Entity::find()
        .filter(run::Column::State.eq(RunState::Queued.as_str()))
        .filter(run::Column::CreatedBy.eq(creator))
        .count(&state.db)
        .await?;
    if queued >= u64::from(cap) {
        return Err(ApiError::new(
            ErrorKind::TooManyQueuedRuns,
            format!(
                "you already have {queued} runs queued, the most this registry allows (--max-queued-runs {cap}); \
                 wait for some to start, or cancel some"
            ),
        ));
    }
    Ok(())
}

/// Refuses requests that cannot work, before they wait in the queue (the bounds are
/// `schema`'s, shared with the CLI and the trainer); returns the algorithm the run uses.
fn validate(request: &RunRequest, stored: &dataset::Model) -> ApiResult<schema::Algorithm> {
    let invalid = |m: String| ApiError::new(ErrorKind::InvalidRun, m);
    let summary: schema::DatasetSummary =
        serde_json::from_str(&stored.summary).map_err(anyhow::Error::from)?;
    let splits: Vec<&str> = summary.splits.iter().map(|s| s.name.as_str()).collect();
    let algorithm = request.resolved_algorithm(&splits);
    let config = &request.config;
    match summary.split("train") {
        Some(train) => {
            config.validate_for(request.kind, algorithm, train.shape, summary.classes.len())
        }
        None => config.validate(request.kind, algorithm),
    }
    .map_err(|e| invalid(e.to_string()))?;
    request
        .evaluation
        .validate()
        .map_err(|e| invalid(e.to_string()))?;
    if summary.split("train").is_none() {
        return Err(invalid(format!(
            "dataset {} has no train split to learn from",
            summary.digest
        )));
    }
    if let Some(split) = &config.validation_split
        && !splits.contains(&split.as_str())
    {
        return Err(invalid(format!(
            "validation_split {split:?}: dataset {} has no such split; its splits are {splits:?}",
            summary.digest
        )));
    }
    Ok(algorithm)
}

/// JSON for text columns.
fn to_json(value: &impl serde::Serialize) -> ApiResult<String> {
    serde_json::to_string(value).map_err(ApiError::internal)
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
    let (models, more) = db::page(&state.db, query, offset, limit).await?;
    let items = models.iter().map(info).collect::<ApiResult<Vec<_>>>()?;
    Ok((items, more))
}
