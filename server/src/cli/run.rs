//! `commentary run create|watch|list|cancel`: drive a registry's learning runs (`/v1/runs`)
//! without curl. `create` takes the flags of `learn` (the LearnConfig) and of `apply` (how the
//! registry evaluates the commentary); `watch` follows the run's server-sent events.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use schema::api::{EventBody, Phase, RunInfo, RunRequest, RunState};
use schema::{Algorithm, CommentaryKind, Sha256};

use super::evaluation::RunEvaluationArgs;
use super::learn_config::LearnConfigArgs;
use super::remote::{ServerArgs, runtime};
use super::{progress, values};
use crate::registry::client::Client;

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Queue a learning run for a stored dataset; prints the run id.
    #[command(after_help = "Examples:
  commentary run create --server http://127.0.0.1:8080 --dataset sha256:534e37... \\
      --kind example-weighting --meta-steps 5 --inner-steps 10 --student mlp:32 \\
      --commentary-net mlp:16 --seeds 1 --steps 200 --watch
  commentary run create --server http://127.0.0.1:8080 --dataset 534e37... \\
      --kind label-blending --config learn.toml")]
    Create(Box<CreateArgs>),
    /// Follow a run's progress until it ends; prints the commentary id when it succeeds, and
    /// exits non-zero with the failure when it fails or is cancelled.
    Watch {
        /// The run's id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List runs, newest first.
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Only runs for this dataset (sha256:<hex> or bare hex).
        #[arg(long)]
        dataset: Option<Sha256>,
        /// Only runs in this state.
        #[arg(long, value_parser = values::run_state())]
        state: Option<RunState>,
        /// At most this many (the registry gives at most 500 at once).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Print the runs as JSON (the API's RunInfo) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running run (a running one stops at its worker's next heartbeat).
    Cancel {
        /// The run's id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The dataset's digest (sha256:<hex> or bare hex); push it first (`dataset push`).
    #[arg(long)]
    dataset: Sha256,
    /// The kind of commentary to learn.
    #[arg(long, value_parser = values::kind())]
    kind: CommentaryKind,
    /// How the hypergradient is computed. Default: for example-weighting truncated-bptt when
    /// the dataset has a val split (bptt without one), ift for the other kinds.
    #[arg(long, value_parser = values::algorithm())]
    algorithm: Option<Algorithm>,
    /// Follow the run until it ends, as `run watch` does.
    #[arg(long)]
    watch: bool,
    #[command(flatten, next_help_heading = "Learning (as `commentary learn`)")]
    learn: LearnConfigArgs,
    #[command(flatten, next_help_heading = "Evaluation (as `commentary apply`)")]
    evaluation: RunEvaluationArgs,
    /// Do not evaluate the commentary (it then has no improvement, and `pull` takes it only
    /// with --allow-no-improvement).
    #[arg(
        long,
        conflicts_with = "seeds",
        help_heading = "Evaluation (as `commentary apply`)"
    )]
    no_evaluation: bool,
}

pub fn run(command: RunCommand) -> anyhow::Result<()> {
    let runtime = runtime()?;
    match command {
        RunCommand::Create(args) => {
            let client = args.server.client()?;
            let mut evaluation = args.evaluation.0.evaluation();
            if args.no_evaluation {
                evaluation.seeds.clear();
            }
            let request = RunRequest {
                dataset: args.dataset.to_string(),
                kind: args.kind,
                algorithm: args.algorithm,
                config: args.learn.config()?,
                evaluation,
            };
            let created = runtime.block_on(client.create_run(&request))?;
            println!("{}", created.id);
            if args.watch {
                let run = runtime.block_on(watch(&client, &created.id))?;
                return finished(&run);
            }
        }
        RunCommand::Watch { id, server } => {
            let client = server.client()?;
            let run = runtime.block_on(watch(&client, &id))?;
            return finished(&run);
        }
        RunCommand::List {
            server,
            dataset,
            state,
            limit,
            json,
        } => {
            let client = server.client()?;
            let page = runtime.block_on(client.runs(dataset.as_ref(), state, limit))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.items)?);
            } else {
                print!("{}", table(&page.items));
                if page.next_cursor.is_some() {
                    eprintln!("(more runs than --limit {limit})");
                }
            }
        }
        RunCommand::Cancel { id, server } => {
            let client = server.client()?;
            let run = runtime.block_on(client.cancel_run(&id))?;
            println!("{} {}", run.id, run.state);
        }
    }
    Ok(())
}

/// Succeeded: prints the commentary id. Failed or cancelled: an error with the reason.
fn finished(run: &RunInfo) -> anyhow::Result<()> {
    match run.state {
        RunState::Succeeded => {
            let commentary = run
                .commentary_id
                .as_deref()
                .context("the run succeeded without a commentary id")?;
            eprintln!("run {} succeeded: commentary {commentary}", run.id);
            println!("{commentary}");
            Ok(())
        }
        RunState::Failed => anyhow::bail!(
            "run {} failed: {}",
            run.id,
            run.error.as_deref().unwrap_or("no reason given")
        ),
        RunState::Cancelled => anyhow::bail!("run {} was cancelled", run.id),
        RunState::Queued | RunState::Running => {
            anyhow::bail!("run {} has not ended ({})", run.id, run.state)
        }
    }
}

/// Consecutive broken streams after which `watch` gives up.
const MAX_RECONNECTS: u32 = 5;

/// Follows the run's events (resuming after the last one seen when the stream breaks) until it
/// ends; returns the run as it ended.
async fn watch(client: &Client, id: &str) -> anyhow::Result<RunInfo> {
    let run = client.run(id).await?;
    let mut view = RunView::new(&run);
    let mut after = 0;
    let mut broken = 0;
    loop {
        let followed = client
            .run_events(id, after, &mut |event| {
                after = event.seq;
                view.show(&event.body);
            })
            .await;
        let run = client.run(id).await?;
        if run.state.is_terminal() {
            view.bar.finish_and_clear();
            return Ok(run);
        }
        broken += 1;
        let cause = match followed {
            Ok(()) => "the event stream ended before the run did".to_string(),
            Err(e) => format!("{e:#}"),
        };
        anyhow::ensure!(
            broken <= MAX_RECONNECTS,
            "cannot follow run {id}: {cause} ({MAX_RECONNECTS} reconnections tried)"
        );
        view.say(&format!("reconnecting: {cause}"));
        tokio::time::sleep(Duration::from_secs(u64::from(broken))).await;
    }
}

/// A run's progress on stderr: a bar of meta-steps (then of students evaluated), and its state
/// changes and log lines.
struct RunView {
    bar: ProgressBar,
    phase: Option<Phase>,
}

impl RunView {
    fn new(run: &RunInfo) -> Self {
        let bar = progress::steps("learning", u64::from(run.config.meta_steps));
        bar.set_message(format!("run {} ({})", run.id, run.state));
        Self { bar, phase: None }
    }

    /// A line above the bar (or on stderr when the bar is hidden).
    fn say(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    fn show(&mut self, event: &EventBody) {
        match event {
            EventBody::State { state, message } => {
                let why = message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                self.say(&format!("{state}{why}"));
            }
            EventBody::Log { message } => self.say(message),
            EventBody::Progress(progress) => {
                if self.phase != Some(progress.phase) {
                    self.phase = Some(progress.phase);
                    self.bar.set_prefix(match progress.phase {
                        Phase::Learning => "learning",
                        Phase::Evaluating => "evaluating",
                        Phase::Done => "done",
                    });
                    self.bar.reset_elapsed();
                }
                self.bar.set_length(progress.total);
                self.bar.set_position(progress.step);
                self.bar
                    .set_message(match (progress.phase, progress.val_loss) {
                        (Phase::Learning, Some(loss)) => format!(
                            "meta-steps  L_V {loss:.4} (best {:.4})",
                            progress.best_val_loss.unwrap_or(loss)
                        ),
                        (Phase::Evaluating, _) => "students trained".to_string(),
                        _ => String::new(),
                    });
                if self.bar.is_hidden() && progress.phase == Phase::Learning {
                    eprintln!(
                        "meta-step {}/{}{}",
                        progress.step,
                        progress.total,
                        progress
                            .val_loss
                            .map(|l| format!(": L_V {l:.4}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
}

/// The runs as a table: id, state, kind, algorithm, progress, dataset, created.
fn table(runs: &[RunInfo]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let id_width = runs.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    let _ = writeln!(
        out,
        "{:<id_width$}  {:<9}  {:<17}  {:<14}  {:<18}  {:<19}  created",
        "id", "state", "kind", "algorithm", "progress", "dataset"
    );
    for run in runs {
        let progress = run
            .progress
            .as_ref()
            .map(|p| {
                let phase = match p.phase {
                    Phase::Learning => "learning",
                    Phase::Evaluating => "evaluating",
                    Phase::Done => "done",
                };
                format!("{phase} {}/{}", p.step, p.total)
            })
            .unwrap_or_else(|| "-".into());
        let dataset = run.dataset.to_string();
        let _ = writeln!(
            out,
            "{:<id_width$}  {:<9}  {:<17}  {:<14}  {:<18}  {:<19}  {}",
            run.id,
            run.state.as_str(),
            run.kind.as_str(),
            run.algorithm.as_str(),
            progress,
            // sha256: and the first 12 hex digits.
            dataset.get(..19).unwrap_or(&dataset),
            run.created_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    out
}
