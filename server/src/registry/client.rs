//! The registry's HTTP client: used by `dataset push`, `pull`, `apply --server`, `run`,
//! `login` and learning workers (remote and in-process, which go through the same worker
//! endpoints). Transfers report their bytes to an indicatif bar (pass `ProgressBar::hidden()`
//! for none).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use indicatif::ProgressBar;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use schema::api::{
    CommentaryDetail, CommentaryInfo, DatasetInfo, ErrorBody, EventBody, EventsPost, FailPost,
    HeartbeatAnswer, Lease, LeaseRef, LeaseRequest, Page, RunCreated, RunEvent, RunInfo,
    RunRequest, RunState,
};
use schema::artifact::{MANIFEST_FILE, REPORT_FILE, TENSORS_FILE, write_atomically};
use schema::{CommentaryKind, Sha256};
use tokio::io::AsyncWriteExt as _;

/// A failed request, as the server explained it.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: {status} {code}: {message}")]
pub struct ServerError {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

/// A client of one registry.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base).with_context(|| format!("bad server URL {base:?}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, base, token })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends and turns a non-2xx answer into a `ServerError`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        builder: RequestBuilder,
    ) -> anyhow::Result<Response> {
        let response = builder
            .send()
            .await
            .with_context(|| format!("cannot reach the registry at {}", self.base))?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => ("http".to_string(), text),
        };
        Err(ServerError {
            method,
            path: path.to_string(),
            status,
            code,
            message,
        }
        .into())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .send(Method::GET, path, self.request(Method::GET, path))
            .await?;
        response
            .json()
            .await
            .with_context(|| format!("GET {path}: unexpected answer"))
    }

    async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<Option<T>> {
        let response = self
            .send(
                Method::POST,
                path,
                self.request(Method::POST, path).json(body),
            )
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let value = response
            .json()
            .await
            .with_context(|| format!("POST {path}: unexpected answer"))?;
        Ok(Some(value))
    }

    /// Uploads a dataset archive (a folder is packed as .tar.gz first), its bytes counted on
    /// `bar`. Returns the stored dataset and whether it was new.
    pub async fn push_dataset(
        &self,
        path: &Path,
        name: &str,
        bar: &ProgressBar,
    ) -> anyhow::Result<(DatasetInfo, bool)> {
        let packed;
        let archive = if path.is_dir() {
            bar.set_message(format!("packing {}", path.display()));
            let source = path.to_path_buf();
            packed = tokio::task::spawn_blocking(move || pack_folder(&source)).await??;
            packed.path().to_path_buf()
        } else {
            path.to_path_buf()
        };
        let file = tokio::fs::File::open(&archive)
            .await
            .with_context(|| format!("cannot open {}", archive.display()))?;
        let length = file.metadata().await?.len();
        bar.set_length(length);
        bar.set_message("");
        let counter = bar.clone();
        let chunks = tokio_util::io::ReaderStream::new(file).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.inc(chunk.len() as u64);
                if counter.position() >= length {
                    counter.set_message("sent; the registry decodes and digests it");
                }
            }
        });
        let body = reqwest::Body::wrap_stream(chunks);
        let url_path = format!("/v1/datasets?name={}", urlencode(name));
        let response = self
            .send(
                Method::POST,
                "/v1/datasets",
                self.request(Method::POST, &url_path)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, length)
                    .body(body),
            )
            .await?;
        let created = response.status() == StatusCode::CREATED;
        Ok((
            response
                .json()
                .await
                .context("unexpected answer to the upload")?,
            created,
        ))
    }

    pub async fn dataset(&self, digest: &Sha256) -> anyhow::Result<DatasetInfo> {
        self.get_json(&format!("/v1/datasets/{digest}")).await
    }

    /// Downloads a dataset's archive as uploaded.
    pub async fn download_dataset(&self, digest: &Sha256, to: &Path) -> anyhow::Result<()> {
        self.download(
            &format!("/v1/datasets/{digest}/archive"),
            to,
            &ProgressBar::hidden(),
        )
        .await
    }

    /// Writes the body of `GET path` to `to`, its bytes counted on `bar`.
    async fn download(&self, path: &str, to: &Path, bar: &ProgressBar) -> anyhow::Result<()> {
        let mut response = self
            .send(Method::GET, path, self.request(Method::GET, path))
            .await?;
        if let Some(length) = response.content_length() {
            bar.set_length(length);
        }
        let mut file = tokio::fs::File::create(to)
            .await
            .with_context(|| format!("cannot create {}", to.display()))?;
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("GET {path}: cut short"))?
        {
            file.write_all(&chunk).await?;
            bar.inc(chunk.len() as u64);
        }
        file.flush().await?;
        Ok(())
    }

    pub async fn commentaries(
        &self,
        dataset: &Sha256,
        kind: Option<CommentaryKind>,
        sort: &str,
        limit: u32,
    ) -> anyhow::Result<Page<CommentaryInfo>> {
        let mut path = format!("/v1/commentaries?dataset={dataset}&sort={sort}&limit={limit}");
        if let Some(kind) = kind {
            path.push_str(&format!("&kind={kind}"));
        }
        self.get_json(&path).await
    }

    pub async fn commentary(&self, id: &str) -> anyhow::Result<CommentaryDetail> {
        self.get_json(&format!(
            "/v1/commentaries/{}",
            checked_id(id, "commentary")?
        ))
        .await
    }

    /// The id of the commentary `pick` names (see [`best_of`] for the best).
    pub async fn pick(&self, pick: &Pick) -> anyhow::Result<String> {
        let (dataset, kind, allow_no_improvement) = match pick {
            Pick::Id(id) => return Ok(checked_id(id, "commentary")?.to_string()),
            Pick::Best {
                dataset,
                kind,
                allow_no_improvement,
            } => (dataset, kind, allow_no_improvement),
        };
        // Ranked verified first, then by improvement: one page of the largest the API gives.
        let page = self
            .commentaries(dataset, *kind, "improvement", 500)
            .await?;
        let of_kind = kind.map(|k| format!("{k} ")).unwrap_or_default();
        if page.items.is_empty() {
            anyhow::bail!("the registry has no {of_kind}commentary for dataset {dataset}");
        }
        let chosen = match best_of(&page.items) {
            Some(best) => best,
            None if *allow_no_improvement => first_not_harmful(&page.items).with_context(|| {
                format!(
                    "every {of_kind}commentary for dataset {dataset} is marked harmful ({} listed)",
                    page.items.len()
                )
            })?,
            None => anyhow::bail!(
                "no {of_kind}commentary for dataset {dataset} improved on training without one \
                 ({} listed, none with a test-accuracy gain > 0 that is not marked harmful); \
                 pass --allow-no-improvement to take the first one not marked harmful",
                page.items.len()
            ),
        };
        if !chosen.verified {
            tracing::warn!(
                commentary = %chosen.id,
                "no commentary measured by the registry itself; using an uploaded one whose improvement is the uploader's claim"
            );
        }
        Ok(chosen.id.clone())
    }

    /// Downloads the commentary `pick` names into `out` as an artifact directory (the tensors'
    /// bytes counted on `bar`), and verifies it.
    pub async fn pull(
        &self,
        pick: &Pick,
        out: &Path,
        bar: &ProgressBar,
    ) -> anyhow::Result<CommentaryDetail> {
        let id = self.pick(pick).await?;
        let detail = self.commentary(&id).await?;
        bar.set_length(detail.info.tensors_bytes);
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let tensors = out.join(format!(".{TENSORS_FILE}.part"));
        self.download(&format!("/v1/commentaries/{id}/artifact"), &tensors, bar)
            .await?;
        std::fs::rename(&tensors, out.join(TENSORS_FILE))?;
        if let Some(report) = &detail.report {
            write_atomically(&out.join(REPORT_FILE), &serde_json::to_vec_pretty(report)?)?;
        }
        // The manifest goes last: an interrupted pull leaves no artifact that looks complete.
        write_atomically(
            &out.join(MANIFEST_FILE),
            &serde_json::to_vec_pretty(&detail.manifest)?,
        )?;
        schema::artifact::verify_artifact(out)
            .with_context(|| format!("the downloaded commentary {id} does not verify"))?;
        Ok(detail)
    }

    /// Asks the registry whether it knows this client's token. No endpoint tells a token's
    /// scope, but every route that reads the caller refuses an unknown or revoked token (401,
    /// even where reads are public), so a one-item read checks it exists; its scope is checked
    /// when a command uses it.
    pub async fn check_token(&self) -> anyhow::Result<()> {
        self.get_json::<Page<RunInfo>>("/v1/runs?limit=1")
            .await
            .map(drop)
    }

    /// `POST /v1/runs`: queues a learning run.
    pub async fn create_run(&self, request: &RunRequest) -> anyhow::Result<RunCreated> {
        self.post_json("/v1/runs", request)
            .await?
            .context("POST /v1/runs: an empty answer")
    }

    /// `GET /v1/runs`: runs, newest first.
    pub async fn runs(
        &self,
        dataset: Option<&Sha256>,
        state: Option<RunState>,
        limit: u32,
    ) -> anyhow::Result<Page<RunInfo>> {
        let mut path = format!("/v1/runs?limit={limit}");
        if let Some(dataset) = dataset {
            path.push_str(&format!("&dataset={dataset}"));
        }
        if let Some(state) = state {
            path.push_str(&format!("&state={state}"));
        }
        self.get_json(&path).await
    }

    /// `GET /v1/runs/{id}`.
    pub async fn run(&self, id: &str) -> anyhow::Result<RunInfo> {
        self.get_json(&format!("/v1/runs/{}", checked_id(id, "run")?))
            .await
    }

    /// `POST /v1/runs/{id}/cancel`: the run as it is now.
    pub async fn cancel_run(&self, id: &str) -> anyhow::Result<RunInfo> {
        self.post_json(
            &format!("/v1/runs/{}/cancel", checked_id(id, "run")?),
            &serde_json::json!({}),
        )
        .await?
        .context("cancel: an empty answer")
    }

    /// Follows `GET /v1/runs/{id}/events` (server-sent events) from after the event `after`,
    /// handing each event to `on_event` until the stream ends (the run has ended). An error
    /// means the connection broke: resume after the last event seen.
    pub async fn run_events(
        &self,
        id: &str,
        after: i64,
        on_event: &mut (dyn FnMut(RunEvent) + Send),
    ) -> anyhow::Result<()> {
        let path = format!("/v1/runs/{}/events", checked_id(id, "run")?);
        let mut request = self
            .request(Method::GET, &path)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if after > 0 {
            request = request.header("Last-Event-ID", after.to_string());
        }
        let response = self.send(Method::GET, &path, request).await?;
        let mut stream = response.bytes_stream();
        let mut parser = SseParser::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("GET {path}: the stream broke"))?;
            for data in parser.feed(&chunk)? {
                let event: RunEvent = serde_json::from_str(&data).with_context(|| {
                    format!("GET {path}: an event that is not a RunEvent: {data}")
                })?;
                on_event(event);
            }
        }
        Ok(())
    }

    /// Takes a queued run, or None when there is none.
    pub async fn lease(&self, worker: &str) -> anyhow::Result<Option<Lease>> {
        self.post_json(
            "/v1/runs/lease",
            &LeaseRequest {
                worker: worker.to_string(),
            },
        )
        .await
    }

    pub async fn heartbeat(&self, run: &str, lease: &str) -> anyhow::Result<HeartbeatAnswer> {
        let answer = self
            .post_json(
                &format!("/v1/runs/{run}/heartbeat"),
                &LeaseRef {
                    lease: lease.to_string(),
                },
            )
            .await?;
        answer.context("empty heartbeat answer")
    }

    pub async fn post_events(
        &self,
        run: &str,
        lease: &str,
        events: Vec<EventBody>,
    ) -> anyhow::Result<()> {
        self.post_json::<_, serde_json::Value>(
            &format!("/v1/runs/{run}/events"),
            &EventsPost {
                lease: lease.to_string(),
                events,
            },
        )
        .await?;
        Ok(())
    }

    /// Uploads the finished artifact in `dir`.
    pub async fn complete(&self, run: &str, lease: &str, dir: &Path) -> anyhow::Result<String> {
        let mut form = reqwest::multipart::Form::new().text("lease", lease.to_string());
        for (field, file) in [
            ("manifest", MANIFEST_FILE),
            ("tensors", TENSORS_FILE),
            ("report", REPORT_FILE),
        ] {
            let path = dir.join(file);
            if field == "report" && !path.exists() {
                continue;
            }
            let bytes = tokio::fs::read(&path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?;
            form = form.part(
                field,
                reqwest::multipart::Part::bytes(bytes).file_name(file),
            );
        }
        let path = format!("/v1/runs/{run}/complete");
        let response = self
            .send(
                Method::POST,
                &path,
                self.request(Method::POST, &path).multipart(form),
            )
            .await?;
        let info: CommentaryInfo = response
            .json()
            .await
            .context("unexpected answer to complete")?;
        Ok(info.id)
    }

    pub async fn fail(&self, run: &str, lease: &str, error: &str) -> anyhow::Result<()> {
        self.post_json::<_, serde_json::Value>(
            &format!("/v1/runs/{run}/fail"),
            &FailPost {
                lease: lease.to_string(),
                error: error.to_string(),
            },
        )
        .await?;
        Ok(())
    }
}

/// Percent-encodes a query value.
fn urlencode(value: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("static URL parses");
    url.query_pairs_mut().append_pair("v", value);
    url.query()
        .unwrap_or("v=")
        .trim_start_matches("v=")
        .to_string()
}

/// Packs a dataset folder into a temporary .tar.gz.
fn pack_folder(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new().suffix(".tar.gz").tempfile()?;
    let encoder = flate2::write::GzEncoder::new(file.reopen()?, flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .with_context(|| format!("cannot pack {}", dir.display()))?;
    builder.into_inner()?.finish()?;
    Ok(file)
}

/// Whether `err` is the server saying the lease is gone (stop working on the run).
pub fn is_lease_lost(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ServerError>()
        .is_some_and(|e| e.status == StatusCode::CONFLICT)
}

/// Which commentary `pull` (and `apply --server`) takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// This commentary exactly.
    Id(String),
    /// The best for a dataset: [`best_of`]; when none improved, an error, or with
    /// `allow_no_improvement` the first not marked harmful.
    Best {
        dataset: Sha256,
        kind: Option<CommentaryKind>,
        allow_no_improvement: bool,
    },
}

/// Whether a commentary made fresh students better: a positive test-accuracy gain, not marked
/// harmful.
pub fn improved(c: &CommentaryInfo) -> bool {
    !c.harmful && c.improvement.is_some_and(|g| g > 0.0)
}

/// The best commentary among `items`: among those that improved ([`improved`]), one this
/// registry measured itself (verified) before an uploader's claim, then the largest
/// improvement; ties go to the one listed first (the newest, in the registry's ranking). None
/// when none improved.
pub fn best_of(items: &[CommentaryInfo]) -> Option<&CommentaryInfo> {
    let rank = |c: &CommentaryInfo| (c.verified, c.improvement.unwrap_or(f64::NEG_INFINITY));
    items
        .iter()
        .filter(|c| improved(c))
        .fold(None, |best, c| match best {
            Some(b) if !better(rank(c), rank(b)) => Some(b),
            _ => Some(c),
        })
}

/// Whether rank `a` is strictly above `b`.
fn better(a: (bool, f64), b: (bool, f64)) -> bool {
    a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).is_gt()
}

/// The rule before improvements were required: the first listed not marked harmful.
pub fn first_not_harmful(items: &[CommentaryInfo]) -> Option<&CommentaryInfo> {
    items.iter().find(|c| !c.harmful)
}

/// `id` when it can be a path segment (letters, digits, `-`, `_`), so a typed id never turns
/// into another URL.
fn checked_id<'a>(id: &'a str, what: &str) -> anyhow::Result<&'a str> {
    anyhow::ensure!(
        !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id:?} is not a {what} id"
    );
    Ok(id)
}

/// Longest SSE line accepted (a run event is a few hundred bytes).
const MAX_SSE_LINE: usize = 1 << 20;

/// An incremental `text/event-stream` parser keeping what the registry's events carry, their
/// data (WHATWG rules for `\n` and `\r\n` line ends: comments and other fields are skipped,
/// `data` lines are joined by `\n`, a blank line dispatches an event that has data). The SSE
/// `id` and event name are not kept: a `RunEvent` holds both (`seq`, `type`).
#[derive(Debug, Default)]
struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds the next bytes; returns the data of the events they complete.
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                anyhow::ensure!(
                    self.line.len() <= MAX_SSE_LINE,
                    "an event-stream line longer than {MAX_SSE_LINE} bytes"
                );
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
            if line.is_empty() {
                done.extend(self.data.take());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            if field == "data" {
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, improvement: f64, harmful: bool) -> CommentaryInfo {
        CommentaryInfo {
            id: id.into(),
            dataset: schema::Sha256([0; 32]),
            kind: CommentaryKind::ExampleWeighting,
            algorithm: schema::Algorithm::TruncatedBptt,
            tensors_sha256: schema::Sha256([1; 32]),
            tensors_bytes: 1,
            improvement: Some(improvement),
            harmful,
            verified: false,
            run_id: None,
            created_at: chrono::Utc::now(),
        }
    }

    fn best(items: &[CommentaryInfo]) -> Option<&str> {
        best_of(items).map(|c| c.id.as_str())
    }

    #[test]
    fn a_harmful_commentary_is_never_the_best_even_ranked_first() {
        let items = [info("a", 0.3, true), info("b", 0.1, false)];
        assert_eq!(best(&items), Some("b"));
        assert!(best(&[info("c", -0.4, true)]).is_none());
        assert!(first_not_harmful(&[info("c", -0.4, true)]).is_none());
    }

    #[test]
    fn the_best_is_the_largest_improvement_among_those_that_improved() {
        let mut unmeasured = info("none", 0.0, false);
        unmeasured.improvement = None;
        let items = [
            unmeasured,
            info("worse", -0.2, false),
            info("flat", 0.0, false),
            info("small", 0.05, false),
            info("large", 0.2, false),
            info("large-older", 0.2, false),
        ];
        assert_eq!(best(&items), Some("large"), "ties go to the first listed");
        // None improved: no best; the old rule still finds the first not marked harmful.
        assert_eq!(best(&items[..3]), None);
        assert_eq!(
            first_not_harmful(&items[..3]).map(|c| c.id.as_str()),
            Some("none")
        );
    }

    #[test]
    fn a_measured_improvement_outranks_a_larger_uploaded_claim() {
        let mut measured = info("measured", 0.02, false);
        measured.verified = true;
        let items = [info("claimed", 0.9, false), measured];
        assert_eq!(best(&items), Some("measured"));
    }

    #[test]
    fn server_sent_events_are_parsed_across_chunks() {
        let mut parser = SseParser::default();
        let stream =
            ": keep-alive\n\nevent: state\r\nid: 3\ndata: {\"a\":\ndata: 1}\n\nid: 4\n\ndata:x\n\n";
        let mut messages = Vec::new();
        for chunk in stream.as_bytes().chunks(5) {
            messages.extend(parser.feed(chunk).expect("parse"));
        }
        assert_eq!(messages, ["{\"a\":\n1}", "x"]);
    }

    #[test]
    fn ids_that_would_change_the_url_are_refused() {
        assert!(checked_id("0193a5e2-7f1c-7a7e-9d0b-3c4d5e6f7a8b", "run").is_ok());
        for bad in ["", "../datasets", "a/b", "a?b", "a b"] {
            assert!(checked_id(bad, "run").is_err(), "{bad:?}");
        }
    }
}
