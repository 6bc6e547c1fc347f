//! The HEM examples in other languages (`examples/hem-*`) build with their toolchains and
//! decide exactly as the built-in IBT does on the shared vectors.
//!
//! Where a toolchain is missing, the example's `build.sh` exits with 3 and says which
//! command installs it: the test then reports that and passes, except in CI (`CI` set),
//! where `.ci/run` installs every toolchain and a missing one is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::support::*;
use sedna::plugin::{Runtime, RuntimeConfig, Source};

/// A runtime whose compiled-component cache outlives the test run: the Python and
/// JavaScript components are large and take a while to compile.
fn cached_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache")),
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut latest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "node_modules" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let time = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().unwrap().modified().unwrap()
        };
        latest = latest.max(time);
    }
    latest
}

/// Builds `examples/<name>` (unless its component is newer than its sources and the
/// WIT), or `None` when its toolchain is missing outside CI.
fn build(name: &str) -> Option<Source> {
    let dir = repo().join("examples").join(name);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples");
    let wasm = out.join(format!("{name}.wasm"));
    let sources = newest(&dir).max(newest(&repo().join("wit")));
    let fresh = wasm
        .metadata()
        .and_then(|m| m.modified())
        .is_ok_and(|built| built > sources);
    if !fresh {
        let output = Command::new("bash")
            .arg(dir.join("build.sh"))
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {}
            Some(3) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping examples/{name}: its toolchain is missing here.\n{stderr}");
                return None;
            }
            _ => panic!(
                "examples/{name}/build.sh failed ({}):\n{stderr}",
                output.status
            ),
        }
    }
    Some(Source::from_file(&wasm).unwrap())
}

fn check(name: &str) {
    if let Some(source) = build(name) {
        assert_ibt_vectors(cached_runtime(), &source);
    }
}

#[test]
fn python_ibt_matches_the_builtin() {
    check("hem-python");
}

#[test]
fn c_ibt_matches_the_builtin() {
    check("hem-c");
}

#[test]
fn javascript_ibt_matches_the_builtin() {
    check("hem-js");
}
