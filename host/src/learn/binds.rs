//! A job's plugin slots ([`SlotName`]) and the plugins bound to them while it runs, kept
//! in `<outputDir>/binds.json`: each bind with the plugin's reference, digest and
//! parameters, oldest first per slot. A restarted job binds the last of each slot again;
//! a rollback returns a slot to the one before (or, past the first, to the job file's
//! plugin).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::files::write_atomically;
use crate::plugin::{Param, PluginStore, Source};

/// The slots of a job a plugin can be bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotName {
    /// The inference worker's hard-example miner.
    Hem,
    /// The inference worker's estimator, and the one later rounds train and evaluate with.
    Estimator,
    /// A `trigger-condition` plugin ANDed with the train trigger's conditions.
    TrainTrigger,
    /// A `trigger-condition` plugin ANDed with the deploy trigger's condition.
    DeployTrigger,
}

impl SlotName {
    pub const ALL: [SlotName; 4] = [
        SlotName::Hem,
        SlotName::Estimator,
        SlotName::TrainTrigger,
        SlotName::DeployTrigger,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SlotName::Hem => "hem",
            SlotName::Estimator => "estimator",
            SlotName::TrainTrigger => "train-trigger",
            SlotName::DeployTrigger => "deploy-trigger",
        }
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SlotName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|slot| slot.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("no slot {text:?}: a job's slots are {}", names.join(", "))
            })
    }
}

/// Binds kept per slot; older ones are forgotten (a rollback goes back this far).
const MAX_PER_SLOT: usize = 32;

/// One bind: what was bound, by reference and by content, and with what parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindRecord {
    /// The stored plugin (`name@version`) or built-in, as the bind named it.
    pub plugin: String,
    /// The component's SHA-256 (hex) when it was bound.
    pub sha256: String,
    pub params: BTreeMap<String, String>,
    /// When (RFC 3339).
    pub bound_at: String,
}

impl BindRecord {
    pub fn new(source: &Source, params: &[Param]) -> Self {
        BindRecord {
            plugin: source.name.clone(),
            sha256: source.sha256.clone(),
            params: params
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect(),
            bound_at: chrono::Utc::now().to_rfc3339(),
        }
    }

    pub fn params(&self) -> Vec<Param> {
        self.params
            .iter()
            .map(|(key, value)| Param {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    #[serde(default)]
    slots: BTreeMap<String, Vec<BindRecord>>,
}

/// The job's binds, in memory and in its file.
pub struct BindHistory {
    file: PathBuf,
    store: PluginStore,
    kept: Mutex<Kept>,
}

impl BindHistory {
    /// The history in `file`, whose plugins are in `store`. A file that cannot be read is
    /// set aside (`.bad`) with a warning: the job starts with the job file's plugins.
    pub fn open(file: PathBuf, store: PluginStore) -> Self {
        let kept = match std::fs::read(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kept::default(),
            read => match read
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice(&bytes)?))
            {
                Ok(kept) => kept,
                Err(e) => {
                    let aside = file.with_extension("json.bad");
                    let _ = std::fs::rename(&file, &aside);
                    tracing::warn!(
                        "cannot read the binds kept in {} ({e:#}); moved to {}: the slots start with the job file's plugins",
                        file.display(),
                        aside.display()
                    );
                    Kept::default()
                }
            },
        };
        BindHistory {
            file,
            store,
            kept: Mutex::new(kept),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last bind of `slot`, if any: what it holds.
    pub fn current(&self, slot: SlotName) -> Option<BindRecord> {
        self.kept().slots.get(slot.name())?.last().cloned()
    }

    /// The bind before the last of `slot`: what a rollback returns to (`None`: the job
    /// file's plugin).
    pub fn previous(&self, slot: SlotName) -> Option<BindRecord> {
        let kept = self.kept();
        let binds = kept.slots.get(slot.name())?;
        binds.len().checked_sub(2).map(|i| binds[i].clone())
    }

    /// Records a bind of `slot` and writes the file.
    pub fn push(&self, slot: SlotName, record: BindRecord) -> anyhow::Result<()> {
        let mut kept = self.kept();
        let binds = kept.slots.entry(slot.name().to_string()).or_default();
        binds.push(record);
        if binds.len() > MAX_PER_SLOT {
            binds.remove(0);
        }
        self.write(&kept)
    }

    /// Forgets the last bind of `slot` (after a rollback) and writes the file.
    pub fn pop(&self, slot: SlotName) -> anyhow::Result<()> {
        let mut kept = self.kept();
        if let Some(binds) = kept.slots.get_mut(slot.name()) {
            binds.pop();
            if binds.is_empty() {
                kept.slots.remove(slot.name());
            }
        }
        self.write(&kept)
    }

    fn write(&self, kept: &Kept) -> anyhow::Result<()> {
        write_atomically(&self.file, &serde_json::to_vec_pretty(kept)?)
    }

    /// The component a record names, as it was bound: from the store or the built-ins,
    /// with the same digest. Says why not when it is gone or changed.
    pub fn source(&self, record: &BindRecord) -> Result<Source, String> {
        let source = self
            .store
            .resolve(&record.plugin)
            .map_err(|e| format!("{} is gone from the store ({e:#})", record.plugin))?;
        if source.sha256 != record.sha256 {
            return Err(format!(
                "{} in the store is not the component bound (sha256 {}, was {})",
                record.plugin,
                short(&source.sha256),
                short(&record.sha256)
            ));
        }
        Ok(source)
    }
}

fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(plugin: &str) -> BindRecord {
        BindRecord {
            plugin: plugin.into(),
            sha256: "00".repeat(32),
            params: BTreeMap::from([("k".into(), "v".into())]),
            bound_at: String::new(),
        }
    }

    #[test]
    fn binds_are_kept_per_slot_and_a_bad_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = || PluginStore::open(dir.path()).unwrap();
        let file = dir.path().join("binds.json");
        let history = BindHistory::open(file.clone(), store());
        history.push(SlotName::Hem, record("a@1")).unwrap();
        history.push(SlotName::Hem, record("b@1")).unwrap();
        history.push(SlotName::TrainTrigger, record("t@1")).unwrap();
        let again = BindHistory::open(file.clone(), store());
        assert_eq!(again.current(SlotName::Hem).unwrap().plugin, "b@1");
        assert_eq!(again.previous(SlotName::Hem).unwrap().plugin, "a@1");
        assert_eq!(again.previous(SlotName::TrainTrigger), None);
        assert_eq!(again.current(SlotName::Estimator), None);
        again.pop(SlotName::Hem).unwrap();
        again.pop(SlotName::Hem).unwrap();
        assert_eq!(
            BindHistory::open(file.clone(), store()).current(SlotName::Hem),
            None
        );
        for _ in 0..MAX_PER_SLOT + 5 {
            again.push(SlotName::Hem, record("c@1")).unwrap();
        }
        let kept = again.kept().slots[SlotName::Hem.name()].len();
        assert_eq!(kept, MAX_PER_SLOT);

        std::fs::write(&file, "{ not json").unwrap();
        let fresh = BindHistory::open(file.clone(), store());
        assert_eq!(fresh.current(SlotName::Hem), None);
        assert!(dir.path().join("binds.json.bad").exists());
        let err = fresh.source(&record("missing@1")).unwrap_err();
        assert!(err.contains("missing@1 is gone from the store"), "{err}");
        let err = fresh.source(&record("IBT")).unwrap_err();
        assert!(err.contains("not the component bound"), "{err}");
    }
}
