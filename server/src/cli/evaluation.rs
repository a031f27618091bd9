//! How fresh students are trained to measure a commentary: the flags of `commentary apply`, also
//! taken by `commentary run create` (the registry evaluates a run's commentary the same way).

use clap::{ArgMatches, Args, FromArgMatches};
use schema::api::Evaluation;

/// Every default is `Evaluation::default()`'s (the registry's evaluation of a run uses the
/// same).
#[derive(Debug, Args)]
pub(super) struct EvaluationArgs {
    /// Seeds of the fresh students, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = Evaluation::default().seeds)]
    seeds: Vec<u64>,
    /// Student training steps.
    #[arg(long, default_value_t = Evaluation::default().steps)]
    steps: u32,
    /// Evaluate on the validation examples every this many steps.
    #[arg(long, default_value_t = Evaluation::default().eval_every)]
    eval_every: u32,
    /// The students' batch size.
    #[arg(long = "batch-size", id = "eval_batch_size", value_name = "BATCH_SIZE", default_value_t = Evaluation::default().batch_size)]
    batch_size: u32,
    /// Adam learning rate of the students.
    #[arg(long, default_value_t = Evaluation::default().lr)]
    lr: f64,
    /// Attention masks: the share of pixels the removal test blanks.
    #[arg(long, default_value_t = Evaluation::default().mask_removed_fraction)]
    mask_removed_fraction: f64,
}

/// The id of the students' batch size (not `batch_size`, which is learning's in `run create`).
const EVAL_BATCH_SIZE: &str = "eval_batch_size";

impl EvaluationArgs {
    /// The evaluation these flags describe (the Adam betas and eps keep their defaults).
    pub(super) fn evaluation(&self) -> Evaluation {
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

/// The same flags beside learning's (`run create`): there `--batch-size` is the learning batch
/// size, so the students' one is `--eval-batch-size`.
#[derive(Debug)]
pub(super) struct RunEvaluationArgs(pub(super) EvaluationArgs);

impl RunEvaluationArgs {
    fn rename(command: clap::Command) -> clap::Command {
        command.mut_arg(EVAL_BATCH_SIZE, |arg| {
            arg.long("eval-batch-size").value_name("EVAL_BATCH_SIZE")
        })
    }
}

impl FromArgMatches for RunEvaluationArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        EvaluationArgs::from_arg_matches(matches).map(Self)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl Args for RunEvaluationArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        Self::rename(EvaluationArgs::augment_args(command))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::rename(EvaluationArgs::augment_args_for_update(command))
    }
}
