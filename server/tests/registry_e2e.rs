//! The registry end to end, through a real `commentary serve` process: upload -> the digest of
//! `commentary dataset hash`; re-upload -> 200; run -> SSE progress -> succeeded -> commentary
//! listed -> artifact with ETag, 304 and Range -> pulled and applied by the client; a bad
//! archive -> 4xx JSON and nothing stored. On SQLite + local blobs always, and on PostgreSQL +
//! S3 when the environment names them (CI does).

mod common;

use common::{Backend, Registry, Sse, commentary, fast_run, fixture_archive, read_sse};
use sha2::{Digest as _, Sha256};
use tests::{MNIST_FIXTURE_DIGEST, mnist_fixture};

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_and_local_blobs() {
    scenario(&Backend::sqlite_local()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_and_s3() {
    // Without the services this skips, saying so; under .ci/run it fails instead.
    if let Some(backend) = Backend::postgres_s3().await {
        scenario(&backend).await;
    }
}

async fn scenario(backend: &Backend) {
    let tmp = tempfile::TempDir::new().expect("tmp");
    let registry = Registry::start(backend, &["--workers", "1", "--lease-ttl", "5s"]);
    let client = registry.client();
    eprintln!("registry on {} ({})", registry.url, backend.label);

    // Upload through the CLI: the digest is the one `dataset hash` computes locally.
    let push = commentary()
        .args([
            "dataset",
            "push",
            "--name",
            "mnist-fixture",
            "--server",
            &registry.url,
        ])
        .arg(mnist_fixture())
        .output()
        .expect("dataset push");
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let digest = String::from_utf8_lossy(&push.stdout).trim().to_string();
    let local = commentary()
        .args(["dataset", "hash"])
        .arg(mnist_fixture())
        .output()
        .expect("dataset hash");
    assert_eq!(digest, String::from_utf8_lossy(&local.stdout).trim());
    assert_eq!(digest, MNIST_FIXTURE_DIGEST);

    // Re-upload (another container, same content): 200 and the same digest.
    let archive = fixture_archive(tmp.path());
    let again = client
        .http
        .post(client.url("/v1/datasets?name=again"))
        .body(std::fs::read(&archive).expect("archive"))
        .send()
        .await
        .expect("re-upload");
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.expect("JSON");
    assert_eq!(again["digest"], digest);
    assert_eq!(
        again["name"], "mnist-fixture",
        "the first upload's name stands"
    );
    assert_eq!(again["summary"]["splits"][0]["examples"], 8004);

    // A bad archive: 422 with the JSON error, and nothing new stored.
    let bad = client
        .http
        .post(client.url("/v1/datasets?name=bad"))
        .body(b"\x1f\x8bthis is not a gzip stream".to_vec())
        .send()
        .await
        .expect("bad upload");
    assert_eq!(bad.status(), 422);
    let bad: serde_json::Value = bad.json().await.expect("JSON error");
    assert_eq!(bad["error"]["code"], "invalid_dataset");
    assert!(
        !bad["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    let listed = client.get_json("/v1/datasets").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));

    // Example images are PNGs of the decoded data.
    let png = client
        .http
        .get(client.url(&format!("/v1/datasets/{digest}/splits/test/examples/3.png")))
        .send()
        .await
        .expect("example");
    assert_eq!(png.status(), 200);
    let bytes = png.bytes().await.expect("png");
    let image = image::load_from_memory(&bytes).expect("a PNG");
    assert_eq!((image.width(), image.height()), (28, 28));

    // A learning run, followed over SSE to its end.
    let run_id = client.create_run(fast_run(&digest, 3, &[1])).await;
    let events = read_sse(&client, &format!("/v1/runs/{run_id}/events"), None).await;
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "state")
        .filter_map(|e| e.data["state"].as_str())
        .collect();
    assert_eq!(states, ["queued", "running", "succeeded"], "{events:#?}");
    let learning: Vec<&Sse> = events
        .iter()
        .filter(|e| e.event == "progress" && e.data["phase"] == "learning")
        .collect();
    assert_eq!(learning.len(), 3, "one progress event per meta-step");
    assert!(
        learning
            .iter()
            .all(|e| e.data["val_loss"].as_f64().is_some())
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    // Resuming after an event gives exactly the later ones.
    let middle = events[events.len() / 2].id;
    let resumed = read_sse(&client, &format!("/v1/runs/{run_id}/events"), Some(middle)).await;
    let expected: Vec<i64> = events
        .iter()
        .map(|e| e.id)
        .filter(|&id| id > middle)
        .collect();
    assert_eq!(resumed.iter().map(|e| e.id).collect::<Vec<_>>(), expected);

    let run = client.get_json(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["attempts"], 1);
    let commentary_id = run["commentary_id"]
        .as_str()
        .expect("commentary id")
        .to_string();

    // Listed for the digest, with its evaluation.
    let listed = client
        .get_json(&format!(
            "/v1/commentaries?dataset={}&sort=improvement",
            &digest[7..]
        ))
        .await;
    let first = &listed["items"][0];
    assert_eq!(first["id"], commentary_id.as_str());
    assert_eq!(first["kind"], "example-weighting");
    assert!(first["improvement"].as_f64().is_some(), "{first:#}");
    let detail = client
        .get_json(&format!("/v1/commentaries/{commentary_id}"))
        .await;
    assert_eq!(detail["manifest"]["dataset"]["digest"], digest.as_str());
    assert_eq!(detail["manifest"]["provenance"]["run_id"], run_id.as_str());
    assert!(detail["report"]["baseline"].is_object());
    let insights = client
        .get_json(&format!("/v1/commentaries/{commentary_id}/insights"))
        .await;
    assert!(
        insights["tensors"]["class_mean_weights"]["values"].is_array(),
        "{insights:#}"
    );

    // The artifact: strong ETag = sha256, 304 on a match, 206 for a range.
    let path = format!("/v1/commentaries/{commentary_id}/artifact");
    let full = client
        .http
        .get(client.url(&path))
        .send()
        .await
        .expect("artifact");
    assert_eq!(full.status(), 200);
    let etag = full.headers()["etag"].to_str().expect("etag").to_string();
    let body = full.bytes().await.expect("bytes");
    let sha = hex::encode(Sha256::digest(&body));
    assert_eq!(etag, format!("\"{sha}\""));
    assert_eq!(first["tensors_sha256"], format!("sha256:{sha}").as_str());
    let cached = client
        .http
        .get(client.url(&path))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(cached.status(), 304);
    let ranged = client
        .http
        .get(client.url(&path))
        .header("Range", "bytes=8-107")
        .send()
        .await
        .expect("range GET");
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 8-107/{}", body.len()).as_str()
    );
    assert_eq!(ranged.bytes().await.expect("bytes"), body.slice(8..108));
    let unsatisfiable = client
        .http
        .get(client.url(&path))
        .header("Range", format!("bytes={}-", body.len()))
        .send()
        .await
        .expect("bad range");
    assert_eq!(unsatisfiable.status(), 416);

    // The client path: pull (verified), and apply with the registry's best commentary. A tiny
    // run's gain may be zero or below, so the tests take it anyway (cli_registry.rs tests the
    // rule itself).
    let pulled = tmp.path().join("pulled");
    let pull = commentary()
        .args([
            "pull",
            "--server",
            &registry.url,
            "--dataset",
            &digest,
            "--allow-no-improvement",
            "--out",
        ])
        .arg(&pulled)
        .output()
        .expect("pull");
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let verified = schema::artifact::verify_artifact(&pulled).expect("pulled artifact verifies");
    assert_eq!(verified.manifest.dataset.digest.to_string(), digest);
    let report = tmp.path().join("report.json");
    let apply = commentary()
        .args([
            "apply",
            "--server",
            &registry.url,
            "--steps",
            "30",
            "--eval-every",
            "10",
            "--seeds",
            "1",
            "--allow-no-improvement",
        ])
        .arg("--dataset")
        .arg(mnist_fixture())
        .arg("--report")
        .arg(&report)
        .output()
        .expect("apply --server");
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert!(String::from_utf8_lossy(&apply.stderr).contains(&commentary_id));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("JSON");
    assert_eq!(report["dataset"], digest.as_str());
    assert_eq!(report["baseline"]["runs"].as_array().map(Vec::len), Some(1));

    // The OpenAPI document lists every route.
    let openapi = client.get_json("/openapi.json").await;
    assert!(
        openapi["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1")
    );
    for route in [
        "/v1/datasets",
        "/v1/datasets/{digest}",
        "/v1/datasets/{digest}/archive",
        "/v1/runs",
        "/v1/runs/{id}/events",
        "/v1/runs/lease",
        "/v1/runs/{id}/complete",
        "/v1/commentaries",
        "/v1/commentaries/{id}/artifact",
        "/healthz",
    ] {
        assert!(openapi["paths"][route].is_object(), "{route} is documented");
    }
    let ready = client.get_json("/readyz").await;
    assert_eq!(ready["status"], "ready");

    // Deleting the dataset is refused while it has commentaries, then cascades.
    let refused = client
        .http
        .delete(client.url(&format!("/v1/datasets/{digest}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(refused.status(), 409);
    let deleted = client
        .http
        .delete(client.url(&format!("/v1/datasets/{digest}?cascade=true")))
        .send()
        .await
        .expect("delete cascade");
    assert_eq!(deleted.status(), 204);
    let gone = client
        .http
        .get(client.url(&format!("/v1/commentaries/{commentary_id}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(gone.status(), 404);
}
