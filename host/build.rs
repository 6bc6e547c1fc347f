//! Compiles the guest plugins for `wasm32-wasip2` so that `cargo build` alone yields a
//! `sedna` binary that carries its built-in plugins.
//!
//! Every crate under `plugins/` whose `Cargo.toml` has a `[package.metadata.sedna]` table
//! (`name`, `world`) is a built-in and is embedded; every crate under `tests/fixtures/` is
//! built too, and only its path is handed to the host's tests. One nested `cargo build`
//! covers them all, in its own target directory beside the outer one (the outer build
//! holds a lock on its own).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

struct Guest {
    package: String,
    /// `(name, world)` for a built-in plugin; `None` for a test fixture.
    builtin: Option<(String, String)>,
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    for dir in ["wit", "plugins", "tests/fixtures"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    let mut guests = read_guests(&root.join("plugins"), true);
    guests.extend(read_guests(&root.join("tests/fixtures"), false));

    ensure_target_installed();
    let target_dir = guest_target_dir(&out_dir);
    build(&root, &target_dir, &guests);
    let wasm_dir = target_dir.join(TARGET).join(PROFILE);

    let mut builtins = String::from("&[\n");
    let mut fixtures = String::new();
    for guest in &guests {
        let wasm = wasm_dir.join(format!("{}.wasm", guest.package.replace('-', "_")));
        assert!(
            wasm.exists(),
            "the guest build did not produce {}",
            wasm.display()
        );
        match &guest.builtin {
            Some((name, world)) => writeln!(
                builtins,
                "    Builtin {{ name: {name:?}, package: {:?}, world: {world:?}, wasm: include_bytes!({:?}) }},",
                guest.package,
                wasm.display().to_string(),
            )
            .unwrap(),
            None => writeln!(
                fixtures,
                "/// The compiled component of `{}`.\npub const {}: &str = {:?};",
                guest.package,
                guest.package.to_uppercase().replace('-', "_"),
                wasm.display().to_string(),
            )
            .unwrap(),
        }
    }
    builtins.push(']');
    fs::write(out_dir.join("builtins.rs"), builtins).unwrap();
    fs::write(out_dir.join("fixtures.rs"), fixtures).unwrap();
}

/// The guest crates in `dir`, sorted by package name for a stable build.
fn read_guests(dir: &Path, builtins: bool) -> Vec<Guest> {
    let mut guests = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return guests;
    };
    for entry in entries.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        let doc: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let package = &doc["package"];
        let name = package["name"].as_str().unwrap().to_string();
        let sedna = package
            .get("metadata")
            .and_then(|m| m.get("sedna"))
            .and_then(|s| s.as_table());
        let builtin = match (builtins, sedna) {
            (false, _) => None,
            (true, Some(s)) => Some((
                s["name"].as_str().unwrap().to_string(),
                s["world"].as_str().unwrap().to_string(),
            )),
            // A library shared by the guests, not a plugin of its own.
            (true, None) => continue,
        };
        guests.push(Guest {
            package: name,
            builtin,
        });
    }
    guests.sort_by(|a, b| a.package.cmp(&b.package));
    guests
}

/// `<target>/guests`, where `<target>` is the outer build's target directory.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<package>-<hash>/out.
    let build = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .expect("OUT_DIR lies under a `build` directory");
    build.parent().unwrap().parent().unwrap().join("guests")
}

/// `rust-toolchain.toml` lists the target, but rustup adds targets only when it installs
/// a toolchain: on a machine that already had the toolchain, add the target here so that
/// `cargo build` stays the only command a user types.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(&rustc).args(["--print", "sysroot"]).output() else {
        return;
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_default();
    println!(
        "cargo:warning=installing the {TARGET} target with rustup (needed to build the plugins)"
    );
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if !toolchain.is_empty() {
        cmd.args(["--toolchain", &toolchain]);
    }
    let _ = cmd.status();
}

fn build(root: &Path, target_dir: &Path, guests: &[Guest]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--profile", PROFILE, "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for guest in guests {
        cmd.args(["-p", &guest.package]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host only, and
    // would make the guest build differ from one outer command to the next.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest plugins");
    assert!(
        status.success(),
        "building the guest plugins for {TARGET} failed: see cargo's errors above"
    );
}
