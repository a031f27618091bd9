//! The page handlers: gather what a page shows (through the same functions the REST routes
//! use), shape it for its template, draw its charts.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Value;
use minijinja::context;
use schema::CommentaryKind;
use schema::api::{EventBody, JsonTensor, Phase, RunInfo};
use schema::report::{ApplyReport, ArmReport};
use serde::Serialize;

use super::charts::{Series, bar_chart, heatmap, histogram, line_chart};
use super::{PageError, PageResult, Search, render, signed_in};
use crate::registry::commentaries::{self, Sort};
use crate::registry::datasets::{self, parse_digest};
use crate::registry::error::ApiError;
use crate::registry::{SharedState, runs};

fn svg(text: String) -> Value {
    Value::from_safe_string(text)
}

/// The last 12 characters of an id (UUIDv7s share their first ones).
fn short(id: &str) -> String {
    id.chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn progress_text(run: &RunInfo) -> String {
    match &run.progress {
        None => "—".into(),
        Some(p) => {
            let phase = match p.phase {
                Phase::Learning => "learning",
                Phase::Evaluating => "evaluating",
            };
            match p.val_loss {
                Some(loss) => format!(
                    "{phase} {} / {}, validation loss {loss:.4}",
                    p.step, p.total
                ),
                None => format!("{phase} {} / {}", p.step, p.total),
            }
        }
    }
}

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

#[derive(Serialize)]
struct Example {
    split: String,
    index: usize,
    label: String,
}

pub async fn dataset(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(digest): Path<String>,
) -> PageResult {
    let user = signed_in(&state, &headers).await;
    let digest = parse_digest(&digest)
        .map_err(|_| PageError::NotFound(format!("“{digest}” is not a dataset digest.")))?;
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
    headers: HeaderMap,
    Path(id): Path<String>,
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

pub async fn run_chart(State(state): State<SharedState>, Path(id): Path<String>) -> Response {
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

fn tensor<'a>(tensors: &'a BTreeMap<String, JsonTensor>, name: &str) -> Option<&'a JsonTensor> {
    tensors.get(name)
}

/// Mean validation accuracy per evaluated step over an arm's students.
fn mean_curve(arm: &ArmReport) -> Vec<(f64, f64)> {
    let Some(first) = arm.runs.first() else {
        return Vec::new();
    };
    first
        .curve
        .iter()
        .enumerate()
        .map(|(i, point)| {
            let values: Vec<f64> = arm
                .runs
                .iter()
                .filter_map(|r| r.curve.get(i))
                .map(|p| p.val_accuracy)
                .collect();
            (
                point.step as f64,
                values.iter().sum::<f64>() / values.len().max(1) as f64,
            )
        })
        .collect()
}

fn report_view(report: &ApplyReport) -> (Value, String) {
    let spread = |s: &schema::report::Spread| format!("{:.4} ± {:.4}", s.mean, s.std);
    let mut series = vec![
        Series {
            name: "baseline".into(),
            points: mean_curve(&report.baseline),
        },
        Series {
            name: "with commentary".into(),
            points: mean_curve(&report.with_commentary),
        },
    ];
    if let Some(random) = &report.random_blending {
        series.push(Series {
            name: "random blending".into(),
            points: mean_curve(random),
        });
    }
    let chart = line_chart(
        "Validation accuracy while training fresh students",
        "training step",
        "validation accuracy (fraction)",
        &series,
    );
    let view = context! {
        baseline => spread(&report.baseline.test_accuracy), with => spread(&report.with_commentary.test_accuracy),
        gain => format!("{:+.4}", report.test_accuracy_gain),
        random => report.random_blending.as_ref().map(|r| spread(&r.test_accuracy)),
        seeds => report.baseline.runs.len(), student => report.student, steps => report.steps,
    };
    (view, chart)
}

pub async fn commentary(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    let user = signed_in(&state, &headers).await;
    let model = commentaries::find(&state, &id)
        .await
        .map_err(|_| PageError::NotFound(format!("No commentary “{id}” is stored here.")))?;
    let detail = commentaries::detail(&model)?;
    let insights = commentaries::insights(&state, &model).await?;
    let info = &detail.info;
    let manifest = &detail.manifest;
    let classes = &manifest.dataset.classes;
    let class_name = |label: f64| {
        classes
            .get(label as usize)
            .cloned()
            .unwrap_or_else(|| format!("{label}"))
    };
    let dataset_name = match datasets::find(&state, &info.dataset).await {
        Ok(d) => d.name,
        Err(_) => info.dataset.short(),
    };
    let t = &insights.tensors;
    let mut page = BTreeMap::<&str, Value>::new();
    match info.kind {
        CommentaryKind::ExampleWeighting => {
            if let (Some(means), Some(iterations)) =
                (tensor(t, "class_mean_weights"), tensor(t, "iterations"))
            {
                let c = classes.len().max(1);
                let series: Vec<Series> = (0..c)
                    .map(|k| Series {
                        name: classes.get(k).cloned().unwrap_or_default(),
                        points: iterations
                            .values
                            .iter()
                            .enumerate()
                            .map(|(p, &it)| {
                                (it, means.values.get(p * c + k).copied().unwrap_or(f64::NAN))
                            })
                            .collect(),
                    })
                    .collect();
                page.insert(
                    "curriculum_svg",
                    svg(line_chart(
                        "Mean weight per class across training",
                        "inner iteration",
                        "mean example weight (0-1)",
                        &series,
                    )),
                );
            }
            if let (Some(weights), Some(iterations), Some(indices), Some(labels)) = (
                tensor(t, "weights"),
                tensor(t, "iterations"),
                tensor(t, "indices"),
                tensor(t, "labels"),
            ) {
                let samples = indices.values.len().max(1);
                let points = iterations.values.len();
                let chosen: Vec<usize> = if points <= 3 {
                    (0..points).collect()
                } else {
                    vec![0, points / 2, points - 1]
                };
                let rows: Vec<(String, Vec<f64>)> = chosen
                    .iter()
                    .map(|&p| {
                        (
                            format!("iteration {}", iterations.values[p]),
                            weights.values
                                [p * samples..((p + 1) * samples).min(weights.values.len())]
                                .to_vec(),
                        )
                    })
                    .collect();
                page.insert(
                    "histogram_svg",
                    svg(histogram(
                        "Distribution of example weights",
                        "weight (0-1)",
                        &rows,
                        20,
                    )),
                );
                // Ranked by the mean weight over the recorded iterations (late weights saturate).
                let mean_weights: Vec<f64> = (0..samples)
                    .map(|e| {
                        let ws: Vec<f64> = (0..points)
                            .filter_map(|p| weights.values.get(p * samples + e).copied())
                            .collect();
                        ws.iter().sum::<f64>() / ws.len().max(1) as f64
                    })
                    .collect();
                let mut order: Vec<usize> =
                    (0..mean_weights.len().min(indices.values.len())).collect();
                order.sort_by(|&a, &b| mean_weights[b].total_cmp(&mean_weights[a]));
                let pick = |ids: Vec<usize>| -> Vec<Value> {
                    ids.into_iter()
                        .map(|s| context! { index => indices.values[s] as u64, label => class_name(labels.values[s]), weight => format!("{:.3}", mean_weights[s]) })
                        .collect()
                };
                let top = pick(order.iter().take(8).copied().collect());
                let bottom = pick(order.iter().rev().take(8).copied().collect());
                page.insert("extremes", Value::from(vec![
                    context! { title => "Most weighted (mean over training)", examples => top },
                    context! { title => "Least weighted (mean over training)", examples => bottom },
                ]));
            }
        }
        CommentaryKind::LabelBlending => {
            if let Some(blend) = tensor(t, "blend") {
                page.insert(
                    "heatmap_svg",
                    svg(heatmap(
                        "Blend proportion λ kept, by class pair",
                        classes,
                        classes,
                        &blend.values,
                        "class",
                        "blended with",
                    )),
                );
                let c = classes.len();
                let mut pairs: Vec<(usize, usize, f64)> = (0..c)
                    .flat_map(|i| (0..c).filter(move |&j| j != i).map(move |j| (i, j)))
                    .map(|(i, j)| (i, j, blend.values[i * c + j]))
                    .collect();
                pairs.sort_by(|a, b| a.2.total_cmp(&b.2));
                let view = |p: &[(usize, usize, f64)]| -> Vec<Value> {
                    p.iter().map(|&(i, j, v)| context! { row => classes[i], col => classes[j], value => format!("{v:.3}") }).collect()
                };
                let n = pairs.len().min(5);
                let least: Vec<_> = pairs.iter().rev().take(n).copied().collect();
                page.insert("pairs", Value::from(vec![
                    context! { title => "Most blended (least of the image kept)", pairs => view(&pairs[..n]) },
                    context! { title => "Least blended", pairs => view(&least) },
                ]));
            }
        }
        CommentaryKind::AttentionMask => {
            if let (Some(indices), Some(labels)) = (tensor(t, "indices"), tensor(t, "labels")) {
                let masks: Vec<Value> = indices
                    .values
                    .iter()
                    .zip(&labels.values)
                    .enumerate()
                    .take(24)
                    .map(|(i, (&index, &label))| context! { i, index => index as u64, label => class_name(label) })
                    .collect();
                page.insert("masks", Value::from(masks));
            }
            if let Some(m) = detail.report.as_ref().and_then(|r| r.masks.as_ref()) {
                page.insert(
                    "removal",
                    context! {
                        fraction => format!("{:.0}%", m.removed_fraction * 100.0),
                        most => format!("{:.4}", m.accuracy_most_masked_removed.mean),
                        random => format!("{:.4}", m.accuracy_random_removed.mean),
                        mass_in_box => format!("{:.2}", m.mass_in_box),
                    },
                );
            }
        }
    }
    if let Some(report) = &detail.report {
        let (view, chart) = report_view(report);
        page.insert("report", view);
        page.insert("report_svg", svg(chart));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    let cli_snippet = format!(
        "commentary pull --server http://{host} --dataset {d} --kind {k} --out ./commentary\ncommentary apply --server http://{host} --kind {k} --dataset PATH/TO/DATASET --report report.json",
        d = info.dataset,
        k = info.kind
    );
    let python_snippet = format!(
        "# curl -o tensors.safetensors http://{host}/v1/commentaries/{id}/artifact\nfrom safetensors.numpy import load_file\ntensors = load_file(\"tensors.safetensors\")\nprint({{name: t.shape for name, t in tensors.items()}})"
    );
    let p = &manifest.provenance;
    let provenance = vec![
        ("trainer version", p.trainer_version.clone()),
        ("backend / device", format!("{} / {}", p.backend, p.device)),
        ("seed", p.seed.to_string()),
        ("created", p.created_at.to_rfc3339()),
        ("hypergradient", format!("{:?}", manifest.hypergradient)),
        ("tensors sha256", info.tensors_sha256.clone()),
    ];
    let c = context! {
        id => info.id, kind => info.kind.as_str(), algorithm => info.algorithm.to_string(),
        dataset => info.dataset.to_string(), dataset_name, run_id => info.run_id,
        run_short => info.run_id.as_deref().map(short), size => bytesize::ByteSize(info.tensors_bytes).to_string(),
    };
    let manifest_json = serde_json::to_string_pretty(manifest).unwrap_or_default();
    page.insert("title", Value::from(format!("{} commentary", info.kind)));
    page.insert("user", Value::from(user));
    page.insert("c", c);
    page.insert("cli_snippet", Value::from(cli_snippet));
    page.insert("python_snippet", Value::from(python_snippet));
    page.insert("provenance", Value::from_serialize(&provenance));
    page.insert("manifest_json", Value::from(manifest_json));
    let context = Value::from_iter(page);
    Ok(render("commentary.html", context)?.into_response())
}

/// An attention-mask insight as PNG: `image.png` (the input, scaled to 0-255) or `mask.png`
/// (the mask as red with its value as opacity).
pub async fn mask_png(
    State(state): State<SharedState>,
    Path((id, i, layer)): Path<(String, usize, String)>,
) -> Response {
    let result = async {
        let model = commentaries::find(&state, &id).await?;
        let tensors = commentaries::tensors(&state, &model).await?;
        let missing = || ApiError::not_found("this commentary has no masks");
        let masks = tensors.get("insight.masks").ok_or_else(missing)?;
        let images = tensors.get("insight.images").ok_or_else(missing)?;
        let (Some(masks_v), Some(images_v)) = (masks.as_f32(), images.as_f32()) else {
            return Err(missing());
        };
        let &[n, h, w] = masks.shape() else {
            return Err(missing());
        };
        let channels = images.shape().get(1).copied().unwrap_or(1);
        if i >= n {
            return Err(ApiError::not_found(format!("there are {n} masks")));
        }
        let mut png = Vec::new();
        let encoder = image::codecs::png::PngEncoder::new(&mut png);
        match layer.as_str() {
            "mask.png" => {
                let pixels: Vec<u8> = masks_v[i * h * w..(i + 1) * h * w]
                    .iter()
                    .flat_map(|&m| [213, 94, 0, (m.clamp(0.0, 1.0) * 255.0) as u8])
                    .collect();
                image::ImageEncoder::write_image(
                    encoder,
                    &pixels,
                    w as u32,
                    h as u32,
                    image::ExtendedColorType::Rgba8,
                )
                .map_err(anyhow::Error::from)?;
            }
            "image.png" => {
                let plane = h * w;
                let start = i * channels * plane;
                let values = &images_v[start..start + channels * plane];
                let (lo, hi) = values
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let scale = |v: f32| {
                    if hi > lo {
                        ((v - lo) / (hi - lo) * 255.0) as u8
                    } else {
                        0
                    }
                };
                // Stored channel-first; PNG wants interleaved.
                let pixels: Vec<u8> = (0..plane)
                    .flat_map(|p| (0..channels).map(move |c| (p, c)))
                    .map(|(p, c)| scale(values[c * plane + p]))
                    .collect();
                let colour = if channels == 3 {
                    image::ExtendedColorType::Rgb8
                } else {
                    image::ExtendedColorType::L8
                };
                let pixels = if channels == 3 || channels == 1 {
                    pixels
                } else {
                    pixels.into_iter().step_by(channels).collect()
                };
                image::ImageEncoder::write_image(encoder, &pixels, w as u32, h as u32, colour)
                    .map_err(anyhow::Error::from)?;
            }
            _ => return Err(ApiError::not_found("layer is image.png or mask.png")),
        }
        Ok::<_, ApiError>(png)
    }
    .await;
    match result {
        Ok(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            png,
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}
