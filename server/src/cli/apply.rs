//! `commentary apply`: train fresh students with and without a commentary and report the
//! difference (also saved in the artifact as report.json).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use schema::arch::NetSpec;
use schema::artifact::{REPORT_FILE, write_atomically};
use trainer::apply::{ApplyOptions, apply};
use trainer::data::Dataset;
use trainer::device::ComputeDevice;

use super::evaluation::EvaluationArgs;
use super::limits::LimitArgs;
use super::pull::PickArgs;
use super::remote::runtime;
use super::{progress, values};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  commentary apply --dataset fixtures/mnist --commentary /tmp/teacher --report report.json \\
      --student mlp:32 --steps 200
  commentary apply --dataset fixtures/mnist --server http://127.0.0.1:8080 --report report.json
  commentary apply --dataset /tmp/noisy --commentary /tmp/weights --report /tmp/report.json \\
      --seeds 1,2,3 --steps 1500 --eval-every 100")]
pub struct ApplyArgs {
    /// The dataset to train on: a folder or a .tar, .tar.gz or .zip archive.
    #[arg(long)]
    dataset: PathBuf,
    /// The commentary artifact directory.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    commentary: Option<PathBuf>,
    /// Fetch the best commentary for the dataset's digest from this registry instead (or the
    /// one --id names).
    #[arg(long, env = "COMMENTARY_SERVER")]
    server: Option<String>,
    #[command(flatten)]
    pick: PickArgs,
    /// With --server: a bearer token, when the registry's reads are private. Default:
    /// COMMENTARY_TOKEN, else the one `commentary login` stored for the server.
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
    /// The device the students train on.
    #[arg(long, default_value = "cpu", value_parser = values::device())]
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

pub fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let dataset = Dataset::open(&args.dataset, args.limits.limits())
        .with_context(|| format!("cannot read dataset {}", args.dataset.display()))?;
    // With --server: the local digest picks the registry's best commentary for this data.
    let pulled;
    let commentary = match (&args.commentary, &args.server) {
        (Some(dir), _) => dir.clone(),
        (None, Some(server)) => {
            let pick = args.pick.pick(|| {
                Ok(dataset
                    .summarize()
                    .with_context(|| format!("cannot digest {}", args.dataset.display()))?
                    .digest)
            })?;
            pulled = tempfile::tempdir().context("cannot create a temporary folder")?;
            let client = super::remote::client(server, args.token.clone())?;
            let bar = progress::bytes("downloading");
            let detail = runtime()?.block_on(client.pull(&pick, pulled.path(), &bar))?;
            bar.finish_and_clear();
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
    let mut students = StudentsBar::new(&options.evaluation.seeds);
    let report = apply(
        &dataset,
        Some(&args.dataset),
        &commentary,
        &options,
        &mut |arm, seed| students.start(arm, seed),
    )
    .with_context(|| format!("cannot apply {}", commentary.display()))?;
    students.finish();
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

/// Students trained, on a bar: the trainer names each student as it starts (an arm and a
/// seed); the arms of one seed are known once the second seed starts, and the bar's length
/// from then on.
struct StudentsBar {
    bar: indicatif::ProgressBar,
    seeds: usize,
    first_seed: Option<u64>,
    started: u64,
    per_seed: Option<u64>,
}

impl StudentsBar {
    fn new(seeds: &[u64]) -> Self {
        Self {
            // Baseline and with the commentary at least; more arms lengthen it.
            bar: progress::steps("students", 2 * seeds.len() as u64),
            seeds: seeds.len(),
            first_seed: None,
            started: 0,
            per_seed: None,
        }
    }

    fn start(&mut self, arm: &str, seed: u64) {
        let first = *self.first_seed.get_or_insert(seed);
        if seed != first && self.per_seed.is_none() {
            self.per_seed = Some(self.started);
            self.bar.set_length(self.started * self.seeds as u64);
        }
        self.bar.set_position(self.started);
        self.started += 1;
        if self.per_seed.is_none() && self.started > self.bar.length().unwrap_or(0) {
            self.bar.set_length(self.started);
        }
        self.bar
            .set_message(format!("training a student ({arm}, seed {seed})"));
        // The bar is hidden when stderr is not a terminal: logs still say what runs.
        if self.bar.is_hidden() {
            eprintln!("training a student ({arm}, seed {seed})");
        }
    }

    fn finish(&self) {
        self.bar.set_position(self.started);
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use schema::api::Evaluation;

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
