use std::io::{self, Read as _, Write as _};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use cap_primitives::fs;

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

    /// The granted directory, opened: what paths in it are resolved beneath.
    fn open(&self) -> io::Result<std::fs::File> {
        fs::open_ambient_dir(&self.host_path, cap_primitives::ambient_authority())
    }
}

impl Sandbox {
    /// The grant covering a path the plugin sees (a writable one for `write`), and the
    /// rest of the path under it; `None` for `..` or a path no grant covers.
    fn covering(&self, guest: &str, write: bool) -> Option<(&DirGrant, PathBuf)> {
        let guest = Path::new(guest);
        if guest.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        self.dirs
            .iter()
            .filter(|grant| grant.writable || !write)
            .find_map(|grant| {
                let rest = guest.strip_prefix(&grant.guest_path).ok()?;
                (!rest.as_os_str().is_empty()).then(|| (grant, rest.to_path_buf()))
            })
    }

    /// The bytes of a file the plugin names in a granted directory; `None` when no grant
    /// covers the path. The path is resolved beneath the grant's directory as it is
    /// opened (`openat2` with `RESOLVE_BENEATH`, or cap-std's own walk), not checked
    /// first and opened later: a symbolic link swapped in meanwhile cannot lead out.
    pub(crate) fn read(&self, guest: &str) -> Option<io::Result<Vec<u8>>> {
        let (grant, rest) = self.covering(guest, false)?;
        Some((|| {
            let root = grant.open()?;
            let mut options = fs::OpenOptions::new();
            options.read(true);
            let mut bytes = Vec::new();
            fs::open(&root, &rest, &options)?.read_to_end(&mut bytes)?;
            Ok(bytes)
        })())
    }

    /// Writes a file the plugin names in a writable granted directory, whole or not at
    /// all (a temporary file renamed over it), resolved beneath the grant's directory as
    /// [`Sandbox::read`] resolves; `None` when no writable grant covers the path.
    pub(crate) fn write(&self, guest: &str, bytes: &[u8]) -> Option<io::Result<()>> {
        let (grant, rest) = self.covering(guest, true)?;
        let name = rest.file_name()?.to_owned();
        Some((|| {
            let root = grant.open()?;
            let dir = match rest.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => fs::open_dir(&root, parent)?,
                None => root,
            };
            // A name of its own per write: two instances may save the same file at once.
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temp = PathBuf::from(format!(
                ".{}.{}-{n}.tmp",
                name.to_string_lossy(),
                std::process::id()
            ));
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            let mut file = fs::open(&dir, &temp, &options)?;
            let written = file.write_all(bytes).and_then(|()| file.sync_all());
            drop(file);
            match written.and_then(|()| fs::rename(&dir, &temp, &dir, Path::new(&name))) {
                // The rename is durable once the directory is (opened to read: the
                // handle `open_dir` gives may not sync).
                Ok(()) => {
                    let mut read = fs::OpenOptions::new();
                    read.read(true);
                    fs::open(&dir, Path::new("."), &read)?.sync_all()
                }
                Err(e) => {
                    let _ = fs::remove_file(&dir, &temp);
                    Err(e)
                }
            }
        })())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(dir: &Path) -> Sandbox {
        Sandbox {
            dirs: vec![DirGrant {
                host_path: dir.to_path_buf(),
                guest_path: "/out".into(),
                writable: true,
            }],
            ..Sandbox::default()
        }
    }

    #[test]
    fn files_are_read_and_written_only_beneath_their_grant() {
        let root = tempfile::tempdir().unwrap();
        let (inside, outside) = (root.path().join("inside"), root.path().join("outside"));
        std::fs::create_dir_all(inside.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), inside.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("away")).unwrap();
        let sandbox = granted(&inside);

        sandbox
            .write("/out/sub/model.onnx", b"one")
            .unwrap()
            .unwrap();
        sandbox
            .write("/out/sub/model.onnx", b"two")
            .unwrap()
            .unwrap();
        assert_eq!(
            sandbox.read("/out/sub/model.onnx").unwrap().unwrap(),
            b"two"
        );
        let names: Vec<_> = std::fs::read_dir(inside.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");

        assert!(
            sandbox.read("/out/link").unwrap().is_err(),
            "a link out is not followed"
        );
        assert!(sandbox.write("/out/away/x", b"x").unwrap().is_err());
        assert!(!outside.join("x").exists());
        assert!(sandbox.read("/out/../outside/secret").is_none());
        assert!(sandbox.read("/elsewhere/secret").is_none());
        let read_only = Sandbox {
            dirs: vec![DirGrant::read_only(&inside, "/out")],
            ..Sandbox::default()
        };
        assert!(read_only.write("/out/sub/model.onnx", b"x").is_none());
    }

    #[test]
    fn a_link_swapped_in_while_writing_never_leads_out() {
        // One thread flips `inside/dir` between a real directory and a link to `outside`
        // while another writes through it: checked first and opened later, some writes
        // would land outside; resolved as they are opened, none does.
        let root = tempfile::tempdir().unwrap();
        let (inside, outside) = (root.path().join("inside"), root.path().join("outside"));
        std::fs::create_dir_all(inside.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (inside, outside, stop) = (inside.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || {
                let dir = inside.join("dir");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::remove_file(&dir);
                    let _ = std::os::unix::fs::symlink(inside.join("real"), &dir);
                    let _ = std::fs::remove_file(&dir);
                    let _ = std::os::unix::fs::symlink(&outside, &dir);
                }
            })
        };
        let sandbox = granted(&inside);
        let mut written = 0;
        for _ in 0..2000 {
            if let Some(Ok(())) = sandbox.write("/out/dir/model.onnx", b"x") {
                written += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside ({written} writes went through the link inside)"
        );
    }
}
