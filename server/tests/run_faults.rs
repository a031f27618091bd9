//! Runs that meet faults, through a real registry and real workers: each test is a finding of
//! the hardening review (issue 15) where a run hung, lingered or read wrong afterwards.

mod common;

use std::time::Duration;

use common::{Backend, Registry, RemoteWorker, fast_run, long_ift_run};
use schema::api::RunState;
use tests::MNIST_FIXTURE_DIGEST;

/// The one stored dataset archive's file in the registry's local store.
fn stored_archive(registry: &Registry) -> std::path::PathBuf {
    let hex = MNIST_FIXTURE_DIGEST.trim_start_matches("sha256:");
    let dir = registry.data_dir.join("blobs/datasets").join(hex);
    let uploads: Vec<_> = std::fs::read_dir(&dir)
        .expect("the dataset's folder")
        .flatten()
        .map(|e| e.path().join("archive"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    uploads[0].clone()
}

/// Finding 4: when the dataset download failed, the worker kept its progress channel open, so
/// it waited forever while its heartbeats kept the run "running". The run must fail with the
/// reason, and the worker must take the next run.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_dataset_download_fails_the_run_and_frees_the_worker() {
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "0"]);
    let client = registry.client();
    client.upload_fixture().await;
    let first = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 1, &[]))
        .await;
    // The stored archive goes missing (a lost blob): downloads of it fail.
    let blob = stored_archive(&registry);
    let stored = std::fs::read(&blob).expect("the stored archive");
    std::fs::remove_file(&blob).expect("remove the archive");

    let _worker = RemoteWorker::start(&registry);
    let failed = client
        .wait_for(&format!("/v1/runs/{first}"), Duration::from_secs(60), |r| {
            r["state"] == "failed"
        })
        .await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot download the dataset"), "{failed:#}");

    // The worker is free again: with the archive back, it learns the next run.
    std::fs::write(&blob, stored).expect("restore the archive");
    let second = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 1, &[]))
        .await;
    let done = client
        .wait_for(
            &format!("/v1/runs/{second}"),
            Duration::from_secs(120),
            |r| r["state"] == "succeeded" || r["state"] == "failed",
        )
        .await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(client.run(&second).await.state, RunState::Succeeded);
}

/// Finding 9: a cancelled IFT run kept its worker busy until its block of inner steps ended
/// (stop was read between meta-steps only, and `apply` ignored it), so the next run stayed
/// queued. A cancel now frees the worker within 10 s, while learning and while evaluating.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_frees_the_worker_within_ten_seconds() {
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "0"]);
    let client = registry.client();
    client.upload_fixture().await;
    let _worker = RemoteWorker::start(&registry);

    // Learning: one block of many online IFT steps (minutes without a stop).
    let learning = long_ift_run(MNIST_FIXTURE_DIGEST);
    // Evaluating: quick learning, then students of many steps.
    let mut evaluating = fast_run(MNIST_FIXTURE_DIGEST, 1, &[1]);
    evaluating.evaluation.steps = 1_000_000;
    evaluating.evaluation.eval_every = 1_000_000;

    for (request, busy) in [(learning, "learning"), (evaluating, "evaluating")] {
        let id = client.create_run(request).await;
        client
            .wait_for(&format!("/v1/runs/{id}"), Duration::from_secs(60), |r| {
                r["state"] == "running"
                    && (busy == "learning" || r["progress"]["phase"] == "evaluating")
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.cancel(&id).await;
        let at = std::time::Instant::now();
        let next = client
            .create_run(fast_run(MNIST_FIXTURE_DIGEST, 1, &[]))
            .await;
        client
            .wait_for(&format!("/v1/runs/{next}"), Duration::from_secs(10), |r| {
                r["state"] != "queued"
            })
            .await;
        eprintln!(
            "cancelled while {busy}: the next run started after {:?}",
            at.elapsed()
        );
        let done = client
            .wait_for(&format!("/v1/runs/{next}"), Duration::from_secs(120), |r| {
                r["state"] == "succeeded" || r["state"] == "failed"
            })
            .await;
        assert_eq!(done["state"], "succeeded", "{done:#}");
        assert_eq!(client.run(&id).await.state, RunState::Cancelled);
    }
}

/// Finding 12: a run whose training diverged (validation loss 3e9) published a commentary with
/// a positive "improvement". By the divergence rule it fails with the reason, and nothing is
/// published.
#[tokio::test(flavor = "multi_thread")]
async fn a_diverged_run_fails_instead_of_publishing() {
    let registry = Registry::start(&Backend::sqlite_local(), &[]);
    let client = registry.client();
    client.upload_fixture().await;
    let mut request = fast_run(MNIST_FIXTURE_DIGEST, 2, &[1]);
    // The largest rates the bounds accept: every step overshoots by far.
    request.config.inner_lr = 10.0;
    request.evaluation.lr = 10.0;
    let id = client.create_run(request).await;
    let done = client
        .wait_for(&format!("/v1/runs/{id}"), Duration::from_secs(120), |r| {
            r["state"] == "succeeded" || r["state"] == "failed"
        })
        .await;
    assert_eq!(done["state"], "failed", "{done:#}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(error.contains("training diverged"), "{error}");
    assert!(error.contains("--divergence-factor 10"), "{error}");
    let listed = client.get_json("/v1/commentaries").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed:#}"
    );

    // The same run with sane rates publishes.
    let id = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 2, &[1]))
        .await;
    let done = client
        .wait_for(&format!("/v1/runs/{id}"), Duration::from_secs(120), |r| {
            r["state"] == "succeeded" || r["state"] == "failed"
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
}

/// Finding 8: one request's run aborted `serve` (the in-process worker's allocation failed and
/// took the process with it, again after every restart). Workers run as child processes: one
/// killed mid-run (as an abort would) leaves the registry serving, is started again, and its
/// run is re-queued and taken again.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_dies_mid_run_leaves_the_registry_up() {
    let registry = Registry::start(&Backend::sqlite_local(), &["--lease-ttl", "3s"]);
    let client = registry.client();
    client.upload_fixture().await;
    let id = client.create_run(long_ift_run(MNIST_FIXTURE_DIGEST)).await;
    client
        .wait_for(&format!("/v1/runs/{id}"), Duration::from_secs(60), |r| {
            r["state"] == "running"
        })
        .await;
    let killed = kill_worker_processes(&registry.url);
    assert_eq!(killed, 1, "one worker process serves this registry");
    assert_eq!(client.get_json("/healthz").await["status"], "ok");
    // The lease expires, the run is re-queued, and the restarted worker takes it.
    let again = client
        .wait_for(&format!("/v1/runs/{id}"), Duration::from_secs(60), |r| {
            r["state"] == "running" && r["attempts"] == 2
        })
        .await;
    assert_eq!(again["worker"], "in-process-0");
    client.cancel(&id).await;
}

/// Kills (SIGKILL) the `commentary worker` processes serving `url`; returns how many.
fn kill_worker_processes(url: &str) -> usize {
    let mut killed = 0;
    for pid in common::worker_processes(url) {
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        killed += usize::from(status.success());
    }
    killed
}
