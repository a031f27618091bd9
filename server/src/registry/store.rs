//! Blob storage through object_store: a local directory by default (`<data-dir>/blobs`), or
//! S3 / GCS / Azure by URL (`s3://bucket/prefix`, credentials and endpoint from the usual
//! `AWS_*`, `GOOGLE_*`, `AZURE_*` environment variables).
//!
//! Keys (`StorageKey`): `datasets/<hex>/<upload>/archive`, `commentaries/<id>/{manifest.json,
//! tensors.safetensors,report.json}`. The database decides what is visible; a blob without a
//! row is invisible.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};
use schema::Sha256;
use schema::artifact::{MANIFEST_FILE, REPORT_FILE, TENSORS_FILE};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The registry's blob store.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    /// Key prefix inside the bucket (from the URL's path).
    prefix: Path,
    /// Where it is, for logs (no credentials).
    pub location: String,
}

/// Bytes of one blob, possibly a range of it.
pub struct Blob {
    pub stream: BoxStream<'static, Result<Bytes, object_store::Error>>,
    pub size: u64,
    pub range: Range<u64>,
}

impl BlobStore {
    /// Opens the store at `url`, or the local directory `<data_dir>/blobs` when None.
    pub fn open(url: Option<&str>, data_dir: &FsPath) -> anyhow::Result<Self> {
        let Some(url) = url else {
            let dir = data_dir.join("blobs");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let store = LocalFileSystem::new_with_prefix(&dir)
                .with_context(|| format!("cannot open {}", dir.display()))?
                .with_automatic_cleanup(true);
            return Ok(Self {
                inner: Arc::new(store),
                prefix: Path::default(),
                location: dir.display().to_string(),
            });
        };
        let parsed = reqwest::Url::parse(url).with_context(|| format!("bad store URL {url:?}"))?;
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .with_context(|| format!("cannot open {url}"))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .with_context(|| format!("cannot open {url}"))?,
            ),
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .with_context(|| format!("cannot open {url}"))?,
            ),
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| anyhow::anyhow!("bad file URL {url:?}"))?;
                return Self::open(None, &dir).map(|mut s| {
                    s.location = url.to_string();
                    s
                });
            }
            other => anyhow::bail!(
                "unsupported store URL scheme {other:?} in {url:?}; use s3://, gs://, az:// or a local directory"
            ),
        };
        let prefix = Path::from(parsed.path().trim_matches('/'));
        Ok(Self {
            inner,
            prefix,
            location: url.to_string(),
        })
    }

    fn key(&self, key: &StorageKey) -> Path {
        self.prefix
            .parts()
            .chain(Path::from(key.path()).parts())
            .collect()
    }

    /// Stores `bytes` under `key`.
    pub async fn put(&self, key: &StorageKey, bytes: Bytes) -> anyhow::Result<()> {
        self.inner
            .put(&self.key(key), PutPayload::from(bytes))
            .await
            .with_context(|| format!("cannot store {key}"))?;
        Ok(())
    }

    /// Streams a local file into the store under `key` (multipart for large files, so memory
    /// stays bounded by the part size).
    pub async fn put_file(&self, key: &StorageKey, file: &FsPath) -> anyhow::Result<()> {
        let mut source = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let mut writer = BufWriter::new(self.inner.clone(), self.key(key));
        let mut buffer = vec![0u8; 1 << 20];
        let copied: anyhow::Result<()> = async {
            loop {
                let n = source.read(&mut buffer).await?;
                if n == 0 {
                    return Ok(());
                }
                writer.write_all(&buffer[..n]).await?;
            }
        }
        .await;
        if let Err(err) = copied {
            let _ = writer.abort().await;
            return Err(err.context(format!("cannot store {key}")));
        }
        // A failed shutdown has already ended the upload (object_store's `abort` would
        // panic after it): nothing to abort, and no object was made.
        writer
            .shutdown()
            .await
            .with_context(|| format!("cannot store {key}"))?;
        Ok(())
    }

    /// The whole blob in memory (for small blobs: manifests, reports).
    pub async fn get_bytes(&self, key: &StorageKey) -> anyhow::Result<Bytes> {
        let result = self
            .inner
            .get(&self.key(key))
            .await
            .with_context(|| format!("cannot read {key}"))?;
        Ok(result.bytes().await?)
    }

    /// Streams the blob, or `range` of it.
    pub async fn get(&self, key: &StorageKey, range: Option<Range<u64>>) -> anyhow::Result<Blob> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .inner
            .get_opts(&self.key(key), options)
            .await
            .with_context(|| format!("cannot read {key}"))?;
        let size = result.meta.size;
        let range = result.range.clone();
        Ok(Blob {
            stream: result.into_stream().boxed(),
            size,
            range,
        })
    }

    /// Downloads the blob into a local file.
    pub async fn download(&self, key: &StorageKey, to: &FsPath) -> anyhow::Result<()> {
        let blob = self.get(key, None).await?;
        let mut file = tokio::fs::File::create(to)
            .await
            .with_context(|| format!("cannot create {}", to.display()))?;
        let mut stream = blob.stream;
        while let Some(chunk) = stream.try_next().await? {
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(())
    }

    /// Deletes the blob; a missing blob is not an error.
    pub async fn delete(&self, key: &StorageKey) -> anyhow::Result<()> {
        self.delete_path(&key.path()).await
    }

    /// Paths (under the store's prefix) of the blobs below `folder` last written before
    /// `before` (for the orphan sweep).
    pub async fn list_written_before(
        &self,
        folder: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Vec<String>> {
        let root: Path = self
            .prefix
            .parts()
            .chain(Path::from(folder).parts())
            .collect();
        let skip = self.prefix.parts().count();
        let mut listing = self.inner.list(Some(&root));
        let mut found = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.with_context(|| format!("cannot list {folder}/ in the store"))?;
            if meta.last_modified < before {
                let parts: Vec<String> = meta
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect();
                found.push(parts.join("/"));
            }
        }
        Ok(found)
    }

    /// Deletes the blob at `path` (under the store's prefix), as listed; missing is fine.
    pub async fn delete_path(&self, path: &str) -> anyhow::Result<()> {
        let location: Path = self
            .prefix
            .parts()
            .chain(Path::from(path).parts())
            .collect();
        match self.inner.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("cannot delete {path}")),
        }
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn check(&self) -> anyhow::Result<()> {
        let mut listing = self.inner.list(Some(&self.prefix));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(err)) => Err(err).context("the blob store does not answer"),
        }
    }
}

/// An object in the store: the one place that decides its path, and how it is served (content
/// type, download file name, caching).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKey {
    /// `datasets/<hex>/<upload>/archive`: a dataset archive, as uploaded. `upload` is a fresh
    /// id per upload, so two uploads of one content (a tar and a zip, say) never write one key:
    /// the row's `archive_key` names the one that counts. Archives stored before upload ids
    /// existed are at `datasets/<hex>/archive` (`upload` None).
    DatasetArchive {
        digest: Sha256,
        upload: Option<String>,
    },
    /// `commentaries/<id>/<file>`: one file of a commentary artifact.
    Commentary { id: String, file: ArtifactFile },
}

/// The files of a stored commentary artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactFile {
    Manifest,
    Tensors,
    Report,
}

impl ArtifactFile {
    /// Every file (a report only exists for evaluated commentaries).
    pub const ALL: [Self; 3] = [Self::Manifest, Self::Tensors, Self::Report];

    /// The file's name in an artifact directory.
    pub fn name(self) -> &'static str {
        match self {
            Self::Manifest => MANIFEST_FILE,
            Self::Tensors => TENSORS_FILE,
            Self::Report => REPORT_FILE,
        }
    }
}

impl StorageKey {
    /// The key for a new upload of `digest`.
    pub fn new_archive(digest: Sha256) -> Self {
        Self::DatasetArchive {
            digest,
            upload: Some(uuid::Uuid::now_v7().to_string()),
        }
    }

    /// The archive key a dataset row records (`archive_key`), checked against its digest.
    pub fn stored_archive(digest: Sha256, archive_key: &str) -> Option<Self> {
        let rest = archive_key.strip_prefix(&format!("datasets/{}/", digest.hex()))?;
        if rest == "archive" {
            return Some(Self::DatasetArchive {
                digest,
                upload: None,
            });
        }
        let upload = rest.strip_suffix("/archive")?;
        uuid::Uuid::parse_str(upload).ok()?;
        Some(Self::DatasetArchive {
            digest,
            upload: Some(upload.to_string()),
        })
    }

    /// The strong ETag of a dataset archive: its digest and its upload (another upload of the
    /// same content has other bytes).
    pub fn archive_etag(digest: &Sha256, upload: Option<&str>) -> String {
        match upload {
            Some(upload) => format!("\"{}-{upload}\"", digest.hex()),
            None => format!("\"{}\"", digest.hex()),
        }
    }

    pub fn commentary(id: &str, file: ArtifactFile) -> Self {
        Self::Commentary {
            id: id.to_string(),
            file,
        }
    }

    /// The object's path under the store's prefix.
    pub fn path(&self) -> String {
        match self {
            Self::DatasetArchive {
                digest,
                upload: None,
            } => format!("datasets/{}/archive", digest.hex()),
            Self::DatasetArchive {
                digest,
                upload: Some(upload),
            } => format!("datasets/{}/{upload}/archive", digest.hex()),
            Self::Commentary { id, file } => format!("commentaries/{id}/{}", file.name()),
        }
    }

    /// `Content-Type` when served.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Commentary {
                file: ArtifactFile::Manifest | ArtifactFile::Report,
                ..
            } => "application/json",
            Self::DatasetArchive { .. }
            | Self::Commentary {
                file: ArtifactFile::Tensors,
                ..
            } => "application/octet-stream",
        }
    }

    /// The file name of `Content-Disposition: attachment` when served.
    pub fn file_name(&self) -> &'static str {
        match self {
            Self::DatasetArchive { .. } => "dataset-archive",
            Self::Commentary { file, .. } => file.name(),
        }
    }

    /// `Cache-Control` when served: none, for every object. Objects never change, but reads may
    /// need a token (`--private-reads`) and a delete must take effect at once, so clients keep
    /// what they downloaded and revalidate with the strong ETag (`If-None-Match` -> 304).
    pub fn cache_control(&self) -> Option<&'static str> {
        match self {
            Self::DatasetArchive { .. } | Self::Commentary { .. } => None,
        }
    }
}

impl std::fmt::Display for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// Small immutable blobs (commentary tensors, small archives) kept in memory, so downloads of a
/// popular commentary are served without touching the store. Keys include the content hash, so
/// an entry can never be served for other content; the caller looks the row up first (from the
/// database, or the row cache within its time-to-live), so a deleted object is not served once
/// the delete is seen.
pub struct BlobCache {
    cache: quick_cache::sync::Cache<String, Bytes, BlobWeight>,
    /// Blobs larger than this are streamed, never cached.
    pub max_item: u64,
}

#[derive(Clone)]
pub struct BlobWeight;

impl quick_cache::Weighter<String, Bytes> for BlobWeight {
    fn weight(&self, _key: &String, value: &Bytes) -> u64 {
        value.len() as u64 + 1
    }
}

impl BlobCache {
    /// A cache of at most `capacity` bytes (0 disables it).
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: quick_cache::sync::Cache::with_weighter(1024, capacity.max(1), BlobWeight),
            max_item: if capacity == 0 {
                0
            } else {
                (capacity / 8).min(64 << 20)
            },
        }
    }

    /// The blob's bytes from memory, or read whole from the store (and remembered when small).
    pub async fn get(
        &self,
        store: &BlobStore,
        key: &StorageKey,
        content: &str,
    ) -> anyhow::Result<Bytes> {
        let cache_key = format!("{content}:{key}");
        if let Some(hit) = self.cache.get(&cache_key) {
            return Ok(hit);
        }
        let bytes = store.get_bytes(key).await?;
        if bytes.len() as u64 <= self.max_item {
            self.cache.insert(cache_key, bytes.clone());
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_paths_existing_stores_hold() {
        let digest = Sha256::of(b"d");
        let legacy = format!("datasets/{}/archive", digest.hex());
        let stored = StorageKey::stored_archive(digest, &legacy).expect("the old key");
        assert_eq!(stored.path(), legacy);
        let fresh = StorageKey::new_archive(digest);
        assert_ne!(fresh.path(), legacy);
        assert_eq!(
            StorageKey::stored_archive(digest, &fresh.path()),
            Some(fresh.clone())
        );
        assert_ne!(fresh, StorageKey::new_archive(digest), "one key per upload");
        let other = Sha256::of(b"e");
        assert_eq!(StorageKey::stored_archive(other, &fresh.path()), None);
        assert_eq!(
            StorageKey::stored_archive(digest, &format!("datasets/{}/../x/archive", digest.hex())),
            None
        );
        let paths: Vec<String> = ArtifactFile::ALL
            .iter()
            .map(|&f| StorageKey::commentary("c1", f).path())
            .collect();
        assert_eq!(
            paths,
            [
                "commentaries/c1/manifest.json",
                "commentaries/c1/tensors.safetensors",
                "commentaries/c1/report.json"
            ]
        );
        assert_eq!(
            StorageKey::commentary("c1", ArtifactFile::Tensors).content_type(),
            "application/octet-stream"
        );
    }
}
