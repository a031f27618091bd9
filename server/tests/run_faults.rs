//! Runs that meet faults, through a real registry and real workers: each test is a finding of
//! the hardening review (issue 15) where a run hung, lingered or read wrong afterwards.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Backend, Registry, commentary, fast_run};
use schema::api::RunState;
use tests::MNIST_FIXTURE_DIGEST;

/// A remote worker on `registry`, killed when the test ends.
struct Worker(Child);

impl Worker {
    fn start(registry: &Registry) -> Self {
        let child = commentary()
            .args(["-v", "worker", "--server", &registry.url, "--poll", "200ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker");
        Self(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let hex = MNIST_FIXTURE_DIGEST.trim_start_matches("sha256:");
    let blob = registry
        .data_dir
        .join("blobs/datasets")
        .join(hex)
        .join("archive");
    let stored = std::fs::read(&blob).expect("the stored archive");
    std::fs::remove_file(&blob).expect("remove the archive");

    let _worker = Worker::start(&registry);
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
