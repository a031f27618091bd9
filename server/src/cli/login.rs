//! `commentary login` and `commentary logout`: store or remove a registry's token in the
//! credentials file (see `credentials`), which every command that talks to a registry reads
//! after `--token` and `COMMENTARY_TOKEN`.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::Context as _;
use clap::Args;

use super::credentials;
use super::remote::runtime;
use crate::registry::client::Client;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  commentary login --server http://127.0.0.1:8080 --token cmt_...
  commentary token create --scope write | commentary login --server http://127.0.0.1:8080")]
pub struct LoginArgs {
    /// The registry's URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "COMMENTARY_SERVER")]
    server: String,
    /// The token (default: read from stdin, so it stays out of the shell's history).
    #[arg(long)]
    token: Option<String>,
    /// Store the token without asking the registry whether it knows it.
    #[arg(long)]
    no_check: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry whose token to forget.
    #[arg(long, env = "COMMENTARY_SERVER")]
    server: String,
}

/// `commentary login`: checks the token with the registry, then stores it.
pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let token = match args.token {
        Some(token) => token.trim().to_string(),
        None => read_token_from_stdin()?,
    };
    anyhow::ensure!(!token.is_empty(), "the token is empty");
    let server = credentials::server_key(&args.server).to_string();
    if !args.no_check {
        let client = Client::new(&server, Some(token.clone()))?;
        runtime()?
            .block_on(client.check_token())
            .with_context(|| format!("not logged in to {server}"))?;
    }
    let path = credentials::path()?;
    credentials::store_in(&path, &server, &token)?;
    eprintln!("logged in to {server} (token stored in {})", path.display());
    Ok(())
}

/// `commentary logout`.
pub fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let path = credentials::path()?;
    let server = credentials::server_key(&args.server);
    if credentials::remove_in(&path, server)? {
        eprintln!(
            "logged out of {server} (its token is removed from {})",
            path.display()
        );
    } else {
        eprintln!("no token stored for {server} in {}", path.display());
    }
    Ok(())
}

/// One line from stdin (with a prompt when it is a terminal).
fn read_token_from_stdin() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("token: ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the token from stdin")?;
    Ok(line.trim().to_string())
}
