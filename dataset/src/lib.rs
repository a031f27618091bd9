//! Datasets: opening a folder or archive, decoding its examples to u8 HWC images, and the
//! content digest that ties commentaries to the data they were learned on.
//!
//! [`Dataset::open`] recognises the format (IDX, CIFAR-10/100 binary, NumPy `.npz`, image
//! folders; as a folder, `.tar`, `.tar.gz` or `.zip`), [`Dataset::summarize`] streams every example once to
//! compute the digest and counts, and [`Dataset::load_split`] loads a split into memory in
//! canonical order for training.
//!
//! This crate has no burn dependency: it is everything that parses a dataset's outside bytes,
//! kept small so that `fuzz/` can build it quickly. The trainer turns decoded splits into
//! tensors (`trainer::data::tensors`).

mod archive;
mod cancel;
mod cifar;
pub mod corrupt;
pub mod digest;
pub mod disk;
mod error;
mod idx;
mod image_folder;
mod layout;
mod limits;
mod npz;
pub mod spurious;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::path::{Path, PathBuf};

use schema::{DatasetFormat, DatasetSummary, ImageShape, SplitSummary};
use tempfile::TempDir;

pub use archive::ArchiveKind;
pub use cancel::Cancel;
pub use digest::{SplitHashes, dataset_digest, record_hash};
pub use error::DataError;
pub use limits::Limits;

/// How many examples pass between progress callbacks.
const PROGRESS_EVERY: usize = 1024;

/// One decoded example, borrowed from the decoder's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Example<'a> {
    pub label: u32,
    /// H x W x C bytes.
    pub pixels: &'a [u8],
}

/// Where one split's examples come from.
pub(crate) enum SplitSource {
    Idx(idx::IdxSplit),
    Cifar(cifar::CifarSplit),
    Folder(image_folder::FolderSplit),
    Npz(npz::NpzSplit),
}

impl SplitSource {
    fn name(&self) -> &str {
        match self {
            Self::Idx(s) => &s.name,
            Self::Cifar(s) => &s.name,
            Self::Folder(s) => &s.name,
            Self::Npz(s) => &s.name,
        }
    }

    fn decode(
        &self,
        limits: &Limits,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        match self {
            Self::Idx(s) => s.decode(limits, visit),
            Self::Cifar(s) => s.decode(limits, visit),
            Self::Folder(s) => s.decode(limits, visit),
            Self::Npz(s) => s.decode(limits, visit),
        }
    }
}

/// An opened dataset, ready to decode. Archives are extracted to a temporary folder that lives
/// as long as this value.
pub struct Dataset {
    /// The path the user gave (used in error messages).
    origin: PathBuf,
    format: DatasetFormat,
    classes: Vec<String>,
    splits: Vec<SplitSource>,
    limits: Limits,
    /// The extraction folder of an archive, deleted on drop.
    extracted: Option<TempDir>,
    /// Stops decoding early when set (checked between examples).
    cancel: Cancel,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("origin", &self.origin)
            .field("format", &self.format)
            .field("classes", &self.classes.len())
            .field("splits", &self.split_names())
            .finish()
    }
}

/// A split loaded into memory in canonical order (sorted by record hash).
#[derive(Debug, Clone)]
pub struct SplitData {
    pub shape: ImageShape,
    /// Label ids, one per example.
    pub labels: Vec<u32>,
    /// Examples x H x W x C bytes, example after example.
    pub pixels: Vec<u8>,
}

impl SplitData {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of example `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.pixels.len() / self.labels.len().max(1);
        &self.pixels[index * size..(index + 1) * size]
    }
}

impl Dataset {
    /// Opens the dataset at `path` (a folder or an archive) with default temporary storage.
    pub fn open(path: &Path, limits: Limits) -> Result<Self, DataError> {
        Self::open_in(path, limits, None)
    }

    /// Opens the dataset at `path`, extracting archives under `temp_root` when given.
    pub fn open_in(
        path: &Path,
        limits: Limits,
        temp_root: Option<&Path>,
    ) -> Result<Self, DataError> {
        Self::open_cancellable(path, limits, temp_root, Cancel::default())
    }

    /// [`Dataset::open_in`] that stops with [`DataError::Cancelled`] once `cancel` is set:
    /// while extracting, and later while decoding examples.
    pub fn open_cancellable(
        path: &Path,
        limits: Limits,
        temp_root: Option<&Path>,
        cancel: Cancel,
    ) -> Result<Self, DataError> {
        let metadata = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        let (root, extracted) = if metadata.is_dir() {
            (path.to_path_buf(), None)
        } else {
            let kind = archive::detect(path)?;
            let dir = archive::extract(path, kind, &limits, temp_root, &cancel)?;
            (dir.path().to_path_buf(), Some(dir))
        };
        let relocate = |err: DataError| match &extracted {
            Some(dir) => err.relocate(dir.path(), path),
            None => err,
        };
        let found = layout::detect(&root, &limits).map_err(relocate)?;
        Ok(Self {
            origin: path.to_path_buf(),
            format: found.format,
            classes: found.classes,
            splits: found.splits,
            limits,
            extracted,
            cancel,
        })
    }

    pub fn format(&self) -> DatasetFormat {
        self.format
    }

    /// Class names indexed by label id.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Split names in digest order.
    pub fn split_names(&self) -> Vec<&str> {
        self.splits.iter().map(SplitSource::name).collect()
    }

    fn split(&self, name: &str) -> Result<&SplitSource, DataError> {
        self.splits
            .iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                DataError::invalid(
                    &self.origin,
                    format!(
                        "has no split {name:?}; its splits are {:?}",
                        self.split_names()
                    ),
                )
            })
    }

    /// Decodes the examples of `split` in container order.
    pub fn for_each_example(
        &self,
        split: &str,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        let source = self.split(split)?;
        let classes = self.classes.len() as u32;
        let mut checked = |example: Example<'_>| {
            self.cancel.check(Path::new(source.name()))?;
            if example.label >= classes {
                return Err(DataError::invalid(
                    Path::new(source.name()),
                    format!(
                        "label {} is out of range: the dataset has {classes} classes",
                        example.label
                    ),
                ));
            }
            visit(example)
        };
        source
            .decode(&self.limits, &mut checked)
            .map_err(|e| self.relocate(e))
    }

    fn relocate(&self, err: DataError) -> DataError {
        match &self.extracted {
            Some(dir) => err.relocate(dir.path(), &self.origin),
            None => err,
        }
    }

    /// Decodes every example once and returns the digest, shapes and class balance.
    pub fn summarize(&self) -> Result<DatasetSummary, DataError> {
        self.summarize_with_progress(&mut |_, _| {})
    }

    /// [`Dataset::summarize`], calling `progress(split, examples so far)` as it goes.
    pub fn summarize_with_progress(
        &self,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<DatasetSummary, DataError> {
        let mut hashed = Vec::with_capacity(self.splits.len());
        let mut summaries = Vec::with_capacity(self.splits.len());
        for source in &self.splits {
            let name = source.name();
            let mut hashes = Vec::new();
            let mut class_counts = vec![0u64; self.classes.len()];
            let shape = self.for_each_example(name, &mut |example| {
                hashes.push(record_hash(example.label, example.pixels));
                class_counts[example.label as usize] += 1;
                if hashes.len() % PROGRESS_EVERY == 0 {
                    progress(name, hashes.len() as u64);
                }
                Ok(())
            })?;
            summaries.push(SplitSummary {
                name: name.to_owned(),
                examples: hashes.len() as u64,
                shape,
                class_counts,
            });
            hashed.push(
                SplitHashes {
                    name: name.to_owned(),
                    shape,
                    hashes,
                }
                .finish(),
            );
        }
        Ok(DatasetSummary {
            digest: dataset_digest(&hashed, &self.classes),
            format: self.format,
            classes: self.classes.clone(),
            splits: summaries,
        })
    }

    /// Loads `split` into memory in canonical order: sorted by record hash, the order that
    /// per-example commentaries and validation indices refer to.
    pub fn load_split(&self, split: &str) -> Result<SplitData, DataError> {
        let mut examples: Vec<([u8; 32], u32, Vec<u8>)> = Vec::new();
        let shape = self.for_each_example(split, &mut |example| {
            examples.push((
                record_hash(example.label, example.pixels),
                example.label,
                example.pixels.to_vec(),
            ));
            Ok(())
        })?;
        examples.sort_unstable_by_key(|e| e.0);
        let mut labels = Vec::with_capacity(examples.len());
        let mut pixels = Vec::with_capacity(examples.iter().map(|e| e.2.len()).sum());
        for (_, label, image) in examples {
            labels.push(label);
            pixels.extend_from_slice(&image);
        }
        Ok(SplitData {
            shape,
            labels,
            pixels,
        })
    }
}
