//! The hypergradient engine on GPU backends agrees with the CPU backend. Built only with
//! `--features wgpu` (CI runs it on Mesa's software Vulkan driver, lavapipe).
#![cfg(feature = "wgpu")]

use burn::tensor::Device;
use schema::artifact::{Tensor, TensorMap, TensorValues, encode_tensors};
use trainer::verify::Problem;

/// A fixed 4-5-3 MLP weight-bptt problem with Adam (values from a simple LCG).
fn problem_bytes() -> Vec<u8> {
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut map = TensorMap::new();
    let mut f32s = |name: &str, shape: Vec<usize>, next: &mut dyn FnMut() -> f32| {
        let n = shape.iter().product();
        map.insert(
            name.into(),
            Tensor::f32(shape, (0..n).map(|_| next()).collect()).expect("shape"),
        );
    };
    f32s("student.layers.0.weight", vec![5, 4], &mut next);
    f32s("student.layers.0.bias", vec![5], &mut next);
    f32s("student.layers.1.weight", vec![3, 5], &mut next);
    f32s("student.layers.1.bias", vec![3], &mut next);
    f32s("train.x", vec![8, 4], &mut next);
    f32s("val.x", vec![6, 4], &mut next);
    f32s("commentary.logits", vec![8], &mut next);
    let ints = |values: Vec<i64>| {
        Tensor::new(vec![values.len()], TensorValues::I64(values)).expect("shape")
    };
    map.insert("train.y".into(), ints(vec![0, 1, 2, 0, 1, 2, 0, 1]));
    map.insert("val.y".into(), ints(vec![2, 1, 0, 2, 1, 0]));
    map.insert(
        "batches".into(),
        Tensor::new(
            vec![4, 3],
            TensorValues::I64(vec![0, 1, 2, 3, 4, 5, 6, 7, 0, 2, 4, 6]),
        )
        .expect("shape"),
    );
    let metadata = [
        ("problem", "weight-bptt"),
        ("optimizer", "adam"),
        ("inner_lr", "0.05"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    encode_tensors(&map, metadata).expect("encode")
}

#[test]
fn bptt_hypergradient_on_wgpu_matches_the_cpu() {
    let problem = Problem::parse(&problem_bytes()).expect("problem");
    let cpu = problem.solve(&Device::flex().autodiff()).expect("cpu");
    let gpu = problem
        .solve(&Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff())
        .expect("wgpu");
    let diff: f32 = cpu
        .hypergrad
        .iter()
        .zip(&gpu.hypergrad)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        .sqrt();
    let norm: f32 = cpu.hypergrad.iter().map(|a| a * a).sum::<f32>().sqrt();
    assert!(norm > 1e-6, "the problem's hypergradient is ~0");
    assert!(
        diff / norm < 1e-3,
        "wgpu vs cpu relative error {}",
        diff / norm
    );
    assert!((cpu.val_loss - gpu.val_loss).abs() < 1e-4);
}
