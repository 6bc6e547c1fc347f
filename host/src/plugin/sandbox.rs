use std::path::PathBuf;
use std::time::Duration;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What one plugin may use. Every call gets `deadline` of CPU time, each instance
/// `memory` bytes of linear memory; there is never a socket, and there are no files but
/// the directories in `dirs`.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub deadline: Duration,
    pub memory: u64,
    pub dirs: Vec<DirGrant>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            deadline: Duration::from_secs(1),
            memory: 256 << 20,
            dirs: Vec::new(),
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
