//! State transitions of a run: the one conditional update every change goes through, and
//! completing (publishing the artifact), failing and cancelling.

use chrono::{DateTime, Utc};
use schema::api::{EventBody, Phase, Progress, RunState};
use schema::report::divergence;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, TransactionTrait};

use super::events::append;
use super::leases::leased;
use super::queue::find;
use crate::registry::app::SharedState;
use crate::registry::commentaries::{self, Checked};
use crate::registry::db::entities::run;
use crate::registry::error::{ApiError, ApiResult, ErrorKind};
use crate::registry::store::{ArtifactFile, StorageKey};

/// Changes state with a conditional update (`from` must still hold), recording an event, in
/// one transaction (a savepoint inside the caller's): the state and its event commit together,
/// so a follower never sees a final state without its event, nor a crash keep one of them.
/// Returns whether this call made the change.
pub(super) async fn transition(
    db: &impl TransactionTrait,
    id: &str,
    from: &[RunState],
    to: RunState,
    error: Option<&str>,
    extra: impl FnOnce(sea_orm::UpdateMany<run::Entity>) -> sea_orm::UpdateMany<run::Entity>,
) -> ApiResult<bool> {
    let mut update = run::Entity::update_many()
        .col_expr(run::Column::State, Expr::value(to.as_str()))
        .col_expr(run::Column::UpdatedAt, Expr::value(Utc::now()))
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
    let txn = db.begin().await?;
    let done = update.exec(&txn).await?.rows_affected == 1;
    if done {
        append(
            &txn,
            id,
            &[EventBody::State {
                state: to,
                message: error.map(str::to_string),
            }],
        )
        .await?;
    }
    txn.commit().await?;
    Ok(done)
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
        return Err(ApiError::new(
            ErrorKind::InvalidArtifact,
            format!(
                "the artifact is a {} commentary for {}, but run {id} learns a {} commentary for {}",
                checked.manifest.kind,
                checked.manifest.dataset.digest,
                model.kind,
                model.dataset_digest
            ),
        ));
    }
    let rule = state.config.divergence_factor;
    if let Some(reason) = divergence(&checked.manifest, checked.report.as_ref(), rule) {
        // Not published: the run fails with the reason, as if its worker had said so.
        fail(state, id, lease, &reason).await?;
        return Err(ApiError::new(ErrorKind::Diverged, reason));
    }
    let commentary_id = uuid::Uuid::now_v7().to_string();
    commentaries::store_blobs(state, &commentary_id, &checked).await?;
    let txn = state.db.begin().await?;
    commentaries::insert_row(&txn, &commentary_id, &checked, Some(id.to_string())).await?;
    let lease_owned = lease.to_string();
    let cid = commentary_id.clone();
    let progress = final_progress(model.progress.as_deref())?;
    let done = transition(
        &txn,
        id,
        &[RunState::Running],
        RunState::Succeeded,
        None,
        move |u| {
            // The final state reads as final: an earlier attempt's error is history (it is in
            // the events), and the progress says done.
            u.col_expr(run::Column::CommentaryId, Expr::value(cid))
                .col_expr(run::Column::Error, Expr::value(Option::<String>::None))
                .col_expr(run::Column::Progress, Expr::value(progress))
                .filter(run::Column::Lease.eq(lease_owned))
        },
    )
    .await?;
    if !done {
        drop(txn);
        for file in ArtifactFile::ALL {
            state
                .store
                .delete(&StorageKey::commentary(&commentary_id, file))
                .await?;
        }
        return Err(ApiError::new(
            ErrorKind::LeaseLost,
            "the lease expired or the run was cancelled before it completed",
        ));
    }
    txn.commit().await?;
    tracing::info!(run = id, commentary = %commentary_id, "run succeeded");
    Ok(commentary_id)
}

/// The progress a succeeded run shows: done, at the last report's total (its losses kept).
fn final_progress(last: Option<&str>) -> ApiResult<Option<String>> {
    let Some(last) = last else { return Ok(None) };
    let mut progress: Progress = serde_json::from_str(last).map_err(ApiError::internal)?;
    progress.phase = Phase::Done;
    progress.total = progress.total.max(progress.step);
    progress.step = progress.total;
    serde_json::to_string(&progress)
        .map(Some)
        .map_err(ApiError::internal)
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
