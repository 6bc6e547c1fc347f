use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What one plugin may use. Every call gets `deadline` of CPU time, each instance
/// `memory` bytes of linear memory (and as much again in host-held tensors); there is
/// never a socket, and there are no files but the directories in `dirs`.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub deadline: Duration,
    pub memory: u64,
    pub dirs: Vec<DirGrant>,
    /// Models an estimator may load by name (`base`, `deployed`, ...), and their files.
    pub models: Vec<(String, PathBuf)>,
    /// Threads one model run on the host may use.
    pub threads: usize,
    /// Told where an estimator's training is after each step and report.
    pub progress: Option<ProgressSink>,
}

/// Where a training session's progress goes (a terminal's bar, say).
#[derive(Clone)]
pub struct ProgressSink(pub std::sync::Arc<dyn Fn(&crate::train::Progress) + Send + Sync>);

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            deadline: Duration::from_secs(1),
            memory: 256 << 20,
            dirs: Vec::new(),
            models: Vec::new(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: None,
        }
    }
}

/// A host directory a job grants to a plugin, seen by the plugin at `guest_path`.
#[derive(Clone, Debug)]
pub struct DirGrant {
    pub host_path: PathBuf,
    pub guest_path: String,
    pub writable: bool,
}

impl DirGrant {
    pub fn read_only(host_path: impl Into<PathBuf>, guest_path: impl Into<String>) -> Self {
        DirGrant {
            host_path: host_path.into(),
            guest_path: guest_path.into(),
            writable: false,
        }
    }
}

impl Sandbox {
    /// The host path behind a path the plugin sees, when a grant covers it (a writable
    /// one for `write`). `..` is refused, and so is a symbolic link leading outside.
    pub(crate) fn host_path(&self, guest: &str, write: bool) -> Option<PathBuf> {
        let guest = Path::new(guest);
        if guest.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        self.dirs
            .iter()
            .filter(|grant| grant.writable || !write)
            .find_map(|grant| {
                let rest = guest.strip_prefix(&grant.guest_path).ok()?;
                let root = grant.host_path.canonicalize().ok()?;
                let path = root.join(rest);
                // The file itself may not exist yet when writing: check its directory.
                let real = match path.canonicalize() {
                    Ok(real) => real,
                    Err(_) if write => path.parent()?.canonicalize().ok()?.join(path.file_name()?),
                    Err(_) => return None,
                };
                real.starts_with(&root).then_some(real)
            })
    }

    pub(crate) fn grant_dirs(&self, wasi: &mut WasiCtxBuilder) -> anyhow::Result<()> {
        for grant in &self.dirs {
            let perms = if grant.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&grant.host_path, &grant.guest_path, perms)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot grant directory {} to the plugin: {e}",
                        grant.host_path.display()
                    )
                })?;
        }
        Ok(())
    }
}
