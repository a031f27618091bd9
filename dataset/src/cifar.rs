//! CIFAR-10 and CIFAR-100 binary versions: fixed-size records of label byte(s) followed by a
//! 32x32 RGB image stored plane by plane (1024 red, 1024 green, 1024 blue). CIFAR-100 records
//! carry a coarse and a fine label; the fine label is used.

use std::path::{Path, PathBuf};

use schema::ImageShape;

use super::{DataError, Example, Files, Limits};

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
const IMAGE: usize = 3 * PLANE;
pub(crate) const SHAPE: ImageShape = ImageShape {
    height: SIDE as u32,
    width: SIDE as u32,
    channels: 3,
};

/// Which CIFAR binary layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Cifar10,
    Cifar100,
}

impl Variant {
    /// Label bytes before each image.
    fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            Self::Cifar100 => 2,
        }
    }

    pub(crate) fn classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100 => 100,
        }
    }
}

/// The batch files of one split.
#[derive(Debug, Clone)]
pub(crate) struct CifarSplit {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub variant: Variant,
}

impl CifarSplit {
    /// Decodes every example, file by file, calling `visit` for each.
    pub(crate) fn decode(
        &self,
        files: &Files,
        limits: &Limits,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        let record_len = self.variant.label_bytes() + IMAGE;
        let mut record = vec![0u8; record_len];
        let mut hwc = vec![0u8; IMAGE];
        let mut seen: u64 = 0;
        for path in &self.files {
            let records = record_count(files, path, record_len)?;
            seen += records;
            if seen > limits.max_examples {
                return Err(DataError::limit(
                    path,
                    format!("more than the limit of {} examples", limits.max_examples),
                ));
            }
            files.read(path, |reader| {
                for index in 0..records {
                    reader.read_exact(&mut record).map_err(|e| {
                        DataError::invalid(path, format!("cannot read record {index}: {e}"))
                    })?;
                    let label = record[self.variant.label_bytes() - 1];
                    if usize::from(label) >= self.variant.classes() {
                        return Err(DataError::invalid(
                            path,
                            format!(
                                "record {index} has label {label}, but the format has {} classes",
                                self.variant.classes()
                            ),
                        ));
                    }
                    planar_to_hwc(&record[self.variant.label_bytes()..], &mut hwc);
                    visit(Example {
                        label: u32::from(label),
                        pixels: &hwc,
                    })?;
                }
                Ok(())
            })?;
        }
        Ok(SHAPE)
    }
}

/// Records in a batch file, refusing lengths that are not a whole number of records.
fn record_count(files: &Files, path: &Path, record_len: usize) -> Result<u64, DataError> {
    let len = files.len(path)?;
    if len == 0 || len % record_len as u64 != 0 {
        return Err(DataError::invalid(
            path,
            format!(
                "file is {len} bytes, not a whole number of {record_len}-byte CIFAR records \
                 (truncated or not a CIFAR batch)"
            ),
        ));
    }
    Ok(len / record_len as u64)
}

/// Converts RRR..GGG..BBB.. to RGBRGB...
fn planar_to_hwc(planar: &[u8], hwc: &mut [u8]) {
    for pixel in 0..PLANE {
        for channel in 0..3 {
            hwc[pixel * 3 + channel] = planar[channel * PLANE + pixel];
        }
    }
}

/// Reads class names from a CIFAR meta file (`batches.meta.txt`, `fine_label_names.txt`): one
/// name per non-empty line.
pub(crate) fn read_class_names(
    files: &Files,
    path: &Path,
    expected: usize,
) -> Result<Vec<String>, DataError> {
    let text = files.read(path, |reader| {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|e| DataError::invalid(path, format!("cannot read class names: {e}")))?;
        Ok(text)
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() != expected {
        return Err(DataError::invalid(
            path,
            format!(
                "lists {} class names; the format has {expected}",
                names.len()
            ),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_become_interleaved_pixels() {
        let mut planar = vec![0u8; IMAGE];
        planar[0] = 1; // red of pixel 0
        planar[PLANE] = 2; // green of pixel 0
        planar[2 * PLANE + 1] = 3; // blue of pixel 1
        let mut hwc = vec![0u8; IMAGE];
        planar_to_hwc(&planar, &mut hwc);
        assert_eq!(&hwc[..6], &[1, 2, 0, 0, 0, 3]);
    }
}
