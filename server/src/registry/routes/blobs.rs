//! Serving stored bytes over HTTP: a strong ETag, `If-None-Match` -> 304, a single
//! `Range: bytes=...` -> 206 (honouring `If-Range`), 416 for unsatisfiable ranges.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use crate::registry::app::SharedState;
use crate::registry::error::{ApiError, ApiResult, ErrorKind};
use crate::registry::store::StorageKey;

/// What is being served (the key decides content type, file name and caching).
pub struct Served {
    pub key: StorageKey,
    pub size: u64,
    /// Quoted strong ETag.
    pub etag: String,
}

pub async fn serve(
    state: &SharedState,
    headers: &HeaderMap,
    served: Served,
) -> ApiResult<Response> {
    let etag = HeaderValue::from_str(&served.etag).map_err(ApiError::internal)?;
    if let Some(wanted) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && wanted
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == served.etag || t.strip_prefix("W/") == Some(&served.etag))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag);
        return Ok(response);
    }
    let range_applies = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == served.etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) if range_applies => match schema::wire::parse_byte_range(spec, served.size) {
            Some(range) => Some(range),
            None => {
                let mut response = ApiError::new(
                    ErrorKind::RangeNotSatisfiable,
                    format!("cannot serve {spec:?} of {} bytes", served.size),
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", served.size)) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(response);
            }
        },
        _ => None,
    };
    // Small blobs come from memory; large ones stream from the store.
    let (body, served_range) = if served.size <= state.blob_cache.max_item {
        let bytes = state
            .blob_cache
            .get(&state.store, &served.key, &served.etag)
            .await?;
        let whole = 0..bytes.len() as u64;
        let part = range.clone().unwrap_or(whole.clone());
        let part = part.start.min(whole.end)..part.end.min(whole.end);
        let slice = bytes.slice(part.start as usize..part.end as usize);
        (Body::from(slice), part)
    } else {
        let blob = state.store.get(&served.key, range.clone()).await?;
        (Body::from_stream(blob.stream), blob.range)
    };
    let length = served_range.end - served_range.start;
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(served.key.content_type()),
    );
    if let Some(cache) = served.key.cache_control() {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        served.key.file_name()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!(
            "bytes {}-{}/{}",
            served_range.start,
            served_range.end.saturating_sub(1),
            served.size
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}
