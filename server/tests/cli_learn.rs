//! `commentary learn` end to end on real MNIST digits: learn -> artifact -> verify, resume after
//! an interruption, and clear errors for requests that cannot work.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use schema::artifact::verify_artifact;
use tempfile::TempDir;
use tests::{MNIST_FIXTURE_DIGEST, mnist_fixture};

/// Small, fast settings: MLP student and teacher, 10 inner steps.
const FAST: &[&str] = tests::FAST_LEARN_FLAGS;

fn learn_command(out: &Path, meta_steps: u32) -> Command {
    learn_command_holding_out(out, meta_steps, 500)
}

fn learn_command_holding_out(out: &Path, meta_steps: u32, validation: u32) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_commentary"));
    command
        .args(["-v", "learn", "--kind", "example-weighting", "--dataset"])
        .arg(mnist_fixture())
        .arg("--out")
        .arg(out)
        .args(["--meta-steps", &meta_steps.to_string()])
        .args(["--validation-examples", &validation.to_string()])
        .args(FAST);
    command
}

/// `commentary learn` of `kind` by `algorithm` on the fixture with the fast settings.
fn learn_kind(
    kind: &str,
    algorithm: &str,
    out: &Path,
    meta_steps: u32,
    batch_size: u32,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_commentary"));
    command
        .args([
            "learn",
            "--kind",
            kind,
            "--algorithm",
            algorithm,
            "--dataset",
        ])
        .arg(mnist_fixture())
        .arg("--out")
        .arg(out)
        .args([
            "--meta-steps",
            &meta_steps.to_string(),
            "--batch-size",
            &batch_size.to_string(),
        ])
        .args(["--validation-examples", "500"])
        .args(FAST);
    command
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_teacher_is_learned_and_written_as_a_verified_artifact() {
    let tmp = TempDir::new().expect("tmp");
    let out_dir = tmp.path().join("weighting");
    let out = learn_command(&out_dir, 3).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let artifact = verify_artifact(&out_dir).expect("verified artifact");
    let manifest = &artifact.manifest;
    assert_eq!(manifest.dataset.digest.to_string(), MNIST_FIXTURE_DIGEST);
    assert_eq!(manifest.validation.holdout_indices().len(), 500);
    assert_eq!(manifest.metrics["meta_steps_done"], 3.0);
    assert!(manifest.metrics["best_val_loss"] <= manifest.metrics["first_val_loss"]);
    let weights = artifact.tensors["insight.weights"]
        .as_f32()
        .expect("weights");
    assert_eq!(artifact.tensors["insight.weights"].shape(), [5, 256]);
    assert!(weights.iter().all(|w| (0.0..=1.0).contains(w)));
    assert_eq!(
        artifact.tensors["insight.class_mean_weights"].shape(),
        [5, 10]
    );
    assert!(!out_dir.join(".learn-checkpoint.safetensors").exists());
}

#[test]
fn a_blend_matrix_is_learned_by_ift_while_the_student_trains() {
    let tmp = TempDir::new().expect("tmp");
    let out_dir = tmp.path().join("blending");
    let out = learn_kind("label-blending", "ift", &out_dir, 3, 32)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let artifact = verify_artifact(&out_dir).expect("verified artifact");
    assert_eq!(artifact.manifest.kind.to_string(), "label-blending");
    assert_eq!(artifact.tensors["commentary.logits"].shape(), [10, 10]);
    let blend = artifact.tensors["insight.blend"].as_f32().expect("blend");
    assert!(blend.iter().all(|l| (0.5..=1.0).contains(l)), "{blend:?}");
    // The matrix moved away from its all-zero start.
    assert!(
        artifact.tensors["commentary.logits"]
            .as_f32()
            .expect("f32")
            .iter()
            .any(|v| *v != 0.0)
    );
    let losses = &artifact.manifest.metrics;
    assert!(
        losses["last_val_loss"] < losses["first_val_loss"],
        "{losses:?}"
    );

    // Applied in a small-data regime, beside random blending.
    let report_path = tmp.path().join("report.json");
    let out = apply_command(&mnist_fixture(), &out_dir, &report_path)
        .args(["--train-examples", "1000"])
        .output()
        .expect("apply");
    assert!(out.status.success(), "{}", stderr(&out));
    let report: schema::report::ApplyReport =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    let random = report
        .random_blending
        .expect("a random-blending arm for label blending");
    assert_eq!(random.runs.len(), 2);
    assert!(
        random.test_accuracy.mean > 0.3,
        "{:?}",
        random.test_accuracy
    );

    let out = learn_command(&tmp.path().join("bptt"), 1)
        .args(["--kind", "label-blending"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "--kind twice is a usage error");
}

#[test]
fn attention_masks_are_learned_by_ift_and_applied() {
    let tmp = TempDir::new().expect("tmp");
    let out_dir = tmp.path().join("masks");
    let out = learn_kind("attention-mask", "ift", &out_dir, 2, 32)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let artifact = verify_artifact(&out_dir).expect("verified artifact");
    assert_eq!(artifact.tensors["insight.masks"].shape(), [32, 28, 28]);
    let masks = artifact.tensors["insight.masks"].as_f32().expect("masks");
    // The default mask range is (0.5, 1.5) around 1 (format 2; it was (0, 1) before).
    assert!(masks.iter().all(|m| (0.5..=1.5).contains(m)));
    assert_eq!(artifact.tensors["insight.images"].shape(), [32, 1, 28, 28]);
    // The mask network's last layer has one output per pixel.
    assert_eq!(
        artifact.tensors["commentary.layers.1.weight"].shape(),
        [784, 16]
    );

    let report_path = tmp.path().join("report.json");
    let out = apply_command(&mnist_fixture(), &out_dir, &report_path)
        .output()
        .expect("apply");
    assert!(out.status.success(), "{}", stderr(&out));
    let report: schema::report::ApplyReport =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    let masks = report
        .masks
        .expect("mask metrics for an attention-mask commentary");
    assert!((0.0..=1.0).contains(&masks.mass_in_box), "{masks:?}");
    assert!(masks.accuracy_random_removed.mean.is_finite());
    assert!(masks.accuracy_most_masked_removed.mean <= 1.0);

    // Masks can be learned by BPTT too.
    let bptt_dir = tmp.path().join("bptt");
    let out = learn_kind("attention-mask", "bptt", &bptt_dir, 2, 16)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest = verify_artifact(&bptt_dir).expect("artifact").manifest;
    assert_eq!(manifest.algorithm.to_string(), "bptt");
    assert_eq!(manifest.metrics["meta_steps_done"], 2.0);
}

#[test]
fn a_per_example_weight_table_is_learned_and_applied_only_to_its_dataset() {
    let tmp = TempDir::new().expect("tmp");
    let out_dir = tmp.path().join("table");
    let out = learn_command(&out_dir, 2)
        .arg("--tabular")
        .output()
        .expect("learn");
    assert!(out.status.success(), "{}", stderr(&out));
    let artifact = verify_artifact(&out_dir).expect("verified artifact");
    assert_eq!(artifact.tensors["commentary.logits"].shape(), [8004]);
    // (Whether the kept table moved from its start depends on which meta-step had the best
    // L_V; the table's hypergradient itself is checked in tests/tests/hypergrad.rs.)
    assert_eq!(artifact.manifest.metrics["meta_steps_done"], 2.0);
    assert_eq!(artifact.tensors["insight.weights"].shape(), [5, 256]);
    let report = tmp.path().join("report.json");
    let out = apply_command(&mnist_fixture(), &out_dir, &report)
        .output()
        .expect("apply");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_interrupted_run_resumes_from_its_checkpoint() {
    let tmp = TempDir::new().expect("tmp");
    let out_dir = tmp.path().join("resumed");
    let checkpoint = out_dir.join(".learn-checkpoint.safetensors");
    let mut child = learn_command(&out_dir, 1000)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpoint.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(checkpoint.exists(), "no checkpoint was written");
    assert!(!out_dir.join("manifest.json").exists());

    let out = learn_command(&out_dir, 200).output().expect("rerun");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming from checkpoint"), "{err}");
    let manifest = verify_artifact(&out_dir).expect("artifact").manifest;
    assert_eq!(manifest.metrics["meta_steps_done"], 200.0);
}

#[test]
fn requests_that_cannot_work_are_refused_with_the_reason() {
    let tmp = TempDir::new().expect("tmp");
    let out = learn_command(&tmp.path().join("a"), 1)
        .args(["--algorithm", "ift"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("learned by BPTT"), "{}", stderr(&out));

    let out = Command::new(env!("CARGO_BIN_EXE_commentary"))
        .args([
            "learn",
            "--kind",
            "label-blending",
            "--algorithm",
            "bptt",
            "--dataset",
        ])
        .arg(mnist_fixture())
        .arg("--out")
        .arg(tmp.path().join("d"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("label blending is learned by IFT"),
        "{}",
        stderr(&out)
    );

    let out = learn_command_holding_out(&tmp.path().join("b"), 1, 9000)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("too few to hold out 9000"),
        "{}",
        stderr(&out)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_commentary"))
        .args([
            "learn",
            "--kind",
            "curriculum",
            "--out",
            "x",
            "--dataset",
            "y",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown commentary kind \"curriculum\""),
        "{}",
        stderr(&out)
    );

    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "inner_stpes = 3\n").expect("write");
    let out = learn_command(&tmp.path().join("c"), 1)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("inner_stpes"), "{}", stderr(&out));
}

fn apply_command(dataset: &Path, commentary: &Path, report: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_commentary"));
    command
        .args(["apply", "--dataset"])
        .arg(dataset)
        .arg("--commentary")
        .arg(commentary)
        .arg("--report")
        .arg(report)
        .args([
            "--seeds",
            "1,2",
            "--steps",
            "40",
            "--eval-every",
            "10",
            "--student",
            "mlp:32",
        ]);
    command
}

#[test]
fn a_learned_commentary_is_applied_side_by_side_with_a_baseline() {
    let tmp = TempDir::new().expect("tmp");
    let artifact = tmp.path().join("weighting");
    let out = learn_command(&artifact, 2).output().expect("learn");
    assert!(out.status.success(), "{}", stderr(&out));

    let report_path = tmp.path().join("report.json");
    let out = apply_command(&mnist_fixture(), &artifact, &report_path)
        .output()
        .expect("apply");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("test accuracy: baseline"));
    let report: schema::report::ApplyReport =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("report json");
    assert_eq!(report.baseline.runs.len(), 2);
    assert_eq!(report.with_commentary.runs.len(), 2);
    assert_eq!(report.baseline.runs[0].curve.len(), 4);
    assert_eq!(report.steps_to_baseline_accuracy.len(), 2);
    assert!(!report.forced);
    // Real digits: 40 steps of an MLP already beat chance (10%) by far.
    assert!(
        report.baseline.test_accuracy.mean > 0.5,
        "{:?}",
        report.baseline.test_accuracy
    );
    assert!(
        report.with_commentary.test_accuracy.mean > 0.5,
        "{:?}",
        report.with_commentary.test_accuracy
    );
    // The artifact now carries the report and still verifies.
    assert!(
        verify_artifact(&artifact)
            .expect("artifact")
            .report
            .is_some()
    );

    // Another dataset (one pixel changed): refused unless forced.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    for entry in std::fs::read_dir(mnist_fixture()).expect("fixture") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, other.join(path.file_name().expect("name"))).expect("copy");
    }
    let images = other.join("t10k-images-idx3-ubyte.gz");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&images).expect("open")),
        &mut raw,
    )
    .expect("gunzip");
    raw[16 + 300] ^= 0xff;
    tests::write_maybe_gz(&images, &raw, true);
    let out = apply_command(&other, &artifact, &tmp.path().join("r2.json"))
        .output()
        .expect("apply");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Use --force to apply it anyway"),
        "{}",
        stderr(&out)
    );
    let out = apply_command(&other, &artifact, &tmp.path().join("r3.json"))
        .arg("--force")
        .output()
        .expect("apply");
    assert!(out.status.success(), "{}", stderr(&out));
    let report: schema::report::ApplyReport =
        serde_json::from_slice(&std::fs::read(tmp.path().join("r3.json")).expect("report"))
            .expect("json");
    assert!(report.forced);
}

/// A tiny RGB image-folder dataset: 8x8 images, 3 classes told apart by their dominant colour.
fn tiny_rgb_dataset(dir: &Path) {
    let mut state = 7u32;
    let mut noise = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 26) as u8
    };
    for (split, count) in [("train", 40), ("test", 10)] {
        for (class, name) in ["red", "green", "blue"].iter().enumerate() {
            let folder = dir.join(split).join(name);
            std::fs::create_dir_all(&folder).expect("dir");
            for i in 0..count {
                let mut pixels = Vec::with_capacity(8 * 8 * 3);
                for _ in 0..64 {
                    for channel in 0..3 {
                        pixels.push(if channel == class {
                            160 + noise()
                        } else {
                            noise()
                        });
                    }
                }
                image::save_buffer(
                    folder.join(format!("{i}.png")),
                    &pixels,
                    8,
                    8,
                    image::ExtendedColorType::Rgb8,
                )
                .expect("png");
            }
        }
    }
}

#[test]
fn every_kind_learns_and_applies_on_a_small_rgb_image_folder() {
    let tmp = TempDir::new().expect("tmp");
    let data = tmp.path().join("rgb");
    tiny_rgb_dataset(&data);
    for (kind, algorithm) in [
        ("example-weighting", "bptt"),
        ("label-blending", "ift"),
        ("attention-mask", "ift"),
    ] {
        let out_dir = tmp.path().join(kind);
        let out = Command::new(env!("CARGO_BIN_EXE_commentary"))
            .args([
                "learn",
                "--kind",
                kind,
                "--algorithm",
                algorithm,
                "--dataset",
            ])
            .arg(&data)
            .arg("--out")
            .arg(&out_dir)
            .args([
                "--student",
                "cbr",
                "--commentary-net",
                "mlp:8",
                "--inner-steps",
                "4",
                "--meta-steps",
                "2",
            ])
            .args([
                "--batch-size",
                "8",
                "--validation-examples",
                "30",
                "--validation-batch-size",
                "30",
            ])
            .output()
            .expect("learn");
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        let manifest = verify_artifact(&out_dir).expect("artifact").manifest;
        assert_eq!(manifest.dataset.shape.to_string(), "8x8x3");
        assert_eq!(manifest.dataset.classes, ["blue", "green", "red"]);
        let report = tmp.path().join(format!("{kind}.json"));
        let out = Command::new(env!("CARGO_BIN_EXE_commentary"))
            .args(["apply", "--dataset"])
            .arg(&data)
            .arg("--commentary")
            .arg(&out_dir)
            .arg("--report")
            .arg(&report)
            .args([
                "--seeds",
                "1",
                "--steps",
                "10",
                "--eval-every",
                "5",
                "--batch-size",
                "8",
            ])
            .output()
            .expect("apply");
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
    }

    // A commentary for 8x8x3 images with 3 classes does not fit MNIST, even forced.
    let out = apply_command(
        &mnist_fixture(),
        &tmp.path().join("label-blending"),
        &tmp.path().join("x.json"),
    )
    .arg("--force")
    .output()
    .expect("apply");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("learned on 8x8x3 images with 3 classes"),
        "{}",
        stderr(&out)
    );

    // A time limit stops learning early and keeps the best commentary so far.
    let out_dir = tmp.path().join("limited");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_commentary"))
        .args(["learn", "--kind", "example-weighting", "--dataset"])
        .arg(&data)
        .arg("--out")
        .arg(&out_dir)
        .args([
            "--student",
            "mlp:8",
            "--commentary-net",
            "mlp:8",
            "--inner-steps",
            "4",
            "--meta-steps",
            "1000000",
        ])
        .args([
            "--batch-size",
            "8",
            "--validation-examples",
            "30",
            "--time-limit",
            "2s",
        ])
        .output()
        .expect("learn");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(60));
    let done = verify_artifact(&out_dir)
        .expect("artifact")
        .manifest
        .metrics["meta_steps_done"];
    assert!((1.0..1_000_000.0).contains(&done), "{done}");
}
