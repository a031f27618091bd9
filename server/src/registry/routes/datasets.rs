//! `/v1/datasets...`

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use schema::api::{DatasetInfo, ErrorBody, Page, Scope};
use serde::Deserialize;
use utoipa::IntoParams;

use super::PageParams;
use super::blobs::{Served, serve};
use crate::registry::app::SharedState;
use crate::registry::auth::Auth;
use crate::registry::datasets;
use crate::registry::error::{ApiError, ApiResult};
use crate::registry::extract::{ApiPath, ApiQuery, DigestPath};
use crate::registry::pages::images::example_png;
use crate::registry::store::StorageKey;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// A name for people (the digest is the identity).
    pub name: String,
}

/// Upload a dataset archive (.tar, .tar.gz or .zip of IDX files, CIFAR binaries or an image
/// folder) as the raw body. It is staged, decoded and digested, then committed: 201 when new,
/// 200 with the stored dataset when the same content is already here.
#[utoipa::path(post, path = "/v1/datasets", tag = "datasets", params(UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the archive"),
    responses(
        (status = 201, description = "stored", body = DatasetInfo),
        (status = 200, description = "already stored", body = DatasetInfo),
        (status = 413, description = "larger than the registry accepts", body = ErrorBody),
        (status = 422, description = "not a usable dataset", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn upload(
    State(state): State<SharedState>,
    auth: Auth,
    ApiQuery(params): ApiQuery<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    auth.require(Scope::Write)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.config.max_upload_bytes) {
        return Err(ApiError::too_large(format!(
            "the upload is larger than this registry accepts ({})",
            bytesize::ByteSize(state.config.max_upload_bytes)
        )));
    }
    let (info, created) = datasets::ingest(&state, &params.name, declared, body)
        .await
        .inspect_err(|e| {
            tracing::info!(
                name = params.name,
                caller = auth.caller.name(),
                status = e.status().as_u16(),
                "upload refused: {}",
                e.message
            );
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(&info)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/datasets/{}", info.digest)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only datasets whose name contains this.
    pub name: Option<String>,
}

/// Stored datasets, newest first.
#[utoipa::path(get, path = "/v1/datasets", tag = "datasets", params(ListParams, PageParams),
    responses((status = 200, body = Page<DatasetInfo>)))]
pub async fn list(
    State(state): State<SharedState>,
    _auth: Auth,
    ApiQuery(filter): ApiQuery<ListParams>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<DatasetInfo>>> {
    let (offset, limit) = page.resolve()?;
    let (items, more) = datasets::list(&state, filter.name.as_deref(), offset, limit).await?;
    Ok(Json(Page {
        items,
        next_cursor: PageParams::next(offset, limit, more),
    }))
}

/// A stored dataset's metadata.
#[utoipa::path(get, path = "/v1/datasets/{digest}", tag = "datasets",
    params(("digest" = String, Path, description = "sha256:<hex> or bare hex")),
    responses((status = 200, body = DatasetInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<SharedState>,
    DigestPath(digest): DigestPath,
    _auth: Auth,
) -> ApiResult<Json<DatasetInfo>> {
    let model = datasets::find(&state, &digest).await?;
    Ok(Json(datasets::info(&state, model).await?))
}

/// Whether the dataset is stored (200 or 404, no body).
#[utoipa::path(head, path = "/v1/datasets/{digest}", tag = "datasets",
    params(("digest" = String, Path, description = "sha256:<hex> or bare hex")),
    responses((status = 200), (status = 400), (status = 404)))]
pub async fn head(
    State(state): State<SharedState>,
    DigestPath(digest): DigestPath,
    _auth: Auth,
) -> ApiResult<StatusCode> {
    datasets::find(&state, &digest).await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Also delete the dataset's commentaries and runs.
    #[serde(default)]
    pub cascade: bool,
}

/// Delete a dataset (refused while it has commentaries, unless `?cascade=true`).
#[utoipa::path(delete, path = "/v1/datasets/{digest}", tag = "datasets",
    params(("digest" = String, Path, description = "sha256:<hex> or bare hex"), DeleteParams),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn delete(
    State(state): State<SharedState>,
    DigestPath(digest): DigestPath,
    auth: Auth,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> ApiResult<StatusCode> {
    auth.require(Scope::Admin)?;
    datasets::delete(&state, &digest, params.cascade).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The archive as it was uploaded (ETag, Range).
#[utoipa::path(get, path = "/v1/datasets/{digest}/archive", tag = "datasets",
    params(("digest" = String, Path, description = "sha256:<hex> or bare hex")),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "a range"), (status = 304, description = "not modified"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn archive(
    State(state): State<SharedState>,
    DigestPath(digest): DigestPath,
    _auth: Auth,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let model = datasets::find(&state, &digest).await?;
    let key = datasets::archive_key(&model)?;
    let StorageKey::DatasetArchive { upload, .. } = &key else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "not an archive key: {key}"
        )));
    };
    let etag = StorageKey::archive_etag(&digest, upload.as_deref());
    serve(
        &state,
        &headers,
        Served {
            key,
            size: model.archive_bytes.max(0) as u64,
            etag,
        },
    )
    .await
}

/// `{split}` and `{image}` of an example image's path.
#[derive(Debug, Deserialize)]
pub struct ExamplePath {
    split: String,
    image: String,
}

/// One example image (canonical order) as PNG; its label id is in the `X-Label` header.
#[utoipa::path(get, path = "/v1/datasets/{digest}/splits/{split}/examples/{image}", tag = "datasets",
    params(
        ("digest" = String, Path, description = "sha256:<hex> or bare hex"),
        ("split" = String, Path, description = "train, test, ..."),
        ("image" = String, Path, description = "`<index>.png`, index in canonical order"),
    ),
    responses((status = 200, content_type = "image/png", body = Vec<u8>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn example(
    State(state): State<SharedState>,
    DigestPath(digest): DigestPath,
    ApiPath(ExamplePath { split, image }): ApiPath<ExamplePath>,
    _auth: Auth,
) -> ApiResult<Response> {
    let index: usize = image
        .strip_suffix(".png")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| ApiError::not_found(format!("{image:?} is not <index>.png")))?;
    let loaded = datasets::load_split(&state, &digest, &split).await?;
    let (png, label) = example_png(&loaded, index)?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
            (
                header::HeaderName::from_static("x-label"),
                HeaderValue::from(label),
            ),
        ],
        png,
    )
        .into_response())
}
