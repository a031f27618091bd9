//! Which burn device a command runs on. `cpu` (burn's flex backend) is always built; `wgpu` and
//! `cuda` exist only when the trainer is built with the cargo feature of the same name.

use std::fmt;
use std::str::FromStr;

/// A compute device named on the command line or in a run request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDevice {
    Cpu,
    Wgpu,
    Cuda,
}

impl ComputeDevice {
    /// Whether this build can run on the device (GPU backends are cargo features).
    pub fn is_compiled_in(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The devices this build supports.
    pub fn available() -> Vec<Self> {
        [Self::Cpu, Self::Wgpu, Self::Cuda]
            .into_iter()
            .filter(|d| d.is_compiled_in())
            .collect()
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

impl FromStr for ComputeDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let kind = match s {
            "cpu" => Self::Cpu,
            "wgpu" => Self::Wgpu,
            "cuda" => Self::Cuda,
            other => {
                return Err(format!(
                    "unknown device {other:?}; expected cpu, wgpu or cuda"
                ));
            }
        };
        if kind.is_compiled_in() {
            Ok(kind)
        } else {
            Err(format!(
                "device {kind} is not compiled into this build; rebuild with `--features {kind}`"
            ))
        }
    }
}

/// The burn device for a [`ComputeDevice`].
pub fn burn_device(kind: ComputeDevice) -> burn::tensor::Device {
    match kind {
        #[cfg(feature = "wgpu")]
        ComputeDevice::Wgpu => burn::tensor::Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        ComputeDevice::Cuda => burn::tensor::Device::cuda(burn::tensor::DeviceIndex::Default),
        // A device not compiled in cannot be parsed, so only the CPU reaches this arm.
        _ => burn::tensor::Device::flex(),
    }
}
