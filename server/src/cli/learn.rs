//! `commentary learn`: learn a commentary for a dataset and write the artifact.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use schema::{Algorithm, CommentaryKind};
use trainer::data::Dataset;
use trainer::device::ComputeDevice;
use trainer::learn::{LearnRequest, learn};

use super::learn_config::LearnConfigArgs;
use super::limits::LimitArgs;
use super::values;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  commentary learn --dataset fixtures/mnist --kind example-weighting --out /tmp/teacher \\
      --student mlp:32 --commentary-net mlp:16 --inner-steps 10 --meta-steps 5
  commentary learn --dataset /tmp/noisy --kind example-weighting --tabular --out /tmp/weights \\
      --student mlp:64 --inner-steps 1500 --meta-steps 3 --time-limit 10m
  commentary learn --dataset data.zip --kind label-blending --config learn.toml --out blend")]
pub struct LearnArgs {
    /// The dataset: a folder or a .tar, .tar.gz or .zip archive.
    #[arg(long)]
    dataset: PathBuf,
    /// The kind of commentary to learn.
    #[arg(long, value_parser = values::kind())]
    kind: CommentaryKind,
    /// How the hypergradient is computed. Default: for example-weighting truncated-bptt when
    /// the dataset has a val split (bptt without one), ift for the other kinds.
    #[arg(long, value_parser = values::algorithm())]
    algorithm: Option<Algorithm>,
    /// The artifact directory to write (re-running with the same request resumes).
    #[arg(long)]
    out: PathBuf,
    /// The device to learn on (wgpu and cuda need the cargo feature of the same name).
    #[arg(long, default_value = "cpu", value_parser = values::device())]
    device: ComputeDevice,
    #[command(flatten)]
    learn: LearnConfigArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn run(args: LearnArgs) -> anyhow::Result<()> {
    let config = args.learn.config()?;
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
