//! Two replicas of `commentary serve` on one PostgreSQL and one S3 server, with a remote worker
//! on each (issue 15's systematic checks): they start together on a fresh database (the
//! migrations take turns under a lock), runs created through one replica finish exactly once,
//! and SSE from the other replica sees every event through the end.

mod common;

use std::time::Duration;

use common::{Backend, Registry, RemoteWorker, fast_run};
use schema::api::RunState;
use tests::MNIST_FIXTURE_DIGEST;

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_runs_events_and_leases() {
    let Some(backend) = Backend::postgres_s3().await else {
        return;
    };
    // Started at once on an empty database: both migrate it.
    let starting: Vec<_> = (0..2)
        .map(|_| {
            let backend = backend.clone();
            std::thread::spawn(move || Registry::start(&backend, &["--workers", "0"]))
        })
        .collect();
    let replicas: Vec<Registry> = starting
        .into_iter()
        .map(|t| t.join().expect("a replica started"))
        .collect();
    let (a, b) = (replicas[0].client(), replicas[1].client());
    a.upload_fixture().await;
    let _workers: Vec<RemoteWorker> = replicas.iter().map(RemoteWorker::start).collect();

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(a.create_run(fast_run(MNIST_FIXTURE_DIGEST, 1, &[])).await);
    }
    for id in &ids {
        // The whole event stream, from the other replica; it ends when the run has ended.
        let stream = tokio::time::timeout(
            Duration::from_secs(180),
            b.http.get(b.url(&format!("/v1/runs/{id}/events"))).send(),
        )
        .await
        .expect("the stream starts")
        .expect("GET events");
        let body = tokio::time::timeout(Duration::from_secs(180), stream.text())
            .await
            .expect("the stream ends with the run")
            .expect("the stream");
        let states: Vec<RunState> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str::<serde_json::Value>(data.trim()).ok())
            .filter(|event| event["type"] == "state")
            .filter_map(|event| serde_json::from_value(event["state"].clone()).ok())
            .collect();
        assert_eq!(
            states,
            [RunState::Queued, RunState::Running, RunState::Succeeded],
            "run {id} was leased once and finished once: {body}"
        );
        let run = a.run(id).await;
        assert_eq!(run.attempts, 1, "{run:?}");
        assert!(run.commentary_id.is_some());
    }
    let commentaries = b.get_json("/v1/commentaries?limit=50").await;
    let items = commentaries["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        items.len(),
        ids.len(),
        "one commentary per run: {commentaries:#}"
    );
}
