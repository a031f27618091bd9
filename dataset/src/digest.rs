//! The dataset digest, format version 1 (docs/dataset-digest.md has the byte layout and a
//! worked example). It identifies decoded content, so any container of the same examples, in
//! any order, has one digest. Memory: 32 bytes per example.

use sha2::{Digest as _, Sha256 as Hasher};

use schema::{ImageShape, Sha256};

/// The domain-separation prefix of format version 1.
pub const DIGEST_PREFIX: &[u8] = b"commentary-dataset-v1\n";

/// sha256(label as u32 LE || pixel bytes, HWC u8).
pub fn record_hash(label: u32, pixels: &[u8]) -> [u8; 32] {
    let mut hasher = Hasher::new();
    hasher.update(label.to_le_bytes());
    hasher.update(pixels);
    hasher.finalize().into()
}

/// The record hashes of one split, gathered as examples stream by.
#[derive(Debug, Clone)]
pub struct SplitHashes {
    pub name: String,
    pub shape: ImageShape,
    /// Sorted bytewise once [`SplitHashes::finish`] has run.
    pub hashes: Vec<[u8; 32]>,
}

impl SplitHashes {
    /// Sorts the hashes into canonical order.
    pub fn finish(mut self) -> Self {
        self.hashes.sort_unstable();
        self
    }
}

fn put_str(hasher: &mut Hasher, text: &str) {
    hasher.update((text.len() as u32).to_le_bytes());
    hasher.update(text.as_bytes());
}

/// The digest of `splits` (each finished, given in digest order: train, test, then the rest
/// bytewise) with `classes` as the class names.
pub fn dataset_digest(splits: &[SplitHashes], classes: &[String]) -> Sha256 {
    let mut hasher = Hasher::new();
    hasher.update(DIGEST_PREFIX);
    hasher.update((splits.len() as u32).to_le_bytes());
    for split in splits {
        put_str(&mut hasher, &split.name);
        for dim in [split.shape.height, split.shape.width, split.shape.channels] {
            hasher.update(dim.to_le_bytes());
        }
        hasher.update((classes.len() as u32).to_le_bytes());
        for class in classes {
            put_str(&mut hasher, class);
        }
        hasher.update((split.hashes.len() as u64).to_le_bytes());
        for hash in &split.hashes {
            hasher.update(hash);
        }
    }
    Sha256(hasher.finalize().into())
}
