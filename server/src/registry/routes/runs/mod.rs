//! `/v1/runs...`: queue, inspect, cancel, and stream progress (SSE). The worker protocol
//! (lease, heartbeat, events, complete, fail) is in `worker`.

pub mod worker;

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use schema::api::{ErrorBody, Page, RunCreated, RunEvent, RunInfo, RunRequest, RunState, Scope};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::registry::app::SharedState;
use crate::registry::auth::Auth;
use crate::registry::datasets::parse_digest;
use crate::registry::error::{ApiError, ApiResult};
use crate::registry::extract::{ApiJson, ApiQuery, RunId};
use crate::registry::routes::PageParams;
use crate::registry::runs;

/// Queue a learning run for a stored dataset.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", request_body = RunRequest,
    responses(
        (status = 202, body = RunCreated),
        (status = 404, description = "unknown dataset", body = ErrorBody),
        (status = 422, description = "a request that cannot work", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn create(
    State(state): State<SharedState>,
    auth: Auth,
    ApiJson(request): ApiJson<RunRequest>,
) -> ApiResult<(StatusCode, Json<RunCreated>)> {
    auth.require(Scope::Write)?;
    let model = runs::create(&state, request, &auth.caller.key()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunCreated {
            id: model.id,
            state: RunState::Queued,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only runs for this dataset digest.
    pub dataset: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
}

/// Runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListParams, PageParams),
    responses((status = 200, body = Page<RunInfo>)))]
pub async fn list(
    State(state): State<SharedState>,
    _auth: Auth,
    ApiQuery(filter): ApiQuery<ListParams>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<RunInfo>>> {
    let (offset, limit) = page.resolve()?;
    let digest = filter.dataset.as_deref().map(parse_digest).transpose()?;
    let (items, more) = runs::list(&state, digest.as_ref(), filter.state, offset, limit).await?;
    Ok(Json(Page {
        items,
        next_cursor: PageParams::next(offset, limit, more),
    }))
}

/// A run, with its last progress and, when it failed, the error.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = RunInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<SharedState>,
    id: RunId,
    _auth: Auth,
) -> ApiResult<Json<RunInfo>> {
    Ok(Json(runs::info(&runs::find(&state, &id).await?)?))
}

/// Cancel a queued or running run (a running one stops at its worker's next heartbeat).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = RunInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn cancel(
    State(state): State<SharedState>,
    id: RunId,
    auth: Auth,
) -> ApiResult<Json<RunInfo>> {
    auth.require(Scope::Write)?;
    Ok(Json(runs::info(&runs::cancel(&state, &id).await?)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Resume after this event id (the same as the `Last-Event-ID` header).
    pub after: Option<i64>,
}

/// Progress as server-sent events: every stored event of the run (state changes, progress,
/// log lines), then new ones as they happen; the stream ends when the run has ended. The SSE
/// `id` is the event's `seq`; reconnect with `Last-Event-ID` to resume.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs",
    params(("id" = String, Path), EventParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event")),
    responses(
        (status = 200, content_type = "text/event-stream", body = RunEvent, description = "one RunEvent per SSE data line; the event name is its type"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<SharedState>,
    id: RunId,
    _auth: Auth,
    ApiQuery(params): ApiQuery<EventParams>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    runs::find(&state, &id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("bad Last-Event-ID {v:?}")))
        })
        .transpose()?;
    let after = resume.or(params.after).unwrap_or(0);
    let stream = runs::follow(state, id.to_string(), after);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
