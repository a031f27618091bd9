//! `/v1/commentaries...`, and the multipart artifact form that `POST /v1/commentaries` and the
//! workers' `POST /v1/runs/{id}/complete` share.

use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use schema::CommentaryKind;
use schema::api::{CommentaryDetail, CommentaryInfo, ErrorBody, Insights, Page, Scope};
use schema::artifact::TENSORS_FILE;
use serde::Deserialize;
use utoipa::IntoParams;

use super::PageParams;
use super::blobs::{Served, serve};
use crate::registry::app::SharedState;
use crate::registry::auth::Auth;
use crate::registry::commentaries::{self, Sort, Upload};
use crate::registry::datasets::parse_digest;
use crate::registry::error::{ApiError, ApiResult};
use crate::registry::store::commentary_key;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only commentaries for this dataset digest.
    pub dataset: Option<String>,
    pub kind: Option<CommentaryKind>,
    /// `newest` (default) or `improvement` (largest test-accuracy gain first).
    pub sort: Option<Sort>,
}

/// Stored commentaries.
#[utoipa::path(get, path = "/v1/commentaries", tag = "commentaries", params(ListParams, PageParams),
    responses((status = 200, body = Page<CommentaryInfo>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<SharedState>,
    _auth: Auth,
    Query(filter): Query<ListParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<CommentaryInfo>>> {
    let (offset, limit) = page.resolve()?;
    let digest = filter.dataset.as_deref().map(parse_digest).transpose()?;
    let sort = filter.sort.unwrap_or(Sort::Newest);
    let (items, more) =
        commentaries::list(&state, digest.as_ref(), filter.kind, sort, offset, limit).await?;
    Ok(Json(Page {
        items,
        next_cursor: PageParams::next(offset, limit, more),
    }))
}

/// A commentary: list entry, manifest, apply report.
#[utoipa::path(get, path = "/v1/commentaries/{id}", tag = "commentaries", params(("id" = String, Path)),
    responses((status = 200, body = CommentaryDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<SharedState>,
    _auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CommentaryDetail>> {
    let model = commentaries::find(&state, &id).await?;
    Ok(Json(commentaries::detail(&model)?))
}

/// Delete a commentary.
#[utoipa::path(delete, path = "/v1/commentaries/{id}", tag = "commentaries", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn delete(
    State(state): State<SharedState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require(Scope::Admin)?;
    commentaries::delete(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The commentary's `tensors.safetensors` (strong ETag = its sha256; 304; Range).
#[utoipa::path(get, path = "/v1/commentaries/{id}/artifact", tag = "commentaries", params(("id" = String, Path)),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "a range"), (status = 304, description = "not modified"),
        (status = 404, body = ErrorBody), (status = 416, body = ErrorBody),
    ))]
pub async fn artifact(
    State(state): State<SharedState>,
    _auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let model = commentaries::find(&state, &id).await?;
    let key = commentary_key(&model.id, TENSORS_FILE);
    serve(
        &state,
        &headers,
        Served {
            key: &key,
            size: model.tensors_bytes.max(0) as u64,
            etag: commentaries::tensors_etag(&model),
            content_type: "application/octet-stream",
            file_name: TENSORS_FILE,
        },
    )
    .await
}

/// Insight tensors as JSON (curriculum, blend matrix, masks...) with the apply report.
#[utoipa::path(get, path = "/v1/commentaries/{id}/insights", tag = "commentaries", params(("id" = String, Path)),
    responses((status = 200, body = Insights), (status = 404, body = ErrorBody)))]
pub async fn insights(
    State(state): State<SharedState>,
    _auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Insights>> {
    let model = commentaries::find(&state, &id).await?;
    Ok(Json(commentaries::insights(&state, &model).await?))
}

/// Publish an artifact learned elsewhere (multipart: manifest, tensors, report); it is verified
/// and its dataset must be stored here.
#[utoipa::path(post, path = "/v1/commentaries", tag = "commentaries",
    request_body(content = ArtifactForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, body = CommentaryInfo),
        (status = 422, description = "does not verify, or unknown dataset", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn upload(
    State(state): State<SharedState>,
    auth: Auth,
    form: Multipart,
) -> ApiResult<(StatusCode, Json<CommentaryInfo>)> {
    auth.require(Scope::Write)?;
    let (upload, lease) = read_artifact_form(form).await?;
    if lease.is_some() {
        return Err(ApiError::bad_request(
            "a lease belongs to POST /v1/runs/{id}/complete, not here",
        ));
    }
    let info = commentaries::publish(&state, upload).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Form fields of `complete` and `POST /v1/commentaries`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ArtifactForm {
    /// The lease (complete only).
    lease: Option<String>,
    /// `manifest.json`.
    #[schema(format = Binary, value_type = String)]
    manifest: Vec<u8>,
    /// `tensors.safetensors`.
    #[schema(format = Binary, value_type = String)]
    tensors: Vec<u8>,
    /// `report.json`, when the commentary was evaluated.
    #[schema(format = Binary, value_type = Option<String>)]
    report: Option<Vec<u8>>,
}

/// Reads the artifact fields of a multipart form.
pub async fn read_artifact_form(mut form: Multipart) -> ApiResult<(Upload, Option<String>)> {
    let mut manifest: Option<Bytes> = None;
    let mut tensors: Option<Bytes> = None;
    let mut report: Option<Bytes> = None;
    let mut lease: Option<String> = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::bad_request(format!("bad multipart field {name:?}: {e}")))?;
        match name.as_str() {
            "manifest" => manifest = Some(bytes),
            "tensors" => tensors = Some(bytes),
            "report" => report = Some(bytes),
            "lease" => lease = Some(String::from_utf8_lossy(&bytes).into_owned()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected form field {other:?}; expected manifest, tensors, report"
                )));
            }
        }
    }
    let missing = |f: &str| ApiError::bad_request(format!("the form has no {f:?} field"));
    Ok((
        Upload {
            manifest: manifest.ok_or_else(|| missing("manifest"))?,
            tensors: tensors.ok_or_else(|| missing("tensors"))?,
            report,
        },
        lease,
    ))
}
