//! The inference worker's results log: every frame's outcome as a [`ResultLine`], written
//! by the worker and read back, from another process, for its decisions.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::decisions::RecentDecisions;
use crate::plugin::Prediction;
use crate::plugin::json::prediction_to_json;

/// One frame's outcome: its decision and prediction, or why it failed. The fields are in
/// alphabetical order, as the log has always written its keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub frame: String,
    /// Whether the HEM found it hard; absent when the frame failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<bool>,
    /// The prediction as JSON ([`crate::plugin::json`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<serde_json::Value>,
}

impl ResultLine {
    pub fn decided(frame: &str, hard: bool, prediction: &Prediction) -> Self {
        ResultLine {
            error: None,
            frame: frame.into(),
            hard: Some(hard),
            prediction: Some(prediction_to_json(prediction)),
        }
    }

    pub fn failed(frame: &str, error: &str) -> Self {
        ResultLine {
            error: Some(error.into()),
            frame: frame.into(),
            hard: None,
            prediction: None,
        }
    }
}

/// What the reader of the log needs of a line: its decision (the rest is skipped unread).
#[derive(Deserialize)]
struct Decision {
    hard: Option<bool>,
}

/// The log's file; past its bound it is renamed to [`ROTATED`].
const CURRENT: &str = "results.jsonl";
/// The previous file (one is kept).
const ROTATED: &str = "results.1.jsonl";

/// Every frame's outcome as JSON lines in `results.jsonl`. Bounded: past `max_bytes` the
/// file becomes `results.1.jsonl` (replacing the one before) and a new one starts.
pub struct ResultLog {
    path: PathBuf,
    max_bytes: u64,
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl ResultLog {
    pub fn new(dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(ResultLog {
            path: dir.join(CURRENT),
            max_bytes,
            file: std::sync::Mutex::new(None),
        })
    }

    pub(super) fn append(&self, line: &ResultLine) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut file = self.file.lock().unwrap();
        match std::fs::metadata(&self.path) {
            Ok(m) if m.len() >= self.max_bytes => {
                std::fs::rename(&self.path, self.path.with_file_name(ROTATED))?;
                *file = None;
            }
            Ok(_) => {}
            // Deleted under us: start a new one rather than write where nobody reads.
            Err(_) => *file = None,
        }
        let file = match &mut *file {
            Some(file) => file,
            empty => empty.insert(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        file.write_all(&json_line(line))?;
        Ok(())
    }
}

/// `value` as one JSON line, to be written with one `write`: formatting straight into a
/// file writes each token on its own (hundreds of system calls a frame), and a reader
/// following the file could see a line half written.
pub(super) fn json_line(value: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).expect("a record serializes");
    line.push(b'\n');
    line
}

/// The last [`RECENT_DECISIONS`](super::RECENT_DECISIONS) decisions of a worker in another process, followed
/// through its results log: the `hard_examples` metric for `sedna agent`, whose
/// inference worker runs in a Pod on the same node and writes the log there. Unlike an
/// in-process worker's, they include what the log held when the tail started (the
/// window survives a restart of the agent).
pub struct DecisionTail {
    dir: PathBuf,
    /// The file being followed, kept open so that it can be read to its end after the
    /// log rotated it away (a rename, or its deletion at the next rotation).
    following: Option<Followed>,
    recent: RecentDecisions,
}

struct Followed {
    file: BufReader<std::fs::File>,
    /// Device and inode, taken from the open file.
    id: (u64, u64),
    /// Where the whole lines read so far end.
    offset: u64,
}

impl Followed {
    /// `path` opened, or `None` when there is no such file (yet).
    fn open(path: &Path) -> anyhow::Result<Option<Self>> {
        use std::os::unix::fs::MetadataExt as _;
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let meta = file.metadata()?;
        Ok(Some(Followed {
            file: BufReader::new(file),
            id: (meta.dev(), meta.ino()),
            offset: 0,
        }))
    }
}

impl DecisionTail {
    /// Follows the log the worker keeps in `dir`; nothing is read before [`Self::update`].
    pub fn new(dir: &Path) -> Self {
        DecisionTail {
            dir: dir.to_path_buf(),
            following: None,
            recent: RecentDecisions::default(),
        }
    }

    /// Reads the decisions written since the last update: the rest of the file it was
    /// following, then, if the log rotated meanwhile, the rotated file (unless that is
    /// the one it followed) and the current one. The first update reads both files whole.
    /// Lines without a decision (a frame that failed) or that are not JSON are skipped.
    pub fn update(&mut self) -> anyhow::Result<()> {
        let Some(current) = Followed::open(&self.dir.join(CURRENT))? else {
            return Ok(()); // the worker has written nothing yet
        };
        let followed = self.following.as_ref().map(|f| f.id);
        if followed == Some(current.id) {
            return self.read_followed();
        }
        // The log rotated (or this is the first update). What the followed file got
        // before its rename is complete now that the current file exists: finish it.
        self.read_followed()?;
        if let Some(rotated) = Followed::open(&self.dir.join(ROTATED))?
            && Some(rotated.id) != followed
        {
            self.following = Some(rotated);
            self.read_followed()?;
        }
        self.following = Some(current);
        self.read_followed()
    }

    /// The decisions, oldest first, as 1 (hard) and 0.
    pub fn recent(&self) -> Vec<f64> {
        self.recent.values()
    }

    /// Reads the followed file's whole lines from where it stopped, moving its offset
    /// past each line read (so that an error midway loses nor repeats nothing).
    fn read_followed(&mut self) -> anyhow::Result<()> {
        let Some(followed) = self.following.as_mut() else {
            return Ok(());
        };
        if followed.file.get_ref().metadata()?.len() < followed.offset {
            followed.offset = 0; // truncated in place: read it again from its start
        }
        followed.file.seek(SeekFrom::Start(followed.offset))?;
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = followed.file.read_until(b'\n', &mut line)?;
            if read == 0 || line.last() != Some(&b'\n') {
                return Ok(()); // the end, or a line still being written
            }
            followed.offset += read as u64;
            let hard = serde_json::from_slice::<Decision>(&line)
                .ok()
                .and_then(|line| line.hard);
            if let Some(hard) = hard {
                self.recent.push(hard);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Detections;

    fn decision(hard: bool) -> ResultLine {
        ResultLine::decided("f", hard, &Prediction::Detections(Detections::default()))
    }

    #[test]
    fn lines_keep_the_keys_the_log_always_wrote() {
        let failed = serde_json::to_string(&ResultLine::failed("f", "cannot decode")).unwrap();
        assert_eq!(failed, r#"{"error":"cannot decode","frame":"f"}"#);
        let decided = serde_json::to_string(&decision(true)).unwrap();
        assert_eq!(decided, r#"{"frame":"f","hard":true,"prediction":[]}"#);
    }

    #[test]
    fn the_tail_follows_appends_and_rotations_and_skips_what_is_not_a_decision() {
        let dir = tempfile::tempdir().unwrap();
        let mut tail = DecisionTail::new(dir.path());
        tail.update().unwrap();
        assert!(tail.recent().is_empty(), "no log yet: no decisions");

        // Small enough that every few lines rotate the file.
        let log = ResultLog::new(dir.path(), 150).unwrap();
        log.append(&decision(true)).unwrap();
        log.append(&ResultLine::failed("g", "cannot decode"))
            .unwrap();
        log.append(&decision(false)).unwrap();
        tail.update().unwrap();
        assert_eq!(tail.recent(), [1.0, 0.0]);

        // A line still being written is read once it is whole.
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(CURRENT))
            .unwrap();
        write!(file, "{{\"frame\": \"h\", \"ha").unwrap();
        tail.update().unwrap();
        assert_eq!(tail.recent(), [1.0, 0.0]);
        writeln!(file, "rd\": true}}").unwrap();
        writeln!(file, "not json").unwrap();
        tail.update().unwrap();
        assert_eq!(tail.recent(), [1.0, 0.0, 1.0]);

        // Appends across rotations: nothing is lost or read twice.
        for i in 0..10 {
            log.append(&decision(i % 3 == 0)).unwrap();
            if i % 4 == 0 {
                tail.update().unwrap();
            }
        }
        tail.update().unwrap();
        let mut expected: Vec<f64> = [1.0, 0.0, 1.0]
            .into_iter()
            .chain((0..10).map(|i| f64::from(u8::from(i % 3 == 0))))
            .collect();
        assert_eq!(tail.recent(), expected);
        assert!(dir.path().join(ROTATED).exists(), "the log rotated");

        // Two rotations between two updates: the followed file is read to its end though
        // it is gone, then the rotated one whole, then the current one.
        for i in 0..10 {
            log.append(&decision(i % 2 == 0)).unwrap();
        }
        tail.update().unwrap();
        expected.extend((0..10).map(|i| f64::from(u8::from(i % 2 == 0))));
        assert_eq!(tail.recent(), expected);

        // A new reader starts from what the two files hold.
        let mut fresh = DecisionTail::new(dir.path());
        fresh.update().unwrap();
        let held = fresh.recent();
        assert!(!held.is_empty() && expected.ends_with(&held), "{held:?}");
    }
}
