//! Object storage: where models, data indexes and their images live when they are not
//! files on this node. `s3://bucket/key` on any S3-compatible endpoint (AWS, MinIO, OBS,
//! Ceph) with Sedna's credential names, `http(s)://` read only, or a local path, behind
//! one synchronous client (the job's loop runs on threads) over `object_store`.
//!
//! Writes are whole or absent: S3 makes a PUT visible only when complete, and a published
//! model gets a manifest (size and SHA-256) written after it, so a reader verifies what it
//! fetched before using it. Reads count their bytes ([`Storage::bytes_fetched`]).

mod cache;
mod credentials;
mod location;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt as _,
    PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use cache::Cache;
pub use credentials::{
    ACCESS_KEY_ID, Credentials, S3_ENDPOINT_URL, S3_REGION, S3_USE_HTTPS, SECRET_ACCESS_KEY,
};
pub use location::Location;

/// How long a request is retried (endpoint down, throttled) before it fails; a job then
/// tries again at its next check or poll.
pub const RETRY: Duration = Duration::from_secs(30);
/// The bound of a cache of fetched models.
pub const CACHE_BYTES: u64 = 2 << 30;

/// The most of a manifest read (a real one is under 200 bytes).
const MAX_MANIFEST: u64 = 4096;

/// What is written beside a published model, after it: `<key>.manifest.json`.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    #[error("{0}")]
    Credentials(String),
    #[error("{location}: {}", if *.bucket { "the bucket does not exist: create it or fix the URL" } else { "no such object: check the URL (the key is case-sensitive)" })]
    NotFound { location: String, bucket: bool },
    #[error(
        "{location}: access denied with the credentials from {origin}: check {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY} there ({message})"
    )]
    Denied {
        location: String,
        origin: String,
        message: String,
    },
    #[error(
        "{location}: the storage cannot be reached or refused the request for now ({message}); it is retried"
    )]
    Unavailable { location: String, message: String },
    #[error("{location}: {message}")]
    Corrupt { location: String, message: String },
    #[error("{location}: http(s) storage is read only: write to s3:// or a local path")]
    ReadOnly { location: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StorageError {
    /// Whether trying again later may succeed (the endpoint was down, throttled, or an
    /// object was being replaced), rather than a setting to fix.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Unavailable { .. } | StorageError::Corrupt { .. }
        )
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        let kind = match &e {
            StorageError::NotFound { .. } => std::io::ErrorKind::NotFound,
            StorageError::Denied { .. } => std::io::ErrorKind::PermissionDenied,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// An object's size and entity tag (which changes whenever the object does).
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    pub size: u64,
    pub etag: Option<String>,
}

/// What a published model's manifest records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn of(bytes: &[u8]) -> Manifest {
        Manifest {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// The client: one `object_store` per bucket or web server, its calls run on the
/// storage runtime ([`block_on`]).
pub struct Storage {
    credentials: Option<Credentials>,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    retry_timeout: Duration,
    fetched: AtomicU64,
}

impl Storage {
    /// A client for these credentials (`None`: anonymous, AWS's endpoint). Requests that
    /// fail for a passing reason are retried for up to `retry_timeout` before an error.
    pub fn new(credentials: Option<Credentials>, retry_timeout: Duration) -> Storage {
        Storage {
            credentials,
            stores: Mutex::default(),
            retry_timeout,
            fetched: AtomicU64::new(0),
        }
    }

    /// A client with Sedna's credential variables from the environment (in one process
    /// and in a Pod, where a Secret's keys arrive as env).
    pub fn from_env() -> Result<Storage, StorageError> {
        Ok(Self::new(Credentials::from_env()?, RETRY))
    }

    /// Where the credentials came from, for messages.
    pub fn origin(&self) -> &str {
        self.credentials
            .as_ref()
            .map_or("the environment (none set)", |c| c.origin.as_str())
    }

    /// Bytes read from remote objects since the client was made.
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    fn options(&self) -> (ClientOptions, RetryConfig) {
        let client = ClientOptions::new()
            .with_allow_http(true)
            .with_connect_timeout(Duration::from_secs(5))
            // Bounds a stalled transfer, not a large one: models are tens of MB.
            .with_timeout(Duration::from_secs(300));
        let retry = RetryConfig {
            max_retries: 10,
            retry_timeout: self.retry_timeout,
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
        };
        (client, retry)
    }

    /// The store that holds `location` and the object's path in it.
    fn store(
        &self,
        location: &Location,
    ) -> Result<(Arc<dyn ObjectStore>, ObjectPath), StorageError> {
        let invalid = |message: String| StorageError::Invalid {
            location: location.to_string(),
            message,
        };
        let (key, path) = match location {
            Location::S3 { bucket, key } => {
                (format!("s3:{bucket}"), ObjectPath::from(key.as_str()))
            }
            Location::Http(url) => (
                format!("http:{}", url.origin().ascii_serialization()),
                ObjectPath::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?,
            ),
            Location::Local(_) => unreachable!("local paths are read directly"),
        };
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = stores.get(&key) {
            return Ok((store.clone(), path));
        }
        let (client, retry) = self.options();
        let store: Arc<dyn ObjectStore> = match location {
            Location::S3 { bucket, .. } => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_virtual_hosted_style_request(false);
                match &self.credentials {
                    Some(c) => {
                        builder = builder.with_region(&c.region);
                        if let Some(endpoint) = &c.endpoint {
                            builder = builder.with_endpoint(endpoint).with_allow_http(true);
                        }
                        builder = if c.anonymous() {
                            builder.with_skip_signature(true)
                        } else {
                            builder
                                .with_access_key_id(&c.access_key_id)
                                .with_secret_access_key(c.secret())
                        };
                    }
                    None => builder = builder.with_skip_signature(true),
                }
                Arc::new(builder.build().map_err(|e| invalid(e.to_string()))?)
            }
            Location::Http(url) => Arc::new(
                HttpBuilder::new()
                    .with_url(url.origin().ascii_serialization())
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            Location::Local(_) => unreachable!(),
        };
        stores.insert(key, store.clone());
        Ok((store, path))
    }

    fn error(&self, location: &Location, e: object_store::Error) -> StorageError {
        let location = location.to_string();
        match e {
            object_store::Error::NotFound { source, .. } => StorageError::NotFound {
                location,
                bucket: source.to_string().contains("NoSuchBucket"),
            },
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => StorageError::Denied {
                location,
                origin: self.origin().to_string(),
                message: first_line(&source.to_string()),
            },
            other => StorageError::Unavailable {
                location,
                message: first_line(&other.to_string()),
            },
        }
    }

    /// The object's size and entity tag.
    pub fn head(&self, location: &Location) -> Result<Meta, StorageError> {
        if let Location::Local(path) = location {
            let meta = std::fs::metadata(path).map_err(|e| StorageError::io(path, e))?;
            return Ok(Meta {
                size: meta.len(),
                etag: None,
            });
        }
        let (store, path) = self.store(location)?;
        let meta = block_on(store.head(&path)).map_err(|e| self.error(location, e))?;
        Ok(Meta {
            size: meta.size,
            etag: meta.e_tag,
        })
    }

    /// Bytes `from..to` of the object (`to` `None`: to its end), with its entity tag.
    pub fn read(
        &self,
        location: &Location,
        from: u64,
        to: Option<u64>,
    ) -> Result<(Bytes, Meta), StorageError> {
        if let Location::Local(path) = location {
            return read_local(path, from, to);
        }
        let (store, path) = self.store(location)?;
        let range = match to {
            Some(to) => GetRange::Bounded(from..to),
            None => GetRange::Offset(from),
        };
        let options = GetOptions::new().with_range((from > 0 || to.is_some()).then_some(range));
        let (bytes, meta) = block_on(async {
            let got = store.get_opts(&path, options).await?;
            let meta = Meta {
                size: got.meta.size,
                etag: got.meta.e_tag.clone(),
            };
            let expected = got.range.end - got.range.start;
            let bytes = got.bytes().await?;
            Ok::<_, object_store::Error>((bytes, meta, expected))
        })
        .map_err(|e| self.error(location, e))
        .and_then(|(bytes, meta, expected)| {
            if bytes.len() as u64 != expected {
                return Err(StorageError::Corrupt {
                    location: location.to_string(),
                    message: format!(
                        "the download stopped after {} of {expected} bytes",
                        bytes.len()
                    ),
                });
            }
            Ok((bytes, meta))
        })?;
        self.fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok((bytes, meta))
    }

    /// Downloads the object into `dest` (a temporary file renamed when complete and of
    /// the size the server announced), unless its entity tag is still `unless_etag`:
    /// then `None`.
    pub fn download(
        &self,
        location: &Location,
        dest: &Path,
        unless_etag: Option<&str>,
    ) -> Result<Option<Meta>, StorageError> {
        if let Location::Local(path) = location {
            let meta = self.head(location)?;
            std::fs::copy(path, dest).map_err(|e| StorageError::io(path, e))?;
            return Ok(Some(meta));
        }
        let (store, path) = self.store(location)?;
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let mut file =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| StorageError::io(dir, e))?;
        let options = GetOptions::new().with_if_none_match(unless_etag.map(str::to_string));
        let outcome = block_on(async {
            let got = match store.get_opts(&path, options).await {
                Err(object_store::Error::NotModified { .. }) => return Ok(None),
                other => other?,
            };
            let meta = Meta {
                size: got.meta.size,
                etag: got.meta.e_tag.clone(),
            };
            let mut stream = got.into_stream();
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                written += chunk.len() as u64;
                file.write_all(&chunk)
                    .map_err(|e| object_store::Error::Generic {
                        store: "local file",
                        source: Box::new(e),
                    })?;
            }
            Ok(Some((meta, written)))
        });
        let Some((meta, written)) = outcome.map_err(|e| self.error(location, e))? else {
            return Ok(None);
        };
        self.fetched.fetch_add(written, Ordering::Relaxed);
        if written != meta.size {
            return Err(StorageError::Corrupt {
                location: location.to_string(),
                message: format!(
                    "the download stopped after {written} of {} bytes",
                    meta.size
                ),
            });
        }
        file.as_file()
            .sync_all()
            .map_err(|e| StorageError::io(dest, e))?;
        file.persist(dest)
            .map_err(|e| StorageError::io(dest, e.error))?;
        Ok(Some(meta))
    }

    /// Writes `bytes` as the object, whole: S3 shows it only once complete.
    pub fn put(&self, location: &Location, bytes: Vec<u8>) -> Result<(), StorageError> {
        match location {
            Location::Local(path) => {
                crate::files::write_atomically(path, &bytes).map_err(|e| StorageError::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::other(format!("{e:#}")),
                })
            }
            Location::Http(_) => Err(StorageError::ReadOnly {
                location: location.to_string(),
            }),
            Location::S3 { .. } => {
                let (store, path) = self.store(location)?;
                block_on(store.put(&path, PutPayload::from(bytes)))
                    .map(drop)
                    .map_err(|e| self.error(location, e))
            }
        }
    }

    /// Publishes a model: the file, then its manifest. A reader that finds the manifest
    /// disagreeing with the object (caught between the two writes) waits for the next.
    pub fn publish(&self, file: &Path, location: &Location) -> Result<Manifest, StorageError> {
        let bytes = std::fs::read(file).map_err(|e| StorageError::io(file, e))?;
        let manifest = Manifest::of(&bytes);
        self.put(location, bytes)?;
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        self.put(&location.with_suffix(MANIFEST_SUFFIX), text)?;
        Ok(manifest)
    }

    /// A published model's manifest and its entity tag; `None` when there is none (a
    /// model uploaded by hand).
    pub fn manifest(&self, location: &Location) -> Result<Option<(Manifest, Meta)>, StorageError> {
        let at = location.with_suffix(MANIFEST_SUFFIX);
        // A manifest is a few dozen bytes: a larger object there is read no further.
        let (bytes, meta) = match self.read(&at, 0, Some(MAX_MANIFEST)) {
            Ok(found) => found,
            Err(StorageError::NotFound { bucket: false, .. }) => return Ok(None),
            Err(StorageError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let manifest = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
            location: at.to_string(),
            message: format!("not a model manifest ({e}): publish the model again"),
        })?;
        Ok(Some((manifest, meta)))
    }
}

/// Runs `work` to its end on the storage runtime: one for the process, never dropped,
/// so that a client may live and die anywhere. Called from inside another runtime (the
/// agent's), it waits on a thread of its own rather than block that runtime's.
fn block_on<F>(work: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sedna-storage")
            .enable_all()
            .build()
            .expect("the storage runtime starts")
    });
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work))
                .join()
                .expect("a storage call does not panic")
        })
    } else {
        runtime.block_on(work)
    }
}

/// Bytes `from..to` of a local file (`to` `None`: to its end), and its size.
pub fn read_local(path: &Path, from: u64, to: Option<u64>) -> Result<(Bytes, Meta), StorageError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
    let size = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    let to = to.unwrap_or(size).min(size);
    let mut bytes = Vec::with_capacity(to.saturating_sub(from) as usize);
    file.seek(SeekFrom::Start(from))
        .and_then(|_| {
            (&mut file)
                .take(to.saturating_sub(from))
                .read_to_end(&mut bytes)
        })
        .map_err(|e| StorageError::io(path, e))?;
    Ok((bytes.into(), Meta { size, etag: None }))
}

/// An error's first line, with the S3 error code (`SignatureDoesNotMatch`,
/// `NoSuchBucket`, ...) in place of the XML body it came in.
fn first_line(text: &str) -> String {
    let head = text.split(": <?xml").next().unwrap_or(text);
    let head: String = head
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    match text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
    {
        Some(code) => format!("{head}: {code}"),
        None => head,
    }
}
