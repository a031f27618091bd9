//! Reaching a registry from the command line: `ServerArgs` (shared by `dataset push`, `pull`,
//! `run` and `worker`), which token a command sends, and `dataset push`.

use std::path::Path;

use anyhow::Context as _;
use clap::Args;

use super::{credentials, progress};
use crate::registry::client::Client;

/// How to reach a registry.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The registry's URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "COMMENTARY_SERVER")]
    pub server: String,
    /// A bearer token (needed for writes unless the registry allows anonymous ones). Default:
    /// COMMENTARY_TOKEN, else the one `commentary login` stored for this server.
    #[arg(long, env = "COMMENTARY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        client(&self.server, self.token.clone())
    }
}

/// A client of `server` with the token a command sends: `--token`, else `COMMENTARY_TOKEN`
/// (clap reads both into `token`, the flag first), else the credentials file's entry for
/// `server`.
pub(super) fn client(server: &str, token: Option<String>) -> anyhow::Result<Client> {
    let token = token
        .filter(|t| !t.is_empty())
        .or_else(|| credentials::stored_token(server));
    Client::new(server, token)
}

/// A runtime for one command's async calls.
pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// `commentary dataset push`.
pub fn push(path: &Path, name: Option<String>, server: &ServerArgs) -> anyhow::Result<()> {
    let name = name.unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into())
    });
    let client = server.client()?;
    let bar = progress::bytes("uploading");
    let (info, created) = runtime()?.block_on(client.push_dataset(path, &name, &bar))?;
    bar.finish_and_clear();
    eprintln!(
        "{} {} ({} examples, {} classes)",
        if created { "stored" } else { "already stored:" },
        info.name,
        info.summary.splits.iter().map(|s| s.examples).sum::<u64>(),
        info.summary.classes.len()
    );
    println!("{}", info.digest);
    Ok(())
}
