//! Limits that keep hostile or accidental inputs from exhausting disk, memory or time.

/// Caps applied while opening and decoding a dataset. The defaults fit any dataset this
/// project targets (up to ImageNet-32 scale) on a laptop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes an archive may expand to, and total decoded pixel bytes of IDX files.
    pub max_expanded_bytes: u64,
    /// Entries (files and folders) an archive may hold.
    pub max_entries: u64,
    /// Examples across all splits (the digest keeps 32 bytes per example in memory).
    pub max_examples: u64,
    /// Pixels (H x W x C) of one image.
    pub max_image_bytes: u64,
    /// An archive may expand to at most this many times its own size (small archives always
    /// to [`EXPANSION_FLOOR`]): a gzip bomb is refused after a few hundred megabytes, not 16 GB.
    pub max_expansion_ratio: u64,
    /// Extraction stops when the disk it writes to has less free space than this left, so a
    /// large upload cannot fill the disk the database lives on.
    pub min_free_bytes: u64,
}

/// What any archive may expand to, whatever its ratio.
pub const EXPANSION_FLOOR: u64 = 64 << 20;

impl Limits {
    /// The most an archive of `archive_bytes` may expand to: the byte cap, or the ratio's.
    pub fn expansion_cap(&self, archive_bytes: u64) -> u64 {
        let by_ratio = archive_bytes
            .saturating_mul(self.max_expansion_ratio)
            .max(EXPANSION_FLOOR);
        self.max_expanded_bytes.min(by_ratio)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_expanded_bytes: 16 << 30,
            max_entries: 2_000_000,
            max_examples: 10_000_000,
            max_image_bytes: 64 << 20,
            max_expansion_ratio: 100,
            min_free_bytes: 1 << 30,
        }
    }
}
