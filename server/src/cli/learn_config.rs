//! The `LearnConfig` a command line describes: `--config FILE` (TOML or JSON), then the flags
//! that override its fields. Shared by `commentary learn` and `commentary run create`, so a run
//! queued on a registry takes exactly the flags of a local one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use schema::LearnConfig;
use schema::arch::NetSpec;

use super::values;

/// `--config`, `--time-limit` and the per-field flags.
#[derive(Debug, Args)]
pub(super) struct LearnConfigArgs {
    /// A LearnConfig file (TOML or JSON); flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stop after this long (e.g. 90s, 10m) and keep the best commentary so far.
    #[arg(long, value_parser = humantime::parse_duration)]
    time_limit: Option<Duration>,
    #[command(flatten)]
    overrides: ConfigOverrides,
}

impl LearnConfigArgs {
    /// The file's config (or the defaults) with the flags applied.
    pub(super) fn config(self) -> anyhow::Result<LearnConfig> {
        let mut config = match &self.config {
            Some(path) => read_config(path)?,
            None => LearnConfig::default(),
        };
        self.overrides.apply(&mut config);
        if let Some(limit) = self.time_limit {
            config.time_limit_s = Some(limit.as_secs().max(1));
        }
        Ok(config)
    }
}

/// LearnConfig fields settable by flag (the rest through --config).
#[derive(Debug, Args)]
struct ConfigOverrides {
    /// Seed of the validation split, initialisations and batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Student steps per meta-step (K), or per student under truncated-bptt; also S in the
    /// teacher's time input i/S.
    #[arg(long)]
    inner_steps: Option<u32>,
    /// Meta-steps (bptt), blocks of inner steps (ift), or students in sequence (truncated-bptt).
    #[arg(long)]
    meta_steps: Option<u32>,
    /// truncated-bptt: student steps unrolled per outer step (1 = a one-step look-ahead).
    #[arg(long)]
    unroll_steps: Option<u32>,
    /// The split L_V is measured on (a trusted one, e.g. val); default: the dataset's val split
    /// when it has one, else a hold-out of train. test is refused.
    #[arg(long)]
    validation_split: Option<String>,
    /// Student batch size while learning.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Train examples held out for the validation loss.
    #[arg(long)]
    validation_examples: Option<u32>,
    /// Validation examples per evaluation of L_V.
    #[arg(long)]
    validation_batch_size: Option<u32>,
    /// The student's inner optimiser.
    #[arg(long, value_parser = values::optimizer())]
    inner_optimizer: Option<schema::Optimizer>,
    /// Learning rate of the student's inner optimiser.
    #[arg(long)]
    inner_lr: Option<f64>,
    /// Learning rate of the outer Adam on the commentary's parameters.
    #[arg(long)]
    outer_lr: Option<f64>,
    /// Student architecture: cbr, mlp or mlp:<width>,<width>...
    #[arg(long, value_parser = NetSpec::parse)]
    student: Option<NetSpec>,
    /// Teacher or mask network: cbr, mlp or mlp:<width>,...
    #[arg(long, value_parser = NetSpec::parse)]
    commentary_net: Option<NetSpec>,
    /// Give the teacher the label as an input.
    #[arg(long)]
    label_input: bool,
    /// Give the teacher one output per class, weighing each example by its label's output.
    #[arg(long)]
    label_head: bool,
    /// Example weighting: learn a per-example weight table instead of a teacher network.
    #[arg(long)]
    tabular: bool,
    /// Attention masks: the masks' range (default half; full costs more on clean data).
    #[arg(long, value_parser = values::mask_range())]
    mask_range: Option<schema::arch::MaskRange>,
}

/// Reads a LearnConfig from TOML or JSON (by extension).
fn read_config(path: &Path) -> anyhow::Result<LearnConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text)
            .with_context(|| format!("{} is not a valid LearnConfig", path.display()))?,
        Some("json") => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid LearnConfig", path.display()))?,
        _ => anyhow::bail!(
            "{}: a config file must end in .toml or .json",
            path.display()
        ),
    };
    Ok(config)
}

impl ConfigOverrides {
    fn apply(self, config: &mut LearnConfig) {
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { config.$field = v; })* };
        }
        if self.validation_examples.is_some() {
            config.validation_examples = self.validation_examples;
        }
        if self.validation_split.is_some() {
            config.validation_split = self.validation_split;
        }
        set!(
            seed,
            inner_steps,
            meta_steps,
            unroll_steps,
            batch_size,
            validation_batch_size,
            inner_optimizer,
            inner_lr,
            outer_lr,
            student,
            commentary_net,
            mask_range
        );
        config.label_input |= self.label_input;
        config.label_head |= self.label_head;
        config.tabular |= self.tabular;
    }
}
