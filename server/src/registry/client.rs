//! The registry's HTTP client: used by `dataset push`, `pull`, `apply --server` and learning
//! workers (remote and in-process, which go through the same worker endpoints).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use schema::api::{
    CommentaryDetail, CommentaryInfo, DatasetInfo, ErrorBody, EventBody, EventsPost, FailPost,
    HeartbeatAnswer, Lease, LeaseRef, LeaseRequest, Page,
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

    /// Uploads a dataset archive (a folder is packed as .tar.gz first). Returns the stored
    /// dataset and whether it was new.
    pub async fn push_dataset(
        &self,
        path: &Path,
        name: &str,
    ) -> anyhow::Result<(DatasetInfo, bool)> {
        let packed;
        let archive = if path.is_dir() {
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
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
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
        self.download(&format!("/v1/datasets/{digest}/archive"), to)
            .await
    }

    async fn download(&self, path: &str, to: &Path) -> anyhow::Result<()> {
        let mut response = self
            .send(Method::GET, path, self.request(Method::GET, path))
            .await?;
        let mut file = tokio::fs::File::create(to)
            .await
            .with_context(|| format!("cannot create {}", to.display()))?;
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("GET {path}: cut short"))?
        {
            file.write_all(&chunk).await?;
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
        self.get_json(&format!("/v1/commentaries/{id}")).await
    }

    /// Downloads the best commentary (largest improvement, then newest) for `dataset` into
    /// `out` as an artifact directory, and verifies it.
    pub async fn pull(
        &self,
        dataset: &Sha256,
        kind: Option<CommentaryKind>,
        out: &Path,
    ) -> anyhow::Result<CommentaryDetail> {
        // The largest improvement first; a commentary found harmful is never the pick.
        let page = self.commentaries(dataset, kind, "improvement", 50).await?;
        let Some(best) = best_of(&page.items) else {
            anyhow::bail!(
                "the registry has no {}commentary for dataset {dataset}{}",
                kind.map(|k| format!("{k} ")).unwrap_or_default(),
                if page.items.is_empty() {
                    ""
                } else {
                    " that is not marked harmful"
                }
            );
        };
        if !best.verified {
            tracing::warn!(
                commentary = %best.id,
                "no commentary measured by the registry itself; using an uploaded one whose improvement is the uploader's claim"
            );
        }
        let detail = self.commentary(&best.id).await?;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let tensors = out.join(format!(".{TENSORS_FILE}.part"));
        self.download(&format!("/v1/commentaries/{}/artifact", best.id), &tensors)
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
            .with_context(|| format!("the downloaded commentary {} does not verify", best.id))?;
        Ok(detail)
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

/// The commentary to use among `items` listed by improvement (verified ones first, then the
/// largest improvement): the first one not marked harmful.
pub fn best_of(items: &[CommentaryInfo]) -> Option<&CommentaryInfo> {
    items.iter().find(|c| !c.harmful)
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

    #[test]
    fn a_harmful_commentary_is_never_the_best_even_ranked_first() {
        let items = [info("a", 0.3, true), info("b", 0.1, false)];
        assert_eq!(best_of(&items).map(|c| c.id.as_str()), Some("b"));
        assert!(best_of(&[info("c", -0.4, true)]).is_none());
    }
}
