//! Helpers for the end-to-end tests: the MNIST fixture, and writers that lay the same examples
//! out in every container format (IDX, image folders, CIFAR batches, tar.gz, zip), plus
//! well-formed commentary artifacts to verify or damage.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use schema::arch::{ArchitectureSpec, CommentarySpec, MaskRange, NetSpec};
use schema::artifact::{
    ArtifactManifest, DatasetRef, HypergradientMethod, Provenance, Tensor, TensorMap, TensorValues,
    TimeInput, Validation,
};
use schema::{Algorithm, CommentaryKind, ImageShape, LearnConfig, Sha256};

/// The digest of the MNIST fixture, pinned: it must never change.
pub const MNIST_FIXTURE_DIGEST: &str =
    "sha256:534e375064a72cafa0134c0cc804ba53df9f0e7db5db256ed4733ed1c19731b4";

/// A test service's setting (`COMMENTARY_TEST_DATABASE_URL`, ...) from the environment. Unset,
/// the test skips, saying so; unset while `COMMENTARY_TEST_REQUIRE_SERVICES` is set (`.ci/run`
/// sets it), the test fails, so CI never skips a service quietly.
pub fn service_env(name: &str) -> Option<String> {
    if let Ok(value) = std::env::var(name) {
        return Some(value);
    }
    assert!(
        std::env::var_os("COMMENTARY_TEST_REQUIRE_SERVICES").is_none(),
        "{name} is not set, and COMMENTARY_TEST_REQUIRE_SERVICES says the services must be tested \
         (scripts/test-services.sh start; source target/test-services.env)"
    );
    eprintln!("{name} is not set: skipped (scripts/test-services.sh starts the services)");
    None
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Learning flags of a small, fast run on the fixture: MLP student and teacher, 10 inner steps,
/// validation batches of 128 (`commentary learn` and `commentary run create` take them alike).
pub const FAST_LEARN_FLAGS: &[&str] = &[
    "--inner-steps",
    "10",
    "--student",
    "mlp:32",
    "--commentary-net",
    "mlp:16",
    "--validation-batch-size",
    "128",
];

/// `fixtures/mnist`: 8,004 train and 1,996 test digits as gzipped IDX.
pub fn mnist_fixture() -> PathBuf {
    workspace_root().join("fixtures").join("mnist")
}

/// Examples of one split, in memory, in any order.
#[derive(Debug, Clone)]
pub struct Examples {
    pub shape: ImageShape,
    pub labels: Vec<u32>,
    pub pixels: Vec<u8>,
}

impl Examples {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.shape.pixel_bytes().unwrap_or(0);
        &self.pixels[index * size..(index + 1) * size]
    }

    /// The same examples in the order `order` gives.
    pub fn permuted(&self, order: &[usize]) -> Self {
        let mut pixels = Vec::with_capacity(self.pixels.len());
        for &i in order {
            pixels.extend_from_slice(self.image(i));
        }
        Self {
            shape: self.shape,
            labels: order.iter().map(|&i| self.labels[i]).collect(),
            pixels,
        }
    }
}

impl From<trainer::data::SplitData> for Examples {
    fn from(data: trainer::data::SplitData) -> Self {
        Self {
            shape: data.shape,
            labels: data.labels,
            pixels: data.pixels,
        }
    }
}

fn create(path: &Path) -> File {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent folder");
    }
    File::create(path).expect("create file")
}

/// Writes raw bytes, gzip-compressed when `gz`.
pub fn write_maybe_gz(path: &Path, bytes: &[u8], gz: bool) {
    let file = create(path);
    if gz {
        let mut encoder = GzEncoder::new(file, Compression::fast());
        encoder.write_all(bytes).expect("write gz");
        encoder.finish().expect("finish gz");
    } else {
        let mut file = file;
        file.write_all(bytes).expect("write");
    }
}

/// IDX header bytes for u8 data of the given dimensions.
pub fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut header = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        header.extend_from_slice(&d.to_be_bytes());
    }
    header
}

/// Writes `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte` (with `.gz` when `gz`).
pub fn write_idx_split(dir: &Path, prefix: &str, examples: &Examples, gz: bool) {
    let n = examples.len() as u32;
    let ImageShape {
        height,
        width,
        channels,
    } = examples.shape;
    let (dims, kind) = if channels == 1 {
        (vec![n, height, width], 3)
    } else {
        (vec![n, height, width, channels], 4)
    };
    let ext = if gz { ".gz" } else { "" };
    let mut images = idx_header(&dims);
    images.extend_from_slice(&examples.pixels);
    write_maybe_gz(
        &dir.join(format!("{prefix}-images-idx{kind}-ubyte{ext}")),
        &images,
        gz,
    );
    let mut labels = idx_header(&[n]);
    labels.extend(examples.labels.iter().map(|&l| l as u8));
    write_maybe_gz(
        &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
        &labels,
        gz,
    );
}

/// Writes examples as PNG files under `<dir>/<split>/<class name>/<i>.png`.
pub fn write_image_folder_split(dir: &Path, split: &str, examples: &Examples, classes: &[String]) {
    let ImageShape {
        height,
        width,
        channels,
    } = examples.shape;
    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    for i in 0..examples.len() {
        let class = &classes[examples.labels[i] as usize];
        let path = dir.join(split).join(class).join(format!("{i:06}.png"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("class folder");
        }
        image::save_buffer(&path, examples.image(i), width, height, color).expect("write png");
    }
}

/// Packs `src` into a .tar.gz, its contents under `wrapper/` when given.
pub fn tar_gz_dir(src: &Path, dest: &Path, wrapper: Option<&str>) {
    let encoder = GzEncoder::new(create(dest), Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    builder
        .append_dir_all(wrapper.unwrap_or("."), src)
        .expect("append folder");
    builder
        .into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gz");
}

/// Packs `src` into a .zip (deflate), paths relative to `src`.
pub fn zip_dir(src: &Path, dest: &Path) {
    let mut zip = zip::ZipWriter::new(create(dest));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut stack = vec![src.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let name = path
            .strip_prefix(src)
            .expect("inside src")
            .to_string_lossy()
            .replace('\\', "/");
        zip.start_file(name, options).expect("zip entry");
        zip.write_all(&std::fs::read(&path).expect("read file"))
            .expect("write zip entry");
    }
    zip.finish().expect("finish zip");
}

/// CIFAR-10 batch bytes for 32x32x3 examples (label byte, then planar RGB).
pub fn cifar_batch(examples: &Examples, coarse_labels: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..examples.len() {
        if let Some(coarse) = coarse_labels {
            out.push(coarse[i]);
        }
        out.push(examples.labels[i] as u8);
        let image = examples.image(i);
        for channel in 0..3 {
            out.extend((0..1024).map(|p| image[p * 3 + channel]));
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no seed plumbing.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A dataset reference for artifacts learned on 28x28x1, 10-class data.
pub fn mnist_like_dataset_ref(train_examples: u64) -> DatasetRef {
    DatasetRef {
        digest: Sha256::parse(MNIST_FIXTURE_DIGEST).expect("pinned digest"),
        shape: ImageShape {
            height: 28,
            width: 28,
            channels: 1,
        },
        classes: (0..10).map(|c| c.to_string()).collect(),
        train_examples,
    }
}

/// The commentary spec a test artifact of `kind` uses.
pub fn spec_for(kind: CommentaryKind) -> CommentarySpec {
    match kind {
        CommentaryKind::ExampleWeighting => CommentarySpec::Teacher {
            net: NetSpec::Cbr,
            label_input: true,
            label_head: false,
        },
        CommentaryKind::LabelBlending => CommentarySpec::BlendMatrix,
        CommentaryKind::AttentionMask => CommentarySpec::MaskNet {
            net: NetSpec::Mlp { hidden: vec![32] },
            range: MaskRange::Half,
        },
    }
}

/// A complete, valid manifest and tensor set of `kind` (parameters filled with a ramp, plus one
/// insight tensor), ready for `write_artifact`.
pub fn sample_artifact(kind: CommentaryKind) -> (ArtifactManifest, TensorMap) {
    let dataset = mnist_like_dataset_ref(100);
    let commentary = spec_for(kind);
    let mut tensors = TensorMap::new();
    for (name, shape) in commentary.parameter_shapes(dataset.shape, dataset.classes.len(), 100) {
        let count: usize = shape.iter().product();
        let values = (0..count).map(|i| (i % 97) as f32 * 0.01 - 0.3).collect();
        tensors.insert(name, Tensor::f32(shape, values).expect("shape fits"));
    }
    tensors.insert(
        "insight.classes".into(),
        Tensor::new(vec![3], TensorValues::I64(vec![0, 1, 2])).expect("insight"),
    );
    let manifest = ArtifactManifest {
        format_version: schema::artifact::FORMAT_VERSION,
        kind,
        algorithm: match kind {
            CommentaryKind::ExampleWeighting => Algorithm::Bptt,
            _ => Algorithm::Ift,
        },
        dataset,
        validation: Validation::holdout(vec![3, 10, 42]),
        time_input: TimeInput::Progress,
        architecture: ArchitectureSpec {
            student: NetSpec::Cbr,
            commentary,
        },
        config: LearnConfig::default(),
        hypergradient: HypergradientMethod::Exact,
        metrics: BTreeMap::from([("val_loss".to_owned(), 0.25)]),
        provenance: Provenance {
            trainer_version: "test".into(),
            backend: "flex".into(),
            device: "cpu".into(),
            seed: 7,
            run_id: None,
            created_at: chrono_now(),
        },
        tensors_sha256: Sha256([0; 32]),
    };
    (manifest, tensors)
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
