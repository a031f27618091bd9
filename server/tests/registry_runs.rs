//! Runs and access control through a real registry: a worker killed mid-run leaves its run to
//! be re-queued and finished by another worker; cancelling; tokens and anonymous writes; size
//! and rate limits answering 413/429 with nothing stored.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Backend, Registry, commentary, fast_run, fixture_archive};
use schema::api::{Evaluation, RunState};
use schema::{Algorithm, LearnConfig};
use tests::MNIST_FIXTURE_DIGEST;

fn start_worker(registry: &Registry, name: &str) -> Child {
    commentary()
        .args([
            "-v",
            "worker",
            "--server",
            &registry.url,
            "--name",
            name,
            "--poll",
            "200ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a worker")
}

async fn upload_fixture(registry: &Registry, token: Option<&str>) -> reqwest::Response {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let archive = std::fs::read(fixture_archive(tmp.path())).expect("archive");
    upload_bytes(registry, token, archive).await
}

/// `POST /v1/datasets` with `body`. Refusals that come before the body is read are tested
/// with a small one: the server answers and closes without reading a large body, and a client
/// still writing it may see the connection reset before it reads the answer.
async fn upload_bytes(
    registry: &Registry,
    token: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let client = registry.client();
    let mut request = client
        .http
        .post(client.url("/v1/datasets?name=mnist"))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("upload")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_run_is_requeued_and_finished_by_another() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--lease-ttl", "2s"],
    );
    let client = registry.client();
    assert_eq!(upload_fixture(&registry, None).await.status(), 201);
    let id = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 40, &[]))
        .await;
    let path = format!("/v1/runs/{id}");

    let mut first = start_worker(&registry, "first");
    client
        .wait_for(&path, Duration::from_secs(120), |r| {
            !r["progress"].is_null()
        })
        .await;
    first.kill().expect("kill the first worker");
    let _ = first.wait();
    let requeued = client
        .wait_for(&path, Duration::from_secs(30), |r| r["state"] == "queued")
        .await;
    assert!(
        requeued["error"]
            .as_str()
            .unwrap_or_default()
            .contains("lease expired"),
        "{requeued:#}"
    );

    let mut second = start_worker(&registry, "second");
    let done = client
        .wait_for(&path, Duration::from_secs(300), |r| {
            r["state"] != "queued" && r["state"] != "running"
        })
        .await;
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["worker"], "second");
    assert!(done["commentary_id"].is_string());
    // Issue 15, finding 5: the final state reads as final, not as the first attempt's error
    // and a half-done progress.
    assert!(done["error"].is_null(), "{done:#}");
    assert_eq!(done["progress"]["phase"], "done", "{done:#}");
    assert_eq!(
        done["progress"]["step"], done["progress"]["total"],
        "{done:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_expired_lease_fails_the_run_with_its_error() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--lease-ttl", "1s", "--max-attempts", "1"],
    );
    let client = registry.client();
    assert_eq!(upload_fixture(&registry, None).await.status(), 201);
    let id = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 3, &[]))
        .await;
    // Lease by hand and never send a heartbeat.
    let lease: serde_json::Value = client
        .http
        .post(client.url("/v1/runs/lease"))
        .json(&serde_json::json!({"worker": "silent"}))
        .send()
        .await
        .expect("lease")
        .json()
        .await
        .expect("JSON");
    assert_eq!(lease["run"]["id"], id.as_str());
    let failed = client
        .wait_for(&format!("/v1/runs/{id}"), Duration::from_secs(30), |r| {
            r["state"] == "failed"
        })
        .await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("silent stopped sending heartbeats")
    );
    // The stale lease can no longer report anything.
    let late = client
        .http
        .post(client.url(&format!("/v1/runs/{id}/heartbeat")))
        .json(&serde_json::json!({"lease": lease["lease"]}))
        .send()
        .await
        .expect("late heartbeat");
    assert_eq!(late.status(), 409);
    let body: serde_json::Value = late.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "lease_lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_stops_a_queued_run() {
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "0"]);
    let client = registry.client();
    assert_eq!(upload_fixture(&registry, None).await.status(), 201);
    let id = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 3, &[]))
        .await;
    client.cancel(&id).await;
    let again = client
        .http
        .post(client.url(&format!("/v1/runs/{id}/cancel")))
        .send()
        .await
        .expect("cancel again");
    assert_eq!(again.status(), 409);
    let nothing = client
        .http
        .post(client.url("/v1/runs/lease"))
        .json(&serde_json::json!({"worker": "w"}))
        .send()
        .await
        .expect("lease");
    assert_eq!(nothing.status(), 204, "a cancelled run is not leased");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_requests_that_cannot_work_are_refused() {
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "0"]);
    let client = registry.client();
    assert_eq!(upload_fixture(&registry, None).await.status(), 201);
    let post = |body: serde_json::Value| {
        let client = client.clone();
        async move {
            let response = client
                .http
                .post(client.url("/v1/runs"))
                .json(&body)
                .send()
                .await
                .expect("POST");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("JSON error");
            (
                status,
                body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    };
    let (status, message) =
        post(serde_json::json!({"dataset": "sha256:00", "kind": "example-weighting"})).await;
    assert_eq!(status, 400, "{message}");
    let zeros = format!("sha256:{}", "0".repeat(64));
    let (status, message) =
        post(serde_json::json!({"dataset": zeros, "kind": "example-weighting"})).await;
    assert_eq!(status, 404);
    assert!(message.contains("no dataset"), "{message}");
    let (status, message) =
        post(serde_json::json!({"dataset": MNIST_FIXTURE_DIGEST, "kind": "label-blending", "algorithm": "bptt"})).await;
    assert_eq!(status, 422);
    assert!(message.contains("ift"), "{message}");
    let (status, message) =
        post(serde_json::json!({"dataset": MNIST_FIXTURE_DIGEST, "kind": "example-weighting", "config": {"inner_stesp": 3}})).await;
    assert_eq!(status, 422);
    assert!(message.contains("inner_stesp"), "{message}");
}

/// A run created with only a dataset and a kind gets the defaults `commentary apply` and
/// `commentary learn` use (the same `Default` impls), and the algorithm the kind defaults to.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_without_settings_gets_the_cli_s_defaults() {
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "0"]);
    let client = registry.client();
    assert_eq!(upload_fixture(&registry, None).await.status(), 201);
    let id = client
        .create_run(serde_json::json!({"dataset": MNIST_FIXTURE_DIGEST, "kind": "label-blending"}))
        .await;
    let run = client.run(&id).await;
    assert_eq!(run.evaluation, Evaluation::default());
    assert_eq!(run.config, LearnConfig::default());
    assert_eq!(run.algorithm, Algorithm::Ift);
    assert_eq!(run.state, RunState::Queued);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_need_a_token_with_the_write_scope() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--require-token"],
    );
    let client = registry.client();
    let small = || b"not read".to_vec();
    let anonymous = upload_bytes(&registry, None, small()).await;
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "unauthorized");
    let reader = registry.create_token("read");
    assert_eq!(
        upload_bytes(&registry, Some(&reader), small())
            .await
            .status(),
        403
    );
    assert_eq!(
        upload_bytes(&registry, Some("cmt_not-a-real-token"), small())
            .await
            .status(),
        401
    );
    let listed = client.get_json("/v1/datasets").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "nothing was stored"
    );

    let writer = registry.create_token("write");
    let push = commentary()
        .args([
            "dataset",
            "push",
            "--server",
            &registry.url,
            "--token",
            &writer,
        ])
        .arg(tests::mnist_fixture())
        .output()
        .expect("push");
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    // Reads stay public; deletes need admin.
    let delete = client
        .http
        .delete(client.url(&format!("/v1/datasets/{MNIST_FIXTURE_DIGEST}")))
        .bearer_auth(&writer)
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 403);
    let dataset = client
        .get_json(&format!("/v1/datasets/{MNIST_FIXTURE_DIGEST}"))
        .await;
    assert_eq!(dataset["digest"], MNIST_FIXTURE_DIGEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_uploads_and_bursts_are_refused_and_nothing_is_stored() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &[
            "--workers",
            "0",
            "--max-upload-bytes",
            "64KiB",
            "--write-rate-limit",
            "1",
        ],
    );
    let client = registry.client();
    let big = upload_fixture(&registry, None).await;
    assert_eq!(big.status(), 413);
    let body: serde_json::Value = big.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "payload_too_large");
    // A stream without a length is cut off at the limit too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![0u8; 4096])).collect();
    // Its own client: the server closes a connection whose upload it refused mid-stream.
    let streamed = reqwest::Client::new()
        .post(client.url("/v1/datasets?name=stream"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("streamed upload");
    assert!(
        matches!(streamed.status().as_u16(), 413 | 429),
        "{}",
        streamed.status()
    );
    let mut limited = 0;
    for _ in 0..6 {
        let response = client
            .http
            .post(client.url("/v1/runs"))
            .json(&fast_run(MNIST_FIXTURE_DIGEST, 1, &[]))
            .send()
            .await
            .expect("POST");
        if response.status() == 429 {
            let body: serde_json::Value = response.json().await.expect("JSON");
            assert_eq!(body["error"]["code"], "rate_limited");
            limited += 1;
        }
    }
    assert!(
        limited >= 3,
        "a burst of writes beyond 2 is limited ({limited} of 6 refused)"
    );
    let listed = client.get_json("/v1/datasets").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0));
    let runs = client.get_json("/v1/runs").await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_expanding_past_the_cap_is_refused_and_nothing_is_stored() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--max-expanded-bytes", "1MiB"],
    );
    let refused = upload_fixture(&registry, None).await;
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "invalid_dataset");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("limit") || message.contains("exceed"),
        "{message}"
    );
    assert!(
        !message.contains("staging"),
        "no server paths in messages: {message}"
    );
    let listed = registry.client().get_json("/v1/datasets").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0));
    let staging = registry.data_dir.join("staging");
    let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "nothing left in {}", staging.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn private_reads_need_a_token_for_the_api_and_a_login_for_pages() {
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--private-reads", "--require-token"],
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let api = http
        .get(format!("{}/v1/datasets", registry.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(api.status(), 401);
    let page = http
        .get(format!("{}/", registry.url))
        .send()
        .await
        .expect("GET /");
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login");
    let login = http
        .get(format!("{}/login", registry.url))
        .send()
        .await
        .expect("GET /login");
    assert_eq!(login.status(), 200);
    let reader = registry.create_token("read");
    let listed = http
        .get(format!("{}/v1/datasets", registry.url))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("GET");
    assert_eq!(listed.status(), 200);
    let signed_in = http
        .get(format!("{}/", registry.url))
        .header("cookie", format!("commentary_token={reader}"))
        .send()
        .await
        .expect("GET / with the cookie");
    assert_eq!(signed_in.status(), 200);
}
