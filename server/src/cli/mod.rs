//! Command-line interface: one module per subcommand group, each with its own clap arguments.
//! DESIGN.md's command table lists the commands; `commentary <command> --help` documents each.

mod apply;
mod artifact;
mod bench;
mod credentials;
mod dataset;
mod evaluation;
mod hypergrad;
mod learn;
mod learn_config;
mod limits;
mod login;
mod progress;
mod pull;
mod remote;
mod run;
mod serve;
mod token;
mod values;
mod worker;

use clap::{CommandFactory as _, Parser, Subcommand};

/// Learn, store and reuse dataset commentaries ("Teaching with Commentaries", ICLR 2021).
#[derive(Debug, Parser)]
#[command(name = "commentary", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry: REST API, storage, learning workers, web pages.
    Serve(serve::ServeArgs),
    /// Work with datasets: digest, inspect, push to a registry.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Work with commentary artifacts: verify.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCommand),
    /// Learn a commentary for a dataset and write the artifact.
    Learn(learn::LearnArgs),
    /// Train fresh students with and without a commentary; report the difference.
    Apply(apply::ApplyArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Download a commentary from a registry, verified: the best for a dataset, or one by id.
    Pull(pull::PullArgs),
    /// Queue, follow, list and cancel a registry's learning runs.
    #[command(subcommand)]
    Run(run::RunCommand),
    /// Store a token for a registry (for this CLI and the Python client).
    Login(login::LoginArgs),
    /// Forget the token stored for a registry.
    Logout(login::LogoutArgs),
    /// Learn runs queued on a registry (e.g. on a GPU machine).
    Worker(worker::WorkerArgs),
    /// Manage the registry's bearer tokens (works on the database directly).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Solve a hypergradient problem file (for checking the engine against other frameworks).
    Hypergrad(hypergrad::HypergradArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  commentary completions bash > ~/.local/share/bash-completion/completions/commentary
  commentary completions zsh > \"${fpath[1]}/_commentary\"
  commentary completions fish > ~/.config/fish/completions/commentary.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Pull(args) => pull::pull(args),
        Command::Worker(args) => worker::worker(args),
        Command::Token(command) => token::token(command),
        Command::Dataset(command) => dataset::run(command),
        Command::Artifact(command) => artifact::run(command),
        Command::Hypergrad(args) => hypergrad::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Learn(args) => learn::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Run(command) => run::run(command),
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "commentary",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// Logs go to stderr so command output on stdout stays machine-readable.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap's own consistency checks (unique flags, valid defaults, groups) on every command.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
