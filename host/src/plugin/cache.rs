use std::collections::{HashMap, VecDeque};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Component;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::store::Source;

/// Components kept compiled in memory (the newest ones).
const MEMORY_ENTRIES: usize = 64;
/// Marks a cache file of this format.
const MAGIC: &[u8; 8] = b"SEDNACW1";
/// Magic, payload length (u64) and payload checksum (xxh3-128), little-endian.
const HEADER: usize = 8 + 8 + 16;

/// Where a compiled component came from.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheOutcome {
    Memory,
    Disk,
    Compiled,
    /// The cache file was unusable (the reason says why) and has been rewritten.
    Rebuilt(String),
}

/// Compiled components by content: in memory, and on disk as precompiled files named by
/// sha256(wasm) and the engine's compatibility hash. A disk entry is checked (length and
/// checksum) before wasmtime is asked to trust it; a bad one is compiled again.
pub struct ComponentCache {
    dir: Option<PathBuf>,
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    components: HashMap<String, Component>,
    order: VecDeque<String>,
}

impl ComponentCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache {
            dir,
            memory: Mutex::default(),
        }
    }

    /// The cache file for `sha256` on `engine`, if there is a cache directory.
    pub fn file_for(&self, engine: &Engine, sha256: &str) -> Option<PathBuf> {
        let mut hasher = Xxh3::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish())))
    }

    /// The compiled component of `source`: from memory, from disk, or from `compile`.
    pub fn get(
        &self,
        engine: &Engine,
        source: &Source,
        compile: impl FnOnce(&[u8]) -> anyhow::Result<Component>,
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        if let Some(component) = self.memory.lock().unwrap().components.get(&source.sha256) {
            return Ok((component.clone(), CacheOutcome::Memory));
        }
        let file = self.file_for(engine, &source.sha256);
        let mut outcome = CacheOutcome::Compiled;
        if let Some(file) = &file {
            match read_entry(engine, file) {
                Ok(Some(component)) => {
                    self.remember(&source.sha256, &component);
                    return Ok((component, CacheOutcome::Disk));
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(file = %file.display(), "recompiling a bad cache entry: {reason:#}");
                    outcome = CacheOutcome::Rebuilt(format!("{reason:#}"));
                }
            }
        }
        let component = compile(&source.wasm)?;
        if let Some(file) = &file
            && let Err(e) = write_entry(&component, file)
        {
            tracing::warn!(file = %file.display(), "cannot write the component cache: {e:#}");
        }
        self.remember(&source.sha256, &component);
        Ok((component, outcome))
    }

    /// Drops the components held in memory; the disk entries stay.
    pub fn forget_memory(&self) {
        *self.memory.lock().unwrap() = Memory::default();
    }

    fn remember(&self, sha256: &str, component: &Component) {
        let mut memory = self.memory.lock().unwrap();
        if memory
            .components
            .insert(sha256.to_string(), component.clone())
            .is_none()
        {
            memory.order.push_back(sha256.to_string());
        }
        while memory.order.len() > MEMORY_ENTRIES {
            let oldest = memory.order.pop_front().unwrap();
            memory.components.remove(&oldest);
        }
    }
}

/// `Ok(None)` when there is no entry; `Err` when there is one that cannot be used.
fn read_entry(engine: &Engine, file: &Path) -> anyhow::Result<Option<Component>> {
    let bytes = match fs::read(file) {
        Ok(bytes) => bytes,
        Err(_) if !file.is_file() => return Ok(None),
        Err(e) => return Err(e).context("cannot read it"),
    };
    anyhow::ensure!(
        bytes.len() >= HEADER && &bytes[..8] == MAGIC,
        "not a cache file of this version"
    );
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let sum = u128::from_le_bytes(bytes[16..HEADER].try_into().unwrap());
    let payload = &bytes[HEADER..];
    anyhow::ensure!(
        payload.len() as u64 == len,
        "truncated: {} of {len} bytes",
        payload.len()
    );
    anyhow::ensure!(xxh3_128(payload) == sum, "checksum mismatch");
    // SAFETY: the payload is what `Component::serialize` wrote for an engine with the
    // same compatibility hash (it is in the file name), and its checksum matches.
    let component = unsafe { Component::deserialize(engine, payload) }?;
    Ok(Some(component))
}

/// Writes to a temporary name in the same directory, then renames: readers never see a
/// half-written entry.
fn write_entry(component: &Component, file: &Path) -> anyhow::Result<()> {
    let payload = component.serialize()?;
    let dir = file.parent().context("cache file has no directory")?;
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(MAGIC)?;
    tmp.write_all(&(payload.len() as u64).to_le_bytes())?;
    tmp.write_all(&xxh3_128(&payload).to_le_bytes())?;
    tmp.write_all(&payload)?;
    tmp.as_file().sync_all()?;
    tmp.persist(file)?;
    Ok(())
}
