//! A dataset folder of fuzzed files: IDX (plain and gzip), CIFAR-10/100 binary batches and
//! their class-name files, NumPy `.npy` arrays and `.npz` archives, and image folders (PNG,
//! JPEG). The input is pairs of parts: a name selector (its first byte picks from `NAMES`) and
//! the file's bytes.
#![no_main]

use commentary_fuzz::{decode_everything, parts};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "val-images-idx3-ubyte",
    "val-labels-idx1-ubyte",
    "data_batch_1.bin",
    "data_batch_2.bin",
    "test_batch.bin",
    "batches.meta.txt",
    "train.bin",
    "test.bin",
    "fine_label_names.txt",
    "train_images.npy",
    "train_labels.npy",
    "test_images.npy",
    "test_labels.npy",
    "classes.npy",
    "data.npz",
    "train/0/a.png",
    "train/1/b.png",
    "train/0/c.jpg",
    "test/0/d.png",
    "test/1/e.jpeg",
    "train/cat/f.png",
];

fuzz_target!(|data: &[u8]| {
    let Ok(root) = tempfile::tempdir() else {
        return;
    };
    let dir = root.path().join("dataset");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let parts = parts(data);
    for pair in parts.chunks(2) {
        let [name, bytes] = pair else { break };
        let Some(&selector) = name.first() else {
            continue;
        };
        let path = dir.join(NAMES[usize::from(selector) % NAMES.len()]);
        if let Some(parent) = path.parent()
            && std::fs::create_dir_all(parent).is_err()
        {
            return;
        }
        if std::fs::write(&path, bytes).is_err() {
            return;
        }
    }
    decode_everything(&dir);
});
