//! What "best" means when an uploader can claim anything (issue 15, finding 7): a commentary
//! uploaded with a report is the uploader's claim, marked unverified, and never ranks above one
//! whose improvement this registry measured itself (learned and evaluated by its own workers).

mod common;

use std::time::Duration;

use common::{Backend, Registry, commentary, fast_run};
use schema::api::CommentaryDetail;
use tests::{MNIST_FIXTURE_DIGEST, mnist_fixture};

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_claim_never_outranks_a_measured_commentary() {
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "1"]);
    let client = registry.client();
    let tmp = tempfile::TempDir::new().expect("tmp");
    client.upload_fixture().await;

    // Measured: learned and evaluated by the registry's own worker.
    let run = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 2, &[1]))
        .await;
    let done = client
        .wait_for(&format!("/v1/runs/{run}"), Duration::from_secs(300), |r| {
            r["state"] == "succeeded" || r["state"] == "failed"
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let measured_id = done["commentary_id"]
        .as_str()
        .expect("commentary")
        .to_string();
    let path = format!("/v1/commentaries/{measured_id}");
    let measured_json = client.get_json(&path).await;
    assert_eq!(measured_json["verified"], true, "{measured_json:#}");
    let measured: CommentaryDetail = client.get(&path).await;

    // Claimed: an artifact learned elsewhere, uploaded with a report claiming a 0.95 gain.
    let artifact = tmp.path().join("claimed");
    let learned = commentary()
        .args([
            "learn",
            "--kind",
            "example-weighting",
            "--algorithm",
            "bptt",
        ])
        .arg("--dataset")
        .arg(mnist_fixture())
        .arg("--out")
        .arg(&artifact)
        .args(["--meta-steps", "1", "--validation-examples", "500"])
        .args(tests::FAST_LEARN_FLAGS)
        .output()
        .expect("learn");
    assert!(
        learned.status.success(),
        "{}",
        String::from_utf8_lossy(&learned.stderr)
    );
    let mut report = serde_json::to_value(measured.report.expect("a report")).expect("JSON");
    report["test_accuracy_gain"] = serde_json::json!(0.95);
    report["gain_z"] = serde_json::json!(40.0);
    let response = client
        .upload_commentary(&artifact, serde_json::to_vec(&report).expect("report"))
        .await;
    assert_eq!(response.status(), 201);
    let claimed: serde_json::Value = response.json().await.expect("CommentaryInfo");
    assert_eq!(
        claimed["verified"], false,
        "an uploaded report is a claim: {claimed:#}"
    );
    assert_eq!(claimed["improvement"], 0.95);
    let claimed_id = claimed["id"].as_str().expect("id");

    // Ranked by improvement, the measured one comes first; the claim follows.
    let ranked = client
        .get_json(&format!(
            "/v1/commentaries?dataset={MNIST_FIXTURE_DIGEST}&sort=improvement"
        ))
        .await;
    let order: Vec<(&str, &serde_json::Value)> = ranked["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| (c["id"].as_str().unwrap_or_default(), &c["verified"]))
        .collect();
    assert_eq!(
        order,
        [
            (measured_id.as_str(), &serde_json::json!(true)),
            (claimed_id, &serde_json::json!(false))
        ]
    );
}
