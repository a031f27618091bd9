//! A bounded load test on loopback (issue 15's systematic checks): artifact downloads, lists
//! and SSE followers hit a real `commentary serve` while datasets are uploaded and runs are
//! learned by its worker. Every request must succeed, every SSE stream must end with its run's
//! final state, and every run must succeed; the latencies are printed per kind of request
//! (p50, p99, max), which is where `docs/registry.md`'s load figures come from.
//!
//! It runs for `COMMENTARY_LOAD_SECONDS` (10 by default; `bench/load.sh` runs it longer).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, Client, Registry, fast_run, read_sse};
use tests::MNIST_FIXTURE_DIGEST;
use tokio::sync::Mutex;

/// Latencies of one kind of request, and its failures.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl Tally {
    fn quantile(sorted: &[Duration], q: f64) -> Duration {
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }

    fn line(&self, name: &str, seconds: f64) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{name:<22} {:>7} requests {:>8.1}/s  p50 {:>7.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  failures {}",
            sorted.len(),
            sorted.len() as f64 / seconds,
            ms(Self::quantile(&sorted, 0.5)),
            ms(Self::quantile(&sorted, 0.99)),
            ms(sorted.last().copied().unwrap_or_default()),
            self.failures.len()
        )
    }
}

type Shared = Arc<Mutex<Tally>>;

/// `GET path` until `stop`, reading each body whole and recording its latency.
async fn get_loop(client: Client, paths: Vec<String>, stop: Arc<AtomicBool>, tally: Shared) {
    let mut turn = 0;
    while !stop.load(Ordering::Relaxed) {
        let path = &paths[turn % paths.len()];
        turn += 1;
        let started = Instant::now();
        let outcome = match client.http.get(client.url(path)).send().await {
            Ok(response) if response.status().is_success() => match response.bytes().await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("GET {path}: body: {e}")),
            },
            Ok(response) => Err(format!("GET {path}: {}", response.status())),
            Err(e) => Err(format!("GET {path}: {e}")),
        };
        let elapsed = started.elapsed();
        let mut tally = tally.lock().await;
        match outcome {
            Ok(()) => tally.latencies.push(elapsed),
            Err(e) => tally.failures.push(e),
        }
    }
}

/// Creates runs one after another (paced), follows each one's SSE stream to its end in its own
/// task, and returns the run ids and those followers.
async fn create_runs(
    client: Client,
    stop: Arc<AtomicBool>,
    tally: Shared,
) -> (
    Vec<String>,
    Vec<tokio::task::JoinHandle<Result<(), String>>>,
) {
    let mut ids = Vec::new();
    let mut followers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let id = client
            .create_run(fast_run(MNIST_FIXTURE_DIGEST, 2, &[]))
            .await;
        tally.lock().await.latencies.push(started.elapsed());
        let follower = client.clone();
        let path = format!("/v1/runs/{id}/events");
        followers.push(tokio::spawn(async move {
            let events = read_sse(&follower, &path, None).await;
            let last = events.last().ok_or(format!("{path}: no events"))?;
            match last.data["state"].as_str() {
                Some("succeeded") => Ok(()),
                other => Err(format!("{path}: the stream ended on {other:?}: {:?}", last)),
            }
        }));
        ids.push(id);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    (ids, followers)
}

/// Uploads the fixture again and again (as the tar.gz the registry stores, so each is decoded
/// and digested, and answered 200 as stored content).
async fn upload_loop(client: Client, archive: Vec<u8>, stop: Arc<AtomicBool>, tally: Shared) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = client
            .http
            .post(client.url("/v1/datasets?name=mnist"))
            .body(archive.clone())
            .send()
            .await;
        let elapsed = started.elapsed();
        let mut tally = tally.lock().await;
        match outcome {
            Ok(r) if r.status() == 200 => tally.latencies.push(elapsed),
            Ok(r) => tally.failures.push(format!("upload: {}", r.status())),
            Err(e) => tally.failures.push(format!("upload: {e}")),
        }
        drop(tally);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_lists_and_sse_keep_answering_while_uploads_and_runs_proceed() {
    let seconds: u64 = std::env::var("COMMENTARY_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let registry = Registry::start(&Backend::sqlite_local(), &["--workers", "1"]);
    let client = registry.client();
    client.upload_fixture().await;
    // One published commentary to download.
    let first = client
        .create_run(fast_run(MNIST_FIXTURE_DIGEST, 1, &[]))
        .await;
    let done = client
        .wait_for(
            &format!("/v1/runs/{first}"),
            Duration::from_secs(120),
            |r| r["state"] == "succeeded" || r["state"] == "failed",
        )
        .await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let commentary = done["commentary_id"]
        .as_str()
        .expect("published")
        .to_string();
    let tmp = tempfile::TempDir::new().expect("tmp");
    let archive = std::fs::read(common::fixture_archive(tmp.path())).expect("archive");

    let stop = Arc::new(AtomicBool::new(false));
    let downloads: Shared = Shared::default();
    let lists: Shared = Shared::default();
    let details: Shared = Shared::default();
    let uploads: Shared = Shared::default();
    let creates: Shared = Shared::default();
    let mut loops = Vec::new();
    let readers = [
        (
            8,
            vec![format!("/v1/commentaries/{commentary}/artifact")],
            &downloads,
        ),
        (
            4,
            vec![
                "/v1/datasets".into(),
                format!("/v1/commentaries?dataset={MNIST_FIXTURE_DIGEST}&sort=improvement"),
                "/v1/runs".into(),
            ],
            &lists,
        ),
        (
            4,
            vec![
                format!("/v1/commentaries/{commentary}"),
                format!("/v1/runs/{first}"),
            ],
            &details,
        ),
    ];
    for (clients, paths, tally) in readers {
        for _ in 0..clients {
            loops.push(tokio::spawn(get_loop(
                client.clone(),
                paths.clone(),
                stop.clone(),
                tally.clone(),
            )));
        }
    }
    loops.push(tokio::spawn(upload_loop(
        client.clone(),
        archive,
        stop.clone(),
        uploads.clone(),
    )));
    let runs = tokio::spawn(create_runs(client.clone(), stop.clone(), creates.clone()));

    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in loops {
        task.await.expect("a load loop");
    }
    let (ids, followers) = runs.await.expect("the run creator");
    // Every run learned during the load ends, and its SSE follower saw it end.
    let mut sse_failures = Vec::new();
    for follower in followers {
        if let Err(e) = follower.await.expect("an SSE follower") {
            sse_failures.push(e);
        }
    }

    let mut report = vec![format!(
        "load for {elapsed:.1} s on {} (8 downloaders, 4 listers, 4 detail readers, 1 uploader, 1 run creator)",
        registry.url
    )];
    let mut failures = Vec::new();
    for (name, tally) in [
        ("artifact download", &downloads),
        ("list", &lists),
        ("commentary/run detail", &details),
        ("dataset upload", &uploads),
        ("run create", &creates),
    ] {
        let tally = tally.lock().await;
        report.push(tally.line(name, elapsed));
        failures.extend(tally.failures.iter().cloned());
    }
    report.push(format!(
        "runs created during the load: {}, SSE streams ended with success: {}",
        ids.len(),
        ids.len() - sse_failures.len()
    ));
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(sse_failures.is_empty(), "SSE: {sse_failures:#?}");
    assert!(!ids.is_empty());
    for id in &ids {
        assert_eq!(client.run(id).await.state, schema::api::RunState::Succeeded);
    }
    assert!(downloads.lock().await.latencies.len() > 10);
}
