//! What a stage needs, fetched before it starts, and where its model goes (Sedna's
//! storage initializer): models and data indexes named by a local path or a URL
//! (`s3://`, `http(s)://`), for `sedna train`, `sedna evaluate` and the train and eval
//! workers of a cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use super::dataset::DatasetMonitor;
use crate::media::Sample;
use crate::spec::Format;
use crate::storage::{CACHE_BYTES, Cache, Location, Storage};

pub struct Staging {
    storage: Arc<Storage>,
    cache: Cache,
    /// Where images named by an index in object storage are downloaded.
    objects: PathBuf,
    /// Where a model bound for object storage is written before it is published.
    scratch: tempfile::TempDir,
}

impl Staging {
    /// Fetches with Sedna's credential variables from the environment (a Pod gets its
    /// Secret's keys there), caching under `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Staging> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging {
            storage: Arc::new(Storage::from_env()?),
            cache: Cache::new(dir.join("cache"), CACHE_BYTES),
            objects: dir.join("objects"),
            scratch: tempfile::tempdir_in(dir)?,
        })
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The model at `url` as a local file (fetched and verified when it is remote).
    pub fn model(&self, url: &str, what: &str) -> anyhow::Result<PathBuf> {
        let location = Location::parse(url).with_context(|| what.to_string())?;
        self.cache
            .fetch_or_cached(&self.storage, &location)
            .with_context(|| format!("{what}: cannot fetch {url}"))
    }

    /// The samples of the index at `url`, their images local files. Lines that are not
    /// samples are logged; an index with none is an error.
    pub fn index(&self, url: &str, what: &str) -> anyhow::Result<Arc<[Sample]>> {
        let location = Location::parse(url).with_context(|| what.to_string())?;
        let read = DatasetMonitor::at(
            location,
            Format::Txt,
            Default::default(),
            self.storage.clone(),
            self.objects.clone(),
        )
        .check()
        .with_context(|| format!("{what}: cannot read {url}"))?;
        for rejected in &read.rejected {
            tracing::warn!("{url}:{}: {}", rejected.line, rejected.reason);
        }
        if read.samples.is_empty() {
            anyhow::bail!("{what}: {url} holds no samples");
        }
        Ok(read.samples.into())
    }

    /// Where to write a model bound for `url`: the path itself, or a scratch file that
    /// [`Staging::publish`] then uploads with its manifest.
    pub fn output(&self, url: &str, what: &str) -> anyhow::Result<PathBuf> {
        match Location::parse(url).with_context(|| what.to_string())? {
            Location::Local(path) => Ok(path),
            Location::Http(_) => {
                anyhow::bail!("{what}: {url} is read only: write to s3:// or a local path")
            }
            Location::S3 { .. } => Ok(self.scratch.path().join("model.onnx")),
        }
    }

    /// Publishes `file` (written where [`Staging::output`] said) at `url` when that is
    /// object storage.
    pub fn publish(&self, file: &Path, url: &str, what: &str) -> anyhow::Result<()> {
        let location = Location::parse(url).with_context(|| what.to_string())?;
        if location.is_remote() {
            self.storage
                .publish(file, &location)
                .with_context(|| format!("{what}: cannot publish to {url}"))?;
        }
        Ok(())
    }
}
