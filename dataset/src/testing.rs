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
