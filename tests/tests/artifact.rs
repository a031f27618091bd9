//! The artifact round trip: write, verify, and open the tensors from Python's `safetensors`
//! package; and the verifier's word on damaged artifacts.

use std::process::Command;

use schema::CommentaryKind;
use schema::artifact::{
    ArtifactError, FORMAT_VERSION, MANIFEST_FILE, REPORT_FILE, TENSORS_FILE, Tensor, TensorValues,
    TimeInput, Validation, verify_artifact, write_artifact,
};
use tempfile::TempDir;
use tests::sample_artifact;

fn problems(err: ArtifactError) -> Vec<String> {
    match err {
        ArtifactError::Invalid { problems, .. } => problems,
        other => panic!("expected an invalid-artifact error, got {other}"),
    }
}

#[test]
fn every_kind_round_trips_through_write_and_verify() {
    for kind in CommentaryKind::ALL {
        let tmp = TempDir::new().expect("tmp");
        let (manifest, tensors) = sample_artifact(kind);
        let written = write_artifact(tmp.path(), manifest, &tensors).expect("write");
        let verified = verify_artifact(tmp.path()).expect("verify");
        assert_eq!(verified.manifest, written, "{kind}");
        assert_eq!(verified.tensors, tensors, "{kind}");
        assert!(verified.report.is_none());
        let bytes = std::fs::read(tmp.path().join(TENSORS_FILE)).expect("tensors");
        assert_eq!(written.tensors_sha256, schema::Sha256::of(&bytes));
        // No temporary files are left beside the artifact.
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [MANIFEST_FILE, TENSORS_FILE]);
    }
}

#[test]
fn python_safetensors_opens_the_tensors() {
    let tmp = TempDir::new().expect("tmp");
    let (manifest, tensors) = sample_artifact(CommentaryKind::LabelBlending);
    write_artifact(tmp.path(), manifest, &tensors).expect("write");
    let script = r#"
import json, sys
from safetensors import safe_open
from safetensors.numpy import load_file
path = sys.argv[1]
tensors = load_file(path)
with safe_open(path, framework="numpy") as f:
    metadata = f.metadata()
print(json.dumps({
    "metadata": metadata,
    "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype),
                       "values": t.ravel().tolist()} for name, t in tensors.items()},
}))
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(tmp.path().join(TENSORS_FILE))
        .output()
        .expect("python3 must be installed");
    assert!(
        output.status.success(),
        "python could not open the tensors (scripts/test.sh installs the safetensors package): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(seen["metadata"]["commentary_kind"], "label-blending");
    let logits = &seen["tensors"]["commentary.logits"];
    assert_eq!(logits["shape"], serde_json::json!([10, 10]));
    assert_eq!(logits["dtype"], "float32");
    let expected = tensors["commentary.logits"].as_f32().expect("f32");
    let values: Vec<f32> = logits["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    assert_eq!(values, expected);
    assert_eq!(seen["tensors"]["insight.classes"]["dtype"], "int64");
    assert_eq!(
        seen["tensors"]["insight.classes"]["values"],
        serde_json::json!([0, 1, 2])
    );
}

#[test]
fn changed_tensor_bytes_fail_the_hash_check() {
    let tmp = TempDir::new().expect("tmp");
    let (manifest, tensors) = sample_artifact(CommentaryKind::AttentionMask);
    write_artifact(tmp.path(), manifest, &tensors).expect("write");
    let path = tmp.path().join(TENSORS_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&path, bytes).expect("write");
    let found = problems(verify_artifact(tmp.path()).expect_err("tampered"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("sha256 is") && found[0].contains("changed or damaged"),
        "{found:?}"
    );
}

#[test]
fn missing_misshapen_mistyped_extra_and_non_finite_tensors_are_each_named() {
    let tmp = TempDir::new().expect("tmp");
    let (manifest, mut tensors) = sample_artifact(CommentaryKind::ExampleWeighting);
    tensors.remove("commentary.conv2.bias");
    tensors.insert(
        "commentary.fc.bias".into(),
        Tensor::f32(vec![2], vec![0.0, 1.0]).expect("t"),
    );
    tensors.insert(
        "commentary.bn1.weight".into(),
        Tensor::new(vec![32], TensorValues::I64(vec![1; 32])).expect("t"),
    );
    let mut conv = tensors["commentary.conv1.weight"]
        .as_f32()
        .expect("f32")
        .to_vec();
    conv[7] = f32::NAN;
    tensors.insert(
        "commentary.conv1.weight".into(),
        Tensor::f32(vec![32, 2, 5, 5], conv).expect("t"),
    );
    tensors.insert("stray".into(), Tensor::f32(vec![1], vec![0.0]).expect("t"));
    write_artifact(tmp.path(), manifest, &tensors).expect("write");
    let found = problems(verify_artifact(tmp.path()).expect_err("invalid"));
    let all = found.join("\n");
    assert!(
        all.contains("\"commentary.conv2.bias\" (shape [64]) is missing"),
        "{all}"
    );
    assert!(
        all.contains(
            "\"commentary.fc.bias\" has shape [2]; the example-weighting commentary needs [1]"
        ),
        "{all}"
    );
    assert!(
        all.contains("\"commentary.bn1.weight\" has dtype I64; parameters are F32"),
        "{all}"
    );
    assert!(
        all.contains("\"commentary.conv1.weight\" holds a non-finite value (NaN) at flat index 7"),
        "{all}"
    );
    assert!(all.contains("unexpected tensor \"stray\""), "{all}");
    assert_eq!(found.len(), 5, "{all}");
}

#[test]
fn inconsistent_manifests_are_explained() {
    let tmp = TempDir::new().expect("tmp");
    let (mut manifest, tensors) = sample_artifact(CommentaryKind::LabelBlending);
    manifest.kind = CommentaryKind::AttentionMask;
    manifest.validation = Validation::holdout(vec![5, 4]);
    write_artifact(tmp.path(), manifest.clone(), &tensors).expect("write");
    let all = problems(verify_artifact(tmp.path()).expect_err("invalid")).join("\n");
    assert!(
        all.contains(
            "kind is attention-mask but architecture.commentary describes a label-blending"
        ),
        "{all}"
    );
    assert!(all.contains("strictly increasing (4 follows 5)"), "{all}");

    manifest.kind = CommentaryKind::LabelBlending;
    manifest.validation = Validation::holdout(vec![1, 100]);
    write_artifact(tmp.path(), manifest, &tensors).expect("write");
    let all = problems(verify_artifact(tmp.path()).expect_err("invalid")).join("\n");
    assert!(
        all.contains("validation index 100 is out of range (the train split has 100 examples)"),
        "{all}"
    );
}

#[test]
fn unreadable_manifests_name_the_file_and_the_reason() {
    let tmp = TempDir::new().expect("tmp");
    let err = verify_artifact(tmp.path()).expect_err("empty folder");
    assert!(
        matches!(err, ArtifactError::Missing { .. }) && err.to_string().contains(MANIFEST_FILE),
        "{err}"
    );

    let (manifest, tensors) = sample_artifact(CommentaryKind::LabelBlending);
    write_artifact(tmp.path(), manifest, &tensors).expect("write");
    let manifest_path = tmp.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).expect("read");

    std::fs::write(&manifest_path, text.replace("\"kind\"", "\"knd\"")).expect("write");
    let err = verify_artifact(tmp.path())
        .expect_err("bad field")
        .to_string();
    assert!(err.contains(MANIFEST_FILE) && err.contains("knd"), "{err}");

    std::fs::write(
        &manifest_path,
        text.replace(
            &format!("\"format_version\": {FORMAT_VERSION}"),
            "\"format_version\": 9",
        ),
    )
    .expect("write");
    let err = verify_artifact(tmp.path())
        .expect_err("future version")
        .to_string();
    assert!(err.contains("format_version 9 is not supported"), "{err}");

    std::fs::write(&manifest_path, &text).expect("restore");
    std::fs::write(tmp.path().join(REPORT_FILE), "{ not json").expect("report");
    let all = problems(verify_artifact(tmp.path()).expect_err("bad report")).join("\n");
    assert!(all.contains("report.json: not valid JSON"), "{all}");

    std::fs::write(tmp.path().join(REPORT_FILE), "{\"runs\": []}").expect("report");
    assert!(verify_artifact(tmp.path()).expect("valid").report.is_some());
}

#[test]
fn a_format_version_1_manifest_still_loads_with_its_meaning() {
    let tmp = TempDir::new().expect("tmp");
    let (manifest, tensors) = sample_artifact(CommentaryKind::ExampleWeighting);
    write_artifact(tmp.path(), manifest, &tensors).expect("write");
    let manifest_path = tmp.path().join(MANIFEST_FILE);
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("read")).expect("json");
    let object = value.as_object_mut().expect("object");
    object.remove("validation");
    object.remove("time_input");
    object.insert("format_version".into(), 1.into());
    object.insert("validation_indices".into(), serde_json::json!([3, 10, 42]));
    std::fs::write(&manifest_path, serde_json::to_vec(&value).expect("json")).expect("write");

    let verified = verify_artifact(tmp.path()).expect("a version 1 artifact verifies");
    assert_eq!(verified.manifest.format_version, 1);
    assert_eq!(
        verified.manifest.validation,
        Validation::holdout(vec![3, 10, 42])
    );
    assert_eq!(verified.manifest.time_input, TimeInput::ClampedIteration);

    // Version 2 fields in a version 1 manifest (or the reverse) are refused.
    let object = value.as_object_mut().expect("object");
    object.insert("format_version".into(), 2.into());
    std::fs::write(&manifest_path, serde_json::to_vec(&value).expect("json")).expect("write");
    let err = verify_artifact(tmp.path())
        .expect_err("mixed versions")
        .to_string();
    assert!(
        err.contains("validation_indices belongs to format version 1"),
        "{err}"
    );
}
