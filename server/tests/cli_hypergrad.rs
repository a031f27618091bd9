//! `commentary hypergrad`: solves a problem file and writes the answer; malformed problem files
//! fail with an error naming the tensor or key.

use std::process::Command;

use schema::artifact::{
    Tensor, TensorMap, TensorValues, decode_metadata, decode_tensors, encode_tensors,
};
use tempfile::TempDir;

fn base(metadata: &[(&str, &str)]) -> (TensorMap, Vec<(String, String)>) {
    let mut map = TensorMap::new();
    let f = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        Tensor::f32(
            shape,
            (0..n)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0)
                .collect(),
        )
        .expect("shape")
    };
    map.insert("student.layers.0.weight".into(), f(vec![3, 4]));
    map.insert("student.layers.0.bias".into(), f(vec![3]));
    map.insert("train.x".into(), f(vec![6, 4]));
    map.insert("val.x".into(), f(vec![5, 4]));
    map.insert("commentary.logits".into(), f(vec![6]));
    let ints =
        |shape: Vec<usize>, v: Vec<i64>| Tensor::new(shape, TensorValues::I64(v)).expect("shape");
    map.insert("train.y".into(), ints(vec![6], vec![0, 1, 2, 0, 1, 2]));
    map.insert("val.y".into(), ints(vec![5], vec![2, 1, 0, 1, 2]));
    map.insert("batches".into(), ints(vec![2, 3], vec![0, 1, 2, 3, 4, 5]));
    let metadata = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (map, metadata)
}

fn run(tmp: &TempDir, map: &TensorMap, metadata: &[(String, String)]) -> std::process::Output {
    run_with(tmp, map, metadata, &[])
}

fn run_with(
    tmp: &TempDir,
    map: &TensorMap,
    metadata: &[(String, String)],
    flags: &[&str],
) -> std::process::Output {
    let spec = tmp.path().join("problem.safetensors");
    std::fs::write(
        &spec,
        encode_tensors(map, metadata.to_vec()).expect("encode"),
    )
    .expect("write");
    Command::new(env!("CARGO_BIN_EXE_commentary"))
        .arg("hypergrad")
        .arg(&spec)
        .arg("--out")
        .arg(tmp.path().join("out.safetensors"))
        .args(flags)
        .output()
        .expect("run")
}

/// The method named in an output file's metadata.
fn method_of(tmp: &TempDir) -> Option<String> {
    let bytes = std::fs::read(tmp.path().join("out.safetensors")).expect("out");
    decode_metadata(&bytes)
        .expect("metadata")
        .get("hypergradient")
        .cloned()
}

const SGD: &[(&str, &str)] = &[
    ("problem", "weight-bptt"),
    ("optimizer", "sgd"),
    ("inner_lr", "0.1"),
];

#[test]
fn a_problem_is_solved_and_the_answer_written() {
    let tmp = TempDir::new().expect("tmp");
    let (map, metadata) = base(SGD);
    let out = run(&tmp, &map, &metadata);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("val_loss="));
    let answer = decode_tensors(&std::fs::read(tmp.path().join("out.safetensors")).expect("out"))
        .expect("tensors");
    assert_eq!(answer["hypergrad"].shape(), [6]);
    assert_eq!(answer["val_loss"].shape(), [1]);
    assert!(
        answer["hypergrad"]
            .as_f32()
            .expect("f32")
            .iter()
            .any(|v| *v != 0.0)
    );
    assert_eq!(method_of(&tmp).as_deref(), Some("exact"));
}

#[test]
fn finite_difference_answers_are_labelled_approximate() {
    let (mut map, metadata) = base(&[
        ("problem", "blend-ift"),
        ("neumann_terms", "1"),
        ("neumann_lr", "0.1"),
    ]);
    map.remove("batches");
    map.insert(
        "pairs".into(),
        Tensor::new(vec![6], TensorValues::I64(vec![3, 4, 5, 0, 1, 2])).expect("t"),
    );
    map.insert(
        "commentary.logits".into(),
        Tensor::f32(vec![3, 3], vec![0.1; 9]).expect("t"),
    );
    for (flags, method, printed) in [
        (&[][..], "exact", "method=exact"),
        (
            &["--approximate"][..],
            "finite-difference",
            "method=finite-difference (approximate)",
        ),
    ] {
        let tmp = TempDir::new().expect("tmp");
        let out = run_with(&tmp, &map, &metadata, flags);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(printed), "{stdout}");
        assert_eq!(method_of(&tmp).as_deref(), Some(method));
    }

    // The differences' step is the problem's to set, and the answer records the one used.
    let mut stepped = metadata.clone();
    stepped.push(("finite_difference_step".into(), "0.002".into()));
    let tmp = TempDir::new().expect("tmp");
    let out = run_with(&tmp, &map, &stepped, &["--approximate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(tmp.path().join("out.safetensors")).expect("out");
    let recorded = decode_metadata(&bytes).expect("metadata");
    assert_eq!(recorded["finite_difference_step"], "0.002");
    let mut bad = metadata.clone();
    bad.push(("finite_difference_step".into(), "2".into()));
    let tmp = TempDir::new().expect("tmp");
    let out = run_with(&tmp, &map, &bad, &["--approximate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("finite_difference_step"), "{stderr}");

    // BPTT problems have no finite-difference route: refused, not silently exact.
    let (map, metadata) = base(SGD);
    let tmp = TempDir::new().expect("tmp");
    let out = run_with(&tmp, &map, &metadata, &["--approximate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("IFT problems (blend-ift) only"), "{stderr}");
}

/// Runs a damaged problem and returns stderr, checking the failure is clean.
fn fails(map: &TensorMap, metadata: &[(String, String)]) -> String {
    let tmp = TempDir::new().expect("tmp");
    let out = run(&tmp, map, metadata);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn malformed_problems_name_the_tensor_or_key() {
    let (map, metadata) = base(SGD);

    let mut missing = map.clone();
    missing.remove("val.x");
    assert!(fails(&missing, &metadata).contains("tensor \"val.x\" is missing"));

    let mut shape = map.clone();
    shape.insert(
        "commentary.logits".into(),
        Tensor::f32(vec![5], vec![0.0; 5]).expect("t"),
    );
    assert!(
        fails(&shape, &metadata)
            .contains("tensor \"commentary.logits\" has shape [5]; expected [6]")
    );

    let mut dtype = map.clone();
    dtype.insert(
        "train.y".into(),
        Tensor::f32(vec![6], vec![0.0; 6]).expect("t"),
    );
    assert!(fails(&dtype, &metadata).contains("tensor \"train.y\" has dtype F32; it must be I64"));

    let mut range = map.clone();
    range.insert(
        "batches".into(),
        Tensor::new(vec![2, 3], TensorValues::I64(vec![0, 1, 2, 3, 4, 6])).expect("t"),
    );
    assert!(
        fails(&range, &metadata)
            .contains("tensor \"batches\" holds 6 at flat index 5, out of range [0, 6)")
    );

    let mut nan = map.clone();
    nan.insert(
        "train.x".into(),
        Tensor::f32(vec![6, 4], [vec![f32::NAN], vec![0.0; 23]].concat()).expect("t"),
    );
    assert!(
        fails(&nan, &metadata)
            .contains("tensor \"train.x\" holds a non-finite value (NaN) at flat index 0")
    );

    let (_, adagrad) = base(&[
        ("problem", "weight-bptt"),
        ("optimizer", "adagrad"),
        ("inner_lr", "0.1"),
    ]);
    assert!(fails(&map, &adagrad).contains("metadata \"optimizer\" = \"adagrad\" is unknown"));

    let (_, no_lr) = base(&[("problem", "weight-bptt"), ("optimizer", "sgd")]);
    assert!(fails(&map, &no_lr).contains("metadata \"inner_lr\" is missing"));

    let (_, unknown) = base(&[("problem", "curriculum")]);
    assert!(fails(&map, &unknown).contains("metadata \"problem\" = \"curriculum\" is unknown"));

    let tmp = TempDir::new().expect("tmp");
    let spec = tmp.path().join("garbage.safetensors");
    std::fs::write(&spec, b"not a safetensors file").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_commentary"))
        .args([
            "hypergrad",
            spec.to_str().expect("utf-8"),
            "--out",
            "/dev/null",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("garbage.safetensors") && stderr.contains("not a problem file"),
        "{stderr}"
    );
}
