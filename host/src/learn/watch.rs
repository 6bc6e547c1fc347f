//! The deploy model's place (`spec.deploySpec.model`'s url): where a round publishes the
//! model it deploys, and what the job polls for a model written there by someone else.
//! A local file is noticed by its modified time and length; an object by the entity tags
//! of the object and its manifest, and fetched and verified before the worker may swap
//! to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;

use crate::storage::{Cache, Location, MANIFEST_SUFFIX, Storage, StorageError};

/// What identifies one version of the deploy model.
#[derive(Clone, Debug, PartialEq)]
enum Stamp {
    File(SystemTime, u64),
    /// The object's entity tag and its manifest's (when it has one).
    Object(Option<String>, Option<String>),
}

pub struct DeployedModel {
    location: Location,
    storage: Arc<Storage>,
    cache: Arc<Cache>,
    seen: Option<Stamp>,
}

impl DeployedModel {
    /// The deploy model at `location`, from its current state: only later changes count
    /// (a model that does not exist yet counts when it appears).
    pub fn new(location: Location, storage: Arc<Storage>, cache: Arc<Cache>) -> Self {
        let mut model = DeployedModel {
            location,
            storage,
            cache,
            seen: None,
        };
        model.seen = model.stamp().ok().flatten();
        model
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The local file to record as the deployed model after publishing `published`: the
    /// deploy file itself when it is local, else the round's own copy.
    pub fn recorded(&self, published: &Path) -> PathBuf {
        self.location
            .local()
            .map_or_else(|| published.to_path_buf(), Path::to_path_buf)
    }

    fn stamp(&self) -> Result<Option<Stamp>, StorageError> {
        if let Location::Local(path) = &self.location {
            let stamp = std::fs::metadata(path)
                .ok()
                .and_then(|m| Some(Stamp::File(m.modified().ok()?, m.len())));
            return Ok(stamp);
        }
        let etag = |at: &Location| match self.storage.head(at) {
            Ok(meta) => Ok(Some(meta.etag)),
            Err(StorageError::NotFound { bucket: false, .. }) => Ok(None),
            Err(e) => Err(e),
        };
        let Some(object) = etag(&self.location)? else {
            return Ok(None);
        };
        let manifest = etag(&self.location.with_suffix(MANIFEST_SUFFIX))?.flatten();
        Ok(Some(Stamp::Object(object, manifest)))
    }

    /// Writes `model` there (a local file atomically; an object, then its manifest) and
    /// takes it as seen: the job's own model is no change from elsewhere.
    pub fn publish(&mut self, model: &Path) -> anyhow::Result<()> {
        match &self.location {
            Location::Local(to) => copy_atomically(model, to)?,
            remote => {
                self.storage
                    .publish(model, remote)
                    .with_context(|| format!("cannot publish {}", model.display()))?;
            }
        }
        self.seen = self.stamp().ok().flatten();
        Ok(())
    }

    /// When the model there changed since it was last seen: the local file to swap to,
    /// fetched and verified. A model caught being replaced, or storage out of reach, is
    /// an error and stays unseen, so the next poll tries again.
    pub fn changed(&mut self) -> Result<Option<PathBuf>, StorageError> {
        let stamp = self.stamp()?;
        if stamp.is_none() || stamp == self.seen {
            return Ok(None);
        }
        let file = self.cache.fetch(&self.storage, &self.location)?;
        self.seen = stamp;
        Ok(Some(file))
    }
}

/// Copies `from` to a temporary file beside `to`, then renames it over `to`: the worker
/// (or a reader polling `to`) never sees half a model.
fn copy_atomically(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    crate::files::write_atomically(to, &bytes)
}
