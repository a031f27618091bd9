//! kill -9 at the moments a crash hurts most (issue 15's fault tests): of the server mid-upload,
//! mid-publish and mid-run, and of a worker mid-upload. After a restart on the same data,
//! everything acknowledged is there, nothing half-written is visible, nothing orphaned
//! remains, and runs finish exactly once.
//!
//! The server is a real `commentary serve` process killed with SIGKILL. A worker killed while
//! it uploads is, as the server sees it, a connection that closes mid-body; the test plays that
//! worker through the worker protocol and drops its connection.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    Backend, Client, Registry, RemoteWorker, bytes_under, fast_run, files_under, worker_processes,
};
use futures::SinkExt as _;
use futures::channel::mpsc;
use schema::api::{Lease, RunState};
use tempfile::TempDir;
use tests::MNIST_FIXTURE_DIGEST;

/// A body whose chunks the test sends when it likes (and can stop sending).
type Chunks = mpsc::Sender<Result<Bytes, std::io::Error>>;

fn streamed_body() -> (Chunks, reqwest::Body) {
    let (tx, rx) = mpsc::channel(4);
    (tx, reqwest::Body::wrap_stream(rx))
}

/// Waits until `ready` holds, or panics after `limit` naming `what`.
async fn wait_until(what: &str, limit: Duration, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The blob files under the registry's local store, relative to it, sorted.
fn blobs(data_dir: &Path) -> Vec<String> {
    let root = data_dir.join("blobs");
    let mut names: Vec<String> = files_under(&root)
        .iter()
        .map(|f| {
            f.strip_prefix(&root)
                .expect("under the store")
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

/// The fixture as a plain tar: the same content as the fixture's tar.gz, another container.
fn fixture_tar(dir: &Path) -> Vec<u8> {
    let path = dir.join("mnist.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
    builder
        .append_dir_all(".", tests::mnist_fixture())
        .expect("tar");
    builder.finish().expect("finish");
    std::fs::read(&path).expect("read")
}

/// Leases the oldest queued run as a worker named `worker` would.
async fn lease(client: &Client, worker: &str) -> Lease {
    let response = client
        .http
        .post(client.url("/v1/runs/lease"))
        .json(&serde_json::json!({ "worker": worker }))
        .send()
        .await
        .expect("lease");
    assert_eq!(response.status(), 200, "a queued run to lease");
    response.json().await.expect("a Lease")
}

/// Starts `POST /v1/runs/{id}/complete` under `lease` whose tensors field never finishes: the
/// manifest and the first part of the tensors are sent, then nothing. Returns once that part
/// is in `staging` (the form streams there as it arrives; it is not buffered in memory), with
/// the sender (drop it to end the body) and the request in flight.
async fn stalled_publish(
    client: &Client,
    lease: &Lease,
    staging: &Path,
) -> (
    Chunks,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (mut tensors, body) = streamed_body();
    let form = reqwest::multipart::Form::new()
        .text("lease", lease.lease.clone())
        .part(
            "manifest",
            reqwest::multipart::Part::bytes(b"{}".to_vec()).file_name("manifest.json"),
        )
        .part(
            "tensors",
            reqwest::multipart::Part::stream(body).file_name("tensors.safetensors"),
        );
    let request = client
        .http
        .post(client.url(&format!("/v1/runs/{}/complete", lease.run.id)))
        .multipart(form);
    let pending = tokio::spawn(request.send());
    let part = 256 << 10;
    tensors
        .send(Ok(Bytes::from(vec![7u8; part])))
        .await
        .expect("send the first part");
    wait_until("the form to be staged", Duration::from_secs(20), || {
        bytes_under(staging) >= part as u64
    })
    .await;
    (tensors, pending)
}

/// Waits (within `limit`) for run `id`, whose first attempt died, to end, and asserts it was
/// learned again and published once: it succeeded on its second attempt with no error left,
/// exactly one commentary is visible, the run's, and the store holds the dataset's archive
/// and that commentary's files only.
async fn learned_again_and_published_once(
    client: &Client,
    data_dir: &Path,
    id: &str,
    limit: Duration,
) {
    let done = client
        .wait_for(&format!("/v1/runs/{id}"), limit, |r| {
            ["succeeded", "failed", "cancelled"].contains(&r["state"].as_str().unwrap_or(""))
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert!(done["error"].is_null(), "{done:#}");
    let run = client.run(id).await;
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    let listed = client.get_json("/v1/commentaries").await;
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{listed:#}");
    assert_eq!(items[0]["run_id"], id);
    let commentary = items[0]["id"].as_str().expect("id");
    let stored = blobs(data_dir);
    let (archives, others): (Vec<_>, Vec<_>) =
        stored.iter().partition(|b| b.starts_with("datasets/"));
    assert_eq!(archives.len(), 1, "{stored:?}");
    assert!(
        others
            .iter()
            .all(|b| b.starts_with(&format!("commentaries/{commentary}/"))),
        "blobs of no row: {stored:?}"
    );
}

/// The server is killed while a dataset's body is arriving. After the restart the dataset
/// acknowledged before is there, byte for byte; the interrupted one is not, nothing of it is
/// left in staging or the store, and sending it again works.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_upload_keeps_what_it_acknowledged_and_nothing_else() {
    let tmp = TempDir::new().expect("tmp");
    let data_dir = tmp.path().join("data");
    let backend = Backend::sqlite_local();
    let registry = Registry::start_in(&backend, data_dir.clone(), &["--workers", "0"]);
    let client = registry.client();
    client.upload_fixture().await;
    let acknowledged = client.get_json("/v1/datasets").await;
    let archive_path = format!("/v1/datasets/{MNIST_FIXTURE_DIGEST}/archive");
    let archive = client.get_bytes(&archive_path).await;

    let tar = fixture_tar(tmp.path());
    let (mut chunks, body) = streamed_body();
    let pending = tokio::spawn(
        client
            .http
            .post(client.url("/v1/datasets?name=interrupted"))
            .header("content-length", tar.len())
            .body(body)
            .send(),
    );
    let half = tar.len() / 2;
    chunks
        .send(Ok(Bytes::copy_from_slice(&tar[..half])))
        .await
        .expect("send half");
    let staging = data_dir.join("staging");
    wait_until("the upload to be staged", Duration::from_secs(20), || {
        bytes_under(&staging) >= half as u64
    })
    .await;
    drop(registry); // SIGKILL
    let answer = pending.await.expect("join");
    assert!(
        answer.is_err(),
        "the interrupted upload got an answer: {answer:?}"
    );

    let registry = Registry::start_in(&backend, data_dir.clone(), &["--workers", "0"]);
    let client = registry.client();
    assert_eq!(
        client.get_json("/v1/datasets").await["items"],
        acknowledged["items"]
    );
    let again = client.get_bytes(&archive_path).await;
    assert_eq!(again, archive, "the acknowledged archive, byte for byte");
    assert_eq!(bytes_under(&staging), 0, "{:?}", files_under(&staging));
    assert_eq!(blobs(&data_dir).len(), 1, "{:?}", blobs(&data_dir));

    // Sent again whole, the interrupted upload is stored content: 200, still one archive.
    let response = client
        .http
        .post(client.url("/v1/datasets?name=interrupted"))
        .body(tar)
        .send()
        .await
        .expect("upload again");
    assert_eq!(response.status(), 200);
    assert_eq!(blobs(&data_dir).len(), 1, "{:?}", blobs(&data_dir));
}

/// A worker dies while it uploads its artifact: the half-sent form is dropped (its staging
/// folder removed, nothing published), the lease expires, and another worker learns and
/// publishes the run exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_upload_publishes_nothing_and_the_run_is_learned_again() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--lease-ttl", "2s"],
    );
    let client = registry.client();
    client.upload_fixture().await;
    let id = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 1, &[]))
        .await;
    let lease = lease(&client, "doomed-worker").await;
    assert_eq!(lease.run.id, id);

    let staging = registry.data_dir.join("staging");
    let (tensors, pending) = stalled_publish(&client, &lease, &staging).await;
    pending.abort(); // the worker's connection closes mid-body
    drop(tensors);
    wait_until(
        "the half-sent form to leave staging",
        Duration::from_secs(10),
        || bytes_under(&staging) == 0,
    )
    .await;
    let listed = client.get_json("/v1/commentaries").await;
    assert_eq!(listed["items"], serde_json::json!([]));

    let _worker = RemoteWorker::start(&registry);
    learned_again_and_published_once(&client, &registry.data_dir, &id, Duration::from_secs(120))
        .await;
}

/// The server is killed while a worker's artifact is arriving. After the restart the run
/// (acknowledged 202) is still there, nothing of the half-sent artifact is visible or stored,
/// and the run is learned again and published exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_publish_publishes_nothing_and_the_run_finishes() {
    let tmp = TempDir::new().expect("tmp");
    let data_dir = tmp.path().join("data");
    let backend = Backend::sqlite_local();
    let args = ["--workers", "0", "--lease-ttl", "2s"];
    let registry = Registry::start_in(&backend, data_dir.clone(), &args);
    let client = registry.client();
    client.upload_fixture().await;
    let id = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 1, &[]))
        .await;
    let lease = lease(&client, "worker-of-a-dead-server").await;
    let staging = data_dir.join("staging");
    let (_tensors, pending) = stalled_publish(&client, &lease, &staging).await;
    drop(registry); // SIGKILL
    assert!(pending.await.expect("join").is_err());

    let registry = Registry::start_in(&backend, data_dir.clone(), &args);
    let client = registry.client();
    let run = client.run(&id).await;
    assert_eq!(run.attempts, 1, "{run:?}");
    assert!(run.commentary_id.is_none(), "{run:?}");
    assert_eq!(bytes_under(&staging), 0, "{:?}", files_under(&staging));
    let _worker = RemoteWorker::start(&registry);
    learned_again_and_published_once(&client, &data_dir, &id, Duration::from_secs(120)).await;
}

/// The server is killed while its in-process worker is learning a run. Its worker process
/// goes with it; after the restart the run is re-queued when its lease expires, learned again
/// and published exactly once, and the dead worker's scratch folder is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_run_finishes_the_run_after_restart() {
    let tmp = TempDir::new().expect("tmp");
    let data_dir = tmp.path().join("data");
    let backend = Backend::sqlite_local();
    let args = ["--workers", "1", "--lease-ttl", "2s"];
    let registry = Registry::start_in(&backend, data_dir.clone(), &args);
    let client = registry.client();
    client.upload_fixture().await;
    let id = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 100, &[]))
        .await;
    client
        .wait_for(&format!("/v1/runs/{id}"), Duration::from_secs(60), |r| {
            r["state"] == "running" && r["progress"]["step"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    let old_url = registry.url.clone();
    drop(registry); // SIGKILL
    wait_until(
        "the killed server's worker to exit",
        Duration::from_secs(15),
        || worker_processes(&old_url).is_empty(),
    )
    .await;
    let scratch = data_dir.join("work");
    assert!(
        !run_folders(&scratch).is_empty(),
        "the killed worker's scratch folder is left until a worker sweeps it"
    );

    let registry = Registry::start_in(&backend, data_dir.clone(), &args);
    let client = registry.client();
    learned_again_and_published_once(&client, &data_dir, &id, Duration::from_secs(180)).await;
    wait_until("the scratch folders to go", Duration::from_secs(10), || {
        run_folders(&scratch).is_empty()
    })
    .await;
}

/// The `run-*` scratch folders under `root`.
fn run_folders(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("run-"))
                })
                .collect()
        })
        .unwrap_or_default()
}
