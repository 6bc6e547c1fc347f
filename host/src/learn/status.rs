//! A job's status as `sedna status` prints it and `GET /v1/jobs/{name}` serves it: read
//! from the job's state database, plus the live worker's counters when the job runs in
//! this process.

use std::fmt;
use std::path::{Path, PathBuf};

use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::layout::OutputLayout;
use super::state::{ConditionRecord, JobState, ModelRole};
use crate::pipeline::hard_examples::is_example;
use crate::pipeline::{CameraStats, InferenceWorker, UploadStats};
use crate::plugin::{MetricMap, deltas, metric_map, params};
use crate::spec::{IncrementalLearningJob, Stage};

/// Conditions a status shows, newest last.
pub const CONDITIONS_SHOWN: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    pub job: String,
    /// The last round started (0 before the first).
    pub round: u64,
    /// The round in progress and its stage, if one is.
    pub running: Option<Running>,
    pub samples: Samples,
    /// `None` while the initial model serves.
    pub deployed_model: Option<PathBuf>,
    pub metrics: RoundMetrics,
    pub hard_examples: HardExamples,
    /// The live inference worker, when the job runs in the process that answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceStatus>,
    pub conditions: Vec<ConditionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Running {
    pub round: u64,
    pub stage: Stage,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Samples {
    pub waiting: u64,
    pub used: u64,
}

/// The round's metrics by name: the new model's, the deployed model's and their deltas.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RoundMetrics {
    pub new: MetricMap,
    pub deployed: MetricMap,
    pub delta: MetricMap,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HardExamples {
    pub count: usize,
    pub dir: PathBuf,
}

/// What the inference worker has done since the process started, and what it serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InferenceStatus {
    pub frames: u64,
    pub hard: u64,
    pub failed: u64,
    pub swaps: u64,
    pub estimator: String,
    pub hem: String,
    /// The cameras feeding the worker, when its source is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cameras: Vec<CameraStats>,
    /// Why the worker's source cannot be read now (it is tried again), if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_failure: Option<String>,
    /// Hard examples copied to `HE_SAVED_URL` in object storage, and those waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads: Option<UploadStats>,
}

impl InferenceStatus {
    pub fn of(worker: &InferenceWorker) -> Self {
        InferenceStatus {
            frames: worker.stats.frames.get(),
            hard: worker.stats.hard.get(),
            failed: worker.stats.failed.get(),
            swaps: worker.stats.swaps.get(),
            estimator: worker.estimator().name().to_string(),
            hem: worker.hem().name().to_string(),
            cameras: worker.cameras(),
            source_failure: worker.source_failure(),
            uploads: worker.store().upload_stats(),
        }
    }
}

impl JobStatus {
    /// Reads the status of `job` from its state database under `outputDir` (or, for an
    /// `outputDir` in object storage, under the data directory `home`).
    pub fn read(job: &IncrementalLearningJob, home: &Path) -> anyhow::Result<Self> {
        Self::read_at(job, &OutputLayout::of(&job.spec.output_dir, home)?)
    }

    /// Reads the status of `job` whose files `layout` places.
    pub fn read_at(job: &IncrementalLearningJob, layout: &OutputLayout) -> anyhow::Result<Self> {
        let path = layout.state_db();
        if !path.is_file() {
            anyhow::bail!(
                "job {} has not run yet (no {})",
                job.name_any(),
                path.display()
            );
        }
        let state = JobState::open(&path)?;
        let (waiting, used) = state.sample_counts()?;
        let round = state.round()?;
        let new = state.metrics(round, ModelRole::New)?;
        let deployed = state.metrics(round, ModelRole::Deployed)?;
        let deploy_params = params(&crate::spec::parameters(&job.spec.deploy_spec.template));
        let he_dir = layout.hard_examples(&deploy_params);
        let mut conditions = state.conditions()?;
        conditions.drain(..conditions.len().saturating_sub(CONDITIONS_SHOWN));
        Ok(JobStatus {
            job: job.name_any(),
            round,
            running: state
                .in_progress()?
                .map(|(round, stage)| Running { round, stage }),
            samples: Samples { waiting, used },
            deployed_model: state.deployed()?,
            metrics: RoundMetrics {
                delta: metric_map(&deltas(&new, &deployed)),
                new: metric_map(&new),
                deployed: metric_map(&deployed),
            },
            hard_examples: HardExamples {
                count: count_images(&he_dir),
                dir: he_dir,
            },
            inference: None,
            conditions,
        })
    }
}

/// The hard examples kept in `dir`: PNG frames and JPEG frames kept as their files were,
/// not their previews.
fn count_images(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| is_example(&e.path()))
                .count()
        })
        .unwrap_or(0)
}

/// The text `sedna status` prints.
impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "job:       {}", self.job)?;
        writeln!(f, "round:     {}", self.round)?;
        if let Some(running) = &self.running {
            writeln!(f, "running:   round {}, {}", running.round, running.stage)?;
        }
        writeln!(
            f,
            "samples:   {} waiting, {} used in rounds",
            self.samples.waiting, self.samples.used
        )?;
        match &self.deployed_model {
            Some(model) => writeln!(f, "deployed:  {}", model.display())?,
            None => writeln!(f, "deployed:  the initial model")?,
        }
        writeln!(
            f,
            "hard examples: {} in {}",
            self.hard_examples.count,
            self.hard_examples.dir.display()
        )?;
        if let Some(i) = &self.inference {
            writeln!(
                f,
                "inference: {} frames, {} hard, {} failed, {} model swaps; estimator {}, HEM {}",
                i.frames, i.hard, i.failed, i.swaps, i.estimator, i.hem
            )?;
            if let Some(why) = &i.source_failure {
                writeln!(f, "source:    not read: {why}")?;
            }
            if let Some(u) = &i.uploads {
                writeln!(
                    f,
                    "uploads:   {} hard-example files uploaded, {} waiting",
                    u.uploaded, u.pending
                )?;
            }
            for c in &i.cameras {
                let age = |q| match c.age.quantile(q) {
                    Some(seconds) => format!("<= {} ms", seconds * 1000.0),
                    None => "-".to_string(),
                };
                writeln!(
                    f,
                    "camera:    {} {} {}: {} frames, {} dropped, {} reconnects, frame age p50 {} p99 {} (from {}){}",
                    c.name,
                    c.camera,
                    c.state,
                    c.frames,
                    c.dropped,
                    c.reconnects,
                    age(0.5),
                    age(0.99),
                    match c.age_from {
                        crate::pipeline::camera::AgeFrom::Capture => "capture",
                        crate::pipeline::camera::AgeFrom::Arrival => "arrival",
                    },
                    c.last_error
                        .as_deref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                )?;
            }
        }
        let round = self.round;
        for (model, metrics) in [
            ("new", &self.metrics.new),
            ("deployed", &self.metrics.deployed),
        ] {
            for (name, values) in metrics {
                writeln!(f, "metric:    round {round} {model} {name} = {values:?}")?;
            }
        }
        for (name, values) in &self.metrics.delta {
            writeln!(f, "metric:    round {round} {name} = {values:?}")?;
        }
        writeln!(f, "conditions:")?;
        for c in &self.conditions {
            writeln!(
                f,
                "  {} round {} {} {}: {}",
                c.at, c.round, c.stage, c.kind, c.message
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_examples_are_counted_whether_kept_as_png_or_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "cam-0-000001.png",
            "cam-0-000002.jpg",
            "cam-0-000002.preview.jpg",
            "index.jsonl",
        ] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        assert_eq!(count_images(dir.path()), 2);
        assert_eq!(count_images(&dir.path().join("absent")), 0);
    }
}
