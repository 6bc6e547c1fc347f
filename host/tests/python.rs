//! Whether a real server the tests start can run here: its Python packages import.
//! Outside CI a missing package skips the caller, which is told how to install it; in CI
//! (`CI` set), where `.ci/run` installs it, it fails. Included with `#[path]` by the
//! servers' files under `tests/`.

use std::process::{Command, Stdio};

/// Whether `python` runs `code` (imports); else says `missing` and how, as above.
pub fn imports(python: &str, code: &str, missing: &str) -> bool {
    let found = Command::new(python)
        .args(["-c", code])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{missing}");
        eprintln!("skipped: {missing}");
    }
    found
}
