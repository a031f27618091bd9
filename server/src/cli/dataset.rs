//! `commentary dataset hash|inspect|spurious|corrupt|push`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use schema::DatasetSummary;
use schema::corruption::{CorruptionOptions, NoiseKind};
use trainer::data::Dataset;

use super::limits::LimitArgs;

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Print the dataset's content digest (`sha256:<hex>`).
    Hash {
        /// A dataset folder, or a .tar, .tar.gz or .zip archive of one.
        path: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Print a summary: format, digest, splits, shapes, classes and class balance.
    Inspect {
        /// A dataset folder, or a .tar, .tar.gz or .zip archive of one.
        path: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Upload a dataset (folder or archive) to a registry; prints its digest.
    #[command(after_help = "Examples:
  commentary dataset push fixtures/mnist --server http://127.0.0.1:8080
  commentary dataset push cifar-10-binary.tar.gz --name cifar10 --server https://reg.example
  digest=$(commentary dataset push /tmp/noisy --server http://127.0.0.1:8080)")]
    Push {
        /// A dataset folder (packed as .tar.gz) or a .tar, .tar.gz or .zip archive.
        path: PathBuf,
        /// A name for people (default: the file or folder name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        server: super::remote::ServerArgs,
    },
    /// Write the spurious-background variant: images centred on a larger canvas with a bright
    /// patch on its border, at a class-determined position in train and a random one in test.
    Spurious {
        /// The source dataset.
        path: PathBuf,
        /// The folder to write (gzipped IDX).
        #[arg(long)]
        out: PathBuf,
        /// Side of the square canvas in pixels.
        #[arg(long, default_value_t = 40)]
        canvas: usize,
        /// Seed of the test split's random patch positions.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Write a variant with known problems: a clean, class-balanced `val` split held out of
    /// train, then train corrupted (flipped labels, long-tailed classes, a class-correlated
    /// patch); test stays clean. DIR/corruption.json records what was done.
    ///
    /// Example: commentary dataset corrupt fixtures/mnist --out /tmp/noisy --label-noise 0.4 --noise pair
    Corrupt {
        /// The source dataset.
        path: PathBuf,
        /// The folder to write (gzipped IDX and corruption.json).
        #[arg(long)]
        out: PathBuf,
        /// Share of train labels flipped, in [0, 1).
        #[arg(long, default_value_t = 0.0)]
        label_noise: f64,
        /// How labels are flipped.
        #[arg(long, default_value = "symmetric", value_parser = super::values::noise())]
        noise: NoiseKind,
        /// Largest over smallest class count in train (n_c = n_max * r^(-c/(C-1))); 1: none.
        #[arg(long, default_value_t = 1.0)]
        imbalance: f64,
        /// Add a class-correlated background patch in train (random places in val and test).
        #[arg(long)]
        spurious: bool,
        /// Canvas side with --spurious.
        #[arg(long, requires = "spurious")]
        canvas: Option<u32>,
        /// Class-balanced clean examples held out of train as the val split.
        #[arg(long, default_value_t = 500)]
        clean_val: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

pub fn run(command: DatasetCommand) -> anyhow::Result<()> {
    match command {
        DatasetCommand::Push { path, name, server } => super::remote::push(&path, name, &server)?,
        DatasetCommand::Hash { path, limits } => {
            let summary = summarize(&path, &limits)?;
            println!("{}", summary.digest);
        }
        DatasetCommand::Spurious {
            path,
            out,
            canvas,
            seed,
            limits,
        } => {
            let dataset = Dataset::open(&path, limits.limits())
                .with_context(|| format!("cannot read dataset {}", path.display()))?;
            trainer::data::spurious::write_spurious(
                &dataset,
                &out,
                trainer::data::spurious::SpuriousOptions { canvas, seed },
            )
            .with_context(|| format!("cannot write the spurious variant to {}", out.display()))?;
            let summary = summarize(&out, &limits)?;
            println!("wrote {} ({})", out.display(), summary.digest);
        }
        DatasetCommand::Corrupt {
            path,
            out,
            label_noise,
            noise,
            imbalance,
            spurious,
            canvas,
            clean_val,
            seed,
            limits,
        } => {
            let dataset = Dataset::open(&path, limits.limits())
                .with_context(|| format!("cannot read dataset {}", path.display()))?;
            let options = CorruptionOptions {
                label_noise,
                noise,
                imbalance,
                spurious,
                canvas: spurious.then_some(canvas.unwrap_or(40)),
                clean_val,
                seed,
            };
            let record = trainer::data::corrupt::write_corrupted(&dataset, &out, &options)
                .with_context(|| {
                    format!("cannot write the corrupted variant to {}", out.display())
                })?;
            println!(
                "wrote {} ({}): {} train examples, {} labels flipped, {clean_val} clean val examples",
                out.display(),
                record.digest,
                record.train_examples,
                record.flipped.len()
            );
        }
        DatasetCommand::Inspect { path, json, limits } => {
            let summary = summarize(&path, &limits)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", render_summary(&path, &summary));
            }
        }
    }
    Ok(())
}

/// Opens and digests a dataset with a spinner on stderr (hidden when stderr is not a terminal).
fn summarize(path: &std::path::Path, limits: &LimitArgs) -> anyhow::Result<DatasetSummary> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!("opening {}", path.display()));
    let dataset = Dataset::open(path, limits.limits())
        .with_context(|| format!("cannot read dataset {}", path.display()))?;
    let summary = dataset
        .summarize_with_progress(&mut |split, done| {
            spinner.set_message(format!("hashing {split}: {done} examples"));
            spinner.tick();
        })
        .with_context(|| format!("cannot read dataset {}", path.display()))?;
    spinner.finish_and_clear();
    Ok(summary)
}

/// The human-readable form of `inspect`.
fn render_summary(path: &std::path::Path, summary: &DatasetSummary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let classes = summary.classes.len();
    let _ = writeln!(out, "path     {}", path.display());
    let _ = writeln!(out, "format   {}", summary.format);
    let _ = writeln!(out, "digest   {}", summary.digest);
    let _ = writeln!(out, "classes  {classes}");
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<12} {:>10}  shape (HxWxC)", "split", "examples");
    for split in &summary.splits {
        let _ = writeln!(
            out,
            "{:<12} {:>10}  {}",
            split.name, split.examples, split.shape
        );
    }
    let _ = writeln!(out);
    let width = summary
        .classes
        .iter()
        .map(|c| c.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = write!(out, "{:<width$}", "class");
    for split in &summary.splits {
        let _ = write!(out, " {:>17}", split.name);
    }
    let _ = writeln!(out);
    for (label, name) in summary.classes.iter().enumerate() {
        let _ = write!(out, "{name:<width$}");
        for split in &summary.splits {
            let count = split.class_counts.get(label).copied().unwrap_or(0);
            let share = 100.0 * count as f64 / split.examples.max(1) as f64;
            let _ = write!(out, " {count:>9} ({share:>5.1}%)");
        }
        let _ = writeln!(out);
    }
    out
}
