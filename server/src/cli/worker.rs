//! `commentary worker`: learn runs queued on a registry (e.g. on a GPU machine) until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use trainer::device::ComputeDevice;

use super::limits::LimitArgs;
use super::remote::{ServerArgs, runtime};
use crate::registry::worker::{WorkerOptions, work_forever};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  commentary worker --server http://127.0.0.1:8080 --token cmt_...
  commentary worker --server https://registry.example --device cuda --name gpu-box
  commentary login --server https://reg.example && commentary worker --server https://reg.example")]
pub struct WorkerArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The device runs are learned on (wgpu and cuda need the cargo feature of the same name).
    #[arg(long, default_value = "cpu", value_parser = super::values::device())]
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
    #[command(flatten)]
    limits: LimitArgs,
    /// Exit when stdin closes (how `serve --workers N` ties its child workers to itself).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
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
        limits: args.limits.limits(),
    };
    if args.exit_with_parent {
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            eprintln!("the registry that started this worker is gone; exiting");
            std::process::exit(0);
        });
    }
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
