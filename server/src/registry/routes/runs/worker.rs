//! The worker protocol: lease, heartbeat, events, complete, fail. Every call after the lease
//! names the lease; a lease that expired or was cancelled answers 409 `lease_lost`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use schema::api::{
    CommentaryInfo, ErrorBody, EventsPost, FailPost, HeartbeatAnswer, Lease, LeaseRef,
    LeaseRequest, MAX_EVENTS_PER_POST, Scope,
};

use crate::registry::app::SharedState;
use crate::registry::auth::Auth;
use crate::registry::commentaries;
use crate::registry::error::{ApiError, ApiResult};
use crate::registry::extract::{ApiJson, ApiMultipart, RunId};
use crate::registry::routes::commentaries::{ArtifactForm, read_artifact_form};
use crate::registry::runs;

/// Take the oldest queued run (204 when none is queued).
#[utoipa::path(post, path = "/v1/runs/lease", tag = "workers", request_body = LeaseRequest,
    responses((status = 200, body = Lease), (status = 204, description = "nothing queued"), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lease(
    State(state): State<SharedState>,
    auth: Auth,
    ApiJson(request): ApiJson<LeaseRequest>,
) -> ApiResult<Response> {
    auth.require(Scope::Write)?;
    let worker = if request.worker.trim().is_empty() {
        auth.caller.name()
    } else {
        request.worker
    };
    Ok(match runs::lease(&state, &worker).await? {
        Some(lease) => Json(lease).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Extend the lease; answers `cancelled` when the run was cancelled (stop working on it).
#[utoipa::path(post, path = "/v1/runs/{id}/heartbeat", tag = "workers", params(("id" = String, Path)),
    request_body = LeaseRef,
    responses((status = 200, body = HeartbeatAnswer), (status = 409, description = "lease lost", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn heartbeat(
    State(state): State<SharedState>,
    id: RunId,
    auth: Auth,
    ApiJson(body): ApiJson<LeaseRef>,
) -> ApiResult<Json<HeartbeatAnswer>> {
    auth.require(Scope::Write)?;
    let run_state = runs::heartbeat(&state, &id, &body.lease).await?;
    Ok(Json(HeartbeatAnswer {
        state: run_state,
        ttl_s: state.config.lease_ttl.as_secs().max(1),
    }))
}

/// Store progress events.
#[utoipa::path(post, path = "/v1/runs/{id}/events", tag = "workers", params(("id" = String, Path)),
    request_body = EventsPost,
    responses((status = 204), (status = 409, description = "lease lost", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<SharedState>,
    id: RunId,
    auth: Auth,
    ApiJson(body): ApiJson<EventsPost>,
) -> ApiResult<StatusCode> {
    auth.require(Scope::Write)?;
    if body.events.len() > MAX_EVENTS_PER_POST {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_EVENTS_PER_POST} events per call"
        )));
    }
    runs::post_events(&state, &id, &body.lease, &body.events).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Publish the run's artifact (multipart: lease, manifest, tensors, report); the run succeeds
/// and the commentary becomes visible in one transaction.
#[utoipa::path(post, path = "/v1/runs/{id}/complete", tag = "workers", params(("id" = String, Path)),
    request_body(content = ArtifactForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = CommentaryInfo),
        (status = 409, description = "lease lost", body = ErrorBody),
        (status = 422, description = "the artifact does not verify", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn complete(
    State(state): State<SharedState>,
    id: RunId,
    auth: Auth,
    ApiMultipart(form): ApiMultipart,
) -> ApiResult<Json<CommentaryInfo>> {
    auth.require(Scope::Write)?;
    let (upload, lease) = read_artifact_form(&state, form).await?;
    let lease = lease.ok_or_else(|| ApiError::bad_request("the form has no \"lease\" field"))?;
    let commentary_id = runs::complete(&state, &id, &lease, upload).await?;
    let model = commentaries::find(&state, &commentary_id).await?;
    Ok(Json(commentaries::info(&model)?))
}

/// Report that the run failed; the error is kept on the run.
#[utoipa::path(post, path = "/v1/runs/{id}/fail", tag = "workers", params(("id" = String, Path)),
    request_body = FailPost,
    responses((status = 204), (status = 409, description = "lease lost", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn fail(
    State(state): State<SharedState>,
    id: RunId,
    auth: Auth,
    ApiJson(body): ApiJson<FailPost>,
) -> ApiResult<StatusCode> {
    auth.require(Scope::Write)?;
    let error: String = body.error.chars().take(16_000).collect();
    runs::fail(&state, &id, &body.lease, &error).await?;
    Ok(StatusCode::NO_CONTENT)
}
