//! A job's persisted state, in an embedded SQLite database under its output directory:
//! the dataset cursor, the samples read and which round used them, the round in progress
//! and its stage, the deployed model, metrics and a bounded history of conditions.
//!
//! Every change that must not be half-made (new samples with the cursor that found them;
//! a round's samples with the round) is one transaction, so a process killed at any
//! point and started again neither loses a sample nor counts one twice.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension, params};

use super::dataset::Cursor;
use crate::media::{Label, Sample};
use crate::plugin::Metric;
use crate::spec::ConditionType;
pub use crate::spec::Stage;

/// Conditions kept in the history (Sedna's list grows without bound).
pub const CONDITIONS_KEPT: i64 = 100;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    line INTEGER NOT NULL,
    image TEXT NOT NULL,
    label TEXT NOT NULL,
    round INTEGER,
    split TEXT
);
CREATE TABLE IF NOT EXISTS conditions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    round INTEGER NOT NULL,
    stage TEXT NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    round INTEGER NOT NULL,
    model TEXT NOT NULL,
    name TEXT NOT NULL,
    vals TEXT NOT NULL,
    PRIMARY KEY (round, model, name)
);
";

/// The two parts a round's samples are split into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Eval,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

/// Whose metrics a round records: the training's, the new model's, the deployed model's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelRole {
    Train,
    New,
    Deployed,
}

impl ModelRole {
    fn name(self) -> &'static str {
        match self {
            ModelRole::Train => "train",
            ModelRole::New => "new",
            ModelRole::Deployed => "deployed",
        }
    }
}

/// One entry of the job's condition history.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConditionRecord {
    pub at: String,
    pub round: u64,
    pub stage: Stage,
    #[serde(rename = "type")]
    pub kind: ConditionType,
    pub message: String,
}

pub struct JobState {
    db: Connection,
    path: PathBuf,
}

impl JobState {
    /// Opens (or creates) the state database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = Connection::open(path)
            .with_context(|| format!("cannot open the job state {}", path.display()))?;
        // Other connections (a status read, the HTTP service) may hold the lock a moment.
        let wait = std::time::Duration::from_secs(10);
        db.busy_timeout(wait)?;
        // Switching a new database to WAL and creating its tables take locks that SQLite
        // does not wait for (it answers "database is locked" at once): two connections
        // opening a new database together, such as `sedna run` and `sedna status`,
        // retry for the same time.
        let prepare = || -> rusqlite::Result<()> {
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            db.execute_batch(SCHEMA)
        };
        let deadline = std::time::Instant::now() + wait;
        loop {
            let Err(e) = prepare() else {
                break;
            };
            let busy = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            );
            if busy && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            let context = if busy {
                format!(
                    "{} stayed locked for {} s: another process holds the job's state",
                    path.display(),
                    wait.as_secs()
                )
            } else {
                format!("{} is not a job state database", path.display())
            };
            return Err(anyhow::Error::new(e).context(context));
        }
        Ok(JobState {
            db,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(db: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn cursor(&self) -> anyhow::Result<Cursor> {
        Ok(match self.meta("cursor")? {
            Some(json) => serde_json::from_str(&json)?,
            None => Cursor::default(),
        })
    }

    /// Records new samples and the cursor after them, together.
    pub fn add_samples(&mut self, samples: &[Sample], cursor: &Cursor) -> anyhow::Result<()> {
        let tx = self.db.transaction()?;
        {
            let mut insert =
                tx.prepare("INSERT INTO samples (line, image, label) VALUES (?1, ?2, ?3)")?;
            for s in samples {
                insert.execute(params![
                    s.line as i64,
                    s.image.to_string_lossy(),
                    serde_json::to_string(&s.label)?
                ])?;
            }
        }
        Self::set_meta(&tx, "cursor", &serde_json::to_string(cursor)?)?;
        tx.commit()?;
        Ok(())
    }

    fn samples_where(
        &self,
        condition: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> anyhow::Result<Vec<Sample>> {
        let mut query = self.db.prepare(&format!(
            "SELECT line, image, label FROM samples WHERE {condition} ORDER BY id"
        ))?;
        let rows = query.query_map(values, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (line, image, label) = row?;
            let label: Label = serde_json::from_str(&label)?;
            Ok(Sample {
                line: line as u64,
                image: PathBuf::from(image),
                label,
            })
        })
        .collect()
    }

    /// Samples read but not yet given to a round.
    pub fn pending(&self) -> anyhow::Result<Vec<Sample>> {
        self.samples_where("round IS NULL", &[])
    }

    /// Starts round `round` with its training and evaluation samples (the pending ones).
    pub fn start_round(
        &mut self,
        round: u64,
        train: &[Sample],
        eval: &[Sample],
    ) -> anyhow::Result<()> {
        let tx = self.db.transaction()?;
        {
            let mut assign = tx.prepare(
                "UPDATE samples SET round = ?1, split = ?2
                 WHERE id = (SELECT id FROM samples WHERE round IS NULL AND line = ?3 AND image = ?4 ORDER BY id LIMIT 1)",
            )?;
            for (split, samples) in [(Split::Train, train), (Split::Eval, eval)] {
                for s in samples {
                    assign.execute(params![
                        round as i64,
                        split.name(),
                        s.line as i64,
                        s.image.to_string_lossy()
                    ])?;
                }
            }
        }
        Self::set_meta(&tx, "round", &round.to_string())?;
        Self::set_meta(&tx, "stage", Stage::Train.name())?;
        tx.commit()?;
        Ok(())
    }

    /// A round's samples of one split.
    pub fn round_samples(&self, round: u64, split: Split) -> anyhow::Result<Vec<Sample>> {
        self.samples_where(
            "round = ?1 AND split = ?2",
            &[&(round as i64), &split.name()],
        )
    }

    /// The round in progress and its stage, if a round was interrupted.
    pub fn in_progress(&self) -> anyhow::Result<Option<(u64, Stage)>> {
        let round = self.round()?;
        Ok(self
            .meta("stage")?
            .and_then(|s| s.parse::<Stage>().ok())
            .map(|stage| (round, stage)))
    }

    /// The last round started (0 before the first).
    pub fn round(&self) -> anyhow::Result<u64> {
        Ok(self.meta("round")?.map_or(Ok(0), |r| r.parse())?)
    }

    pub fn set_stage(&mut self, stage: Option<Stage>) -> anyhow::Result<()> {
        match stage {
            Some(stage) => Self::set_meta(&self.db, "stage", stage.name())?,
            None => {
                self.db
                    .execute("DELETE FROM meta WHERE key = 'stage'", [])?;
            }
        }
        Ok(())
    }

    /// The model inference serves and training starts from, once one was deployed.
    pub fn deployed(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(self.meta("deployed")?.map(PathBuf::from))
    }

    /// Records the deployment and ends the round, together.
    pub fn finish_round(&mut self, deployed: Option<&Path>) -> anyhow::Result<()> {
        let tx = self.db.transaction()?;
        if let Some(path) = deployed {
            Self::set_meta(&tx, "deployed", &path.to_string_lossy())?;
        }
        tx.execute("DELETE FROM meta WHERE key = 'stage'", [])?;
        tx.commit()?;
        Ok(())
    }

    pub fn record_metrics(
        &mut self,
        round: u64,
        model: ModelRole,
        metrics: &[Metric],
    ) -> anyhow::Result<()> {
        let tx = self.db.transaction()?;
        for m in metrics {
            tx.execute(
                "INSERT OR REPLACE INTO metrics (round, model, name, vals) VALUES (?1, ?2, ?3, ?4)",
                params![
                    round as i64,
                    model.name(),
                    m.name,
                    serde_json::to_string(&m.values)?
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The metrics recorded for `model` in `round`.
    pub fn metrics(&self, round: u64, model: ModelRole) -> anyhow::Result<Vec<Metric>> {
        let mut query = self.db.prepare(
            "SELECT name, vals FROM metrics WHERE round = ?1 AND model = ?2 ORDER BY rowid",
        )?;
        let rows = query.query_map(params![round as i64, model.name()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (name, values) = row?;
            Ok(Metric {
                name,
                values: serde_json::from_str(&values)?,
            })
        })
        .collect()
    }

    /// Appends to the condition history, forgetting the oldest past [`CONDITIONS_KEPT`].
    pub fn record_condition(
        &mut self,
        round: u64,
        stage: Stage,
        kind: ConditionType,
        message: &str,
    ) -> anyhow::Result<()> {
        let at = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        self.db.execute(
            "INSERT INTO conditions (at, round, stage, type, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![at, round as i64, stage.name(), kind.name(), message],
        )?;
        self.db.execute(
            "DELETE FROM conditions WHERE id <= (SELECT MAX(id) FROM conditions) - ?1",
            [CONDITIONS_KEPT],
        )?;
        Ok(())
    }

    /// The condition history, oldest first.
    pub fn conditions(&self) -> anyhow::Result<Vec<ConditionRecord>> {
        let mut query = self
            .db
            .prepare("SELECT at, round, stage, type, message FROM conditions ORDER BY id")?;
        let rows = query.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (at, round, stage, kind, message) = row?;
            let bad = |e: String| {
                anyhow::anyhow!("{}: a condition of round {round}: {e}", self.path.display())
            };
            Ok(ConditionRecord {
                at,
                round,
                stage: stage.parse().map_err(bad)?,
                kind: kind.parse().map_err(bad)?,
                message,
            })
        })
        .collect()
    }

    /// Samples per state: (pending, used in rounds).
    pub fn sample_counts(&self) -> anyhow::Result<(u64, u64)> {
        let count = |condition: &str| -> anyhow::Result<u64> {
            let n: i64 = self.db.query_row(
                &format!("SELECT COUNT(*) FROM samples WHERE {condition}"),
                [],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        };
        Ok((count("round IS NULL")?, count("round IS NOT NULL")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opening_a_new_state_together_all_open_it() {
        // As `sedna run` and a status read (or a test watching the state) do at start.
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let start = std::sync::Barrier::new(3);
            std::thread::scope(|scope| {
                let opened: Vec<_> = (0..3)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            JobState::open(&path).map(|_| ())
                        })
                    })
                    .collect();
                for open in opened {
                    open.join().unwrap().unwrap();
                }
            });
        }
    }
}
