//! The noisy-label flow end to end, as the README's quick tour shows it: `dataset corrupt`
//! makes 40% pair noise with a clean `val` split; example weighting learns online against
//! `val` (truncated BPTT, the default there); the lowest-weighted examples are mostly the
//! flipped ones, through `apply`'s report and the registry's examples endpoint.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Backend, Registry, commentary};
use schema::corruption::CorruptionRecord;
use tempfile::TempDir;

/// Corrupts the fixture into `dir` (40% pair noise, 500 clean val examples).
fn corrupt_fixture(dir: &Path) -> CorruptionRecord {
    let out = commentary()
        .args(["dataset", "corrupt"])
        .arg(tests::mnist_fixture())
        .arg("--out")
        .arg(dir)
        .args(["--label-noise", "0.4", "--noise", "pair", "--seed", "1"])
        .output()
        .expect("corrupt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read(dir.join("corruption.json")).expect("corruption.json");
    serde_json::from_slice(&text).expect("a corruption record")
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `commentary learn` of a per-example weight table on `data` into `out`.
fn learn_table(data: &Path, out: &Path) -> Command {
    let mut command = commentary();
    command
        .args([
            "learn",
            "--kind",
            "example-weighting",
            "--tabular",
            "--dataset",
        ])
        .arg(data)
        .arg("--out")
        .arg(out);
    command
}

/// Runs `command`, which must fail with `expected` in its error output.
fn refused(command: &mut Command, expected: &str) {
    let out = command.output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded; expected {expected:?}");
    assert!(err.contains(expected), "{err}");
}

#[test]
fn weights_learned_against_a_clean_val_split_find_flipped_labels() {
    let tmp = TempDir::new().expect("tmp");
    let data = tmp.path().join("pair40");
    let record = corrupt_fixture(&data);
    assert_eq!(record.options.clean_val, 500);
    let flipped = record.flipped.len() as f64 / record.train_examples as f64;
    assert!((flipped - 0.4).abs() < 0.001, "noise rate {flipped}");

    let artifact = tmp.path().join("weights");
    let learned = run_ok(
        learn_table(&data, &artifact)
            .args([
                "--student",
                "mlp:32",
                "--inner-steps",
                "400",
                "--meta-steps",
                "1",
            ])
            .args(["--validation-batch-size", "100", "--outer-lr", "0.03"]),
    );
    assert!(learned.contains("by truncated-bptt"), "{learned}");
    assert!(
        learned.contains("validated on val, 500 examples"),
        "{learned}"
    );
    let manifest = schema::artifact::verify_artifact(&artifact)
        .expect("artifact")
        .manifest;
    assert_eq!(manifest.format_version, 2);
    assert_eq!(manifest.validation.split(), "val");
    assert_eq!(manifest.time_input, schema::artifact::TimeInput::Progress);

    let report_path = tmp.path().join("report.json");
    let printed = run_ok(
        commentary()
            .args(["apply", "--dataset"])
            .arg(&data)
            .arg("--commentary")
            .arg(&artifact)
            .arg("--report")
            .arg(&report_path)
            .args(["--steps", "300", "--eval-every", "100", "--seeds", "1"]),
    );
    let report: schema::report::ApplyReport =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("JSON");
    let found = report.label_noise.expect("scored against corruption.json");
    assert_eq!(found.flipped, record.flipped.len() as u64);
    assert!(found.auroc > 0.65, "AUROC {}\n{printed}", found.auroc);
    assert_eq!(report.validation.as_deref(), Some("val, 500 examples"));
    let names: Vec<&str> = report
        .reference_arms
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["train+val"]);
    assert!(report.gain_over_best_reference.is_some());

    // A corruption record of another dataset is refused, naming both digests.
    refused(
        commentary()
            .args(["apply", "--dataset"])
            .arg(tests::mnist_fixture())
            .arg("--commentary")
            .arg(&artifact)
            .arg("--report")
            .arg(tmp.path().join("other.json"))
            .arg("--force")
            .arg("--corruption")
            .arg(data.join("corruption.json")),
        "not this dataset",
    );
    // Bad corrupt options and a test validation split name the value.
    refused(
        commentary()
            .args(["dataset", "corrupt"])
            .arg(tests::mnist_fixture())
            .arg("--out")
            .arg(tmp.path().join("bad"))
            .args(["--imbalance", "0.5"]),
        "--imbalance is 0.5",
    );
    refused(
        learn_table(&data, &tmp.path().join("never")).args(["--validation-split", "test"]),
        "validation_split is \"test\"",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_lists_the_lowest_weighted_examples_as_json_and_csv() {
    let tmp = TempDir::new().expect("tmp");
    let data = tmp.path().join("pair40");
    let record = corrupt_fixture(&data);
    let archive = tmp.path().join("pair40.tar.gz");
    tests::tar_gz_dir(&data, &archive, None);

    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "1"]);
    let client = registry.client();
    let uploaded = client
        .http
        .post(client.url("/v1/datasets?name=pair40"))
        .body(std::fs::read(&archive).expect("archive"))
        .send()
        .await
        .expect("upload");
    assert!(uploaded.status().is_success(), "{}", uploaded.status());
    let digest = record.digest.to_string();

    // Refused before queueing: a test validation split, an unknown one, unroll_steps 0.
    for (config, expected) in [
        (
            serde_json::json!({"tabular": true, "validation_split": "test"}),
            "never used for learning",
        ),
        (
            serde_json::json!({"tabular": true, "validation_split": "holdout"}),
            "no such split",
        ),
        (
            serde_json::json!({"tabular": true, "unroll_steps": 0}),
            "unroll_steps is 0",
        ),
    ] {
        let response = client
            .http
            .post(client.url("/v1/runs"))
            .json(&serde_json::json!({"dataset": digest, "kind": "example-weighting", "config": config}))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 422);
        let text = response.text().await.expect("body");
        assert!(text.contains(expected), "{text}");
    }

    let run = client
        .create_run(serde_json::json!({
            "dataset": digest,
            "kind": "example-weighting",
            "config": {
                "tabular": true, "inner_steps": 300, "meta_steps": 1,
                "student": {"type": "mlp", "hidden": [32]},
                "validation_batch_size": 100, "outer_lr": 0.03,
            },
            "evaluation": {"seeds": [1], "steps": 100, "eval_every": 50},
        }))
        .await;
    let done = client
        .wait_for(&format!("/v1/runs/{run}"), Duration::from_secs(300), |r| {
            r["state"] != "queued" && r["state"] != "running"
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["algorithm"], "truncated-bptt");
    let id = done["commentary_id"].as_str().expect("commentary");
    let detail = client.get_json(&format!("/v1/commentaries/{id}")).await;
    assert_eq!(
        detail["manifest"]["validation"],
        serde_json::json!({"split": "val", "examples": 500})
    );
    assert_eq!(detail["harmful"], false);

    let listed = client
        .get_json(&format!(
            "/v1/commentaries/{id}/examples?order=weight&limit=300"
        ))
        .await;
    assert_eq!(listed["total"], record.train_examples);
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 300);
    let weights: Vec<f64> = items
        .iter()
        .map(|e| e["weight"].as_f64().expect("weight"))
        .collect();
    assert!(weights.windows(2).all(|w| w[0] <= w[1]), "lowest first");
    let flipped: std::collections::HashSet<u64> = record.flipped.iter().map(|f| f.index).collect();
    let hits = items
        .iter()
        .filter(|e| flipped.contains(&e["index"].as_u64().expect("index")))
        .count();
    // 40% of the examples are flipped: well above that share among the lowest weights.
    assert!(hits as f64 / 300.0 > 0.55, "{hits} of 300 flipped");

    let csv = client
        .http
        .get(client.url(&format!("/v1/commentaries/{id}/examples?limit=3")))
        .header("accept", "text/csv")
        .send()
        .await
        .expect("CSV");
    assert_eq!(csv.status(), 200);
    let text = csv.text().await.expect("text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "index,label,class,weight");
    assert_eq!(lines.len(), 4, "{text}");

    let page = client
        .http
        .get(client.url(&format!("/commentaries/{id}")))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Validated on: val, 500 examples"), "{page}");
    assert!(page.contains("Suspected mislabeled"), "{page}");
}
