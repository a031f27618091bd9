//! The learning worker: leases a queued run, downloads its dataset, learns the commentary,
//! evaluates it (students with vs without), and publishes the artifact, sending heartbeats and
//! progress events throughout. The same loop runs in-process (`serve --workers N`) and remotely
//! (`commentary worker --server URL`), always through the HTTP worker endpoints.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use schema::CommentaryKind;
use schema::api::{EventBody, Lease, MAX_EVENTS_PER_POST, Phase, Progress, RunInfo, RunState};
use schema::artifact::{REPORT_FILE, write_atomically};
use tokio::sync::{mpsc, watch};
use trainer::apply::{ApplyOptions, apply};
use trainer::data::{Dataset, Limits};
use trainer::device::ComputeDevice;
use trainer::learn::{LearnRequest, learn};
use trainer::stop::Stop;

use super::client::{Client, is_lease_lost};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Shown on the runs it takes.
    pub name: String,
    pub device: ComputeDevice,
    /// How long to wait when the queue is empty.
    pub poll: Duration,
    /// Where datasets and artifacts are kept while a run works.
    pub scratch: PathBuf,
    /// Caps on decoding a run's dataset (the registry's own, for in-process workers).
    pub limits: Limits,
}

/// The longest wait between heartbeats, however long the lease: a cancel reaches the worker
/// with the next heartbeat's answer, and the learning loops stop within an inner step, so a
/// cancelled run frees its worker within about this long.
pub const MAX_HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);

/// Why a run stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    Cancelled,
    LeaseLost,
    Shutdown,
}

/// Leases and works runs until `stop` turns true.
pub async fn work_forever(client: Client, options: WorkerOptions, mut stop: watch::Receiver<bool>) {
    let removed = sweep_scratch(&options.scratch);
    if removed > 0 {
        tracing::info!(removed, scratch = %options.scratch.display(), "removed the scratch folders of runs whose worker died");
    }
    let mut unreachable_logged = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match client.lease(&options.name).await {
            Ok(Some(lease)) => {
                unreachable_logged = false;
                let id = lease.run.id.clone();
                if let Err(err) = work(&client, &options, lease, stop.clone()).await {
                    tracing::error!(run = %id, "worker error: {err:#}");
                }
                continue;
            }
            Ok(None) => unreachable_logged = false,
            Err(err) if !unreachable_logged => {
                tracing::warn!("cannot lease a run (will keep trying): {err:#}");
                unreachable_logged = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(options.poll) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Works one leased run to its end.
async fn work(
    client: &Client,
    options: &WorkerOptions,
    lease: Lease,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let run = lease.run.clone();
    let secret = lease.lease.clone();
    tracing::info!(run = %run.id, kind = %run.kind, dataset = %run.dataset, "working on run");
    let (scratch, _claim) = claim_scratch(&options.scratch)?;
    let stop = Arc::new(AtomicBool::new(false));
    let interrupt: Arc<Mutex<Option<Interrupt>>> = Arc::default();
    let interrupted = {
        let (stop, interrupt) = (stop.clone(), interrupt.clone());
        move |why: Interrupt| {
            if let Ok(mut slot) = interrupt.lock() {
                slot.get_or_insert(why);
            }
            stop.store(true, Ordering::Relaxed);
        }
    };

    // Heartbeats (and shutdown) in the background.
    let heartbeat = {
        let (client, run_id, secret, interrupted) = (
            client.clone(),
            run.id.clone(),
            secret.clone(),
            interrupted.clone(),
        );
        let ttl = Duration::from_secs(lease.ttl_s.max(1));
        let period = (ttl / 3).min(MAX_HEARTBEAT_PERIOD);
        tokio::spawn(async move {
            let mut answered = Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    _ = shutdown.wait_for(|s| *s) => {
                        interrupted(Interrupt::Shutdown);
                        return;
                    }
                }
                match client.heartbeat(&run_id, &secret).await {
                    Ok(answer) if answer.state == RunState::Cancelled => {
                        interrupted(Interrupt::Cancelled);
                        return;
                    }
                    Ok(_) => answered = Instant::now(),
                    Err(err) if is_lease_lost(&err) => {
                        interrupted(Interrupt::LeaseLost);
                        return;
                    }
                    // Unanswered for a whole lease: the registry has re-queued the run by now.
                    Err(err) if answered.elapsed() > ttl => {
                        tracing::warn!(
                            "no heartbeat answered for {ttl:?} ({err:#}); abandoning the run"
                        );
                        interrupted(Interrupt::LeaseLost);
                        return;
                    }
                    Err(err) => tracing::warn!("heartbeat failed (will retry): {err:#}"),
                }
            }
        })
    };

    // Events go out in batches as they come.
    let (events, mut queued) = mpsc::unbounded_channel::<EventBody>();
    let forwarder = {
        let (client, run_id, secret, interrupted) = (
            client.clone(),
            run.id.clone(),
            secret.clone(),
            interrupted.clone(),
        );
        tokio::spawn(async move {
            while let Some(first) = queued.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_EVENTS_PER_POST
                    && let Ok(more) = queued.try_recv()
                {
                    batch.push(more);
                }
                if let Err(err) = client.post_events(&run_id, &secret, batch).await {
                    if is_lease_lost(&err) {
                        interrupted(Interrupt::LeaseLost);
                    } else {
                        tracing::warn!("cannot send progress events: {err:#}");
                    }
                }
            }
        })
    };

    let archive = scratch.path().join("dataset");
    let artifact = scratch.path().join("artifact");
    let outcome = match client.download_dataset(&run.dataset, &archive).await {
        Ok(()) => {
            let (run, device, limits, stop) =
                (run.clone(), options.device, options.limits, stop.clone());
            let (archive, artifact) = (archive.clone(), artifact.clone());
            tokio::task::spawn_blocking(move || {
                execute(&run, device, limits, &archive, &artifact, &stop, &events)
            })
            .await
            .context("the learning task panicked")
            .and_then(|r| r)
        }
        Err(err) => {
            // The forwarder ends when every sender is gone; this one must go too.
            drop(events);
            Err(err.context("cannot download the dataset"))
        }
    };
    // Every event is sent before the run is completed or failed.
    let _ = forwarder.await;
    heartbeat.abort();
    let why = interrupt.lock().ok().and_then(|slot| *slot);
    match (why, outcome) {
        (Some(Interrupt::Cancelled), _) => {
            tracing::info!(run = %run.id, "run cancelled; stopped");
            Ok(())
        }
        (Some(Interrupt::LeaseLost), _) => {
            tracing::warn!(run = %run.id, "lease lost; abandoned the run");
            Ok(())
        }
        (Some(Interrupt::Shutdown), _) => {
            // The lease expires and the run is re-queued for another worker.
            tracing::info!(run = %run.id, "shutting down mid-run; the run will be re-queued");
            Ok(())
        }
        (None, Ok(())) => {
            let id = client.complete(&run.id, &secret, &artifact).await?;
            tracing::info!(run = %run.id, commentary = %id, "published");
            Ok(())
        }
        (None, Err(err)) => {
            let message = format!("{err:#}");
            tracing::warn!(run = %run.id, "run failed: {message}");
            client.fail(&run.id, &secret, &message).await
        }
    }
}

/// Name prefix of a run's scratch folder, and the lock file inside it.
const SCRATCH_PREFIX: &str = "run-";
const SCRATCH_LOCK: &str = ".lock";

/// A fresh scratch folder for one run, holding an exclusive lock on its lock file while the
/// returned file lives: the operating system releases it when the process dies, even by
/// kill -9, which is how [`sweep_scratch`] tells a dead worker's folder from a live one's.
fn claim_scratch(root: &Path) -> anyhow::Result<(tempfile::TempDir, std::fs::File)> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let dir = tempfile::Builder::new()
        .prefix(SCRATCH_PREFIX)
        .tempdir_in(root)
        .with_context(|| format!("cannot create a scratch folder in {}", root.display()))?;
    let lock = std::fs::File::create(dir.path().join(SCRATCH_LOCK))?;
    lock.try_lock()
        .with_context(|| format!("cannot lock {}", dir.path().display()))?;
    Ok((dir, lock))
}

/// Removes the scratch folders (downloaded datasets, checkpoints, artifacts) of runs whose
/// worker died: those whose lock nobody holds. Workers sharing `root` keep theirs. Returns how
/// many were removed.
pub fn sweep_scratch(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(SCRATCH_PREFIX));
        if !ours || !path.is_dir() {
            continue;
        }
        // A folder without its lock file yet is being created right now: leave it.
        let Ok(lock) = std::fs::File::open(path.join(SCRATCH_LOCK)) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(err) => tracing::warn!("cannot remove {}: {err}", path.display()),
            }
        }
    }
    removed
}

/// Learns and evaluates (blocking; runs on a blocking thread).
fn execute(
    run: &RunInfo,
    device: ComputeDevice,
    limits: Limits,
    archive: &Path,
    out: &Path,
    stop: &Arc<AtomicBool>,
    events: &mpsc::UnboundedSender<EventBody>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let dataset = Dataset::open(archive, limits).context("cannot read the dataset")?;
    let request = LearnRequest {
        kind: run.kind,
        algorithm: run.algorithm,
        config: run.config.clone(),
        device,
        run_id: Some(run.id.clone()),
        stop: Stop::on(stop.clone()),
    };
    let send = |body: EventBody| {
        let _ = events.send(body);
    };
    learn(&dataset, &request, out, &mut |p| {
        send(EventBody::Progress(Progress {
            phase: Phase::Learning,
            step: p.meta_step as u64 + 1,
            total: p.meta_steps as u64,
            val_loss: Some(f64::from(p.val_loss)),
            best_val_loss: Some(f64::from(p.best_val_loss)),
            elapsed_s: p.elapsed.as_secs_f64(),
        }));
    })
    .with_context(|| format!("cannot learn a {} commentary", run.kind))?;
    let evaluation = &run.evaluation;
    if stop.load(Ordering::Relaxed) || evaluation.seeds.is_empty() {
        return Ok(());
    }
    let options = ApplyOptions {
        student: None,
        evaluation: evaluation.clone(),
        device,
        force: false,
        train_examples: None,
        corruption: None,
        references: true,
        stop: Stop::on(stop.clone()),
    };
    let arms = if run.kind == CommentaryKind::LabelBlending {
        3
    } else {
        2
    };
    let total = (evaluation.seeds.len() * arms) as u64;
    let mut trained = 0u64;
    let report = apply(&dataset, None, out, &options, &mut |arm, seed| {
        send(EventBody::Log {
            message: format!("training a student ({arm}, seed {seed})"),
        });
        send(EventBody::Progress(Progress {
            phase: Phase::Evaluating,
            step: trained,
            // Reference arms (train+val, class weights) add runs the count above leaves out.
            total: total.max(trained + 1),
            val_loss: None,
            best_val_loss: None,
            elapsed_s: started.elapsed().as_secs_f64(),
        }));
        trained += 1;
    })
    .context("cannot evaluate the commentary")?;
    send(EventBody::Log {
        message: format!(
            "test accuracy: baseline {:.4}, with commentary {:.4} (gain {:+.4})",
            report.baseline.test_accuracy.mean,
            report.with_commentary.test_accuracy.mean,
            report.test_accuracy_gain
        ),
    });
    write_atomically(&out.join(REPORT_FILE), &serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}
