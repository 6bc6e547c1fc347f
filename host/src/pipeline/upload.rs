//! Hard examples copied to object storage (`HE_SAVED_URL` = `s3://...`) in the
//! background. The local store stays the queue: an example is written there first and
//! uploaded when the storage can be reached, so nothing is lost while the network is
//! down. Images and previews go first, then `index.jsonl`, so a reader of the bucket never
//! finds an index line whose image is missing. What was uploaded is listed in the store's
//! `.uploaded` file, so a restart does not upload it again.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::storage::{Location, Storage};

/// The list of files already uploaded, in the store's directory.
const LEDGER: &str = ".uploaded";
/// How often the store is looked at for new examples.
const PERIOD: Duration = Duration::from_secs(1);
/// Files uploaded in one pass at most, so the index follows its images soon.
const BATCH: usize = 64;
/// The longest wait between attempts while the storage is out of reach.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Uploads while it lives; dropping it makes a last pass (bounded by the storage's
/// retry time) and stops.
pub struct HardExampleUpload {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    dir: PathBuf,
    /// The file that names the others (`index.jsonl`): uploaded after them, when it
    /// changed.
    index: String,
    to: Location,
    storage: Arc<Storage>,
    stop: AtomicBool,
    wake: (Mutex<bool>, Condvar),
    uploaded: AtomicU64,
    pending: AtomicU64,
}

/// Files uploaded so far and files waiting (as of the last pass).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UploadStats {
    pub uploaded: u64,
    pub pending: u64,
}

impl HardExampleUpload {
    /// Uploads what `dir` holds, and what is kept there later, under `to`; `index`, the
    /// file that names the others, after them.
    pub fn start(
        dir: &Path,
        index: &str,
        to: Location,
        storage: Arc<Storage>,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            index: index.to_string(),
            to,
            storage,
            stop: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            uploaded: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("hard-example-upload".into())
            .spawn({
                let shared = shared.clone();
                move || shared.run()
            })?;
        Ok(HardExampleUpload {
            shared,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> UploadStats {
        UploadStats {
            uploaded: self.shared.uploaded.load(Ordering::Relaxed),
            pending: self.shared.pending.load(Ordering::Relaxed),
        }
    }

    /// Looks at the store now rather than at the next period.
    pub fn wake(&self) {
        let (flag, signal) = &self.shared.wake;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        signal.notify_all();
    }
}

impl Drop for HardExampleUpload {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn run(&self) {
        let mut done = Progress {
            files: read_ledger(&self.dir),
            index: None,
        };
        let mut backoff = PERIOD;
        let mut reported = false;
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            match self.pass(&mut done) {
                Ok(more) => {
                    if reported {
                        tracing::info!("hard examples: {} reachable again", self.to);
                        reported = false;
                    }
                    backoff = if more { Duration::ZERO } else { PERIOD };
                }
                Err(e) => {
                    if !reported {
                        tracing::warn!(
                            "hard examples: cannot upload to {} ({e}); they stay in {} and are uploaded when it is reachable",
                            self.to,
                            self.dir.display()
                        );
                        reported = true;
                    }
                    backoff = (backoff * 2).clamp(PERIOD, MAX_BACKOFF);
                }
            }
            if stopping {
                return;
            }
            let (flag, signal) = &self.wake;
            let woken = flag.lock().unwrap_or_else(|e| e.into_inner());
            let (mut woken, _) = signal
                .wait_timeout_while(woken, backoff, |w| !*w)
                .unwrap_or_else(|e| e.into_inner());
            *woken = false;
        }
    }

    /// Uploads up to [`BATCH`] new files, then the index when it changed; returns
    /// whether more wait.
    fn pass(&self, done: &mut Progress) -> Result<bool, crate::storage::StorageError> {
        let mut waiting: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| {
                        !name.starts_with('.') && *name != self.index && !done.files.contains(name)
                    })
                    .collect()
            })
            .unwrap_or_default();
        waiting.sort();
        self.pending.store(waiting.len() as u64, Ordering::Relaxed);
        let more = waiting.len() > BATCH;
        waiting.truncate(BATCH);
        for name in &waiting {
            let path = self.dir.join(name);
            // Deleted meanwhile (the store keeps a bounded number): nothing to upload.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            self.storage.put(&self.to.join(name)?, bytes)?;
            done.files.insert(name.clone());
            append_ledger(&self.dir, name);
            self.uploaded.fetch_add(1, Ordering::Relaxed);
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        let index = self.dir.join(&self.index);
        let stamp = std::fs::metadata(&index)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some()
            && stamp != done.index
            && let Ok(bytes) = std::fs::read(&index)
        {
            self.storage.put(&self.to.join(&self.index)?, bytes)?;
            done.index = stamp;
        }
        Ok(more)
    }
}

/// What is in the bucket already: files by name, and the index as last uploaded.
struct Progress {
    files: HashSet<String>,
    index: Option<(std::time::SystemTime, u64)>,
}

fn read_ledger(dir: &Path) -> HashSet<String> {
    std::fs::read_to_string(dir.join(LEDGER))
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn append_ledger(dir: &Path, name: &str) {
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LEDGER))
        .and_then(|mut f| writeln!(f, "{name}"));
    if let Err(e) = appended {
        tracing::warn!("hard examples: cannot note {name} as uploaded: {e}");
    }
}
