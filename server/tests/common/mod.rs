//! A real registry for end-to-end tests: `commentary serve` started as a process on port 0,
//! on SQLite + a local blob directory, or on PostgreSQL + S3 when the environment names them
//! (`COMMENTARY_TEST_DATABASE_URL`, `COMMENTARY_TEST_S3_ENDPOINT`; `.ci/run` sets both).

#![allow(dead_code)]

pub mod app;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use schema::api::{Evaluation, RunCreated, RunInfo, RunRequest, RunState};
use schema::arch::NetSpec;
use schema::{Algorithm, CommentaryKind, LearnConfig};
use sea_orm::{ConnectionTrait as _, Database};
use tempfile::TempDir;

/// The storage a registry runs on.
#[derive(Debug, Clone, Default)]
pub struct Backend {
    pub label: &'static str,
    /// Environment for `commentary serve` (and `token create`).
    pub env: Vec<(String, String)>,
}

impl Backend {
    pub fn sqlite_local() -> Self {
        Self {
            label: "sqlite+local",
            env: Vec::new(),
        }
    }

    /// PostgreSQL (a fresh database per call) and S3, or None when the environment does not
    /// name them; a panic then when `COMMENTARY_TEST_REQUIRE_SERVICES` is set (`.ci/run` sets
    /// it, so CI never skips them).
    pub async fn postgres_s3() -> Option<Self> {
        let (Some(admin), Some(endpoint)) = (
            tests::service_env("COMMENTARY_TEST_DATABASE_URL"),
            tests::service_env("COMMENTARY_TEST_S3_ENDPOINT"),
        ) else {
            return None;
        };
        let bucket =
            std::env::var("COMMENTARY_TEST_S3_BUCKET").unwrap_or_else(|_| "commentary-test".into());
        let name = format!("commentary_test_{}", uuid::Uuid::new_v4().simple());
        let db = Database::connect(&admin)
            .await
            .expect("connect to COMMENTARY_TEST_DATABASE_URL");
        db.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let key = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        Some(Self {
            label: "postgres+s3",
            env: vec![
                ("COMMENTARY_DATABASE_URL".into(), format!("{base}/{name}")),
                (
                    "COMMENTARY_STORE_URL".into(),
                    format!("s3://{bucket}/{}", uuid::Uuid::new_v4().simple()),
                ),
                ("AWS_ENDPOINT".into(), endpoint),
                ("AWS_ALLOW_HTTP".into(), "true".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
                (
                    "AWS_ACCESS_KEY_ID".into(),
                    key("COMMENTARY_TEST_S3_ACCESS_KEY", "commentary"),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    key("COMMENTARY_TEST_S3_SECRET_KEY", "commentary-secret"),
                ),
                ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into()),
            ],
        })
    }
}

/// The `commentary` binary.
pub fn commentary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_commentary"))
}

/// A running `commentary serve`; killed on drop.
pub struct Registry {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub backend: Backend,
    /// The temporary folder holding `data_dir`, when the registry made it.
    owned_dir: Option<TempDir>,
}

impl Registry {
    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a registry with `args` after `serve --addr 127.0.0.1:0 --data-dir <tmp>`.
    pub fn start(backend: &Backend, args: &[&str]) -> Self {
        let tmp = TempDir::new().expect("tmp");
        let mut registry = Self::start_in(backend, tmp.path().join("data"), args);
        registry.owned_dir = Some(tmp);
        registry
    }

    /// Starts a registry on `data_dir`, which the caller owns (it outlives a restart, say).
    pub fn start_in(backend: &Backend, data_dir: PathBuf, args: &[&str]) -> Self {
        let mut command = commentary();
        command
            .args(["-v", "serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(args)
            .envs(backend.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("start commentary serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => {
                    let status = child.wait().expect("wait");
                    panic!("commentary serve exited before listening: {status}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url,
            data_dir,
            backend: backend.clone(),
            owned_dir: None,
        }
    }

    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.url.clone(),
        }
    }

    /// `commentary token create` on this registry's database.
    pub fn create_token(&self, scope: &str) -> String {
        let out = commentary()
            .args([
                "token",
                "create",
                "--scope",
                scope,
                "--name",
                &format!("test-{scope}"),
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .envs(self.backend.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("token create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A thin HTTP helper over one registry.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await
    }

    /// `GET path`, asserting success.
    async fn get_ok(&self, path: &str) -> reqwest::Response {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response
    }

    /// `GET path`, asserting success, as the API type `T`.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.get_ok(path).await;
        response.json().await.expect("a body of the API type")
    }

    /// `GET path`, asserting success: the body's bytes.
    pub async fn get_bytes(&self, path: &str) -> bytes::Bytes {
        let response = self.get_ok(path).await;
        response.bytes().await.expect("the body")
    }

    /// `POST /v1/datasets?name=mnist` with the MNIST fixture; asserts 201.
    pub async fn upload_fixture(&self) {
        let tmp = TempDir::new().expect("tmp");
        let archive = std::fs::read(fixture_archive(tmp.path())).expect("archive");
        let response = self
            .http
            .post(self.url("/v1/datasets?name=mnist"))
            .body(archive)
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status(), 201);
    }

    /// `POST /v1/commentaries` (multipart) of the artifact in `dir` with `report` as its
    /// report.json.
    pub async fn upload_commentary(&self, dir: &Path, report: Vec<u8>) -> reqwest::Response {
        use schema::artifact::{MANIFEST_FILE, REPORT_FILE, TENSORS_FILE};
        let mut form = reqwest::multipart::Form::new();
        for (field, file) in [("manifest", MANIFEST_FILE), ("tensors", TENSORS_FILE)] {
            let bytes = std::fs::read(dir.join(file)).expect("artifact file");
            form = form.part(
                field,
                reqwest::multipart::Part::bytes(bytes).file_name(file),
            );
        }
        form = form.part(
            "report",
            reqwest::multipart::Part::bytes(report).file_name(REPORT_FILE),
        );
        self.http
            .post(self.url("/v1/commentaries"))
            .multipart(form)
            .send()
            .await
            .expect("POST /v1/commentaries")
    }

    /// `GET /v1/runs/{id}`.
    pub async fn run(&self, id: &str) -> RunInfo {
        self.get(&format!("/v1/runs/{id}")).await
    }

    /// `POST /v1/runs` with `body` (a `RunRequest`, or JSON for requests the type cannot
    /// express); asserts 202 and returns the run id.
    pub async fn create_run(&self, body: impl serde::Serialize) -> String {
        let response = self
            .http
            .post(self.url("/v1/runs"))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/runs");
        assert_eq!(
            response.status(),
            202,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let created: RunCreated = response.json().await.expect("a RunCreated body");
        assert_eq!(created.state, RunState::Queued);
        created.id
    }

    /// `POST /v1/runs/{id}/cancel`; asserts 200.
    pub async fn cancel(&self, id: &str) {
        let response = self
            .http
            .post(self.url(&format!("/v1/runs/{id}/cancel")))
            .send()
            .await
            .expect("cancel");
        assert_eq!(response.status(), 200);
    }

    /// Polls `GET path` until `done` holds for its JSON, or panics after `limit`.
    pub async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let value = self.get_json(path).await;
            if done(&value) {
                return value;
            }
            assert!(
                started.elapsed() < limit,
                "timed out waiting on {path}: {value:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The MNIST fixture packed as .tar.gz.
pub fn fixture_archive(dir: &Path) -> PathBuf {
    let path = dir.join("mnist.tar.gz");
    tests::tar_gz_dir(&tests::mnist_fixture(), &path, None);
    path
}

/// A label-blending run whose one block of online IFT steps takes minutes: for tests that
/// stop, cancel or kill it mid-run.
pub fn long_ift_run(dataset: &str) -> RunRequest {
    let mut run = fast_run(dataset, 1, &[]);
    run.kind = CommentaryKind::LabelBlending;
    run.algorithm = Some(Algorithm::Ift);
    run.config.inner_steps = 200_000;
    run
}

/// A run body with small, fast settings (MLP student and teacher on the fixture).
pub fn fast_run(dataset: &str, meta_steps: u32, evaluation_seeds: &[u64]) -> RunRequest {
    RunRequest {
        dataset: dataset.to_string(),
        kind: CommentaryKind::ExampleWeighting,
        algorithm: Some(Algorithm::Bptt),
        config: LearnConfig {
            inner_steps: 10,
            meta_steps,
            student: NetSpec::Mlp { hidden: vec![32] },
            commentary_net: NetSpec::Mlp { hidden: vec![16] },
            validation_examples: Some(500),
            validation_batch_size: 128,
            ..LearnConfig::default()
        },
        evaluation: Evaluation {
            seeds: evaluation_seeds.to_vec(),
            steps: 60,
            eval_every: 20,
            ..Evaluation::default()
        },
    }
}

/// The bytes of the files under `dir` (0 when it does not exist): what uploads in progress
/// have staged.
pub fn bytes_under(dir: &Path) -> u64 {
    if !dir.exists() {
        return 0;
    }
    files_under(dir)
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A `commentary worker` on `registry`, killed when dropped.
pub struct RemoteWorker(Child);

impl RemoteWorker {
    pub fn start(registry: &Registry) -> Self {
        let child = commentary()
            .args(["-v", "worker", "--server", &registry.url, "--poll", "200ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker");
        Self(child)
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pids of the `commentary worker` processes serving `url`.
pub fn worker_processes(url: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&b"worker".as_slice()) && args.contains(&url.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// One SSE event as sent.
#[derive(Debug)]
pub struct Sse {
    pub id: i64,
    pub event: String,
    pub data: serde_json::Value,
}

/// Reads an SSE stream to its end.
pub async fn read_sse(client: &Client, path: &str, last_event_id: Option<i64>) -> Vec<Sse> {
    let mut request = client.http.get(client.url(path));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.expect("GET events");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("SSE chunk")));
        }
    };
    tokio::time::timeout(Duration::from_secs(600), read)
        .await
        .expect("the SSE stream ends when the run ends");
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data = serde_json::from_str(v.trim()).ok();
            }
        }
        if let (Some(id), Some(event), Some(data)) = (id, event, data) {
            events.push(Sse { id, event, data });
        }
    }
    events
}
