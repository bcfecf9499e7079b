//! [`Files`]: put, get and delete whole files by key, on the data directory or S3.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart,
};

use crate::sniff::SNIFF_BYTES;

/// Parts an upload is cut into on its way to the store: S3's smallest multipart part. An
/// upload holds at most three in memory (the one being filled and two on their way),
/// whatever the file's size.
const PART_BYTES: usize = 5 * 1024 * 1024;

/// Where a cluster keeps its files: an S3-compatible service. Credentials come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and `AWS_SESSION_TOKEN` if set),
/// never from the command line.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The service's URL (`https://s3.eu-west-1.amazonaws.com`, `http://minio:9000`); path-style
    /// requests (`<endpoint>/<bucket>/<key>`), which every S3-compatible server answers.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The body is longer than the limit it was written under; nothing was kept.
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The client's body failed (it hung up, or sent a malformed chunk); nothing was kept.
    #[error("the upload was cut short: {0}")]
    Body(String),
    /// The store failed.
    #[error("file store: {0}")]
    Store(#[from] object_store::Error),
    #[error("file store: {0}")]
    Config(String),
}

/// What [`Files::put_stream`] wrote.
#[derive(Debug, Clone)]
pub struct Stored {
    pub size: u64,
    /// The file's first bytes (up to [`SNIFF_BYTES`]), to tell its type by.
    pub head: Vec<u8>,
}

/// A file being read: its size and its bytes as a stream.
pub struct Download {
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, FilesError>>,
}

/// Files by key (`rooms/<room id>/<upload id>`, ...).
#[derive(Clone)]
pub struct Files {
    store: Arc<dyn ObjectStore>,
    /// "data directory" or "S3", for logs and `/readyz`.
    kind: &'static str,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").field("kind", &self.kind).finish()
    }
}

impl Files {
    /// Files under `dir`, which is created if absent.
    pub fn local(dir: &FsPath) -> Result<Files, FilesError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| FilesError::Config(format!("creating {}: {e}", dir.display())))?;
        Ok(Files {
            store: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
            kind: "data directory",
        })
    }

    /// Files in an S3 bucket. Checks nothing yet: [`Files::check`] does, for `/readyz`.
    pub fn s3(config: &S3Config) -> Result<Files, FilesError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(false)
            // A request that cannot get through fails within seconds, not after the client's
            // default three minutes of retries: an upload's client is waiting.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(10),
                backoff: BackoffConfig::default(),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.endpoint.starts_with("http://"))
                    .with_connect_timeout(std::time::Duration::from_secs(5))
                    .with_timeout(std::time::Duration::from_secs(60)),
            );
        if let Some(v) = env("AWS_ACCESS_KEY_ID") {
            builder = builder.with_access_key_id(v);
        }
        if let Some(v) = env("AWS_SECRET_ACCESS_KEY") {
            builder = builder.with_secret_access_key(v);
        }
        if let Some(v) = env("AWS_SESSION_TOKEN") {
            builder = builder.with_token(v);
        }
        Ok(Files {
            store: Arc::new(builder.build()?),
            kind: "S3",
        })
    }

    /// "data directory" or "S3".
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Writes `body` under `key`, refusing it once it passes `limit` bytes. The file appears
    /// whole or not at all: on any failure nothing is left under `key`.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        body: S,
        limit: u64,
    ) -> Result<Stored, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let path = Path::from(key);
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut body = std::pin::pin!(body);
        let mut size = 0u64;
        let mut head = Vec::new();
        let failed = loop {
            let chunk = match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(FilesError::Body(e.to_string())),
                Some(Ok(chunk)) => chunk,
            };
            size += chunk.len() as u64;
            if size > limit {
                break Some(FilesError::TooLarge { limit });
            }
            if head.len() < SNIFF_BYTES {
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            // At most two parts on their way besides the one being filled: memory stays bounded
            // however fast the client sends.
            if let Err(e) = writer.wait_for_capacity(2).await {
                break Some(e.into());
            }
            writer.write(&chunk);
        };
        match failed {
            None => {
                writer.finish().await?;
                Ok(Stored { size, head })
            }
            Some(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, key, "cannot abort an upload");
                }
                Err(e)
            }
        }
    }

    /// Writes `bytes` under `key` in one request (small files: metadata, previews).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), FilesError> {
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// The file under `key`, as a stream; `None` if there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Download>, FilesError> {
        match self.store.get(&Path::from(key)).await {
            Ok(found) => Ok(Some(Download {
                size: found.meta.size,
                body: found.into_stream().map_err(FilesError::from).boxed(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The whole file under `key`, if there is one and it is at most `limit` bytes.
    pub async fn get_bytes(&self, key: &str, limit: u64) -> Result<Option<Bytes>, FilesError> {
        let Some(download) = self.get(key).await? else {
            return Ok(None);
        };
        if download.size > limit {
            return Err(FilesError::TooLarge { limit });
        }
        let mut out = Vec::with_capacity(download.size as usize);
        let mut body = download.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() as u64 > limit {
                return Err(FilesError::TooLarge { limit });
            }
        }
        Ok(Some(Bytes::from(out)))
    }

    /// Whether a file is under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, FilesError> {
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the file under `key`; deleting a file that is not there succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), FilesError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The keys under `prefix` (a folder: `pending/`) and when each was last written, in
    /// milliseconds since the Unix epoch; streamed, in no particular order.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<(String, i64), FilesError>> {
        self.store
            .list(Some(&Path::from(prefix)))
            .map(|meta| {
                meta.map(|m| (m.location.to_string(), m.last_modified.timestamp_millis()))
                    .map_err(FilesError::from)
            })
            .boxed()
    }

    /// Whether the store answers: a read of a key that is never written.
    pub async fn check(&self) -> Result<(), FilesError> {
        self.get("health/probe").await.map(|_| ())
    }
}
