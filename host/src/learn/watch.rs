//! Noticing a model file written by someone else (the deploy model's path, polled).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A model file whose changes are noticed by its modified time and length.
#[derive(Debug)]
pub struct ModelWatch {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
}

impl ModelWatch {
    /// Watches `path` from its current state: only later changes count (a file that
    /// does not exist yet counts when it appears).
    pub fn new(path: &Path) -> Self {
        ModelWatch {
            path: path.to_path_buf(),
            seen: file_stamp(path),
        }
    }

    /// Whether the file exists and changed since the last call (or since `new`).
    pub fn changed(&mut self) -> bool {
        let stamp = file_stamp(&self.path);
        if stamp.is_none() || stamp == self.seen {
            return false;
        }
        self.seen = stamp;
        true
    }
}

/// A file's modified time and length, when it exists.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
