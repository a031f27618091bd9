//! `commentary hypergrad SPEC --out OUT`: solve a hypergradient problem file (see
//! `trainer::verify`), so the engine can be checked against other frameworks.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use schema::artifact::HypergradientMethod;
use trainer::device::{ComputeDevice, burn_device};
use trainer::verify::Problem;

#[derive(Debug, Args)]
pub struct HypergradArgs {
    /// The problem file (safetensors with metadata `problem` = weight-bptt or blend-ift).
    spec: PathBuf,
    /// Where to write `hypergrad` and `val_loss` (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// The device to solve on (GPU backends need the matching cargo feature).
    #[arg(long, default_value = "cpu", value_parser = super::values::device())]
    device: ComputeDevice,
    /// Use finite-difference Hessian-vector products (the fallback for models without explicit
    /// backward passes; approximate). IFT problems only.
    #[arg(long)]
    approximate: bool,
}

pub fn run(args: HypergradArgs) -> anyhow::Result<()> {
    let problem = Problem::load(&args.spec)?;
    let device = burn_device(args.device);
    let solution = problem
        .solve_with(&device, args.approximate)
        .with_context(|| format!("cannot solve {}", args.spec.display()))?;
    solution.write(&args.out)?;
    let norm = solution.hypergrad.iter().map(|v| v * v).sum::<f32>().sqrt();
    let approximate = match solution.method {
        HypergradientMethod::Exact => "",
        HypergradientMethod::FiniteDifference => " (approximate)",
    };
    println!(
        "val_loss={} hypergrad_norm={norm} shape={:?} out={} method={}{approximate}",
        solution.val_loss,
        solution.shape,
        args.out.display(),
        solution.method.as_str()
    );
    Ok(())
}
