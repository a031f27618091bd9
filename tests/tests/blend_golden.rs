//! The golden file of label blending that the Python client's `LabelBlending.mix` must
//! reproduce (python/tests/test_apply.py): a fixed batch, labels, in-batch partner permutation
//! and blend logits, with the blended images and soft targets the trainer computes from them.
//!
//! The test computes the blend with the trainer's own `blend` and compares it with the
//! committed file, so the file cannot drift from the trainer; `COMMENTARY_UPDATE_GOLDEN=1`
//! rewrites it.

use burn::tensor::{Int, Tensor, TensorData};
use schema::artifact::{
    Tensor as FileTensor, TensorMap, TensorValues, decode_tensors, encode_tensors,
};
use tests::workspace_root;
use trainer::commentary::blending::blend;
use trainer::data::tensors::LabelledImages;
use trainer::nn::loss::one_hot;

const BATCH: usize = 6;
const CLASSES: usize = 3;
const SIDE: usize = 4;
const LABELS: [i64; BATCH] = [0, 1, 2, 2, 1, 0];
/// Example i is blended with example PAIRS[i].
const PAIRS: [i64; BATCH] = [3, 0, 5, 1, 2, 4];

fn values(t: Tensor<2>) -> Vec<f32> {
    t.to_data().iter::<f32>().collect()
}

#[test]
fn label_blending_golden_file_matches_the_trainer() {
    let device = burn::tensor::Device::flex();
    let pixels: Vec<f32> = (0..BATCH * SIDE * SIDE)
        .map(|i| ((i * 37) % 256) as f32 / 255.0)
        .collect();
    let labels = LABELS.to_vec();
    let pairs = PAIRS.to_vec();
    let logits: Vec<f32> = vec![-1.5, 0.25, 2.0, 0.5, -0.75, 1.25, 3.0, -2.0, 0.0];
    let batch = LabelledImages {
        images: Tensor::<1>::from_data(TensorData::new(pixels.clone(), [pixels.len()]), &device)
            .reshape([BATCH, 1, SIDE, SIDE]),
        onehot: one_hot(
            &Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [BATCH]), &device),
            CLASSES,
        ),
    };
    let phi = Tensor::<1>::from_data(TensorData::new(logits.clone(), [logits.len()]), &device);
    let pair_index = Tensor::<1, Int>::from_data(TensorData::new(pairs.clone(), [BATCH]), &device);
    let (images, targets) = blend(&phi, &batch, &pair_index);
    let mixed = values(images.reshape([BATCH, SIDE * SIDE]));
    let soft = values(targets);

    let mut golden = TensorMap::new();
    let mut put = |name: &str, shape: Vec<usize>, values: TensorValues| {
        golden.insert(name.into(), FileTensor::new(shape, values).expect("shape"));
    };
    put(
        "images",
        vec![BATCH, 1, SIDE, SIDE],
        TensorValues::F32(pixels),
    );
    put("labels", vec![BATCH], TensorValues::I64(labels));
    put("pairs", vec![BATCH], TensorValues::I64(pairs));
    put("logits", vec![CLASSES, CLASSES], TensorValues::F32(logits));
    put(
        "mixed",
        vec![BATCH, 1, SIDE, SIDE],
        TensorValues::F32(mixed.clone()),
    );
    put(
        "targets",
        vec![BATCH, CLASSES],
        TensorValues::F32(soft.clone()),
    );

    let path = workspace_root().join("python/tests/golden/blend.safetensors");
    if std::env::var_os("COMMENTARY_UPDATE_GOLDEN").is_some() {
        let bytes = encode_tensors(&golden, []).expect("encode");
        std::fs::write(&path, bytes).expect("write the golden file");
    }
    let committed = decode_tensors(&std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (COMMENTARY_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    }))
    .expect("decode the golden file");
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>()
    );
    for (name, expected) in &golden {
        let stored = &committed[name];
        assert_eq!(stored.shape(), expected.shape(), "{name}");
        match (stored.values(), expected.values()) {
            (TensorValues::F32(a), TensorValues::F32(b)) => {
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= 1e-6, "{name}: {x} vs {y}");
                }
            }
            (a, b) => assert_eq!(a, b, "{name}"),
        }
    }
    // lambda = 1 - 0.5 sigmoid(M[y_i, y_j]) is in (0.5, 1): an example blended with another
    // class keeps more than half of its own label, and not all of it.
    for (i, (&label, &pair)) in LABELS.iter().zip(&PAIRS).enumerate() {
        let own = soft[i * CLASSES + label as usize];
        if label != LABELS[pair as usize] {
            assert!(own > 0.5 && own < 1.0, "example {i}: own share {own}");
        }
    }
}
