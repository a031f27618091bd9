//! `LimitArgs`: the decoding caps as flags, shared by every command that opens a dataset
//! (`dataset`, `learn`, `apply`, `serve` for uploads and its workers, `worker`). Their defaults
//! are `dataset::Limits::default()`, written nowhere else.

use bytesize::ByteSize;
use clap::Args;
use trainer::data::Limits;

/// Caps on what decoding a dataset may use; the defaults suit datasets up to ImageNet-32 scale.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Most bytes an archive may expand to (e.g. 16GiB).
    #[arg(long, env = "COMMENTARY_MAX_EXPANDED_BYTES", default_value_t = ByteSize::b(Limits::default().max_expanded_bytes))]
    max_expanded_bytes: ByteSize,
    /// Most entries an archive may hold.
    #[arg(long, env = "COMMENTARY_MAX_ENTRIES", default_value_t = Limits::default().max_entries)]
    max_entries: u64,
    /// Most examples a dataset may hold.
    #[arg(long, env = "COMMENTARY_MAX_EXAMPLES", default_value_t = Limits::default().max_examples)]
    max_examples: u64,
    /// Largest decoded image (height x width x channels bytes).
    #[arg(long, env = "COMMENTARY_MAX_IMAGE_BYTES", default_value_t = ByteSize::b(Limits::default().max_image_bytes))]
    max_image_bytes: ByteSize,
    /// Most classes a dataset may name (label ids must run below it).
    #[arg(long, env = "COMMENTARY_MAX_CLASSES", default_value_t = Limits::default().max_classes)]
    max_classes: u64,
    /// An archive may expand to at most this many times its size (any archive to 64 MiB).
    #[arg(long, env = "COMMENTARY_MAX_EXPANSION_RATIO", default_value_t = Limits::default().max_expansion_ratio)]
    max_expansion_ratio: u64,
    /// Free disk space that uploads keep: staging stops, with a "disk is nearly full" error
    /// (507 on the registry), rather than fill the disk.
    #[arg(long, env = "COMMENTARY_MIN_FREE_SPACE", default_value_t = ByteSize::b(Limits::default().min_free_bytes))]
    min_free_space: ByteSize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_expanded_bytes: self.max_expanded_bytes.as_u64(),
            max_entries: self.max_entries,
            max_examples: self.max_examples,
            max_image_bytes: self.max_image_bytes.as_u64(),
            max_classes: self.max_classes,
            max_expansion_ratio: self.max_expansion_ratio,
            min_free_bytes: self.min_free_space.as_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn defaults_are_the_decoders_defaults_and_flags_override_them() {
        let probe = Probe::try_parse_from(["probe"]).expect("parse");
        assert_eq!(probe.limits.limits(), Limits::default());
        let probe =
            Probe::try_parse_from(["probe", "--max-expanded-bytes", "1MiB"]).expect("parse");
        assert_eq!(probe.limits.limits().max_expanded_bytes, 1 << 20);
    }

    #[test]
    fn child_workers_are_started_with_the_registrys_limits() {
        let limits = Limits {
            max_expanded_bytes: 123_456_789,
            max_entries: 7,
            max_examples: 8,
            max_image_bytes: 9_999,
            max_classes: 11,
            max_expansion_ratio: 3,
            min_free_bytes: 42,
        };
        let child = crate::registry::supervisor::ChildWorker {
            name: "w".into(),
            server: "http://127.0.0.1:1".into(),
            token: "t".into(),
            device: trainer::device::ComputeDevice::Cpu,
            scratch: "/tmp/s".into(),
            limits,
        };
        let args = child.args();
        let first = args
            .iter()
            .position(|a| a == "--max-expanded-bytes")
            .expect("the limits are passed");
        let probe = Probe::try_parse_from(
            std::iter::once("probe".to_string()).chain(args[first..].iter().cloned()),
        )
        .expect("parse");
        assert_eq!(probe.limits.limits(), limits);
        let cli =
            crate::cli::Cli::try_parse_from(std::iter::once("commentary".to_string()).chain(args));
        assert!(cli.is_ok(), "the worker accepts them: {:?}", cli.err());
    }
}
