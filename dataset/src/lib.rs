//! Datasets: opening a folder or archive, decoding its examples to u8 HWC images, and the
//! content digest that ties commentaries to the data they were learned on.
//!
//! [`Dataset::open`] recognises the format (IDX, CIFAR-10/100 binary, NumPy `.npz`, image
//! folders; as a folder, `.tar`, `.tar.gz` or `.zip`, read in place without extracting),
//! [`Dataset::summarize`] streams every example once to compute the digest and counts, and
//! [`Dataset::load_split`] loads a split into memory in canonical order for training.
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
mod files;
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

use files::Files;

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
        files: &Files,
        limits: &Limits,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        match self {
            Self::Idx(s) => s.decode(files, limits, visit),
            Self::Cifar(s) => s.decode(files, limits, visit),
            Self::Folder(s) => s.decode(files, limits, visit),
            Self::Npz(s) => s.decode(files, limits, visit),
        }
    }
}

/// An opened dataset, ready to decode. An archive is read in place: opening indexes it, and
/// nothing is written anywhere.
pub struct Dataset {
    /// The path the user gave (used in error messages).
    origin: PathBuf,
    format: DatasetFormat,
    classes: Vec<String>,
    splits: Vec<SplitSource>,
    limits: Limits,
    /// The folder or archive the examples are read from.
    files: Files,
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
    /// Opens the dataset at `path` (a folder or an archive).
    pub fn open(path: &Path, limits: Limits) -> Result<Self, DataError> {
        Self::open_cancellable(path, limits, Cancel::default())
    }

    /// [`Dataset::open`] that stops with [`DataError::Cancelled`] once `cancel` is set: while
    /// indexing an archive, and later while decoding examples.
    pub fn open_cancellable(
        path: &Path,
        limits: Limits,
        cancel: Cancel,
    ) -> Result<Self, DataError> {
        let files = Files::open(path, &limits, &cancel)?;
        let found = layout::detect(&files, &limits).map_err(|e| relocate(&files, e))?;
        Ok(Self {
            origin: path.to_path_buf(),
            format: found.format,
            classes: found.classes,
            splits: found.splits,
            limits,
            files,
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
            .decode(&self.files, &self.limits, &mut checked)
            .map_err(|e| relocate(&self.files, e))
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

/// Names a file inside an archive as `archive:entry` in an error (paths inside an archive are
/// the archive's path joined with the entry's, which reads as a folder that is not there).
fn relocate(files: &Files, err: DataError) -> DataError {
    if files.is_archive() {
        err.relocate(files.root())
    } else {
        err
    }
}
