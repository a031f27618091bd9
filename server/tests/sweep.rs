//! Finding 2 of the hardening review (issue 15): kill -9 mid-upload left a partial
//! `datasets/<hex>/.../archive` that was never removed, and a killed run left its scratch copy
//! and checkpoints behind. The sweep removes what no committed row references once it is old
//! enough, and scratch folders whose worker is gone.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::app::TestApp;
use server::registry::sweep::{Swept, sweep};
use server::registry::worker::sweep_scratch;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dirs");
    std::fs::write(path, bytes).expect("write");
}

/// Makes `path` look written `ago`.
fn age(path: &Path, ago: Duration) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(SystemTime::now() - ago)
        .expect("set the modification time");
}

#[tokio::test]
async fn blobs_no_row_references_are_swept_once_old_enough() {
    let app = TestApp::new().await;
    app.upload_mnist().await;
    let blobs = app.state.config.data_dir.join("blobs");
    // What a kill -9 between storing and committing leaves: an archive and a commentary file.
    let orphan_archive = blobs.join(format!(
        "datasets/{}/{}/archive",
        "ab".repeat(32),
        uuid::Uuid::now_v7()
    ));
    let orphan_manifest = blobs.join(format!(
        "commentaries/{}/manifest.json",
        uuid::Uuid::now_v7()
    ));
    write(&orphan_archive, b"half an archive");
    write(&orphan_manifest, b"{}");
    let hour = Duration::from_secs(3600);

    // Fresh: maybe an upload still in progress on another replica.
    assert_eq!(
        sweep(&app.state, hour).await.expect("sweep"),
        Swept::default()
    );
    assert!(orphan_archive.exists() && orphan_manifest.exists());

    for path in [&orphan_archive, &orphan_manifest] {
        age(path, 2 * hour);
    }
    // The committed archive is as old, and stays.
    let kept = app
        .get(&format!(
            "/v1/datasets/{}/archive",
            tests::MNIST_FIXTURE_DIGEST
        ))
        .await;
    assert_eq!(kept.status.as_u16(), 200);
    let stored: Vec<_> = common::files_under(&blobs.join("datasets"))
        .into_iter()
        .filter(|p| *p != orphan_archive)
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    age(&stored[0], 2 * hour);

    assert_eq!(
        sweep(&app.state, hour).await.expect("sweep"),
        Swept { blobs: 2 }
    );
    assert!(!orphan_archive.exists() && !orphan_manifest.exists());
    assert!(stored[0].exists());
    let again = app
        .get(&format!(
            "/v1/datasets/{}/archive",
            tests::MNIST_FIXTURE_DIGEST
        ))
        .await;
    assert_eq!(again.status.as_u16(), 200);
    assert_eq!(again.raw, kept.raw);
}

#[test]
fn scratch_folders_of_dead_workers_are_swept_and_live_ones_kept() {
    let root = tempfile::TempDir::new().expect("tmp");
    let dead = root.path().join("run-dead");
    let live = root.path().join("run-live");
    let other = root.path().join("notes");
    for dir in [&dead, &live, &other] {
        write(&dir.join(".lock"), b"");
        write(&dir.join("dataset"), b"a downloaded copy");
    }
    // A live worker holds its folder's lock (a dead one's went with its process).
    let held = std::fs::File::open(live.join(".lock")).expect("open");
    held.lock().expect("lock");
    assert_eq!(sweep_scratch(root.path()), 1);
    assert!(!dead.exists());
    assert!(live.join("dataset").exists());
    assert!(
        other.exists(),
        "folders that are not a run's are left alone"
    );
    drop(held);
    assert_eq!(sweep_scratch(root.path()), 1);
    assert!(!live.exists());
}
