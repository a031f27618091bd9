//! `/`: the datasets stored here, searchable by name.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse as _;
use minijinja::context;
use serde::Serialize;

use super::{PageResult, Search, render, signed_in};
use crate::registry::app::SharedState;
use crate::registry::datasets;

#[derive(Serialize)]
struct DatasetRow {
    digest: String,
    short: String,
    name: String,
    examples: u64,
    size: String,
    classes: usize,
    commentaries: u64,
}

pub async fn home(
    State(state): State<SharedState>,
    headers: HeaderMap,
    search: Search,
) -> PageResult {
    let user = signed_in(&state, &headers).await;
    let q = search.q.trim().to_string();
    let (found, _) = datasets::list(&state, Some(&q), 0, 200).await?;
    let rows: Vec<DatasetRow> = found
        .into_iter()
        .map(|d| DatasetRow {
            digest: d.digest.to_string(),
            short: d.digest.short(),
            name: d.name,
            examples: d.summary.splits.iter().map(|s| s.examples).sum(),
            size: bytesize::ByteSize(d.archive_bytes).to_string(),
            classes: d.summary.classes.len(),
            commentaries: d.commentaries,
        })
        .collect();
    Ok(render(
        "home.html",
        context! { title => "Datasets", user, q, datasets => rows },
    )?
    .into_response())
}
