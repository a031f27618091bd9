//! `commentary apply`: train fresh students with and without a commentary and report the
//! difference (also saved in the artifact as report.json).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use schema::api::Evaluation;
use schema::arch::NetSpec;
use schema::artifact::{REPORT_FILE, write_atomically};
use trainer::apply::{ApplyOptions, apply};
use trainer::data::Dataset;
use trainer::device::ComputeDevice;

use super::limits::LimitArgs;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The dataset to train on: a folder or a .tar, .tar.gz or .zip archive.
    #[arg(long)]
    dataset: PathBuf,
    /// The commentary artifact directory.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    commentary: Option<PathBuf>,
    /// Fetch the best commentary for the dataset's digest from this registry instead.
    #[arg(long, env = "COMMENTARY_SERVER")]
    server: Option<String>,
    /// With --server: only commentaries of this kind.
    #[arg(long, requires = "server")]
    kind: Option<schema::CommentaryKind>,
    /// With --server: a bearer token, when the registry's reads are private.
    #[arg(long, env = "COMMENTARY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where to write the report (JSON).
    #[arg(long)]
    report: PathBuf,
    /// Student architecture (cbr, mlp, mlp:<width>,...); default: the one used for learning.
    #[arg(long, value_parser = NetSpec::parse)]
    student: Option<NetSpec>,
    #[command(flatten)]
    evaluation: EvaluationArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: ComputeDevice,
    /// Apply even if the dataset's digest differs from the commentary's.
    #[arg(long)]
    force: bool,
    /// Train on a seeded subset of this many examples (a small-data regime).
    #[arg(long)]
    train_examples: Option<usize>,
    /// The dataset's corruption.json, to score per-example weights against its flipped labels
    /// (default: corruption.json in the dataset folder, when there is one).
    #[arg(long)]
    corruption: Option<PathBuf>,
    /// Skip the reference arms (train+val with a trusted validation split; class weights on
    /// imbalanced data).
    #[arg(long)]
    no_references: bool,
}

/// How the students are trained; every default is `Evaluation::default()`'s (the registry's
/// evaluation of a run uses the same).
#[derive(Debug, Args)]
pub(crate) struct EvaluationArgs {
    /// Seeds of the fresh students, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = Evaluation::default().seeds)]
    seeds: Vec<u64>,
    /// Student training steps.
    #[arg(long, default_value_t = Evaluation::default().steps)]
    steps: u32,
    /// Evaluate on the validation examples every this many steps.
    #[arg(long, default_value_t = Evaluation::default().eval_every)]
    eval_every: u32,
    #[arg(long, default_value_t = Evaluation::default().batch_size)]
    batch_size: u32,
    /// Adam learning rate of the students.
    #[arg(long, default_value_t = Evaluation::default().lr)]
    lr: f64,
    /// Attention masks: the share of pixels the removal test blanks.
    #[arg(long, default_value_t = Evaluation::default().mask_removed_fraction)]
    mask_removed_fraction: f64,
}

impl EvaluationArgs {
    /// The evaluation these flags describe (the Adam betas and eps keep their defaults).
    pub(crate) fn evaluation(&self) -> Evaluation {
        Evaluation {
            seeds: self.seeds.clone(),
            steps: self.steps,
            eval_every: self.eval_every,
            batch_size: self.batch_size,
            lr: self.lr,
            mask_removed_fraction: self.mask_removed_fraction,
            ..Evaluation::default()
        }
    }
}

pub fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let dataset = Dataset::open(&args.dataset, args.limits.limits())
        .with_context(|| format!("cannot read dataset {}", args.dataset.display()))?;
    // With --server: the local digest picks the registry's best commentary for this data.
    let pulled;
    let commentary = match (&args.commentary, &args.server) {
        (Some(dir), _) => dir.clone(),
        (None, Some(server)) => {
            let digest = dataset
                .summarize()
                .with_context(|| format!("cannot digest {}", args.dataset.display()))?
                .digest;
            pulled = tempfile::tempdir().context("cannot create a temporary folder")?;
            let client = crate::registry::client::Client::new(server, args.token.clone())?;
            let detail = tokio::runtime::Runtime::new()?.block_on(client.pull(
                &digest,
                args.kind,
                pulled.path(),
            ))?;
            eprintln!(
                "using commentary {} ({}) from {server}",
                detail.info.id, detail.info.kind
            );
            pulled.path().to_path_buf()
        }
        (None, None) => anyhow::bail!("give --commentary DIR or --server URL"),
    };
    let options = ApplyOptions {
        student: args.student,
        evaluation: args.evaluation.evaluation(),
        device: args.device,
        force: args.force,
        train_examples: args.train_examples,
        corruption: args.corruption,
        references: !args.no_references,
        stop: trainer::stop::Stop::never(),
    };
    let report = apply(
        &dataset,
        Some(&args.dataset),
        &commentary,
        &options,
        &mut |arm, seed| {
            eprintln!("training a student ({arm}, seed {seed})");
        },
    )
    .with_context(|| format!("cannot apply {}", commentary.display()))?;
    let json = serde_json::to_vec_pretty(&report)?;
    std::fs::write(&args.report, &json)
        .with_context(|| format!("cannot write {}", args.report.display()))?;
    write_atomically(&commentary.join(REPORT_FILE), &json)?;
    if let Some(random) = &report.random_blending {
        println!(
            "random blending: test accuracy {:.4} +- {:.4}",
            random.test_accuracy.mean, random.test_accuracy.std
        );
    }
    println!(
        "test accuracy: baseline {:.4} +- {:.4}, with commentary {:.4} +- {:.4} (gain {:+.4}); steps to the baseline's \
         final validation accuracy: {:?}",
        report.baseline.test_accuracy.mean,
        report.baseline.test_accuracy.std,
        report.with_commentary.test_accuracy.mean,
        report.with_commentary.test_accuracy.std,
        report.test_accuracy_gain,
        report.steps_to_baseline_accuracy
    );
    println!(
        "validated on: {}",
        report.validation.as_deref().unwrap_or("-")
    );
    for reference in &report.reference_arms {
        println!(
            "reference {}: test accuracy {:.4} +- {:.4}",
            reference.name, reference.arm.test_accuracy.mean, reference.arm.test_accuracy.std
        );
    }
    if let Some(gain) = report.gain_over_best_reference {
        println!("gain over the best reference arm: {gain:+.4}");
    }
    if let Some(found) = &report.label_noise {
        println!(
            "flipped labels found by low weight: AUROC {:.3}, precision among the lowest {} {:.3}",
            found.auroc, found.flipped, found.precision_at_noise_rate
        );
    }
    if report.harmful {
        println!(
            "warning: this commentary hurts (z = {:.2}): the students trained with it are worse beyond noise",
            report.gain_z
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// The evaluation `commentary apply <required flags> <extra>` describes.
    fn parsed(extra: &[&str]) -> Evaluation {
        let required = [
            "commentary",
            "apply",
            "--dataset",
            "d",
            "--commentary",
            "c",
            "--report",
            "r.json",
        ];
        let cli = crate::cli::Cli::try_parse_from(required.iter().chain(extra)).expect("parse");
        let crate::cli::Command::Apply(args) = cli.command else {
            panic!("not apply");
        };
        args.evaluation.evaluation()
    }

    /// `apply` with no evaluation flags trains its students as the registry does.
    #[test]
    fn evaluation_flags_default_to_the_registry_s_evaluation() {
        assert_eq!(parsed(&[]), Evaluation::default());
        let evaluation = parsed(&["--seeds", "4,5", "--steps", "7"]);
        assert_eq!((evaluation.seeds, evaluation.steps), (vec![4, 5], 7));
    }
}
