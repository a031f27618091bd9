//! The web pages in a real browser: two seeded registries (one open, one whose writes need a
//! token), then `web/tests/pages.test.mjs` drives headless Chromium against them. Screenshots
//! land in `target/screenshots/`. Needs node, `web/tests/node_modules` and chromium, which
//! `scripts/test.sh` installs when missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Backend, Registry, commentary};
use schema::ImageShape;
use tests::{
    Examples, MNIST_FIXTURE_DIGEST, mnist_fixture, pseudo_random_bytes, tar_gz_dir, write_idx_split,
};

const HOSTILE_NAME: &str = "<script>window.__xss=1</script>";

/// A small synthetic dataset (8x8, 4 classes) as .tar.gz, distinct per `seed`.
fn small_dataset(dir: &Path, seed: u64) -> PathBuf {
    let folder = dir.join(format!("small-{seed}"));
    std::fs::create_dir_all(&folder).expect("mkdir");
    for (prefix, n) in [("train", 40usize), ("t10k", 12)] {
        let examples = Examples {
            shape: ImageShape {
                height: 8,
                width: 8,
                channels: 1,
            },
            labels: (0..n).map(|i| (i % 4) as u32).collect(),
            pixels: pseudo_random_bytes(seed * 31 + n as u64, n * 64),
        };
        write_idx_split(&folder, prefix, &examples, true);
    }
    let archive = dir.join(format!("small-{seed}.tar.gz"));
    tar_gz_dir(&folder, &archive, None);
    archive
}

fn push(registry: &Registry, path: &Path, name: &str, token: Option<&str>) -> String {
    let mut command = commentary();
    command
        .args(["dataset", "push", "--name", name, "--server", &registry.url])
        .arg(path);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    let out = command.output().expect("push");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn small_config(meta_steps: u32) -> serde_json::Value {
    serde_json::json!({
        "inner_steps": 8, "meta_steps": meta_steps, "batch_size": 32,
        "student": {"type": "mlp", "hidden": [32]}, "commentary_net": {"type": "mlp", "hidden": [16]},
        "validation_examples": 500, "validation_batch_size": 128,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_work_in_headless_chromium() {
    let root = tests::workspace_root();
    let runner = root.join("web/tests/pages.test.mjs");
    let node_modules = root.join("web/tests/node_modules/playwright-core");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        node_modules.exists() && Path::new(&chromium).exists(),
        "the browser tests need node, web/tests/node_modules (npm ci in web/tests) and chromium \
         ({chromium}); scripts/test.sh installs them"
    );
    let tmp = tempfile::TempDir::new().expect("tmp");

    // The open registry, seeded with one commentary of each kind and a failed run.
    let registry = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "1", "--write-rate-limit", "0"],
    );
    let client = registry.client();
    let digest = push(&registry, &mnist_fixture(), "mnist-fixture", None);
    assert_eq!(digest, MNIST_FIXTURE_DIGEST);
    push(&registry, &small_dataset(tmp.path(), 1), HOSTILE_NAME, None);
    let evaluation = serde_json::json!({"seeds": [1], "steps": 40, "eval_every": 20});
    let mut runs = Vec::new();
    for (kind, algorithm) in [
        ("example-weighting", "bptt"),
        ("label-blending", "ift"),
        ("attention-mask", "ift"),
    ] {
        let id = client.create_run(
            serde_json::json!({"dataset": digest, "kind": kind, "algorithm": algorithm, "config": small_config(4), "evaluation": evaluation}),
        )
        .await;
        runs.push((kind, id));
    }
    let mut failing = small_config(1);
    failing["validation_examples"] = serde_json::json!(100_000);
    let failed_run = client.create_run(
        serde_json::json!({"dataset": digest, "kind": "example-weighting", "config": failing, "evaluation": {"seeds": []}}),
    )
    .await;
    let mut commentaries = serde_json::Map::new();
    for (kind, id) in &runs {
        let run = client
            .wait_for(&format!("/v1/runs/{id}"), Duration::from_secs(600), |r| {
                r["state"] == "succeeded" || r["state"] == "failed"
            })
            .await;
        assert_eq!(run["state"], "succeeded", "{run:#}");
        commentaries.insert((*kind).to_string(), run["commentary_id"].clone());
    }
    let failed = client
        .wait_for(
            &format!("/v1/runs/{failed_run}"),
            Duration::from_secs(120),
            |r| r["state"] == "failed",
        )
        .await;
    assert!(failed["error"].is_string());

    // The registry whose writes need a token (no workers: runs stay queued).
    let locked = Registry::start(
        &Backend::sqlite_local(),
        &["--workers", "0", "--require-token"],
    );
    let token = locked.create_token("write");
    push(&locked, &mnist_fixture(), "mnist-fixture", Some(&token));

    let bad = tmp.path().join("not-a-dataset.tar.gz");
    std::fs::write(&bad, b"\x1f\x8b certainly not gzip").expect("write");
    let seed = serde_json::json!({
        "digest": digest,
        "commentaries": commentaries,
        "failed_run": failed_run,
        "hostile_name": HOSTILE_NAME,
    });
    let output = Command::new("node")
        .arg(&runner)
        .env("REGISTRY_URL", &registry.url)
        .env("LOCKED_URL", &locked.url)
        .env("LOCKED_TOKEN", &token)
        .env("SEED", seed.to_string())
        .env("UPLOAD_OK", small_dataset(tmp.path(), 2))
        .env("UPLOAD_BAD", &bad)
        .env("SCREENSHOTS", root.join("target/screenshots"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node (is it installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "browser tests failed:\n{stdout}");
    assert!(
        stdout.contains("web: ") && !stdout.contains("not ok"),
        "{stdout}"
    );
}
