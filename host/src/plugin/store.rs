use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::write_atomically;

/// A plugin's bytes and the name it goes by in logs and errors.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub wasm: Arc<[u8]>,
    /// Hex sha256 of `wasm`: the plugin's identity in the store and the cache.
    pub sha256: String,
}

impl Source {
    pub fn new(name: impl Into<String>, wasm: impl Into<Arc<[u8]>>) -> Self {
        let wasm = wasm.into();
        Source {
            name: name.into(),
            sha256: hex::encode(Sha256::digest(&wasm)),
            wasm,
        }
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let wasm = fs::read(path)
            .with_context(|| format!("cannot read plugin file {}", path.display()))?;
        Ok(Source::new(path.display().to_string(), wasm))
    }
}

/// A plugin compiled into the `sedna` binary (from `plugins/`).
#[derive(Debug)]
pub struct Builtin {
    /// The name jobs use, as in Sedna (`IBT`).
    pub name: &'static str,
    /// The crate under `plugins/` it is built from.
    pub package: &'static str,
    pub world: &'static str,
    pub wasm: &'static [u8],
}

/// The built-in plugins, compiled by the build script.
pub static BUILTINS: &[Builtin] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

impl Builtin {
    pub fn find(name: &str) -> Option<&'static Builtin> {
        BUILTINS.iter().find(|b| b.name.eq_ignore_ascii_case(name))
    }

    pub fn source(&self) -> Source {
        Source::new(self.name, self.wasm)
    }
}

/// One entry of the store's listing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredPlugin {
    pub name: String,
    /// `builtin` for the plugins compiled into the binary.
    pub version: String,
    pub world: String,
    pub sha256: String,
    pub size: u64,
}

/// The version string the built-ins are listed under.
pub const BUILTIN_VERSION: &str = "builtin";

/// The content-addressed plugin store under the data directory:
/// `plugins/blobs/<sha256>.wasm` holds each component once, and
/// `plugins/refs/<name>@<version>.json` names it. Every file is written to a temporary
/// name and renamed.
#[derive(Clone)]
pub struct PluginStore {
    root: PathBuf,
}

impl PluginStore {
    /// Opens (creating if needed) the store under the data directory `home`.
    /// The data directory the store is in (its parent).
    pub fn home(&self) -> &Path {
        self.root.parent().unwrap_or(Path::new("."))
    }

    pub fn open(home: &Path) -> anyhow::Result<Self> {
        let root = home.join("plugins");
        for dir in ["blobs", "refs"] {
            fs::create_dir_all(root.join(dir))
                .with_context(|| format!("cannot create the plugin store in {}", root.display()))?;
        }
        Ok(PluginStore { root })
    }

    /// Stores `wasm` as `name@version` (a component of `world`). Storing the same name and
    /// version again replaces what it points to.
    pub fn add(
        &self,
        name: &str,
        version: &str,
        world: &str,
        wasm: &[u8],
    ) -> anyhow::Result<StoredPlugin> {
        check_name("name", name)?;
        check_name("version", version)?;
        if Builtin::find(name).is_some() {
            bail!("`{name}` is the name of a built-in plugin: choose another name");
        }
        let sha256 = hex::encode(Sha256::digest(wasm));
        let _store = self.lock()?;
        let blob = self.blob(&sha256);
        if !blob.exists() {
            write_atomically(&blob, wasm)?;
        }
        let entry = StoredPlugin {
            name: name.to_string(),
            version: version.to_string(),
            world: world.to_string(),
            sha256,
            size: wasm.len() as u64,
        };
        write_atomically(
            &self.reference(name, version),
            &serde_json::to_vec_pretty(&entry)?,
        )?;
        Ok(entry)
    }

    /// The built-ins first, then the stored plugins by name and version. An entry that
    /// cannot be read is left out, with a warning naming its file.
    pub fn list(&self) -> anyhow::Result<Vec<StoredPlugin>> {
        let mut stored = Vec::new();
        for entry in fs::read_dir(self.root.join("refs"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match read_reference(&path) {
                    Ok(entry) => stored.push(entry),
                    Err(e) => tracing::warn!(
                        "{e:#}: left out of the store's list (remove it with `sedna plugin rm`)"
                    ),
                }
            }
        }
        stored.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        let builtins = BUILTINS.iter().map(|b| StoredPlugin {
            name: b.name.to_string(),
            version: BUILTIN_VERSION.to_string(),
            world: b.world.to_string(),
            sha256: hex::encode(Sha256::digest(b.wasm)),
            size: b.wasm.len() as u64,
        });
        Ok(builtins.chain(stored).collect())
    }

    /// The stored (not built-in) entry `name@version`, if there is one: its reference file
    /// alone is read.
    pub fn entry(&self, name: &str, version: &str) -> anyhow::Result<Option<StoredPlugin>> {
        check_name("name", name)?;
        check_name("version", version)?;
        let reference = self.reference(name, version);
        if !reference.is_file() {
            return Ok(None);
        }
        read_reference(&reference).map(Some)
    }

    /// Removes `name@version`; its bytes go when no other name points to them.
    pub fn remove(&self, name: &str, version: &str) -> anyhow::Result<()> {
        check_name("name", name)?;
        check_name("version", version)?;
        let _store = self.lock()?;
        let reference = self.reference(name, version);
        if !reference.is_file() {
            bail!("no stored plugin `{name}@{version}` (see `sedna plugin list`)");
        }
        // An entry that cannot be read names no bytes: it goes, and the bytes stay.
        let entry = read_reference(&reference).ok();
        fs::remove_file(&reference)?;
        if let Some(entry) = entry
            && !self.list()?.iter().any(|p| p.sha256 == entry.sha256)
        {
            fs::remove_file(self.blob(&entry.sha256)).ok();
        }
        Ok(())
    }

    /// The component at an OCI reference (`oci://registry/repository:tag` or
    /// `@sha256:...`), checked as [`super::oci::pull`] checks it against the keys in
    /// `<home>/trusted-keys`, named by the reference; with the world its config names.
    /// One pinned by digest is pulled once: later it comes from the store's blobs.
    #[cfg(feature = "server")]
    pub fn pull(&self, reference: &str) -> anyhow::Result<(Source, Option<String>)> {
        use super::oci;
        let parsed = oci::Reference::parse(reference)?;
        let pinned = parsed.digest.as_deref().map(|d| {
            self.root
                .join("oci")
                .join(format!("{}.json", d.replace(':', "-")))
        });
        if let Some(cached) = pinned.as_deref().and_then(|p| self.pulled(p)) {
            return Ok((Source::new(reference, cached.0), cached.1));
        }
        let trusted = oci::trusted_keys(self.home())?;
        let http = crate::net::Http::new(oci::registry_trust())?;
        let pulled = oci::pull(&http, &parsed, &trusted)?;
        let source = Source::new(reference, pulled.wasm);
        let _store = self.lock()?;
        let blob = self.blob(&source.sha256);
        if !blob.exists() {
            write_atomically(&blob, &source.wasm)?;
        }
        if let Some(record) = pinned {
            let entry = serde_json::json!({ "sha256": source.sha256, "world": pulled.world });
            write_atomically(&record, &serde_json::to_vec(&entry)?)?;
        }
        Ok((source, pulled.world))
    }

    /// A pinned pull's component from the blobs, when its record and its blob agree.
    #[cfg(feature = "server")]
    fn pulled(&self, record: &Path) -> Option<(Vec<u8>, Option<String>)> {
        let entry: serde_json::Value = serde_json::from_slice(&fs::read(record).ok()?).ok()?;
        let sha256 = entry["sha256"].as_str()?;
        let wasm = fs::read(self.blob(sha256)).ok()?;
        (hex::encode(Sha256::digest(&wasm)) == sha256)
            .then(|| (wasm, entry["world"].as_str().map(str::to_string)))
    }

    #[cfg(not(feature = "server"))]
    fn pull(&self, reference: &str) -> anyhow::Result<(Source, Option<String>)> {
        bail!(
            "{reference}: this sedna was built without the `server` feature, so it cannot reach an OCI registry; pull the plugin with a build that has it"
        )
    }

    /// Finds a plugin by reference: a `.wasm` path, `name@version`, a built-in name
    /// (`IBT`), or the name of a plugin stored in exactly one version.
    pub fn resolve(&self, reference: &str) -> anyhow::Result<Source> {
        if reference.starts_with("oci://") {
            return self.pull(reference).map(|(source, _)| source);
        }
        if reference.ends_with(".wasm") || reference.contains(std::path::MAIN_SEPARATOR) {
            return Source::from_file(Path::new(reference));
        }
        let entry = match reference.split_once('@') {
            Some((name, version)) => {
                check_name("name", name)?;
                check_name("version", version)?;
                read_reference(&self.reference(name, version)).with_context(|| {
                    format!("no stored plugin `{reference}` (see `sedna plugin list`)")
                })?
            }
            None => {
                if let Some(builtin) = Builtin::find(reference) {
                    return Ok(builtin.source());
                }
                let versions: Vec<StoredPlugin> = self
                    .list()?
                    .into_iter()
                    .filter(|p| p.name == reference)
                    .collect();
                match versions.as_slice() {
                    [one] => one.clone(),
                    [] => bail!(
                        "no plugin named `{reference}`: not a built-in ({}) nor in the store (see `sedna plugin list`)",
                        BUILTINS
                            .iter()
                            .map(|b| b.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    many => bail!(
                        "`{reference}` is stored in several versions ({}): name one as `{reference}@VERSION`",
                        many.iter()
                            .map(|p| p.version.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        };
        let wasm = fs::read(self.blob(&entry.sha256)).with_context(|| {
            format!(
                "the store has lost the bytes of `{}@{}`",
                entry.name, entry.version
            )
        })?;
        let source = Source::new(format!("{}@{}", entry.name, entry.version), wasm);
        anyhow::ensure!(
            source.sha256 == entry.sha256,
            "the stored bytes of `{}` are corrupt (sha256 {} instead of {}): add it again",
            source.name,
            source.sha256,
            entry.sha256
        );
        Ok(source)
    }

    /// Held while bytes and the names pointing at them change, so that an add and a
    /// removal of the same bytes (by threads or processes) never leave a name without
    /// its bytes.
    fn lock(&self) -> anyhow::Result<crate::files::ExclusiveLock> {
        crate::files::ExclusiveLock::wait(&self.root.join("lock"))
    }

    fn blob(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{sha256}.wasm"))
    }

    fn reference(&self, name: &str, version: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{name}@{version}.json"))
    }
}

/// Names and versions: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit,
/// so that they are safe as file names and in URLs.
pub fn check_name(what: &str, value: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!(
            "plugin {what} {value:?} is not valid: use 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
        );
    }
    Ok(())
}

fn read_reference(path: &Path) -> anyhow::Result<StoredPlugin> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid store entry", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_bytes_while_their_last_name_is_removed_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path()).unwrap();
        for round in 0..60 {
            let bytes = format!("component {round}").into_bytes();
            store.add("old", &round.to_string(), "w", &bytes).unwrap();
            std::thread::scope(|scope| {
                let (store, bytes) = (&store, &bytes);
                scope.spawn(move || store.add("new", &round.to_string(), "w", bytes).unwrap());
                scope.spawn(move || store.remove("old", &round.to_string()).unwrap());
            });
            let found = store.resolve(&format!("new@{round}")).unwrap();
            assert_eq!(&*found.wasm, bytes.as_slice(), "round {round}");
        }
    }

    #[test]
    fn a_corrupt_entry_is_left_out_and_can_be_removed_and_orphans_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path()).unwrap();
        store.add("a", "1", "w", b"shared").unwrap();
        store.add("b", "1", "w", b"shared").unwrap();
        fs::write(dir.path().join("plugins/refs/broken@1.json"), "{ not json").unwrap();
        let names: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        assert!(
            names.contains(&"a@1".to_string()) && !names.iter().any(|n| n.starts_with("broken"))
        );
        store.remove("a", "1").unwrap();
        assert_eq!(
            &*store.resolve("b@1").unwrap().wasm,
            b"shared",
            "b's bytes stay"
        );
        store.remove("broken", "1").unwrap();
        store.remove("b", "1").unwrap();
        let blobs = fs::read_dir(dir.path().join("plugins/blobs"))
            .unwrap()
            .count();
        assert_eq!(blobs, 0, "no orphan");
    }

    #[test]
    fn names_are_checked() {
        for good in ["my-hem", "v1.2.3", "a", "x_y"] {
            check_name("name", good).unwrap();
        }
        for bad in ["", "../x", "a/b", ".hidden", "-x", "a b", &"x".repeat(65)] {
            assert!(check_name("name", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn add_list_resolve_remove() {
        let home = tempfile::tempdir().unwrap();
        let store = PluginStore::open(home.path()).unwrap();
        let entry = store
            .add("mine", "1.0", "hard-example-miner", b"bytes")
            .unwrap();
        store
            .add("mine", "2.0", "hard-example-miner", b"bytes")
            .unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), BUILTINS.len() + 2);
        assert!(listed.contains(&entry));

        assert_eq!(&*store.resolve("mine@1.0").unwrap().wasm, b"bytes");
        let err = store.resolve("mine").unwrap_err().to_string();
        assert!(
            err.contains("several versions") && err.contains("2.0"),
            "{err}"
        );
        assert!(store.add("IBT", "1", "hard-example-miner", b"x").is_err());

        store.remove("mine", "1.0").unwrap();
        // The bytes stay while 2.0 points to them.
        assert_eq!(&*store.resolve("mine").unwrap().wasm, b"bytes");
        store.remove("mine", "2.0").unwrap();
        assert!(store.resolve("mine").is_err());
        assert!(
            fs::read_dir(home.path().join("plugins/blobs"))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(store.remove("mine", "2.0").is_err());
    }

    #[test]
    fn corrupt_blob_is_reported() {
        let home = tempfile::tempdir().unwrap();
        let store = PluginStore::open(home.path()).unwrap();
        let entry = store
            .add("mine", "1", "hard-example-miner", b"bytes")
            .unwrap();
        fs::write(store.blob(&entry.sha256), b"other").unwrap();
        let err = store.resolve("mine@1").unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn builtins_resolve_by_name() {
        let home = tempfile::tempdir().unwrap();
        let store = PluginStore::open(home.path()).unwrap();
        let ibt = store.resolve("ibt").unwrap();
        assert_eq!(ibt.name, "IBT");
        assert!(ibt.wasm.starts_with(b"\0asm"));
    }
}
