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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_expanded_bytes: 16 << 30,
            max_entries: 2_000_000,
            max_examples: 10_000_000,
            max_image_bytes: 64 << 20,
        }
    }
}
