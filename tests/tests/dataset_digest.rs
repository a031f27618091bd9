//! The dataset digest identifies decoded content: the MNIST fixture has one digest as IDX, as an
//! image folder, as a zip or tar.gz, and shuffled; one changed pixel or label changes it. Fixed
//! vectors pin the byte layout, and an independent Python implementation agrees with it.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;
use tests::{
    Examples, MNIST_FIXTURE_DIGEST, cifar_batch, mnist_fixture, pseudo_random_bytes, tar_gz_dir,
    workspace_root, write_idx_split, write_image_folder_split, zip_dir,
};
use trainer::data::{Dataset, Limits, record_hash};

fn digest_of(path: &Path) -> String {
    Dataset::open(path, Limits::default())
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .summarize()
        .unwrap_or_else(|e| panic!("summarize {}: {e}", path.display()))
        .digest
        .to_string()
}

/// The fixture's splits in container (file) order.
fn fixture_splits() -> (Vec<String>, Examples, Examples) {
    let dataset = Dataset::open(&mnist_fixture(), Limits::default()).expect("fixture");
    let load = |split: &str| {
        let mut examples = Examples {
            shape: schema::ImageShape {
                height: 28,
                width: 28,
                channels: 1,
            },
            labels: Vec::new(),
            pixels: Vec::new(),
        };
        dataset
            .for_each_example(split, &mut |e| {
                examples.labels.push(e.label);
                examples.pixels.extend_from_slice(e.pixels);
                Ok(())
            })
            .expect("decode");
        examples
    };
    let train = load("train");
    let test = load("test");
    (dataset.classes().to_vec(), train, test)
}

#[test]
fn the_fixture_digest_is_pinned() {
    assert_eq!(digest_of(&mnist_fixture()), MNIST_FIXTURE_DIGEST);
}

#[test]
fn an_independent_python_implementation_computes_the_same_digest() {
    let output = Command::new("python3")
        .arg(workspace_root().join("scripts/digest_reference.py"))
        .arg(mnist_fixture())
        .output()
        .expect("python3 must be installed to run the reference implementation");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        MNIST_FIXTURE_DIGEST
    );
}

#[test]
fn the_fixture_has_one_digest_in_every_container_and_order() {
    let tmp = TempDir::new().expect("tmp");
    let (classes, train, test) = fixture_splits();

    // Shuffled, uncompressed IDX.
    let shuffled = tmp.path().join("shuffled");
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.reverse();
    order.swap(0, 4000);
    write_idx_split(&shuffled, "train", &train.permuted(&order), false);
    let test_order: Vec<usize> = (0..test.len()).rev().collect();
    write_idx_split(&shuffled, "t10k", &test.permuted(&test_order), false);
    assert_eq!(digest_of(&shuffled), MNIST_FIXTURE_DIGEST, "shuffled IDX");

    // A .tar.gz with one wrapping folder, as downloads often are.
    let tarball = tmp.path().join("mnist.tar.gz");
    tar_gz_dir(&mnist_fixture(), &tarball, Some("mnist"));
    assert_eq!(digest_of(&tarball), MNIST_FIXTURE_DIGEST, "tar.gz");

    // An image folder of PNGs, and a zip of it.
    let folder = tmp.path().join("folder");
    write_image_folder_split(&folder, "train", &train, &classes);
    write_image_folder_split(&folder, "test", &test, &classes);
    assert_eq!(digest_of(&folder), MNIST_FIXTURE_DIGEST, "image folder");
    let zip = tmp.path().join("mnist.zip");
    zip_dir(&folder, &zip);
    assert_eq!(
        digest_of(&zip),
        MNIST_FIXTURE_DIGEST,
        "zip of the image folder"
    );
}

#[test]
fn one_changed_pixel_or_label_changes_the_digest() {
    let tmp = TempDir::new().expect("tmp");
    let (_, train, test) = fixture_splits();
    let write = |name: &str, train: &Examples| {
        let dir = tmp.path().join(name);
        write_idx_split(&dir, "train", train, true);
        write_idx_split(&dir, "t10k", &test, true);
        digest_of(&dir)
    };
    assert_eq!(write("same", &train), MNIST_FIXTURE_DIGEST);
    let mut pixel = train.clone();
    pixel.pixels[5000 * 784 + 400] ^= 1;
    let pixel_digest = write("pixel", &pixel);
    let mut label = train.clone();
    label.labels[17] = (label.labels[17] + 1) % 10;
    let label_digest = write("label", &label);
    assert_ne!(pixel_digest, MNIST_FIXTURE_DIGEST);
    assert_ne!(label_digest, MNIST_FIXTURE_DIGEST);
    assert_ne!(pixel_digest, label_digest);
}

#[test]
fn canonical_order_does_not_depend_on_the_container_order() {
    let tmp = TempDir::new().expect("tmp");
    let (_, train, test) = fixture_splits();
    let order: Vec<usize> = (0..train.len()).rev().collect();
    write_idx_split(tmp.path(), "train", &train.permuted(&order), false);
    write_idx_split(tmp.path(), "t10k", &test, false);
    let original = Dataset::open(&mnist_fixture(), Limits::default())
        .and_then(|d| d.load_split("train"))
        .expect("original");
    let shuffled = Dataset::open(tmp.path(), Limits::default())
        .and_then(|d| d.load_split("train"))
        .expect("shuffled");
    assert_eq!(original.labels, shuffled.labels);
    assert_eq!(original.pixels, shuffled.pixels);
    // Canonical order is sorted by record hash.
    let hashes: Vec<[u8; 32]> = (0..original.len())
        .map(|i| record_hash(original.labels[i], original.image(i)))
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] <= w[1]));
}

/// A tiny two-split dataset whose digest is pinned (computed by scripts/digest_reference.py;
/// the worked example in docs/dataset-digest.md).
fn tiny_dataset(dir: &Path) {
    let shape = schema::ImageShape {
        height: 2,
        width: 2,
        channels: 1,
    };
    let train = Examples {
        shape,
        labels: vec![0, 1, 1],
        pixels: vec![0, 0, 0, 0, 255, 255, 255, 255, 1, 2, 3, 4],
    };
    let test = Examples {
        shape,
        labels: vec![1],
        pixels: vec![9, 8, 7, 6],
    };
    write_idx_split(dir, "train", &train, false);
    write_idx_split(dir, "t10k", &test, false);
}

#[test]
fn fixed_test_vectors_pin_the_byte_layout() {
    assert_eq!(
        hex(&record_hash(0, &[0, 0, 0, 0])),
        "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"
    );
    let tmp = TempDir::new().expect("tmp");
    tiny_dataset(tmp.path());
    assert_eq!(
        digest_of(tmp.path()),
        "sha256:7adbb878d5aed5215c80fb77ef30cf5015be7325902ea7e2f180581789213061"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn cifar_batches_and_the_same_pngs_share_a_digest() {
    let tmp = TempDir::new().expect("tmp");
    let shape = schema::ImageShape {
        height: 32,
        width: 32,
        channels: 3,
    };
    let make = |seed: u64, n: usize| Examples {
        shape,
        labels: (0..n)
            .map(|i| ((i * 7 + seed as usize) % 10) as u32)
            .collect(),
        pixels: pseudo_random_bytes(seed, n * 3072),
    };
    let (batch1, batch2, test) = (make(1, 6), make(2, 5), make(3, 4));
    let cifar = tmp.path().join("cifar/cifar-10-batches-bin");
    std::fs::create_dir_all(&cifar).expect("dir");
    std::fs::write(cifar.join("data_batch_1.bin"), cifar_batch(&batch1, None)).expect("b1");
    std::fs::write(cifar.join("data_batch_2.bin"), cifar_batch(&batch2, None)).expect("b2");
    std::fs::write(cifar.join("test_batch.bin"), cifar_batch(&test, None)).expect("test");
    let names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    std::fs::write(cifar.join("batches.meta.txt"), names.join("\n") + "\n\n").expect("meta");
    let tarball = tmp.path().join("cifar-10-binary.tar.gz");
    tar_gz_dir(&cifar, &tarball, Some("cifar-10-batches-bin"));

    let classes: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let folder = tmp.path().join("folder");
    let mut train = batch1.clone();
    train.labels.extend(&batch2.labels);
    train.pixels.extend(&batch2.pixels);
    write_image_folder_split(&folder, "train", &train, &classes);
    write_image_folder_split(&folder, "test", &test, &classes);

    let summary = Dataset::open(&tarball, Limits::default())
        .and_then(|d| d.summarize())
        .expect("cifar");
    assert_eq!(summary.format, schema::DatasetFormat::Cifar10);
    assert_eq!(summary.classes, classes);
    assert_eq!(summary.splits[0].examples, 11);
    assert_eq!(summary.splits[0].shape, shape);
    assert_eq!(summary.digest.to_string(), digest_of(&folder));
}

#[test]
fn cifar_100_uses_the_fine_labels() {
    let tmp = TempDir::new().expect("tmp");
    let shape = schema::ImageShape {
        height: 32,
        width: 32,
        channels: 3,
    };
    let examples = Examples {
        shape,
        labels: vec![99, 0, 42],
        pixels: pseudo_random_bytes(5, 3 * 3072),
    };
    let coarse = [19u8, 0, 7];
    std::fs::write(
        tmp.path().join("train.bin"),
        cifar_batch(&examples, Some(&coarse)),
    )
    .expect("train");
    std::fs::write(
        tmp.path().join("test.bin"),
        cifar_batch(&examples, Some(&coarse)),
    )
    .expect("test");
    let summary = Dataset::open(tmp.path(), Limits::default())
        .and_then(|d| d.summarize())
        .expect("cifar-100");
    assert_eq!(summary.format, schema::DatasetFormat::Cifar100);
    assert_eq!(summary.classes.len(), 100);
    let counts = &summary.splits[0].class_counts;
    assert_eq!(
        (counts[99], counts[0], counts[42], counts[19]),
        (1, 1, 1, 0)
    );
}

#[test]
fn greyscale_with_alpha_decodes_to_one_channel_and_rgba_to_three() {
    let tmp = TempDir::new().expect("tmp");
    let la = tmp.path().join("train/a/x.png");
    let rgba = tmp.path().join("test/a/y.png");
    std::fs::create_dir_all(la.parent().expect("parent")).expect("dir");
    std::fs::create_dir_all(rgba.parent().expect("parent")).expect("dir");
    image::save_buffer(
        &la,
        &[10, 255, 20, 0, 30, 128, 40, 255],
        2,
        2,
        image::ExtendedColorType::La8,
    )
    .expect("la");
    image::save_buffer(
        &rgba,
        &[1, 2, 3, 255].repeat(4),
        2,
        2,
        image::ExtendedColorType::Rgba8,
    )
    .expect("rgba");
    let dataset = Dataset::open(tmp.path(), Limits::default()).expect("open");
    let train = dataset.load_split("train").expect("train");
    assert_eq!(train.shape.channels, 1);
    assert_eq!(train.pixels, vec![10, 20, 30, 40]);
    let test = dataset.load_split("test").expect("test");
    assert_eq!(test.shape.channels, 3);
    assert_eq!(test.pixels, [1, 2, 3].repeat(4));
}
