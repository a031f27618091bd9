//! `/datasets/{digest}`: a dataset's splits, class balance, example images, and the
//! commentaries and runs for it.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse as _;
use minijinja::{Value, context};
use serde::Serialize;

use super::charts::bar_chart;
use super::{PageError, PagePath, PageResult, progress_text, render, short, signed_in, svg};
use crate::registry::app::SharedState;
use crate::registry::commentaries::{self, Sort};
use crate::registry::datasets;
use crate::registry::extract::DigestPath;
use crate::registry::runs;

#[derive(Serialize)]
struct Example {
    split: String,
    index: usize,
    label: String,
}

pub async fn dataset(
    State(state): State<SharedState>,
    PagePath(DigestPath(digest)): PagePath<DigestPath>,
    headers: HeaderMap,
) -> PageResult {
    let user = signed_in(&state, &headers).await;
    let model = datasets::find(&state, &digest)
        .await
        .map_err(|_| PageError::NotFound(format!("No dataset {digest} is stored here.")))?;
    let info = datasets::info(&state, model).await?;
    let summary = &info.summary;
    let classes = &summary.classes;
    let class_name = |label: u32| {
        classes
            .get(label as usize)
            .cloned()
            .unwrap_or_else(|| label.to_string())
    };
    let split = summary
        .splits
        .first()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let examples: Vec<Example> = match datasets::load_split(&state, &digest, &split).await {
        Ok(loaded) => (0..loaded.data.len().min(24))
            .map(|index| Example {
                split: split.clone(),
                index,
                label: class_name(loaded.data.labels[index]),
            })
            .collect(),
        Err(err) => {
            tracing::warn!("cannot decode {digest} for its page: {}", err.message);
            Vec::new()
        }
    };
    let balance = bar_chart(
        "Examples per class and split",
        classes,
        "examples",
        &summary
            .splits
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.class_counts.iter().map(|&c| c as f64).collect(),
                )
            })
            .collect::<Vec<_>>(),
    );
    let (commentary_list, _) =
        commentaries::list(&state, Some(&digest), None, Sort::Newest, 0, 100).await?;
    let commentary_rows: Vec<Value> = commentary_list
        .iter()
        .map(|c| {
            context! {
                id => c.id, kind => c.kind.as_str(), algorithm => c.algorithm.to_string(),
                improvement => c.improvement.map_or("not evaluated".to_string(), |g| format!("{g:+.4}")),
                created_at => c.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            }
        })
        .collect();
    let (run_list, _) = runs::list(&state, Some(&digest), None, 0, 100).await?;
    let run_rows: Vec<Value> = run_list
        .iter()
        .map(|r| context! { id => r.id, short => short(&r.id), kind => r.kind.as_str(), state => r.state.as_str(), progress => progress_text(r) })
        .collect();
    let shape = summary
        .splits
        .first()
        .map(|s| {
            format!(
                "{} × {} × {}",
                s.shape.height, s.shape.width, s.shape.channels
            )
        })
        .unwrap_or_default();
    let d = context! {
        name => info.name, digest => info.digest.to_string(), format => summary.format.to_string(),
        splits => summary.splits.iter().map(|s| context! { name => s.name, examples => s.examples }).collect::<Vec<_>>(),
        shape, classes => classes.clone(), archive => bytesize::ByteSize(info.archive_bytes).to_string(),
    };
    let defaults = schema::LearnConfig::default();
    let defaults = context! {
        meta_steps => defaults.meta_steps, inner_steps => defaults.inner_steps,
        batch_size => defaults.batch_size, inner_lr => defaults.inner_lr, outer_lr => defaults.outer_lr,
    };
    Ok(render(
        "dataset.html",
        context! {
            title => format!("Dataset {}", d.get_attr("name").map(|v| v.to_string()).unwrap_or_default()),
            user, d, examples, balance_svg => svg(balance),
            commentaries => commentary_rows, runs => run_rows, defaults,
        },
    )?
    .into_response())
}
