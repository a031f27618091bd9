//! `commentary`: the one binary. Parses the command line and hands off to `server::cli`.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = server::cli::Cli::parse();
    server::cli::init_tracing(cli.verbose);
    match server::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
