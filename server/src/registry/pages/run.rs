//! `/runs/{id}`: a learning run's state and progress, with its validation-loss chart (also
//! served alone at `/runs/{id}/chart.svg` for live updates).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use minijinja::context;
use schema::api::{EventBody, Phase};

use super::charts::{Series, line_chart};
use super::{PageError, PagePath, PageResult, progress_text, render, short, signed_in, svg};
use crate::registry::app::SharedState;
use crate::registry::datasets;
use crate::registry::error::ApiError;
use crate::registry::extract::RunId;
use crate::registry::runs;

/// The validation-loss chart of a run, from its stored progress events.
async fn loss_chart(state: &SharedState, id: &str) -> Result<String, ApiError> {
    let mut after = 0;
    let (mut loss, mut best) = (Vec::new(), Vec::new());
    loop {
        let events = runs::events_after(state, id, after, 1000).await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for event in &events {
            if let EventBody::Progress(p) = &event.body
                && p.phase == Phase::Learning
            {
                if let Some(v) = p.val_loss {
                    loss.push((p.step as f64, v));
                }
                if let Some(v) = p.best_val_loss {
                    best.push((p.step as f64, v));
                }
            }
        }
    }
    Ok(line_chart(
        "Validation loss per meta-step",
        "meta-step",
        "validation loss L_V (cross-entropy, nats)",
        &[
            Series {
                name: "L_V after the meta-step".into(),
                points: loss,
            },
            Series {
                name: "best so far".into(),
                points: best,
            },
        ],
    ))
}

pub async fn run(
    State(state): State<SharedState>,
    PagePath(id): PagePath<RunId>,
    headers: HeaderMap,
) -> PageResult {
    let user = signed_in(&state, &headers).await;
    let model = runs::find(&state, &id)
        .await
        .map_err(|_| PageError::NotFound(format!("No run “{id}” is known here.")))?;
    let info = runs::info(&model)?;
    let dataset_name = match datasets::find(&state, &info.dataset).await {
        Ok(d) => d.name,
        Err(_) => info.dataset.short(),
    };
    let chart = loss_chart(&state, &info.id).await?;
    let r = context! {
        id => info.id, short => short(&info.id), dataset => info.dataset.to_string(), dataset_name,
        kind => info.kind.as_str(), algorithm => info.algorithm.to_string(), state => info.state.as_str(),
        progress => progress_text(&info), attempts => info.attempts, max_attempts => info.max_attempts,
        worker => info.worker, error => info.error, commentary_id => info.commentary_id,
        terminal => info.state.is_terminal(),
    };
    Ok(render(
        "run.html",
        context! { title => format!("Run {}", short(&id)), user, r, chart_svg => svg(chart) },
    )?
    .into_response())
}

pub async fn run_chart(State(state): State<SharedState>, id: RunId) -> Response {
    if runs::find(&state, &id).await.is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    match loss_chart(&state, &id).await {
        Ok(chart) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            chart,
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}
