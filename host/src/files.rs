//! Files written whole or not at all, and where the data directory is.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Writes a temporary file beside `path`, syncs it, then renames it over `path`: a reader
/// (or a process started after a crash) sees the old file or the new one, never half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A secret's file, read whole, when only its owner can read it: one that the group or
/// others may read is refused, as ssh refuses such keys.
pub fn read_private(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "the {what} {} may be read by others (mode {mode:o}): run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    Ok(text)
}

/// The data directory when none is given: `SEDNA_HOME`, else `$XDG_DATA_HOME/sedna`, else
/// `~/.local/share/sedna`.
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os("SEDNA_HOME") {
        return home.into();
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME") {
        return Path::new(&data).join("sedna");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    Path::new(&home).join(".local/share/sedna")
}

/// An exclusive lock on a file, held while the value lives; the kernel releases it when
/// the process ends, however it ends (kill -9 included), so a stale lock cannot outlive
/// its holder. The file holds the holder's PID, for the message of whoever finds it taken.
#[derive(Debug)]
pub struct ExclusiveLock {
    _file: std::fs::File,
}

impl ExclusiveLock {
    /// Takes the lock on `path` (made if missing), waiting while another holds it: for
    /// short critical sections shared by threads and processes.
    pub fn wait(path: &Path) -> anyhow::Result<Self> {
        let (file, error) = Self::flock(path, libc::LOCK_EX)?;
        match error {
            None => Ok(ExclusiveLock { _file: file }),
            Some(error) => Err(error).with_context(|| format!("cannot lock {}", path.display())),
        }
    }

    /// `path` opened (made if missing) and `flock`ed with `operation`: the file, and the
    /// error if the lock was not taken.
    fn flock(
        path: &Path,
        operation: i32,
    ) -> anyhow::Result<(std::fs::File, Option<std::io::Error>)> {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let taken = unsafe { libc::flock(file.as_raw_fd(), operation) } == 0;
        Ok((file, (!taken).then(std::io::Error::last_os_error)))
    }

    /// Takes the lock on `path` (made if missing), or fails naming the process holding it.
    pub fn acquire(path: &Path) -> anyhow::Result<Self> {
        use std::io::{Read as _, Seek as _};
        let (mut file, error) = Self::flock(path, libc::LOCK_EX | libc::LOCK_NB)?;
        if let Some(error) = error {
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "process {} holds {}: stop it first (one process runs a job at a time)",
                holder.trim(),
                path.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(ExclusiveLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_space_reserve_is_real_blocks_given_back_and_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = SpaceReserve::new(dir.path().join(".space-reserve"), 1 << 20);
        reserve.hold().unwrap();
        assert!(reserve.held());
        use std::os::unix::fs::MetadataExt as _;
        let blocks = std::fs::metadata(dir.path().join(".space-reserve"))
            .unwrap()
            .blocks();
        assert!(
            blocks * 512 >= 1 << 20,
            "allocated, not sparse: {blocks} blocks"
        );
        assert!(reserve.release());
        assert!(!reserve.held() && !reserve.release());
        reserve.hold().unwrap();
        assert!(reserve.held());
        let full = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing the model");
        assert!(is_disk_full(&full));
        assert!(!is_disk_full(&anyhow::anyhow!("something else")));
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.lock");
        let first = ExclusiveLock::acquire(&path).unwrap();
        let error = ExclusiveLock::acquire(&path).unwrap_err().to_string();
        assert!(
            error.contains(&format!("process {} holds", std::process::id())),
            "{error}"
        );
        drop(first);
        ExclusiveLock::acquire(&path).unwrap();
    }
}

/// Space set aside on a job's disk so that when the disk fills, the job can still record
/// why its round failed: the reserve is released to make room, and made again (the
/// round resuming) once the disk has room for it. A file of real blocks
/// (`posix_fallocate`), not a sparse one.
#[derive(Debug)]
pub struct SpaceReserve {
    path: PathBuf,
    bytes: u64,
}

impl SpaceReserve {
    pub fn new(path: PathBuf, bytes: u64) -> Self {
        SpaceReserve { path, bytes }
    }

    /// Makes the reserve if it is not there; an error of kind `StorageFull` when the
    /// disk has not the room.
    pub fn hold(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        if self.held() {
            return Ok(());
        }
        let temp = self.path.with_extension("making");
        let file = std::fs::File::create(&temp)?;
        // SAFETY: posix_fallocate on a descriptor this function owns.
        let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, self.bytes as libc::off_t) };
        if code != 0 {
            drop(file);
            let _ = std::fs::remove_file(&temp);
            return Err(std::io::Error::from_raw_os_error(code));
        }
        std::fs::rename(&temp, &self.path)
    }

    /// Whether the reserve is set aside.
    pub fn held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Gives the reserve's space back to the disk; whether there was one.
    pub fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }
}

/// Whether `error` (or one it wraps) is a full disk: `ENOSPC`, or SQLite's "database or
/// disk is full".
pub fn is_disk_full(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::StorageFull;
        }
        matches!(
            cause.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull
        )
    })
}
