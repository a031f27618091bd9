//! Datasets: the upload pipeline (stage while streaming, decode + digest, commit in one
//! transaction), lookups, deletion, and decoded splits for example images (drawn by
//! `pages::images`).

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use chrono::Utc;
use futures::TryStreamExt as _;
use schema::api::DatasetInfo;
use schema::{DatasetSummary, Sha256};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use tokio::io::AsyncWriteExt as _;
use trainer::data::{Cancel, DataError, Dataset, SplitData, disk};

use super::app::SharedState;
use super::db::entities::{commentary, dataset, run, run_event};
use super::error::{ApiError, ApiResult, ErrorKind};
use super::extract::DigestPath;
use super::store::{ArtifactFile, StorageKey};

/// Parses a digest from a query or a body (`sha256:<hex>` or bare hex), as paths are.
pub fn parse_digest(text: &str) -> ApiResult<Sha256> {
    DigestPath::parse(text).map(|d| d.0)
}

/// Longest dataset name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// A dataset name is for people: 1 to 200 bytes of text without control characters (a NUL or
/// an escape sequence would reach logs, pages and terminals).
fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "?name= must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "?name= must not contain control characters (it has {:?})",
            c
        )));
    }
    Ok(())
}

/// Streams an upload into the staging folder, decodes and digests it, and commits it.
/// Returns the dataset and whether it is new.
/// `declared` is the request's `Content-Length`, when it gave one: an upload that would not
/// leave the free-space margin is refused before it is read.
pub async fn ingest(
    state: &SharedState,
    name: &str,
    declared: Option<u64>,
    body: Body,
) -> ApiResult<(DatasetInfo, bool)> {
    check_name(name)?;
    let margin = state.config.limits.min_free_bytes;
    ensure_free(
        &state.staging_dir,
        margin.saturating_add(declared.unwrap_or(0)),
    )?;
    let staged = tempfile::NamedTempFile::new_in(&state.staging_dir).map_err(ApiError::internal)?;
    let size = stage(state, body, staged.path()).await?;
    if size == 0 {
        return Err(ApiError::new(
            ErrorKind::InvalidDataset,
            "the request body is empty; send the dataset archive (.tar, .tar.gz or .zip) as the body",
        ));
    }

    // Decode and digest off the async threads; the archive is read where it was staged,
    // nothing is extracted. When the client goes away, this future is dropped and the guard
    // stops the decoding.
    let limits = state.config.limits;
    let path = staged.path().to_path_buf();
    let guard = CancelOnDrop::new(name);
    let cancel = guard.cancel.clone();
    let summary = tokio::task::spawn_blocking(move || -> Result<DatasetSummary, ApiError> {
        let refused = |e: DataError| {
            let message = e.to_string().replace(&path.display().to_string(), "upload");
            match e {
                DataError::NoSpace { .. } => ApiError::new(ErrorKind::InsufficientStorage, message),
                DataError::Cancelled { .. } => ApiError::bad_request(message),
                _ => ApiError::new(
                    ErrorKind::InvalidDataset,
                    format!("not a usable dataset: {message}"),
                ),
            }
        };
        let opened = Dataset::open_cancellable(&path, limits, cancel).map_err(refused)?;
        opened.summarize().map_err(refused)
    })
    .await
    .map_err(ApiError::internal)??;
    guard.defuse();

    let digest = summary.digest.to_string();
    if let Some(existing) = dataset::Entity::find_by_id(&digest).one(&state.db).await? {
        return Ok((info(state, existing).await?, false));
    }
    // Stored under a key of its own: a racing upload of the same content (maybe in another
    // container) writes elsewhere, and the row that commits names the archive that counts.
    let key = StorageKey::new_archive(summary.digest);
    state
        .store
        .put_file(&key, staged.path())
        .await
        .map_err(ApiError::store_write)?;
    let model = dataset::ActiveModel {
        digest: Set(digest.clone()),
        name: Set(name.to_string()),
        summary: Set(serde_json::to_string(&summary).map_err(anyhow::Error::from)?),
        archive_key: Set(key.path()),
        archive_bytes: Set(size as i64),
        created_at: Set(Utc::now()),
    };
    let inserted = model.insert(&state.db).await;
    if let Ok(inserted) = inserted {
        tracing::info!(%digest, name, bytes = size, "dataset stored");
        return Ok((info(state, inserted).await?, true));
    }
    // Not committed: this upload's archive is nobody's.
    if let Err(err) = state.store.delete(&key).await {
        tracing::warn!("cannot remove the archive of an upload that did not commit: {err:#}");
    }
    // Another upload of the same content committed first: that one stands.
    match dataset::Entity::find_by_id(&digest).one(&state.db).await? {
        Some(existing) => Ok((info(state, existing).await?, false)),
        None => Err(inserted.err().map_or_else(
            || ApiError::internal(anyhow::anyhow!("the dataset row was not stored")),
            ApiError::from,
        )),
    }
}

/// Cancels an upload's decoding when dropped before [`CancelOnDrop::defuse`]: axum drops a
/// handler's future when its client disconnects, and without this the blocking decode would
/// go on reading and digesting for nobody.
struct CancelOnDrop {
    cancel: Cancel,
    name: String,
    armed: bool,
}

impl CancelOnDrop {
    fn new(name: &str) -> Self {
        Self {
            cancel: Cancel::new(),
            name: name.to_string(),
            armed: true,
        }
    }

    /// The decoding finished: nothing to stop.
    fn defuse(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.cancel.cancel();
            tracing::info!(
                name = self.name,
                "upload abandoned by its client: decoding stopped"
            );
        }
    }
}

/// Writes the body to `to`, refusing more than the configured maximum, and stopping (507)
/// while the disk still has the free-space margin.
async fn stage(state: &SharedState, body: Body, to: &Path) -> ApiResult<u64> {
    let max = state.config.max_upload_bytes;
    // `ingest` checked the margin before staging began; this re-checks as the body comes.
    let margin = state.config.limits.min_free_bytes;
    let mut since_check = 0u64;
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    // A body that stops arriving would hold its connection and staging file for ever.
    let stall = state.config.request_timeout;
    loop {
        let next = tokio::time::timeout(stall, stream.try_next())
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the upload stalled: no data for {}s (--request-timeout)",
                        stall.as_secs()
                    ),
                )
            })?
            .map_err(|e| ApiError::bad_request(format!("the upload was interrupted: {e}")))?;
        let Some(chunk) = next else { break };
        size += chunk.len() as u64;
        if size > max {
            return Err(too_large(max));
        }
        since_check += chunk.len() as u64;
        if since_check >= 64 << 20 {
            ensure_free(to, margin)?;
            since_check = 0;
        }
        file.write_all(&chunk).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::StorageFull {
                ApiError::new(
                    ErrorKind::InsufficientStorage,
                    disk::full(Path::new("upload")).to_string(),
                )
            } else {
                ApiError::internal(e)
            }
        })?;
    }
    file.flush().await.map_err(ApiError::internal)?;
    Ok(size)
}

/// 507 when less than `margin` is free where uploads are staged.
pub(crate) fn ensure_free(path: &Path, margin: u64) -> ApiResult<()> {
    disk::ensure_free(path, margin).map_err(|e| {
        ApiError::new(
            ErrorKind::InsufficientStorage,
            e.to_string()
                .replace(&path.display().to_string(), "the registry's staging folder"),
        )
    })
}

fn too_large(max: u64) -> ApiError {
    ApiError::too_large(format!(
        "the upload is larger than this registry accepts ({})",
        bytesize::ByteSize(max)
    ))
}

/// The API view of a stored dataset.
pub async fn info(state: &SharedState, model: dataset::Model) -> ApiResult<DatasetInfo> {
    let commentaries = commentary::Entity::find()
        .filter(commentary::Column::DatasetDigest.eq(&model.digest))
        .count(&state.db)
        .await?;
    let summary: DatasetSummary =
        serde_json::from_str(&model.summary).map_err(anyhow::Error::from)?;
    Ok(DatasetInfo {
        digest: summary.digest,
        name: model.name,
        summary,
        archive_bytes: model.archive_bytes.max(0) as u64,
        commentaries,
        created_at: model.created_at,
    })
}

/// The stored dataset with this digest, or 404.
pub async fn find(state: &SharedState, digest: &Sha256) -> ApiResult<dataset::Model> {
    dataset::Entity::find_by_id(digest.to_string())
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dataset {digest} is stored here")))
}

/// Where the row's archive is stored.
pub fn archive_key(model: &dataset::Model) -> ApiResult<StorageKey> {
    let digest = parse_digest(&model.digest)?;
    StorageKey::stored_archive(digest, &model.archive_key).ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "dataset {} records an archive key of another form: {:?}",
            model.digest,
            model.archive_key
        ))
    })
}

/// Datasets, newest first, optionally those whose name contains `name`.
pub async fn list(
    state: &SharedState,
    name: Option<&str>,
    offset: u64,
    limit: u64,
) -> ApiResult<(Vec<DatasetInfo>, bool)> {
    let mut query = dataset::Entity::find().order_by_desc(dataset::Column::CreatedAt);
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        query = query.filter(dataset::Column::Name.contains(name));
    }
    let (models, more) = super::db::page(&state.db, query, offset, limit).await?;
    let mut items = Vec::new();
    for model in models {
        items.push(info(state, model).await?);
    }
    Ok((items, more))
}

/// Deletes a dataset; with `cascade` its commentaries and runs go too, else their existence
/// refuses the delete.
pub async fn delete(state: &SharedState, digest: &Sha256, cascade: bool) -> ApiResult<()> {
    let txn = state.db.begin().await?;
    // Written first, so the transaction holds the write lock (SQLite) and the row (PostgreSQL)
    // before it reads: what it reads below is what it deletes, with nothing added meanwhile.
    let claimed = dataset::Entity::update_many()
        .col_expr(
            dataset::Column::Name,
            Expr::col(dataset::Column::Name).into(),
        )
        .filter(dataset::Column::Digest.eq(digest.to_string()))
        .exec(&txn)
        .await?;
    let model = match dataset::Entity::find_by_id(digest.to_string())
        .one(&txn)
        .await?
    {
        Some(model) if claimed.rows_affected > 0 => model,
        _ => {
            return Err(ApiError::not_found(format!(
                "no dataset {digest} is stored here"
            )));
        }
    };
    let commentaries = commentary::Entity::find()
        .filter(commentary::Column::DatasetDigest.eq(digest.to_string()))
        .all(&txn)
        .await?;
    if !commentaries.is_empty() && !cascade {
        return Err(ApiError::conflict(format!(
            "dataset {digest} has {} commentaries; delete them first or pass ?cascade=true",
            commentaries.len()
        )));
    }
    let runs: Vec<String> = run::Entity::find()
        .filter(run::Column::DatasetDigest.eq(digest.to_string()))
        .all(&txn)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    run_event::Entity::delete_many()
        .filter(run_event::Column::RunId.is_in(runs.clone()))
        .exec(&txn)
        .await?;
    run::Entity::delete_many()
        .filter(run::Column::Id.is_in(runs))
        .exec(&txn)
        .await?;
    commentary::Entity::delete_many()
        .filter(commentary::Column::DatasetDigest.eq(digest.to_string()))
        .exec(&txn)
        .await?;
    dataset::Entity::delete_by_id(digest.to_string())
        .exec(&txn)
        .await?;
    txn.commit().await?;
    state
        .commentary_rows
        .forget(commentaries.iter().map(|c| c.id.as_str()));
    // Blobs go after the rows: a crash in between leaves invisible blobs, never dangling rows.
    for c in &commentaries {
        for file in ArtifactFile::ALL {
            state
                .store
                .delete(&StorageKey::commentary(&c.id, file))
                .await?;
        }
    }
    state.examples.forget(digest);
    state.store.delete(&archive_key(&model)?).await?;
    Ok(())
}

/// A decoded split kept for serving example images.
pub struct LoadedSplit {
    pub digest: Sha256,
    pub split: String,
    pub data: SplitData,
}

/// Decoded splits for example images, bounded by their pixel bytes (`--example-cache-bytes`).
/// Concurrent misses of one split decode it once (the others wait for it).
pub struct ExampleCache {
    cache: quick_cache::sync::Cache<String, Arc<LoadedSplit>, SplitWeight>,
    /// Bytes the cache may hold; a split larger than this is not drawn at all.
    pub capacity: u64,
}

#[derive(Clone)]
pub struct SplitWeight;

impl quick_cache::Weighter<String, Arc<LoadedSplit>> for SplitWeight {
    fn weight(&self, _key: &String, value: &Arc<LoadedSplit>) -> u64 {
        split_bytes(&value.data) + 1
    }
}

/// What a decoded split holds in memory.
fn split_bytes(data: &SplitData) -> u64 {
    (data.pixels.len() + data.labels.len() * std::mem::size_of::<u32>()) as u64
}

impl ExampleCache {
    /// A cache of at most `capacity` bytes of decoded pixels.
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: quick_cache::sync::Cache::with_weighter(64, capacity.max(1), SplitWeight),
            capacity,
        }
    }

    fn key(digest: &Sha256, split: &str) -> String {
        format!("{}/{split}", digest.hex())
    }

    fn forget(&self, digest: &Sha256) {
        let prefix = format!("{}/", digest.hex());
        self.cache.retain(|key, _| !key.starts_with(&prefix));
    }
}

/// The split of a stored dataset, decoded in canonical order (cached). A split whose pixels
/// would not fit the cache is refused before anything is decoded.
pub async fn load_split(
    state: &SharedState,
    digest: &Sha256,
    split: &str,
) -> ApiResult<Arc<LoadedSplit>> {
    // A hit needs no lookup: a delete evicts the dataset's splits (`forget`).
    let key = ExampleCache::key(digest, split);
    if let Some(hit) = state.examples.cache.get(&key) {
        return Ok(hit);
    }
    // The row decides whether the dataset is visible, and which archive is its.
    let model = find(state, digest).await?;
    let summary: DatasetSummary =
        serde_json::from_str(&model.summary).map_err(anyhow::Error::from)?;
    let Some(described) = summary.splits.iter().find(|s| s.name == split) else {
        return Err(ApiError::not_found(format!(
            "dataset {digest} has no split {split:?}"
        )));
    };
    let image = described.shape.pixel_bytes().unwrap_or(usize::MAX) as u64;
    let bytes = described.examples.saturating_mul(image);
    let capacity = state.examples.capacity;
    if bytes > capacity {
        return Err(ApiError::new(
            ErrorKind::Unsupported,
            format!(
                "split {split:?} holds {} of pixels, more than this registry decodes to draw \
                 examples ({}, --example-cache-bytes)",
                bytesize::ByteSize(bytes),
                bytesize::ByteSize(capacity)
            ),
        ));
    }
    state
        .examples
        .cache
        .get_or_insert_async(&key, decode_split(state, &model, split))
        .await
}

async fn decode_split(
    state: &SharedState,
    model: &dataset::Model,
    split: &str,
) -> ApiResult<Arc<LoadedSplit>> {
    let digest = parse_digest(&model.digest)?;
    let archive =
        tempfile::NamedTempFile::new_in(&state.staging_dir).map_err(ApiError::internal)?;
    state
        .store
        .download(&archive_key(model)?, archive.path())
        .await?;
    let limits = state.config.limits;
    let wanted = split.to_string();
    let data = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<SplitData>> {
        let dataset = Dataset::open(archive.path(), limits)?;
        if !dataset.split_names().contains(&wanted.as_str()) {
            return Ok(None);
        }
        Ok(Some(dataset.load_split(&wanted)?))
    })
    .await
    .map_err(ApiError::internal)??
    .ok_or_else(|| ApiError::not_found(format!("dataset {digest} has no split {split:?}")))?;
    Ok(Arc::new(LoadedSplit {
        digest,
        split: split.to_string(),
        data,
    }))
}
