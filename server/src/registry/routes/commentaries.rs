//! `/v1/commentaries...`, and the multipart artifact form that `POST /v1/commentaries` and the
//! workers' `POST /v1/runs/{id}/complete` share.

use axum::Json;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use schema::CommentaryKind;
use schema::api::{
    CommentaryDetail, CommentaryInfo, ErrorBody, ExampleWeights, Insights, Page, Scope,
};
use schema::artifact::{MANIFEST_FILE, REPORT_FILE, TENSORS_FILE};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use utoipa::IntoParams;

use super::PageParams;
use super::blobs::{Served, serve};
use crate::registry::app::SharedState;
use crate::registry::auth::Auth;
use crate::registry::commentaries::{self, Sort, Upload};
use crate::registry::datasets::{ensure_free, parse_digest};
use crate::registry::error::{ApiError, ApiResult, ErrorKind};
use crate::registry::extract::{ApiMultipart, ApiQuery, CommentaryId};
use crate::registry::store::{ArtifactFile, StorageKey};

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
    ApiQuery(filter): ApiQuery<ListParams>,
    ApiQuery(page): ApiQuery<PageParams>,
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
    responses((status = 200, body = CommentaryDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<SharedState>,
    id: CommentaryId,
    _auth: Auth,
) -> ApiResult<Response> {
    // Serialised once per cached row, not per request.
    let row = commentaries::find(&state, &id).await?;
    let json = row.detail_json(commentaries::detail_json)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Delete a commentary.
#[utoipa::path(delete, path = "/v1/commentaries/{id}", tag = "commentaries", params(("id" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn delete(
    State(state): State<SharedState>,
    id: CommentaryId,
    auth: Auth,
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
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 416, body = ErrorBody),
    ))]
pub async fn artifact(
    State(state): State<SharedState>,
    id: CommentaryId,
    _auth: Auth,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let model = commentaries::find(&state, &id).await?;
    serve(
        &state,
        &headers,
        Served {
            key: StorageKey::commentary(&model.id, ArtifactFile::Tensors),
            size: model.tensors_bytes.max(0) as u64,
            etag: commentaries::tensors_etag(&model),
        },
    )
    .await
}

/// Insight tensors as JSON (curriculum, blend matrix, masks...) with the apply report.
#[utoipa::path(get, path = "/v1/commentaries/{id}/insights", tag = "commentaries", params(("id" = String, Path)),
    responses((status = 200, body = Insights), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn insights(
    State(state): State<SharedState>,
    id: CommentaryId,
    _auth: Auth,
) -> ApiResult<Json<Insights>> {
    let model = commentaries::find(&state, &id).await?;
    Ok(Json(commentaries::insights(&state, &model).await?))
}

/// `GET /v1/commentaries/{id}/examples` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExamplesParams {
    /// `weight`: lowest weight first (the only order; the suspected mislabeled examples).
    pub order: Option<ExampleOrder>,
    /// At most this many examples (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// How the examples are listed.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExampleOrder {
    Weight,
}

/// Train examples by learned weight, lowest first: the suspected mislabeled examples of an
/// example-weighting commentary. JSON, or CSV (`index,label,class,weight`) with
/// `Accept: text/csv`.
#[utoipa::path(get, path = "/v1/commentaries/{id}/examples", tag = "commentaries",
    params(("id" = String, Path), ExamplesParams),
    responses((status = 200, body = ExampleWeights, description = "JSON, or CSV with Accept: text/csv"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn examples(
    State(state): State<SharedState>,
    id: CommentaryId,
    _auth: Auth,
    ApiQuery(params): ApiQuery<ExamplesParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    use axum::response::IntoResponse as _;
    let model = commentaries::find(&state, &id).await?;
    let detail = commentaries::detail(&model)?;
    let tensors = commentaries::tensors(&state, &model).await?;
    let _ = params.order;
    let limit = params.limit.unwrap_or(100);
    let listed =
        commentaries::lowest_weighted(&tensors, &detail.manifest.dataset.classes, limit)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("commentary {id}: {e}")))?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "commentary {id:?} has no per-example weights (example-weighting artifacts of format 2 have them)"
                ))
            })?;
    let wants_csv = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if wants_csv {
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            listed.to_csv(),
        )
            .into_response());
    }
    Ok(Json(listed).into_response())
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
    ApiMultipart(form): ApiMultipart,
) -> ApiResult<(StatusCode, Json<CommentaryInfo>)> {
    auth.require(Scope::Write)?;
    let (upload, lease) = read_artifact_form(&state, form).await?;
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

/// Streams the artifact fields of a multipart form into a staging folder (the route's body
/// limit bounds the whole form; a field that stops arriving for `--request-timeout` ends it).
pub async fn read_artifact_form(
    state: &SharedState,
    mut form: Multipart,
) -> ApiResult<(Upload, Option<String>)> {
    ensure_free(&state.staging_dir, state.config.limits.min_free_bytes)?;
    let upload = Upload::staged(state)?;
    let mut seen = Vec::new();
    let mut lease: Option<String> = None;
    let stall = state.config.request_timeout;
    let bad_body = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("the artifact form is too large: {e}"))
        } else {
            ApiError::bad_request(format!("bad multipart body: {e}"))
        }
    };
    while let Some(mut field) = within(stall, form.next_field()).await?.map_err(bad_body)? {
        let name = field.name().unwrap_or_default().to_string();
        let file = match name.as_str() {
            "manifest" => MANIFEST_FILE,
            "tensors" => TENSORS_FILE,
            "report" => REPORT_FILE,
            "lease" => {
                let bytes = within(stall, field.bytes()).await?.map_err(bad_body)?;
                if bytes.len() > MAX_LEASE_BYTES {
                    return Err(ApiError::bad_request("the \"lease\" field is too long"));
                }
                lease = Some(String::from_utf8_lossy(&bytes).into_owned());
                continue;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected form field {other:?}; expected manifest, tensors, report"
                )));
            }
        };
        if seen.contains(&file) {
            return Err(ApiError::bad_request(format!(
                "the form has the {name:?} field twice"
            )));
        }
        seen.push(file);
        let path = upload.path(file);
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(ApiError::internal)?;
        while let Some(chunk) = within(stall, field.chunk()).await?.map_err(bad_body)? {
            out.write_all(&chunk)
                .await
                .map_err(ApiError::staging_write)?;
        }
        out.flush().await.map_err(ApiError::staging_write)?;
    }
    for (field, file) in [("manifest", MANIFEST_FILE), ("tensors", TENSORS_FILE)] {
        if !seen.contains(&file) {
            return Err(ApiError::bad_request(format!(
                "the form has no {field:?} field"
            )));
        }
    }
    Ok((upload, lease))
}

/// The longest lease token a form may carry (they are UUIDs).
const MAX_LEASE_BYTES: usize = 256;

/// `future`, or 503 `timeout` when it takes longer than `stall` (a body that stopped coming).
async fn within<T>(stall: std::time::Duration, future: impl Future<Output = T>) -> ApiResult<T> {
    tokio::time::timeout(stall, future).await.map_err(|_| {
        ApiError::new(
            ErrorKind::Timeout,
            format!(
                "the upload stalled: no data for {}s (--request-timeout)",
                stall.as_secs()
            ),
        )
    })
}
