//! `serve --workers N` runs its workers as child processes (`commentary worker`, talking to
//! this server over loopback with the process's internal token), supervised: a run whose
//! learning aborts its process (an allocation the system refuses, a backend's crash) takes
//! down that worker only, which is started again; the registry keeps serving, and the run is
//! re-queued when its lease expires (and fails after `--max-attempts`). A worker whose
//! registry process is gone exits too (`--exit-with-parent`: its stdin pipe closes).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use trainer::data::Limits;
use trainer::device::ComputeDevice;

/// How one child worker is started.
#[derive(Debug, Clone)]
pub struct ChildWorker {
    pub name: String,
    /// The registry's own address (`http://127.0.0.1:PORT`).
    pub server: String,
    pub token: String,
    pub device: ComputeDevice,
    pub scratch: PathBuf,
    pub limits: Limits,
}

/// How long a worker that exited waits before it is started again.
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// How often the supervisor looks whether its worker is still alive.
const POLL: Duration = Duration::from_millis(200);

impl ChildWorker {
    /// The `commentary worker` arguments (the decoding caps as flags, so the child decodes
    /// datasets with the registry's limits).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "worker",
            "--server",
            &self.server,
            "--name",
            &self.name,
            "--poll",
            "500ms",
            "--exit-with-parent",
        ]
        .map(String::from)
        .into();
        args.push("--device".into());
        args.push(self.device.to_string());
        args.push("--scratch".into());
        args.push(self.scratch.display().to_string());
        let l = &self.limits;
        for (flag, value) in [
            ("--max-expanded-bytes", l.max_expanded_bytes),
            ("--max-entries", l.max_entries),
            ("--max-examples", l.max_examples),
            ("--max-image-bytes", l.max_image_bytes),
            ("--max-classes", l.max_classes),
            ("--max-expansion-ratio", l.max_expansion_ratio),
            ("--min-free-space", l.min_free_bytes),
        ] {
            args.push(flag.into());
            args.push(value.to_string());
        }
        args
    }

    /// Runs the worker, starting it again whenever it exits, until `stop` turns true (then it
    /// is killed: its run, if any, is re-queued when the lease expires).
    pub async fn supervise(self, mut stop: watch::Receiver<bool>) {
        let exe = match std::env::current_exe().context("cannot find the commentary binary") {
            Ok(exe) => exe,
            Err(err) => {
                tracing::error!("no in-process workers: {err:#}");
                return;
            }
        };
        loop {
            let spawned = std::process::Command::new(&exe)
                .args(self.args())
                .env("COMMENTARY_TOKEN", &self.token)
                // The child exits when this pipe closes: when this process ends, even by
                // kill -9, its workers end with it.
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(err) => {
                    tracing::error!(worker = self.name, "cannot start a worker process: {err}");
                    return;
                }
            };
            // Polled, so shutdown can kill it at once.
            let status = loop {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.wait_for(|s| *s) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                }
                match child.try_wait() {
                    Ok(Some(status)) => break status.to_string(),
                    Ok(None) => {}
                    Err(err) => break err.to_string(),
                }
            };
            tracing::warn!(
                worker = self.name,
                "the worker process exited ({status}); starting it again"
            );
            tokio::select! {
                () = tokio::time::sleep(RESTART_AFTER) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
