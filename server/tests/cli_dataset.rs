//! `commentary dataset hash|inspect` as a user runs them: on the fixture, and on every kind of
//! bad input, which must fail with a non-zero exit, a message naming the file and the problem,
//! no panic, and nothing left outside a temporary folder.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::Compression;
use flate2::write::GzEncoder;
use tempfile::TempDir;
use tests::{
    Examples, MNIST_FIXTURE_DIGEST, idx_header, mnist_fixture, tar_gz_dir, write_idx_split,
};

/// Runs `commentary` with `TMPDIR` pointed at `tmp`, so extraction stays inside it.
fn commentary(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_commentary"))
        .args(args)
        .env("TMPDIR", tmp)
        .output()
        .expect("run commentary")
}

/// A test's scratch space: `inputs/` for what the user gives, `tmp/` as the process's TMPDIR.
struct Scratch {
    _root: TempDir,
    inputs: PathBuf,
    tmp: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let root = TempDir::new().expect("tempdir");
        let inputs = root.path().join("inputs");
        let tmp = root.path().join("tmp");
        std::fs::create_dir_all(&inputs).expect("inputs");
        std::fs::create_dir_all(&tmp).expect("tmp");
        Self {
            _root: root,
            inputs,
            tmp,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.inputs.join(name)
    }

    /// Runs a command expected to fail and returns its stderr after checking the failure is
    /// clean: exit code 1, no panic, the temporary folder emptied again.
    fn fails(&self, args: &[&str]) -> String {
        let out = commentary(&self.tmp, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "exit code for {args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        let left: Vec<_> = std::fs::read_dir(&self.tmp).expect("tmp").collect();
        assert!(left.is_empty(), "temporary files left behind: {left:?}");
        stderr
    }
}

fn tiny_examples(n: usize) -> Examples {
    Examples {
        shape: schema::ImageShape {
            height: 4,
            width: 4,
            channels: 1,
        },
        labels: (0..n as u32).map(|i| i % 3).collect(),
        pixels: (0..n * 16).map(|i| (i * 31 % 256) as u8).collect(),
    }
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn hash_prints_the_fixture_digest() {
    let scratch = Scratch::new();
    let out = commentary(&scratch.tmp, &["dataset", "hash", utf8(&mnist_fixture())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        MNIST_FIXTURE_DIGEST
    );
}

#[test]
fn inspect_reports_splits_shapes_classes_and_balance() {
    let scratch = Scratch::new();
    let fixture = mnist_fixture();
    let out = commentary(&scratch.tmp, &["dataset", "inspect", utf8(&fixture)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(MNIST_FIXTURE_DIGEST), "{text}");
    assert!(text.contains("train              8004  28x28x1"), "{text}");
    assert!(text.contains("test               1996  28x28x1"), "{text}");
    assert!(text.contains("1           902 ( 11.3%)"), "{text}");

    let out = commentary(
        &scratch.tmp,
        &["dataset", "inspect", "--json", utf8(&fixture)],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(json["digest"], MNIST_FIXTURE_DIGEST);
    assert_eq!(json["format"], "idx");
    assert_eq!(json["splits"][0]["class_counts"][1], 902);
    assert_eq!(json["splits"][1]["shape"]["height"], 28);
}

#[test]
fn a_truncated_tar_gz_is_refused() {
    let scratch = Scratch::new();
    let whole = scratch.path("whole.tar.gz");
    tar_gz_dir(&mnist_fixture(), &whole, Some("mnist"));
    let bytes = std::fs::read(&whole).expect("read");
    let cut = scratch.path("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let err = scratch.fails(&["dataset", "hash", utf8(&cut)]);
    assert!(err.contains("cut.tar.gz"), "{err}");
    assert!(err.contains("truncated or corrupt"), "{err}");
}

#[test]
fn corrupt_gzip_and_zip_data_are_refused() {
    let scratch = Scratch::new();
    let gz = scratch.path("corrupt.tar.gz");
    let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    bytes.extend(tests::pseudo_random_bytes(1, 4000));
    std::fs::write(&gz, &bytes).expect("write");
    let err = scratch.fails(&["dataset", "hash", utf8(&gz)]);
    assert!(
        err.contains("corrupt.tar.gz") && err.contains("corrupt"),
        "{err}"
    );

    let zip = scratch.path("corrupt.zip");
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend(tests::pseudo_random_bytes(2, 4000));
    std::fs::write(&zip, &bytes).expect("write");
    let err = scratch.fails(&["dataset", "hash", utf8(&zip)]);
    assert!(
        err.contains("corrupt.zip") && err.contains("zip data is truncated or corrupt"),
        "{err}"
    );
}

#[test]
fn something_that_is_not_a_dataset_is_refused() {
    let scratch = Scratch::new();
    let text = scratch.path("notes.txt");
    std::fs::write(&text, "hello").expect("write");
    let err = scratch.fails(&["dataset", "hash", utf8(&text)]);
    assert!(
        err.contains("notes.txt") && err.contains("not a dataset"),
        "{err}"
    );

    let single = scratch.path("train-images-idx3-ubyte.gz");
    tests::write_maybe_gz(&single, &idx_header(&[0, 1, 1]), true);
    let err = scratch.fails(&["dataset", "hash", utf8(&single)]);
    assert!(
        err.contains("single gzip-compressed file is not a dataset"),
        "{err}"
    );

    let empty = scratch.path("empty-folder");
    std::fs::create_dir_all(&empty).expect("dir");
    let err = scratch.fails(&["dataset", "hash", utf8(&empty)]);
    assert!(
        err.contains("empty-folder") && err.contains("no dataset found"),
        "{err}"
    );

    let missing = scratch.path("missing");
    let err = scratch.fails(&["dataset", "hash", utf8(&missing)]);
    assert!(
        err.contains("missing") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn idx_headers_that_overflow_or_disagree_with_the_file_are_refused() {
    let scratch = Scratch::new();
    let dir = scratch.path("overflow");
    write_idx_split(&dir, "train", &tiny_examples(2), false);
    // [N, H, W, C] whose product overflows 64 bits.
    let mut images = idx_header(&[1, u32::MAX, u32::MAX, 3]);
    images.extend([0u8; 16]);
    std::fs::remove_file(dir.join("train-images-idx3-ubyte")).expect("rm");
    std::fs::write(dir.join("train-images-idx4-ubyte"), &images).expect("write");
    let err = scratch.fails(&["dataset", "hash", utf8(&dir)]);
    assert!(
        err.contains("train-images-idx4-ubyte") && err.contains("overflow"),
        "{err}"
    );

    // The header says 3 images; the file holds 2.
    let dir = scratch.path("short");
    write_idx_split(&dir, "train", &tiny_examples(2), false);
    let path = dir.join("train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[7] = 3;
    std::fs::write(&path, &bytes).expect("write");
    let mut labels = idx_header(&[3]);
    labels.extend([0, 1, 2]);
    std::fs::write(dir.join("train-labels-idx1-ubyte"), &labels).expect("labels");
    let err = scratch.fails(&["dataset", "hash", utf8(&dir)]);
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    assert!(
        err.contains("need 48 bytes of data but the file holds 32"),
        "{err}"
    );

    // The same in a gzip stream: discovered while reading.
    let dir = scratch.path("short-gz");
    let mut images = idx_header(&[3, 4, 4]);
    images.extend([7u8; 32]);
    tests::write_maybe_gz(&dir.join("train-images-idx3-ubyte.gz"), &images, true);
    tests::write_maybe_gz(&dir.join("train-labels-idx1-ubyte.gz"), &labels, true);
    let err = scratch.fails(&["dataset", "hash", utf8(&dir)]);
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    assert!(
        err.contains("file ends after 2 of 3 images (truncated)"),
        "{err}"
    );
}

#[test]
fn label_counts_that_do_not_match_image_counts_are_refused() {
    let scratch = Scratch::new();
    let dir = scratch.path("mismatch");
    write_idx_split(&dir, "train", &tiny_examples(3), false);
    let mut labels = idx_header(&[2]);
    labels.extend([0, 1]);
    std::fs::write(dir.join("train-labels-idx1-ubyte"), &labels).expect("write");
    let err = scratch.fails(&["dataset", "hash", utf8(&dir)]);
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    assert!(err.contains("holds 3 images but"), "{err}");
    assert!(
        err.contains("train-labels-idx1-ubyte holds 2 labels"),
        "{err}"
    );
}

#[test]
fn mixed_image_sizes_or_channel_counts_in_one_split_are_refused() {
    let scratch = Scratch::new();
    let grey = image::ExtendedColorType::L8;
    let dir = scratch.path("sizes");
    std::fs::create_dir_all(dir.join("train/cat")).expect("dir");
    image::save_buffer(dir.join("train/cat/a.png"), &[0; 4], 2, 2, grey).expect("a");
    image::save_buffer(dir.join("train/cat/b.png"), &[0; 9], 3, 3, grey).expect("b");
    let err = scratch.fails(&["dataset", "hash", utf8(&dir)]);
    assert!(err.contains("b.png"), "{err}");
    assert!(
        err.contains("image is 3x3x1 (HxWxC)") && err.contains("is 2x2x1"),
        "{err}"
    );

    let dir = scratch.path("channels");
    std::fs::create_dir_all(dir.join("train/cat")).expect("dir");
    image::save_buffer(dir.join("train/cat/a.png"), &[0; 4], 2, 2, grey).expect("a");
    image::save_buffer(
        dir.join("train/cat/b.png"),
        &[9; 12],
        2,
        2,
        image::ExtendedColorType::Rgb8,
    )
    .expect("b");
    let err = scratch.fails(&["dataset", "hash", utf8(&dir)]);
    assert!(
        err.contains("b.png") && err.contains("2x2x3") && err.contains("2x2x1"),
        "{err}"
    );

    let dir = scratch.path("garbage-png");
    std::fs::create_dir_all(dir.join("train/cat")).expect("dir");
    std::fs::write(dir.join("train/cat/a.png"), b"\x89PNG\r\n\x1a\nnot really").expect("a");
    let err = scratch.fails(&["dataset", "hash", utf8(&dir)]);
    assert!(
        err.contains("a.png") && err.contains("cannot decode image"),
        "{err}"
    );
}

/// A tar.gz whose only entry has a raw (unchecked) name.
fn tar_gz_with_raw_name(path: &Path, name: &[u8], data: &[u8]) {
    let encoder = GzEncoder::new(
        std::fs::File::create(path).expect("create"),
        Compression::fast(),
    );
    let mut builder = tar::Builder::new(encoder);
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().expect("gnu header").name[..name.len()].copy_from_slice(name);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, data).expect("append");
    builder.into_inner().expect("tar").finish().expect("gz");
}

#[test]
fn path_traversal_inside_archives_is_refused_and_nothing_escapes() {
    let scratch = Scratch::new();
    let tarball = scratch.path("evil.tar.gz");
    tar_gz_with_raw_name(&tarball, b"../../evil.txt", b"gotcha");
    let err = scratch.fails(&["dataset", "hash", utf8(&tarball)]);
    assert!(
        err.contains("evil.tar.gz") && err.contains("path traversal"),
        "{err}"
    );

    let zip_path = scratch.path("evil.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).expect("create"));
    zip.start_file("../../evil.txt", zip::write::SimpleFileOptions::default())
        .expect("entry");
    zip.write_all(b"gotcha").expect("write");
    zip.finish().expect("finish");
    let err = scratch.fails(&["dataset", "hash", utf8(&zip_path)]);
    assert!(
        err.contains("evil.zip") && err.contains("path traversal"),
        "{err}"
    );

    for dir in [&scratch.inputs, &scratch.tmp, &scratch.inputs.join("..")] {
        assert!(
            !dir.join("evil.txt").exists(),
            "evil.txt escaped into {}",
            dir.display()
        );
    }
}

#[test]
fn decompression_bombs_stop_at_the_expanded_size_limit() {
    let scratch = Scratch::new();
    // 64 MiB of zeros compresses to well under 1 MiB.
    let bomb = scratch.path("bomb.tar.gz");
    let encoder = GzEncoder::new(
        std::fs::File::create(&bomb).expect("create"),
        Compression::best(),
    );
    let mut builder = tar::Builder::new(encoder);
    let mut header = tar::Header::new_gnu();
    header.set_size(64 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "zeros.bin", std::io::repeat(0).take(64 << 20))
        .expect("append");
    builder.into_inner().expect("tar").finish().expect("gz");
    assert!(std::fs::metadata(&bomb).expect("size").len() < 1 << 20);
    let err = scratch.fails(&[
        "dataset",
        "hash",
        "--max-expanded-bytes",
        "8MiB",
        utf8(&bomb),
    ]);
    assert!(err.contains("bomb.tar.gz"), "{err}");
    assert!(err.contains("expands to more than 8388608 bytes"), "{err}");
}

#[test]
fn archives_with_too_many_entries_are_refused() {
    let scratch = Scratch::new();
    let dir = scratch.path("many");
    for i in 0..30 {
        std::fs::create_dir_all(dir.join(format!("train/c{i}"))).expect("dir");
    }
    let tarball = scratch.path("many.tar.gz");
    tar_gz_dir(&dir, &tarball, None);
    let err = scratch.fails(&["dataset", "hash", "--max-entries", "10", utf8(&tarball)]);
    assert!(
        err.contains("many.tar.gz") && err.contains("more than 10 entries"),
        "{err}"
    );
}
