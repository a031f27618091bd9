//! `commentary dataset hash|inspect`.

use std::path::PathBuf;

use anyhow::Context as _;
use bytesize::ByteSize;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use schema::DatasetSummary;
use trainer::data::{Dataset, Limits};

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
}

/// Caps on what decoding may use; the defaults suit datasets up to ImageNet-32 scale.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Most bytes an archive may expand to (e.g. 16GiB).
    #[arg(long, env = "COMMENTARY_MAX_EXPANDED_BYTES", default_value = "16GiB")]
    max_expanded_bytes: ByteSize,
    /// Most entries an archive may hold.
    #[arg(long, env = "COMMENTARY_MAX_ENTRIES", default_value_t = Limits::default().max_entries)]
    max_entries: u64,
    /// Most examples a dataset may hold.
    #[arg(long, env = "COMMENTARY_MAX_EXAMPLES", default_value_t = Limits::default().max_examples)]
    max_examples: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_expanded_bytes: self.max_expanded_bytes.as_u64(),
            max_entries: self.max_entries,
            max_examples: self.max_examples,
            ..Limits::default()
        }
    }
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
