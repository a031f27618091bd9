//! `commentary learn`: learn a commentary for a dataset and write the artifact.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use schema::arch::NetSpec;
use schema::{Algorithm, CommentaryKind, LearnConfig, Optimizer};
use trainer::data::Dataset;
use trainer::device::ComputeDevice;
use trainer::learn::{LearnRequest, learn};

use super::limits::LimitArgs;

#[derive(Debug, Args)]
pub struct LearnArgs {
    /// The dataset: a folder or a .tar, .tar.gz or .zip archive.
    #[arg(long)]
    dataset: PathBuf,
    /// example-weighting, label-blending or attention-mask.
    #[arg(long)]
    kind: CommentaryKind,
    /// bptt (backpropagation through training, a fresh student per meta-step), ift (implicit
    /// differentiation) or truncated-bptt (one student, phi updated every --unroll-steps).
    /// Default: for example-weighting truncated-bptt when the dataset has a val split (bptt
    /// without one), ift for the other kinds.
    #[arg(long)]
    algorithm: Option<Algorithm>,
    /// The artifact directory to write (re-running with the same request resumes).
    #[arg(long)]
    out: PathBuf,
    /// Stop after this long (e.g. 90s, 10m) and keep the best commentary so far.
    #[arg(long, value_parser = humantime::parse_duration)]
    time_limit: Option<Duration>,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: ComputeDevice,
    /// A LearnConfig file (TOML or JSON); flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: ConfigOverrides,
    #[command(flatten)]
    limits: LimitArgs,
}

/// LearnConfig fields settable by flag (the rest through --config).
#[derive(Debug, Args)]
struct ConfigOverrides {
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
    #[arg(long)]
    batch_size: Option<u32>,
    /// Train examples held out for the validation loss.
    #[arg(long)]
    validation_examples: Option<u32>,
    /// Validation examples per evaluation of L_V.
    #[arg(long)]
    validation_batch_size: Option<u32>,
    /// sgd or adam.
    #[arg(long)]
    inner_optimizer: Option<Optimizer>,
    #[arg(long)]
    inner_lr: Option<f64>,
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
    /// Attention masks: half (1 +- 0.5 around 1, the default) or full (down to 0: can remove a
    /// shortcut, costs more on clean data).
    #[arg(long)]
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

pub fn run(args: LearnArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => read_config(path)?,
        None => LearnConfig::default(),
    };
    args.overrides.apply(&mut config);
    if let Some(limit) = args.time_limit {
        config.time_limit_s = Some(limit.as_secs().max(1));
    }
    let dataset = Dataset::open(&args.dataset, args.limits.limits())
        .with_context(|| format!("cannot read dataset {}", args.dataset.display()))?;
    let trusted = config.validation_split.is_some()
        || dataset
            .split_names()
            .contains(&trainer::data::tensors::DEFAULT_VALIDATION_SPLIT);
    let algorithm = args
        .algorithm
        .unwrap_or_else(|| Algorithm::default_for(args.kind, trusted));
    config.validate(args.kind, algorithm)?;
    let request = LearnRequest {
        kind: args.kind,
        algorithm,
        config,
        device: args.device,
        run_id: None,
        stop: trainer::stop::Stop::never(),
    };
    let bar = ProgressBar::new(u64::from(request.config.meta_steps));
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let manifest = learn(&dataset, &request, &args.out, &mut |p| {
        bar.set_length(p.meta_steps as u64);
        bar.set_position(p.meta_step as u64 + 1);
        bar.set_message(format!(
            "L_V {:.4} (best {:.4})",
            p.val_loss, p.best_val_loss
        ));
        tracing::info!(
            meta_step = p.meta_step,
            val_loss = p.val_loss,
            best = p.best_val_loss,
            "meta-step"
        );
    })
    .with_context(|| format!("cannot learn a {} commentary", args.kind))?;
    bar.finish_and_clear();
    println!(
        "wrote {} ({} commentary for {} by {}, validated on {}, best L_V {:.4} after {} meta-steps)",
        args.out.display(),
        manifest.kind,
        manifest.dataset.digest,
        manifest.algorithm,
        manifest.validation,
        manifest
            .metrics
            .get("best_val_loss")
            .copied()
            .unwrap_or(f64::NAN),
        manifest
            .metrics
            .get("meta_steps_done")
            .copied()
            .unwrap_or(0.0)
    );
    Ok(())
}
