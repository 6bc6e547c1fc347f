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
