//! Progress events: appending them (state changes, progress, log lines), reading them back in
//! order, and following a run's events as server-sent events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::Event;
use chrono::Utc;
use futures::Stream;
use schema::api::{EventBody, RunEvent, RunState};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, Set, TransactionTrait as _,
};

use super::leases::leased;
use super::queue::find;
use crate::registry::app::SharedState;
use crate::registry::db::entities::{run, run_event};
use crate::registry::error::ApiResult;

/// Stores events for a run.
pub(super) async fn append(
    db: &impl ConnectionTrait,
    run_id: &str,
    events: &[EventBody],
) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let at = Utc::now();
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
            .col_expr(run::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(run::Column::Id.eq(id))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// The run's stored events after `after` as SSE, then new ones as they happen; the stream ends
/// when the run has ended or the server shuts down.
pub fn follow(
    state: SharedState,
    id: String,
    after: i64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let tail = Tail {
        state,
        id,
        after,
        pending: VecDeque::new(),
    };
    futures::stream::unfold(tail, |mut tail| async move {
        let event = tail.next().await?;
        Some((Ok(event), tail))
    })
}

/// Follows a run's stored events (polling, so events written by any replica are seen).
struct Tail {
    state: SharedState,
    id: String,
    after: i64,
    pending: VecDeque<RunEvent>,
}

const POLL: Duration = Duration::from_millis(250);

impl Tail {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(to_sse(&event));
            }
            // The state is read before the events: a state change commits with its event, so
            // a run seen ended here has its last event in the batch read next. (Read after the
            // events, the final change could commit in between and the stream would end
            // without its last event.)
            let run = find(&self.state, &self.id).await.ok()?;
            let ended = run.state.parse::<RunState>().is_ok_and(|s| s.is_terminal());
            let batch = events_after(&self.state, &self.id, self.after, 200)
                .await
                .ok()?;
            if let Some(last) = batch.last() {
                self.after = last.seq;
                self.pending.extend(batch);
                continue;
            }
            if ended {
                return None;
            }
            let mut shutdown = self.state.shutdown.clone();
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = shutdown.wait_for(|s| *s) => return None,
            }
        }
    }
}

fn to_sse(event: &RunEvent) -> Event {
    let name = match &event.body {
        EventBody::State { .. } => "state",
        EventBody::Progress(_) => "progress",
        EventBody::Log { .. } => "log",
    };
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(event.seq.to_string())
        .event(name)
        .data(data)
}
