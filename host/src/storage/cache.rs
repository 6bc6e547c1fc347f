//! Downloads kept on the node: one entry per location, revalidated by its entity tag (a
//! conditional GET costs no body when nothing changed), checked against the size the
//! server announced and, for a published model, against its manifest. The least recently
//! used entries go once the cache holds more than its bound.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use xxhash_rust::xxh3::xxh3_64;

use super::{Location, Storage, StorageError};

/// What an entry records beside its object.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    location: String,
    etag: Option<String>,
    size: u64,
    sha256: String,
}

pub struct Cache {
    dir: PathBuf,
    limit: u64,
}

impl Cache {
    /// A cache in `dir` holding at most `limit` bytes (the entry in use is kept even when
    /// it alone is larger).
    pub fn new(dir: impl Into<PathBuf>, limit: u64) -> Cache {
        Cache {
            dir: dir.into(),
            limit,
        }
    }

    fn entry_dir(&self, location: &Location) -> PathBuf {
        self.dir
            .join(format!("{:016x}", xxh3_64(location.to_string().as_bytes())))
    }

    /// The object at `location` as a local file: a local path as it is, else the cached
    /// copy, downloaded again only when the object changed. A published model (one with a
    /// manifest) is verified against it: a download that does not match is an error to
    /// retry (the model was being replaced), never a file to load, and the copy cached
    /// before it stays.
    pub fn fetch(&self, storage: &Storage, location: &Location) -> Result<PathBuf, StorageError> {
        if let Location::Local(path) = location {
            return Ok(path.clone());
        }
        let dir = self.entry_dir(location);
        let (object, record) = (dir.join("object"), dir.join("entry.json"));
        let known = self.known(location);
        let unless = known.as_ref().and_then(|e| e.etag.as_deref());
        let incoming = dir.join("incoming");
        let entry = match storage.download(location, &incoming, unless)? {
            None => known.expect("a conditional download only with an entry"),
            Some(meta) => Entry {
                location: location.to_string(),
                etag: meta.etag,
                size: meta.size,
                sha256: sha256_file(&incoming)?,
            },
        };
        // Read after the object: a model replaced between the two reads disagrees with its
        // manifest either way round, and is fetched again at the next call.
        if let Some((manifest, _)) = storage.manifest(location)?
            && (manifest.size != entry.size || manifest.sha256 != entry.sha256)
        {
            let _ = std::fs::remove_file(&incoming);
            return Err(StorageError::Corrupt {
                location: location.to_string(),
                message: format!(
                    "the object ({} bytes, sha256 {}) does not match its manifest ({} bytes, sha256 {}): it is being replaced, and is tried again later (a model uploaded by hand: delete the old manifest beside it)",
                    entry.size,
                    short(&entry.sha256),
                    manifest.size,
                    short(&manifest.sha256)
                ),
            });
        }
        if incoming.exists() {
            std::fs::rename(&incoming, &object).map_err(|e| StorageError::io(&object, e))?;
        }
        let text = serde_json::to_vec(&entry).expect("an entry serialises");
        crate::files::write_atomically(&record, &text).map_err(|e| StorageError::Io {
            path: record.display().to_string(),
            source: std::io::Error::other(format!("{e:#}")),
        })?;
        self.evict(&dir);
        Ok(object)
    }

    /// [`fetch`](Self::fetch), or when the storage cannot be reached now, the copy cached
    /// earlier: a job restarted during an outage starts on the model it had.
    pub fn fetch_or_cached(
        &self,
        storage: &Storage,
        location: &Location,
    ) -> Result<PathBuf, StorageError> {
        match self.fetch(storage, location) {
            Err(e @ StorageError::Unavailable { .. }) => match self.known(location) {
                Some(_) => {
                    tracing::warn!("{e}: using the copy fetched before");
                    Ok(self.entry_dir(location).join("object"))
                }
                None => Err(e),
            },
            other => other,
        }
    }

    /// The entry cached for `location`, when its object is there.
    fn known(&self, location: &Location) -> Option<Entry> {
        let dir = self.entry_dir(location);
        std::fs::read(dir.join("entry.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
            .filter(|e| e.location == location.to_string() && dir.join("object").is_file())
    }

    /// Deletes the least recently used entries beyond the bound, never `keep`.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut found: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let dir = e.path();
                let used = std::fs::metadata(dir.join("entry.json"))
                    .ok()?
                    .modified()
                    .ok()?;
                let size = std::fs::metadata(dir.join("object")).ok()?.len();
                Some((used, size, dir))
            })
            .collect();
        let mut total: u64 = found.iter().map(|(_, size, _)| size).sum();
        found.sort();
        for (_, size, dir) in found {
            if total <= self.limit {
                break;
            }
            if dir != keep && std::fs::remove_dir_all(&dir).is_ok() {
                total -= size;
            }
        }
    }
}

fn sha256_file(path: &Path) -> Result<String, StorageError> {
    let mut file = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut hash = Sha256::new();
    std::io::copy(&mut file, &mut hash).map_err(|e| StorageError::io(path, e))?;
    Ok(hex::encode(hash.finalize()))
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
