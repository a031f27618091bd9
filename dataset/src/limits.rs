//! Limits that keep hostile or accidental inputs from exhausting disk, memory or time.

/// Caps applied while opening and decoding a dataset. The defaults fit any dataset this
/// project targets (up to ImageNet-32 scale) on a laptop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes an archive's files may hold (their declared sizes, read in place), and
    /// total decoded pixel bytes of IDX files.
    pub max_expanded_bytes: u64,
    /// Entries (files and folders) an archive may hold.
    pub max_entries: u64,
    /// Examples across all splits (the digest keeps 32 bytes per example in memory).
    pub max_examples: u64,
    /// Pixels (H x W x C) of one image.
    pub max_image_bytes: u64,
    /// Classes a dataset may name (label ids run below this). Learned blend matrices are
    /// classes x classes, so a stray label of 4e9 must be refused, not expanded.
    pub max_classes: u64,
    /// An archive may expand to at most this many times its own size (small archives always
    /// to [`EXPANSION_FLOOR`]): a gzip bomb is refused after a few hundred megabytes, not 16 GB.
    pub max_expansion_ratio: u64,
    /// The registry stops staging an upload when the disk has less free space than this
    /// left, so a large upload cannot fill the disk the database lives on.
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
            max_classes: 100_000,
            max_expansion_ratio: 100,
            min_free_bytes: 1 << 30,
        }
    }
}

impl Limits {
    /// Refuses a dataset of `classes` classes beyond [`Limits::max_classes`]; call it before
    /// anything is allocated per class.
    pub fn check_classes(
        &self,
        classes: u64,
        path: &std::path::Path,
    ) -> Result<(), super::DataError> {
        if classes > self.max_classes {
            return Err(super::DataError::limit(
                path,
                format!(
                    "names {classes} classes, more than the limit of {} (--max-classes)",
                    self.max_classes
                ),
            ));
        }
        Ok(())
    }
}

/// An images array (IDX or NumPy) as its header declares it, checked before any pixel is read:
/// one label per image, no zero dimension, and within the per-image and total byte caps.
pub(crate) struct ImageArray<'a> {
    pub path: &'a std::path::Path,
    /// The header's dimensions, for messages.
    pub dims: &'a [u64],
    pub shape: schema::ImageShape,
    pub count: u64,
    pub labels_path: &'a std::path::Path,
    pub labels: usize,
}

impl ImageArray<'_> {
    /// Bytes of one image, or what is wrong with the array.
    pub fn record_bytes(&self, limits: &Limits) -> Result<u64, super::DataError> {
        use super::DataError;
        let (path, shape) = (self.path, self.shape);
        if self.count != self.labels as u64 {
            return Err(DataError::invalid(
                path,
                format!(
                    "holds {} images but {} holds {} labels",
                    self.count,
                    self.labels_path.display(),
                    self.labels
                ),
            ));
        }
        if shape.height == 0 || shape.width == 0 {
            return Err(DataError::invalid(
                path,
                format!(
                    "image size {}x{} has a zero dimension",
                    shape.height, shape.width
                ),
            ));
        }
        let overflow = || DataError::invalid(path, format!("dimensions {:?} overflow", self.dims));
        let record = u64::from(shape.height)
            .checked_mul(u64::from(shape.width))
            .and_then(|n| n.checked_mul(u64::from(shape.channels)))
            .ok_or_else(overflow)?;
        if record > limits.max_image_bytes {
            return Err(DataError::limit(
                path,
                format!(
                    "one {shape} image is {record} bytes, more than the limit of {}",
                    limits.max_image_bytes
                ),
            ));
        }
        let total = record.checked_mul(self.count).ok_or_else(overflow)?;
        if total > limits.max_expanded_bytes {
            return Err(DataError::limit(
                path,
                format!(
                    "dimensions {:?} declare {total} bytes of pixels, more than the limit of {}",
                    self.dims, limits.max_expanded_bytes
                ),
            ));
        }
        Ok(record)
    }
}
