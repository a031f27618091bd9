//! Commands that talk to a registry: `dataset push`, `pull`, `worker`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use schema::{CommentaryKind, Sha256};
use trainer::device::ComputeDevice;

use crate::registry::client::Client;
use crate::registry::worker::{WorkerOptions, work_forever};

/// How to reach a registry.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The registry's URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "COMMENTARY_SERVER")]
    pub server: String,
    /// A bearer token (needed for writes unless the registry allows anonymous ones).
    #[arg(long, env = "COMMENTARY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.server, self.token.clone())
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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
    let (info, created) = runtime()?.block_on(client.push_dataset(path, &name))?;
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

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The dataset's digest (sha256:<hex> or bare hex).
    #[arg(long)]
    dataset: Sha256,
    /// Only commentaries of this kind.
    #[arg(long)]
    kind: Option<CommentaryKind>,
    /// The artifact directory to write.
    #[arg(long)]
    out: PathBuf,
}

/// `commentary pull`: the best commentary for a dataset, verified, into a directory.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let detail = runtime()?.block_on(client.pull(&args.dataset, args.kind, &args.out))?;
    println!(
        "pulled {} ({} commentary{}) into {}",
        detail.info.id,
        detail.info.kind,
        detail
            .info
            .improvement
            .map(|g| format!(", test-accuracy gain {g:+.4}"))
            .unwrap_or_default(),
        args.out.display()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: ComputeDevice,
    /// A name shown on the runs this worker takes (default: host name and process id).
    #[arg(long)]
    name: Option<String>,
    /// Where to keep datasets and artifacts while working.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("commentary-worker"))]
    scratch: PathBuf,
    /// How often to ask for work when the queue is empty.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    poll: Duration,
}

/// `commentary worker`: learns runs from a registry until Ctrl-C.
pub fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let name = args.name.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let options = WorkerOptions {
        name: name.clone(),
        device: args.device,
        poll: args.poll,
        scratch: args.scratch,
    };
    let runtime = runtime()?;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        eprintln!("worker {name} taking runs from {}", client.base());
        let work = tokio::spawn(work_forever(client, options, stopped));
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping (a run in progress is left to be re-queued)");
        let _ = stop.send(true);
        let _ = work.await;
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}
