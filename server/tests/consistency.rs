//! Findings 3 and 6 of the hardening review (issue 15): state changes that were two statements
//! outside a transaction, a reaper that did not re-check expiry, rows that could point at a
//! deleted dataset, and one digest that could map to two stored archives; and the fault test
//! of a blob store that fails writes.
//!
//! The registry runs in-process on SQLite; a trigger makes the database refuse a statement,
//! which is how a crash or an outage between two statements shows.

mod common;

use std::time::Duration;

use common::app::TestApp;
use schema::api::{EventBody, RunState};
use sea_orm::ConnectionTrait as _;
use server::registry::runs;

/// The database refuses every new run event from now on. Retried briefly: right after a
/// failed transaction, another pooled SQLite connection can still see the previous schema (the
/// trigger dropped a moment ago) for some milliseconds.
async fn refuse_events(app: &TestApp) {
    let started = std::time::Instant::now();
    loop {
        let created = app
            .state
            .db
            .execute_unprepared(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON run_events \
                 BEGIN SELECT RAISE(ABORT, 'run events refused'); END",
            )
            .await;
        match created {
            Ok(_) => return,
            Err(err) if started.elapsed() < Duration::from_secs(5) => {
                expect_already_exists(&err);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("create the trigger: {err}"),
        }
    }
}

fn expect_already_exists(err: &sea_orm::DbErr) {
    assert!(
        err.to_string().contains("already exists"),
        "create the trigger: {err}"
    );
}

async fn accept_events(app: &TestApp) {
    app.state
        .db
        .execute_unprepared("DROP TRIGGER refuse_events")
        .await
        .expect("drop the trigger");
}

/// A run on the fixture, queued.
async fn queued_run(app: &TestApp) -> String {
    let created = app
        .post_json(
            "/v1/runs",
            &format!(
                r#"{{"dataset": "{}", "kind": "label-blending"}}"#,
                tests::MNIST_FIXTURE_DIGEST
            ),
        )
        .await;
    assert_eq!(created.status.as_u16(), 202, "{}", created.text);
    created.body["id"].as_str().expect("run id").to_string()
}

async fn state_of(app: &TestApp, id: &str) -> RunState {
    runs::find(&app.state, id)
        .await
        .expect("the run")
        .state
        .parse()
        .expect("a state")
}

/// The states the run's events announce, oldest first.
async fn announced(app: &TestApp, id: &str) -> Vec<RunState> {
    runs::events_after(&app.state, id, 0, 1000)
        .await
        .expect("events")
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::State { state, .. } => Some(state),
            _ => None,
        })
        .collect()
}

/// Finding 3: cancel, fail and the reaper changed the state and then inserted its event as two
/// statements; when the second failed, the state had changed with no event (an SSE follower
/// waits forever for it). Each change and its event now commit together or not at all.
#[tokio::test]
async fn a_state_change_and_its_event_commit_together() {
    let app = TestApp::configured(|config| config.lease_ttl = Duration::from_millis(50))
        .await
        .serve();
    app.upload_mnist().await;

    // Cancel.
    let cancelled = queued_run(&app).await;
    refuse_events(&app).await;
    assert!(runs::cancel(&app.state, &cancelled).await.is_err());
    accept_events(&app).await;
    assert_eq!(state_of(&app, &cancelled).await, RunState::Queued);
    runs::cancel(&app.state, &cancelled).await.expect("cancel");
    assert_eq!(
        announced(&app, &cancelled).await,
        [RunState::Queued, RunState::Cancelled]
    );

    // Fail.
    let failed = queued_run(&app).await;
    let lease = runs::lease(&app.state, "w1")
        .await
        .expect("lease")
        .expect("a queued run");
    assert_eq!(lease.run.id, failed);
    refuse_events(&app).await;
    assert!(
        runs::fail(&app.state, &failed, &lease.lease, "boom")
            .await
            .is_err()
    );
    accept_events(&app).await;
    assert_eq!(state_of(&app, &failed).await, RunState::Running);

    // The reaper (the lease has expired by now).
    tokio::time::sleep(Duration::from_millis(100)).await;
    refuse_events(&app).await;
    assert!(runs::reap(&app.state).await.is_err());
    accept_events(&app).await;
    assert_eq!(state_of(&app, &failed).await, RunState::Running);
    runs::reap(&app.state).await.expect("reap");
    assert_eq!(state_of(&app, &failed).await, RunState::Queued);
    assert_eq!(
        announced(&app, &failed).await,
        [RunState::Queued, RunState::Running, RunState::Queued]
    );
}

/// Finding 3: the reaper read the expired runs, then re-queued each filtering on the lease
/// only, so a heartbeat landing between the read and the update still lost its run. The update
/// re-checks expiry.
#[tokio::test]
async fn the_reaper_spares_a_lease_renewed_after_it_looked() {
    let app = TestApp::configured(|config| config.lease_ttl = Duration::from_millis(300))
        .await
        .serve();
    app.upload_mnist().await;
    let id = queued_run(&app).await;
    let lease = runs::lease(&app.state, "w1")
        .await
        .expect("lease")
        .expect("a queued run");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = runs::expired_leases(&app.state).await.expect("expired");
    assert_eq!(expired.len(), 1, "the lease has expired");
    // The worker's heartbeat lands after the reaper looked.
    assert_eq!(
        runs::heartbeat(&app.state, &id, &lease.lease)
            .await
            .expect("heartbeat"),
        RunState::Running
    );
    let moved = runs::requeue_expired(&app.state, &expired[0])
        .await
        .expect("requeue");
    assert!(!moved, "a renewed lease is not reaped");
    assert_eq!(state_of(&app, &id).await, RunState::Running);
}

/// The fixture as a tar.gz and as a zip: one digest, two different archives.
fn two_containers(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let tar = dir.join("mnist.tar.gz");
    let zip = dir.join("mnist.zip");
    tests::tar_gz_dir(&tests::mnist_fixture(), &tar, None);
    tests::zip_dir(&tests::mnist_fixture(), &zip);
    let (tar, zip) = (
        std::fs::read(&tar).expect("tar"),
        std::fs::read(&zip).expect("zip"),
    );
    assert_ne!(tar, zip);
    (tar, zip)
}

async fn upload(app: &TestApp, bytes: &[u8]) -> u16 {
    app.send(
        axum::http::Request::post("/v1/datasets?name=mnist")
            .body(axum::body::Body::from(bytes.to_vec()))
            .expect("request"),
    )
    .await
    .status
    .as_u16()
}

/// The stored archive as served, asserting it agrees with the row: its length is the row's
/// `archive_bytes`, and it is one of the uploads.
async fn served_archive(app: &TestApp, uploads: &[&[u8]]) -> Vec<u8> {
    let path = format!("/v1/datasets/{}", tests::MNIST_FIXTURE_DIGEST);
    let row = app.get(&path).await;
    let answer = app.get(&format!("{path}/archive")).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text);
    let bytes = answer.raw;
    assert_eq!(
        row.body["archive_bytes"].as_u64(),
        Some(bytes.len() as u64),
        "the row describes the bytes served"
    );
    assert!(
        uploads.contains(&bytes.as_slice()),
        "the served bytes are one upload, whole"
    );
    // A range is a slice of the same bytes.
    let tail = app
        .send(
            axum::http::Request::get(format!("{path}/archive"))
                .header("range", "bytes=-100")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(tail.status.as_u16(), 206);
    assert_eq!(tail.raw, bytes[bytes.len() - 100..]);
    bytes
}

/// Finding 6: after a delete and a re-upload of the same content in another container, the
/// memory cache served the deleted bytes under the new row's length (the cache key was the
/// digest). Each upload is stored under its own key, which caches and ETags include.
#[tokio::test]
async fn a_re_upload_after_delete_serves_the_new_archive() {
    let app = TestApp::new().await;
    let dir = tempfile::TempDir::new().expect("tmp");
    let (tar, zip) = two_containers(dir.path());
    assert_eq!(upload(&app, &tar).await, 201);
    let first = served_archive(&app, &[&tar]).await;
    assert_eq!(first, tar);
    let etag = app
        .get(&format!(
            "/v1/datasets/{}/archive",
            tests::MNIST_FIXTURE_DIGEST
        ))
        .await
        .headers["etag"]
        .clone();
    let deleted = app
        .send(
            axum::http::Request::delete(format!("/v1/datasets/{}", tests::MNIST_FIXTURE_DIGEST))
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(deleted.status.as_u16(), 204, "{}", deleted.text);
    assert_eq!(upload(&app, &zip).await, 201);
    assert_eq!(served_archive(&app, &[&zip]).await, zip);
    let again = app
        .get(&format!(
            "/v1/datasets/{}/archive",
            tests::MNIST_FIXTURE_DIGEST
        ))
        .await;
    assert_ne!(
        again.headers["etag"], etag,
        "other bytes, another strong ETag"
    );
}

/// Finding 6: racing uploads of a tar and a zip of one content left a row describing one
/// archive over the bytes of the other. Whichever commits first stands, whole.
#[tokio::test(flavor = "multi_thread")]
async fn racing_uploads_of_one_content_keep_one_archive_whole() {
    let dir = tempfile::TempDir::new().expect("tmp");
    let (tar, zip) = two_containers(dir.path());
    for _ in 0..4 {
        let app = TestApp::new().await;
        let (a, b) = tokio::join!(upload(&app, &tar), upload(&app, &zip));
        let mut statuses = [a, b];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 201], "one stored, one found stored");
        served_archive(&app, &[&tar, &zip]).await;
        // Nothing but the one archive is left in the store.
        let blobs = common::files_under(&app.state.config.data_dir.join("blobs/datasets"));
        assert_eq!(blobs.len(), 1, "{blobs:?}");
    }
}

/// A blob store that fails writes (here a file sits where the store's `datasets` folder goes,
/// which even root cannot write under) answers 503 `not_ready`, not 500, and stores no row;
/// once the store takes writes again, the same upload is stored without a restart.
#[tokio::test]
async fn a_store_that_fails_writes_answers_503_and_stores_nothing() {
    let app = TestApp::new().await;
    let blobs = app.state.config.data_dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("blobs");
    let datasets = blobs.join("datasets");
    let _ = std::fs::remove_dir_all(&datasets);
    std::fs::write(&datasets, b"not a folder").expect("sabotage the store");

    let refused = app.post_mnist().await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.error_code(), "not_ready");
    assert!(
        refused.text.contains("nothing was stored"),
        "{}",
        refused.text
    );
    assert_eq!(
        app.get("/v1/datasets").await.body["items"],
        serde_json::json!([])
    );
    assert_eq!(app.get("/healthz").await.status, 200);

    std::fs::remove_file(&datasets).expect("mend the store");
    app.upload_mnist().await;
    assert_eq!(
        app.get("/v1/datasets").await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}
