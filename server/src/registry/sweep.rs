//! The orphan sweep: removes what a crash left behind and nothing else. A blob no committed row
//! references (an upload killed between storing its archive and committing its row, a publish
//! killed before its row) is removed once it is older than the sweep age, so an upload still in
//! progress on another replica, whose row is not committed yet, is never touched. It runs at
//! start-up and periodically, on any store (local, S3, ...).

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use sea_orm::{EntityTrait as _, QuerySelect as _};

use super::app::SharedState;
use super::db::entities::{commentary, dataset};
use super::error::ApiResult;

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub blobs: usize,
}

/// Removes blobs under `datasets/` and `commentaries/` that no row references and that were
/// last written more than `age` ago.
pub async fn sweep(state: &SharedState, age: Duration) -> ApiResult<Swept> {
    let before = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let archives: HashSet<String> = dataset::Entity::find()
        .select_only()
        .column(dataset::Column::ArchiveKey)
        .into_tuple::<String>()
        .all(&state.db)
        .await?
        .into_iter()
        .collect();
    let commentaries: HashSet<String> = commentary::Entity::find()
        .select_only()
        .column(commentary::Column::Id)
        .into_tuple::<String>()
        .all(&state.db)
        .await?
        .into_iter()
        .collect();
    let mut swept = Swept::default();
    for path in state.store.list_written_before("datasets", before).await? {
        if !archives.contains(&path) {
            remove(state, &path).await?;
            swept.blobs += 1;
        }
    }
    for path in state
        .store
        .list_written_before("commentaries", before)
        .await?
    {
        let id = path.split('/').nth(1).unwrap_or_default();
        if !commentaries.contains(id) {
            remove(state, &path).await?;
            swept.blobs += 1;
        }
    }
    Ok(swept)
}

async fn remove(state: &SharedState, path: &str) -> ApiResult<()> {
    tracing::info!(
        blob = path,
        "removing a blob no row references (left by a crash)"
    );
    state.store.delete_path(path).await?;
    Ok(())
}

/// Sweeps at start-up, then every `period`, until shutdown.
pub async fn sweep_forever(state: SharedState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let age = state.config.sweep_age;
    let period = (age / 2).clamp(Duration::from_secs(10), Duration::from_secs(3600));
    loop {
        match sweep(&state, age).await {
            Ok(swept) if swept.blobs > 0 => {
                tracing::info!(blobs = swept.blobs, "orphan sweep done");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("the orphan sweep failed: {}", err.message),
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
