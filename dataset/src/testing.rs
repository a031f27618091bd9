//! Test fixtures for this crate and the trainer's (feature `testing`).

use std::path::Path;

use schema::ImageShape;

/// Writes gzipped IDX splits (prefix, shape, labels) into `dir`, with distinct images: example
/// i's first four pixels spell i (little-endian), so a test can tell examples apart.
///
/// # Panics
/// When the files cannot be written or an image has fewer than four pixels (test input only).
pub fn write_splits(dir: &Path, splits: &[(&str, ImageShape, Vec<u32>)]) {
    let mut next = 0u32;
    for (prefix, shape, labels) in splits {
        let size = (shape.height * shape.width * shape.channels) as usize;
        let mut pixels = Vec::with_capacity(labels.len() * size);
        for _ in labels {
            let mut image = vec![0u8; size];
            image[..4].copy_from_slice(&next.to_le_bytes());
            next += 1;
            pixels.extend_from_slice(&image);
        }
        crate::idx::write_gz(dir, prefix, *shape, labels, &pixels).expect("write");
    }
}

/// Writes a NumPy `.npy` file (version 1.0 header, C order) of `data` with dtype `descr` and
/// `shape`.
///
/// # Panics
/// When the file cannot be written (test input only).
pub fn write_npy(path: &Path, descr: &str, shape: &[u64], data: &[u8]) {
    let dims: String = shape.iter().map(|d| format!("{d},")).collect();
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    while (header.len() + 11) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).expect("write npy");
}
