//! `commentary artifact verify`: a good artifact passes; a damaged one fails with every problem
//! listed and a non-zero exit.

use std::process::Command;

use schema::CommentaryKind;
use schema::artifact::{TENSORS_FILE, write_artifact};
use tempfile::TempDir;
use tests::sample_artifact;

fn verify(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_commentary"))
        .args(["artifact", "verify"])
        .arg(dir)
        .output()
        .expect("run commentary")
}

#[test]
fn a_good_artifact_verifies() {
    let tmp = TempDir::new().expect("tmp");
    let (manifest, tensors) = sample_artifact(CommentaryKind::ExampleWeighting);
    let written = write_artifact(tmp.path(), manifest, &tensors).expect("write");
    let out = verify(tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: example-weighting commentary (bptt)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("10 parameter tensors, 1 insight tensors"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&written.tensors_sha256.to_string()),
        "{stdout}"
    );
}

#[test]
fn a_damaged_artifact_fails_with_every_problem_listed() {
    let tmp = TempDir::new().expect("tmp");
    let (manifest, mut tensors) = sample_artifact(CommentaryKind::LabelBlending);
    tensors.remove("commentary.logits");
    write_artifact(tmp.path(), manifest, &tensors).expect("write");
    let path = tmp.path().join(TENSORS_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).expect("write");

    let out = verify(tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a valid artifact"), "{stderr}");
    assert!(stderr.contains("sha256 is"), "{stderr}");
    assert!(
        stderr.contains("tensor \"commentary.logits\" (shape [10, 10]) is missing"),
        "{stderr}"
    );
}

#[test]
fn a_folder_without_an_artifact_is_refused() {
    let tmp = TempDir::new().expect("tmp");
    let out = verify(tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("manifest.json: file is missing"),
        "{stderr}"
    );
}
