//! `/commentaries/{id}`: what a commentary learned (curriculum, blend matrix or masks, drawn
//! from its insight tensors), its evaluation report, provenance, and how to use it.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse as _;
use minijinja::{Value, context};
use schema::CommentaryKind;
use schema::artifact::TensorMap;
use schema::report::{ApplyReport, ArmReport};

use super::charts::{Series, heatmap, histogram, line_chart};
use super::insights::{Blend, Curriculum, Sample, SampleWeights};
use super::{PageError, PagePath, PageResult, render, short, signed_in, svg};
use crate::registry::app::SharedState;
use crate::registry::commentaries;
use crate::registry::datasets;
use crate::registry::error::ApiResult;
use crate::registry::extract::CommentaryId;

/// What the page shows, by template variable.
type PageValues = BTreeMap<&'static str, Value>;

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
    let references: Vec<Value> = report
        .reference_arms
        .iter()
        .map(|r| context! { name => r.name, accuracy => spread(&r.arm.test_accuracy) })
        .collect();
    let view = context! {
        baseline => spread(&report.baseline.test_accuracy), with => spread(&report.with_commentary.test_accuracy),
        gain => format!("{:+.4}", report.test_accuracy_gain),
        z => format!("{:.1}", report.gain_z), harmful => report.harmful,
        references, over_reference => report.gain_over_best_reference.map(|g| format!("{g:+.4}")),
        validation => report.validation,
        noise => report.label_noise.as_ref().map(|n| context! {
            auroc => format!("{:.3}", n.auroc), precision => format!("{:.3}", n.precision_at_noise_rate), flipped => n.flipped,
        }),
        random => report.random_blending.as_ref().map(|r| spread(&r.test_accuracy)),
        seeds => report.baseline.runs.len(), student => report.student, steps => report.steps,
    };
    (view, chart)
}

/// The registry's address as a client should use it: `--public-url` when set, else the
/// request's host with the scheme a proxy reports (`X-Forwarded-Proto`), else http.
fn registry_url(state: &SharedState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.as_str().trim_end_matches('/').to_string();
    }
    let header = |name| {
        headers
            .get(name)
            .and_then(|h: &header::HeaderValue| h.to_str().ok())
    };
    let host = header(header::HOST).unwrap_or("127.0.0.1:8080");
    let scheme = match header(header::HeaderName::from_static("x-forwarded-proto")) {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

pub async fn commentary(
    State(state): State<SharedState>,
    headers: HeaderMap,
    PagePath(id): PagePath<CommentaryId>,
) -> PageResult {
    let user = signed_in(&state, &headers).await;
    let model = commentaries::find(&state, &id)
        .await
        .map_err(|_| PageError::NotFound(format!("No commentary “{id}” is stored here.")))?;
    let detail = commentaries::detail(&model)?;
    let tensors = commentaries::tensors(&state, &model).await?;
    let info = &detail.info;
    let manifest = &detail.manifest;
    let classes = &manifest.dataset.classes;
    let dataset_name = match datasets::find(&state, &info.dataset).await {
        Ok(d) => d.name,
        Err(_) => info.dataset.short(),
    };
    let mut page = PageValues::new();
    match info.kind {
        CommentaryKind::ExampleWeighting => weighting_views(&mut page, &tensors, classes),
        CommentaryKind::LabelBlending => blending_views(&mut page, &tensors, classes),
        CommentaryKind::AttentionMask => {
            mask_views(&mut page, &tensors, classes);
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
    let base = registry_url(&state, &headers);
    let cli_snippet = format!(
        "commentary pull --server {base} --id {id} --out ./commentary\ncommentary apply --server {base} --kind {k} --dataset PATH/TO/DATASET --report report.json",
        id = info.id,
        k = info.kind
    );
    let python_snippet = format!(
        "import commentary  # pip install 'commentary[torch]' (python/ in the repository)\nregistry = commentary.Registry(\"{base}\")\nc = commentary.load(registry.download(\"{id}\"))  # verified, cached\n# or the best for your data: registry.best(commentary.digest_of(your_dataset), kind=\"{k}\")",
        id = info.id,
        k = info.kind
    );
    let p = &manifest.provenance;
    let provenance = vec![
        ("trainer version", p.trainer_version.clone()),
        ("backend / device", format!("{} / {}", p.backend, p.device)),
        ("seed", p.seed.to_string()),
        ("created", p.created_at.to_rfc3339()),
        ("hypergradient", format!("{:?}", manifest.hypergradient)),
        ("tensors sha256", info.tensors_sha256.hex()),
    ];
    let c = context! {
        id => info.id, kind => info.kind.as_str(), algorithm => info.algorithm.to_string(),
        dataset => info.dataset.to_string(), dataset_name, run_id => info.run_id,
        run_short => info.run_id.as_deref().map(short), size => bytesize::ByteSize(info.tensors_bytes).to_string(),
        validation => manifest.validation.to_string(), harmful => info.harmful,
        verified => info.verified,
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

/// The name of class `label` (its number when the dataset has no such class).
fn class_name(classes: &[String], label: usize) -> String {
    classes
        .get(label)
        .cloned()
        .unwrap_or_else(|| format!("{label}"))
}

/// A malformed insight leaves its part of the page out (the error is logged); the rest stands.
fn shown<T>(decoded: ApiResult<Option<T>>) -> Option<T> {
    decoded.ok().flatten()
}

/// Example weighting: the curriculum per class, the weight histogram, the extremes.
/// Suspected mislabeled examples shown on the page.
const SUSPECTS_SHOWN: usize = 24;

fn weighting_views(page: &mut PageValues, tensors: &TensorMap, classes: &[String]) {
    match commentaries::lowest_weighted(tensors, classes, SUSPECTS_SHOWN) {
        Ok(Some(listed)) => {
            let suspects: Vec<Value> = listed
                .items
                .iter()
                .map(|e| context! { index => e.index, label => e.class, weight => format!("{:.3}", e.weight) })
                .collect();
            page.insert("suspects", Value::from(suspects));
            page.insert("suspects_total", Value::from(listed.total));
        }
        Ok(None) => {}
        Err(e) => tracing::error!("cannot list example weights: {e}"),
    }
    if let Some(curriculum) = shown(Curriculum::decode(tensors, classes.len())) {
        let series: Vec<Series> = classes
            .iter()
            .enumerate()
            .map(|(k, name)| Series {
                name: name.clone(),
                points: curriculum
                    .iterations
                    .iter()
                    .enumerate()
                    .map(|(p, &it)| (it, curriculum.mean(p, k)))
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
    if let Some(weights) = shown(SampleWeights::decode(tensors)) {
        let sample = &weights.sample;
        let samples = sample.indices.len();
        let points = weights.points();
        let chosen: Vec<usize> = if points <= 3 {
            (0..points).collect()
        } else {
            vec![0, points / 2, points - 1]
        };
        let rows: Vec<(String, Vec<f64>)> = chosen
            .iter()
            .map(|&p| {
                (
                    format!("iteration {}", weights.iterations[p]),
                    weights.at(p).to_vec(),
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
                let ws: Vec<f64> = (0..points).map(|p| weights.at(p)[e]).collect();
                ws.iter().sum::<f64>() / ws.len().max(1) as f64
            })
            .collect();
        let mut order: Vec<usize> = (0..samples).collect();
        order.sort_by(|&a, &b| mean_weights[b].total_cmp(&mean_weights[a]));
        let pick = |ids: Vec<usize>| -> Vec<Value> {
            ids.into_iter()
                .map(|s| context! { index => sample.indices[s], label => class_name(classes, sample.labels[s]), weight => format!("{:.3}", mean_weights[s]) })
                .collect()
        };
        let top = pick(order.iter().take(8).copied().collect());
        let bottom = pick(order.iter().rev().take(8).copied().collect());
        page.insert(
            "extremes",
            Value::from(vec![
                context! { title => "Most weighted (mean over training)", examples => top },
                context! { title => "Least weighted (mean over training)", examples => bottom },
            ]),
        );
    }
}

/// Label blending: the blend matrix and the most and least blended class pairs.
fn blending_views(page: &mut PageValues, tensors: &TensorMap, classes: &[String]) {
    let Some(blend) = shown(Blend::decode(tensors, classes.len())) else {
        return;
    };
    page.insert(
        "heatmap_svg",
        svg(heatmap(
            "Blend proportion λ kept, by class pair",
            classes,
            classes,
            blend.values(),
            "class",
            "blended with",
        )),
    );
    let c = classes.len();
    let mut pairs: Vec<(usize, usize, f64)> = (0..c)
        .flat_map(|i| (0..c).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|(i, j)| (i, j, blend.get(i, j)))
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

/// Attention masks: the examples whose masks are drawn (the images come from `images`).
fn mask_views(page: &mut PageValues, tensors: &TensorMap, classes: &[String]) {
    let Some(sample) = shown(Sample::decode(tensors)) else {
        return;
    };
    let masks: Vec<Value> = sample
        .indices
        .iter()
        .zip(&sample.labels)
        .enumerate()
        .take(24)
        .map(|(i, (&index, &label))| context! { i, index, label => class_name(classes, label) })
        .collect();
    page.insert("masks", Value::from(masks));
}
