//! Dataset summaries: what `commentary dataset inspect` prints and what the registry stores.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Sha256;

/// The container a dataset was decoded from. The digest does not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// MNIST-style IDX files (`train-images-idx3-ubyte[.gz]` and friends).
    Idx,
    /// CIFAR-10 binary batches (`data_batch_*.bin`, `test_batch.bin`).
    Cifar10,
    /// CIFAR-100 binary (`train.bin`, `test.bin`), fine labels.
    Cifar100,
    /// `<split>/<class>/*.png|jpg`.
    ImageFolder,
    /// NumPy arrays (`.npz`, or a folder of `.npy`): `<split>_images`, `<split>_labels`,
    /// `classes`.
    Npz,
}

impl std::fmt::Display for DatasetFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Idx => "idx",
            Self::Cifar10 => "cifar-10",
            Self::Cifar100 => "cifar-100",
            Self::ImageFolder => "image-folder",
            Self::Npz => "npz",
        })
    }
}

/// Image shape in HWC order; pixels are u8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct ImageShape {
    pub height: u32,
    pub width: u32,
    pub channels: u32,
}

impl ImageShape {
    /// Bytes in one image (H x W x C), or `None` if that overflows `usize`.
    pub fn pixel_bytes(&self) -> Option<usize> {
        (self.height as usize)
            .checked_mul(self.width as usize)?
            .checked_mul(self.channels as usize)
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.height, self.width, self.channels)
    }
}

/// One split of a dataset (`train`, `test`, or another name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SplitSummary {
    pub name: String,
    pub examples: u64,
    pub shape: ImageShape,
    /// Examples per class, indexed by label id.
    pub class_counts: Vec<u64>,
}

/// What a dataset is: its digest, where it came from, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatasetSummary {
    pub digest: Sha256,
    pub format: DatasetFormat,
    /// Class names indexed by label id.
    pub classes: Vec<String>,
    /// Splits in digest order: `train`, `test`, then other names sorted bytewise.
    pub splits: Vec<SplitSummary>,
}

impl DatasetSummary {
    /// The split with this name, if any.
    pub fn split(&self, name: &str) -> Option<&SplitSummary> {
        self.splits.iter().find(|s| s.name == name)
    }
}
