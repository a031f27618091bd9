//! Commentaries: publishing a verified artifact (from a run or an upload), lists ranked by
//! newest or improvement, details, insights, deletion.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use schema::api::{
    CommentaryDetail, CommentaryInfo, ExampleWeight, ExampleWeights, Insights, JsonTensor,
};
use schema::artifact::{
    ArtifactManifest, INSIGHT_PREFIX, MANIFEST_FILE, REPORT_FILE, TENSORS_FILE, TensorMap,
    TensorValues, decode_tensors, verify_artifact_bytes,
};
use schema::report::ApplyReport;
use schema::{CommentaryKind, Sha256};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, Set,
};

use super::app::SharedState;
use super::db::entities::{commentary, dataset};
use super::error::{ApiError, ApiResult, ErrorKind};
use super::row_cache::CachedCommentary;
use super::store::{ArtifactFile, StorageKey};

/// An artifact received over HTTP, not yet trusted: its form fields streamed into a staging
/// folder of their own (`manifest.json`, `tensors.safetensors`, maybe `report.json`), so a
/// large or slow upload is never held in memory while it arrives.
pub struct Upload {
    pub dir: tempfile::TempDir,
}

impl Upload {
    /// A new, empty staging folder under the registry's staging directory.
    pub fn staged(state: &SharedState) -> ApiResult<Self> {
        Ok(Self {
            dir: tempfile::tempdir_in(&state.staging_dir).map_err(ApiError::internal)?,
        })
    }

    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }
}

/// A verified artifact, ready to commit.
pub struct Checked {
    pub upload: Upload,
    pub manifest: ArtifactManifest,
    /// `manifest.json` as uploaded (small; kept in the row).
    pub manifest_bytes: Bytes,
    pub report: Option<ApplyReport>,
    /// `report.json` as uploaded.
    pub report_bytes: Option<Bytes>,
    pub tensors_bytes: u64,
}

/// Verifies an uploaded artifact with the checks `commentary artifact verify` makes (on its
/// staged files, each read once), and checks its dataset is stored here.
pub async fn check(state: &SharedState, upload: Upload) -> ApiResult<Checked> {
    let dir = upload.dir.path().to_path_buf();
    // Each file is read once: the manifest and report are kept for the row, the tensors only
    // verified (the store streams them from the staged file).
    let (verified, manifest_bytes, report_bytes, tensors_bytes) =
        tokio::task::spawn_blocking(move || {
            // The form reader refused forms without a manifest or tensors, so both are here.
            let read = |file: &str| std::fs::read(dir.join(file)).map_err(ApiError::internal);
            let manifest = read(MANIFEST_FILE)?;
            let tensors = read(TENSORS_FILE)?;
            let report = match dir.join(REPORT_FILE).exists() {
                true => Some(read(REPORT_FILE)?),
                false => None,
            };
            let verified = verify_artifact_bytes(&dir, &manifest, &tensors, report.as_deref())
                .map_err(|e| {
                    ApiError::new(
                        ErrorKind::InvalidArtifact,
                        e.to_string()
                            .replace(&dir.display().to_string(), "artifact"),
                    )
                })?;
            Ok::<_, ApiError>((
                verified,
                Bytes::from(manifest),
                report.map(Bytes::from),
                tensors.len() as u64,
            ))
        })
        .await
        .map_err(ApiError::internal)??;
    let report = match &report_bytes {
        Some(bytes) => Some(serde_json::from_slice::<ApplyReport>(bytes).map_err(|e| {
            ApiError::new(ErrorKind::InvalidArtifact, format!("{REPORT_FILE}: {e}"))
        })?),
        None => None,
    };
    let digest = verified.manifest.dataset.digest;
    if dataset::Entity::find_by_id(digest.to_string())
        .one(&state.db)
        .await?
        .is_none()
    {
        return Err(ApiError::new(
            ErrorKind::UnknownDataset,
            format!(
                "the commentary is for dataset {digest}, which is not stored here; push it first"
            ),
        ));
    }
    Ok(Checked {
        upload,
        manifest: verified.manifest,
        manifest_bytes,
        report,
        report_bytes,
        tensors_bytes,
    })
}

/// Stores the blobs of a checked artifact (before the row that makes it visible; a failure
/// leaves blobs no row references, which the orphan sweep removes).
pub async fn store_blobs(state: &SharedState, id: &str, checked: &Checked) -> ApiResult<()> {
    let store = &state.store;
    store
        .put_file(
            &StorageKey::commentary(id, ArtifactFile::Tensors),
            &checked.upload.path(TENSORS_FILE),
        )
        .await
        .map_err(ApiError::store_write)?;
    if let Some(report) = &checked.report_bytes {
        store
            .put(
                &StorageKey::commentary(id, ArtifactFile::Report),
                report.clone(),
            )
            .await
            .map_err(ApiError::store_write)?;
    }
    store
        .put(
            &StorageKey::commentary(id, ArtifactFile::Manifest),
            checked.manifest_bytes.clone(),
        )
        .await
        .map_err(ApiError::store_write)?;
    Ok(())
}

/// The row that makes a stored artifact visible (inserted inside the caller's transaction).
pub async fn insert_row(
    db: &impl ConnectionTrait,
    id: &str,
    checked: &Checked,
    run_id: Option<String>,
) -> ApiResult<commentary::Model> {
    let manifest = &checked.manifest;
    let model = commentary::ActiveModel {
        id: Set(id.to_string()),
        dataset_digest: Set(manifest.dataset.digest.to_string()),
        kind: Set(manifest.kind.as_str().to_string()),
        algorithm: Set(manifest.algorithm.to_string()),
        manifest: Set(String::from_utf8_lossy(&checked.manifest_bytes).into_owned()),
        report: Set(checked
            .report_bytes
            .as_ref()
            .map(|r| String::from_utf8_lossy(r).into_owned())),
        // Verification checked the tensors against this.
        tensors_sha256: Set(manifest.tensors_sha256.hex()),
        tensors_bytes: Set(checked.tensors_bytes as i64),
        improvement: Set(checked
            .report
            .as_ref()
            .map(|r| r.test_accuracy_gain)
            .filter(|g| g.is_finite())),
        run_id: Set(run_id),
        created_at: Set(Utc::now()),
    };
    Ok(model.insert(db).await?)
}

/// Publishes an uploaded artifact (`POST /v1/commentaries`).
pub async fn publish(state: &SharedState, upload: Upload) -> ApiResult<CommentaryInfo> {
    let checked = check(state, upload).await?;
    let id = uuid::Uuid::now_v7().to_string();
    store_blobs(state, &id, &checked).await?;
    let model = insert_row(&state.db, &id, &checked, None).await?;
    info(&model)
}

/// The list view of a row.
pub fn info(model: &commentary::Model) -> ApiResult<CommentaryInfo> {
    let bad = |what: String| {
        ApiError::internal(anyhow::anyhow!("stored commentary {}: {what}", model.id))
    };
    Ok(CommentaryInfo {
        id: model.id.clone(),
        dataset: Sha256::parse(&model.dataset_digest).map_err(|e| bad(e.to_string()))?,
        kind: model.kind.parse().map_err(bad)?,
        algorithm: model.algorithm.parse().map_err(bad)?,
        tensors_sha256: Sha256::parse(&model.tensors_sha256).map_err(|e| bad(e.to_string()))?,
        tensors_bytes: model.tensors_bytes.max(0) as u64,
        improvement: model.improvement,
        harmful: model.report.as_deref().is_some_and(report_says_harmful),
        verified: model.run_id.is_some(),
        run_id: model.run_id.clone(),
        created_at: model.created_at,
    })
}

/// Whether a stored apply report marks its commentary harmful (reports written before the
/// flag existed are not).
fn report_says_harmful(report: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(report)
        .ok()
        .and_then(|v| v.get("harmful").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// How lists are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    Newest,
    /// Largest test-accuracy gain first; unevaluated commentaries last.
    Improvement,
}

/// Commentaries matching the filters.
pub async fn list(
    state: &SharedState,
    dataset: Option<&Sha256>,
    kind: Option<CommentaryKind>,
    sort: Sort,
    offset: u64,
    limit: u64,
) -> ApiResult<(Vec<CommentaryInfo>, bool)> {
    let mut query = commentary::Entity::find();
    if let Some(digest) = dataset {
        query = query.filter(commentary::Column::DatasetDigest.eq(digest.to_string()));
    }
    if let Some(kind) = kind {
        query = query.filter(commentary::Column::Kind.eq(kind.as_str()));
    }
    query = match sort {
        Sort::Newest => query.order_by_desc(commentary::Column::Id),
        // Measured before claimed: commentaries from this registry's runs first.
        Sort::Improvement => query
            .order_by(
                sea_orm::sea_query::Expr::col(commentary::Column::RunId).is_null(),
                sea_orm::Order::Asc,
            )
            .order_by_with_nulls(
                commentary::Column::Improvement,
                sea_orm::Order::Desc,
                sea_orm::sea_query::NullOrdering::Last,
            )
            .order_by_desc(commentary::Column::Id),
    };
    let (models, more) = super::db::page(&state.db, query, offset, limit).await?;
    let items = models.iter().map(info).collect::<ApiResult<Vec<_>>>()?;
    Ok((items, more))
}

/// The stored commentary `id`, or 404 (from memory when it was read moments ago; see
/// `row_cache`).
pub async fn find(state: &SharedState, id: &str) -> ApiResult<Arc<CachedCommentary>> {
    if let Some(row) = state.commentary_rows.get(id) {
        return Ok(row);
    }
    let ticket = state.commentary_rows.ticket();
    let model = commentary::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no commentary {id:?} is stored here")))?;
    Ok(state.commentary_rows.insert(ticket, model))
}

/// [`detail`] as JSON, the body of `GET /v1/commentaries/{id}`.
pub fn detail_json(model: &commentary::Model) -> ApiResult<Bytes> {
    let json = serde_json::to_vec(&detail(model)?).map_err(anyhow::Error::from)?;
    Ok(Bytes::from(json))
}

/// Manifest and report with the list entry.
pub fn detail(model: &commentary::Model) -> ApiResult<CommentaryDetail> {
    let manifest = serde_json::from_str(&model.manifest).map_err(anyhow::Error::from)?;
    let report = match &model.report {
        Some(text) => Some(serde_json::from_str(text).map_err(anyhow::Error::from)?),
        None => None,
    };
    Ok(CommentaryDetail {
        info: info(model)?,
        manifest,
        report,
    })
}

/// Most examples one `GET /v1/commentaries/{id}/examples` returns.
pub const MAX_EXAMPLES_LISTED: usize = 10_000;

/// The train examples by learned weight, lowest first (at most `limit`), from the
/// `insight.example_weights` and `insight.example_labels` tensors; None when the artifact has
/// none (other kinds, format 1 artifacts).
pub fn lowest_weighted(
    tensors: &TensorMap,
    classes: &[String],
    limit: usize,
) -> Result<Option<ExampleWeights>, String> {
    let (Some(weights), Some(labels)) = (
        tensors.get("insight.example_weights"),
        tensors.get("insight.example_labels"),
    ) else {
        return Ok(None);
    };
    let (Some(weights), TensorValues::I64(labels)) = (weights.as_f32(), labels.values()) else {
        return Err("example weights must be F32 and labels I64".into());
    };
    if weights.len() != labels.len() {
        return Err(format!(
            "{} example weights but {} labels",
            weights.len(),
            labels.len()
        ));
    }
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weights[a].total_cmp(&weights[b]).then(a.cmp(&b)));
    let items = order
        .into_iter()
        .take(limit.min(MAX_EXAMPLES_LISTED))
        .map(|i| {
            let label =
                u32::try_from(labels[i]).map_err(|_| format!("label {} is negative", labels[i]))?;
            Ok(ExampleWeight {
                index: i as u64,
                label,
                class: classes
                    .get(label as usize)
                    .cloned()
                    .ok_or_else(|| format!("label {label} has no class"))?,
                weight: weights[i],
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Some(ExampleWeights {
        total: weights.len() as u64,
        items,
    }))
}

/// The strong ETag of a commentary's tensors: their sha256, quoted.
pub fn tensors_etag(model: &commentary::Model) -> String {
    format!("\"{}\"", model.tensors_sha256)
}

/// The commentary's tensors, decoded; the bytes come through the blob cache, so pages that
/// draw from them (insights, mask images) do not read the store on every request.
pub async fn tensors(state: &SharedState, model: &commentary::Model) -> ApiResult<TensorMap> {
    let key = StorageKey::commentary(&model.id, ArtifactFile::Tensors);
    let bytes = state
        .blob_cache
        .get(&state.store, &key, &tensors_etag(model))
        .await?;
    Ok(decode_tensors(&bytes).map_err(anyhow::Error::from)?)
}

/// The insight tensors as JSON.
pub async fn insights(state: &SharedState, model: &commentary::Model) -> ApiResult<Insights> {
    let detail = detail(model)?;
    let tensors = tensors(state, model).await?;
    let mut out = BTreeMap::new();
    for (name, tensor) in tensors {
        let Some(short) = name.strip_prefix(INSIGHT_PREFIX) else {
            continue;
        };
        out.insert(
            short.to_string(),
            JsonTensor {
                shape: tensor.shape().to_vec(),
                values: values_f64(tensor.values()),
            },
        );
    }
    Ok(Insights {
        kind: detail.info.kind,
        classes: detail.manifest.dataset.classes,
        tensors: out,
        report: detail.report,
    })
}

/// A tensor's values as f64, whatever its stored dtype.
pub fn values_f64(values: &TensorValues) -> Vec<f64> {
    match values {
        TensorValues::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorValues::I64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorValues::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
    }
}

/// Deletes a commentary: the row first (it disappears), then its blobs.
pub async fn delete(state: &SharedState, id: &str) -> ApiResult<()> {
    let model = find(state, id).await?;
    commentary::Entity::delete_by_id(&model.id)
        .exec(&state.db)
        .await?;
    state.commentary_rows.forget([model.id.as_str()]);
    for file in ArtifactFile::ALL {
        state
            .store
            .delete(&StorageKey::commentary(&model.id, file))
            .await?;
    }
    Ok(())
}
