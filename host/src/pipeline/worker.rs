//! The inference worker: frames from a source go through the estimator and the HEM;
//! hard examples go to the [`HardExampleStore`] for people to label, every outcome to the
//! results log. A deployed model is swapped in between two frames, never during one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::camera::{CameraStats, CameraWatch};
use super::decisions::RecentDecisions;
use super::hard_examples::HardExampleStore;
use super::results::{ResultLine, ResultLog};
use super::source::FrameSink;
use crate::media::{Frame, InferError};
use crate::metrics::{Counter, Histogram};
use crate::plugin::{
    Estimator, Hem, Param, Plugin, PluginError, Prediction, Sandbox, Slot, Source, World,
};

/// What the worker did with one frame.
#[derive(Debug)]
pub struct Outcome {
    pub prediction: Prediction,
    pub hard: bool,
}

/// Counters and latencies for the job's status and `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub frames: Counter,
    pub hard: Counter,
    pub failed: Counter,
    /// Passes of the source that could not read it at all (it could not be opened).
    pub source_failures: Counter,
    /// Model swaps (a deployed model, or a bound estimator or HEM).
    pub swaps: Counter,
    /// How long the last model swap took, from asking to serving (load, smoke test,
    /// swap), in µs.
    pub last_swap_micros: AtomicU64,
    pub stages: FrameStages,
}

/// Where a frame's time goes.
#[derive(Debug, Default)]
pub struct FrameStages {
    /// Reading and decoding the frame (an image file, a video frame).
    pub read: Histogram,
    /// The estimator's `predict`: pre-processing and the model.
    pub predict: Histogram,
    /// The HEM's decision.
    pub mine: Histogram,
    /// Writing a hard example.
    pub keep: Histogram,
}

impl FrameStages {
    /// Each stage with its name in `/metrics`.
    pub fn named(&self) -> [(&'static str, &Histogram); 4] {
        [
            ("read", &self.read),
            ("predict", &self.predict),
            ("mine", &self.mine),
            ("keep", &self.keep),
        ]
    }
}

pub struct InferenceWorker {
    estimator: Slot<Estimator>,
    hem: Slot<Hem>,
    store: HardExampleStore,
    results: Option<ResultLog>,
    /// Held for each frame, and for a whole swap when hot update is off.
    frame_gate: std::sync::Mutex<()>,
    /// The `hard_examples` metric.
    recent: std::sync::Mutex<RecentDecisions>,
    /// The cameras feeding the worker, when its source is one.
    cameras: std::sync::OnceLock<CameraWatch>,
    /// Why the source cannot be read now, if it cannot.
    source_failure: std::sync::Mutex<Option<String>>,
    pub stats: WorkerStats,
}

impl InferenceWorker {
    pub fn new(estimator: Slot<Estimator>, hem: Slot<Hem>, store: HardExampleStore) -> Self {
        InferenceWorker {
            estimator,
            hem,
            store,
            results: None,
            frame_gate: Default::default(),
            recent: Default::default(),
            source_failure: Default::default(),
            cameras: Default::default(),
            stats: WorkerStats::default(),
        }
    }

    /// Shows the stats of the cameras that feed the worker in its status and metrics.
    pub fn watch_cameras(&self, cameras: CameraWatch) {
        let _ = self.cameras.set(cameras);
    }

    /// What each camera feeding the worker has done (none for a file or folder).
    pub fn cameras(&self) -> Vec<CameraStats> {
        self.cameras
            .get()
            .map(CameraWatch::stats)
            .unwrap_or_default()
    }

    /// Also writes every frame's outcome as a JSON line to `log`.
    pub fn with_results(mut self, log: ResultLog) -> Self {
        self.results = Some(log);
        self
    }

    /// Predicts, mines and (when hard) stores one frame. The estimator and HEM versions
    /// are taken once, so a swap lands between frames.
    pub fn process(&self, name: &str, frame: &Arc<Frame>) -> Result<Outcome, PluginError> {
        let _frame = self.frame_gate.lock().unwrap_or_else(|e| e.into_inner());
        let (estimator, hem) = (self.estimator.get(), self.hem.get());
        let stages = &self.stats.stages;
        let result = stages
            .predict
            .time(|| estimator.predict(frame))
            .and_then(|prediction| {
                let hard = stages.mine.time(|| hem.is_hard_example(&prediction))?;
                Ok(Outcome { prediction, hard })
            });
        self.stats.frames.inc();
        if let Ok(outcome) = &result {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.push(outcome.hard);
        }
        match &result {
            Ok(outcome) if outcome.hard => {
                self.stats.hard.inc();
                stages
                    .keep
                    .time(|| self.store.save(name, frame, &outcome.prediction));
            }
            Ok(_) => {}
            Err(_) => self.stats.failed.inc(),
        }
        self.log_result(match &result {
            Ok(o) => ResultLine::decided(name, o.hard, &o.prediction),
            Err(e) => ResultLine::failed(name, &e.to_string()),
        });
        result
    }

    /// Counts a frame that could not even be read, and says so in the results.
    pub fn unreadable(&self, name: &str, error: &str) {
        self.stats.frames.inc();
        self.stats.failed.inc();
        self.log_result(ResultLine::failed(name, error));
    }

    fn log_result(&self, line: ResultLine) {
        if let Some(log) = &self.results
            && let Err(e) = log.append(&line)
        {
            tracing::warn!("cannot write the inference results: {e:#}");
        }
    }

    /// Swaps to `model` (same estimator and parameters); a model that does not load is
    /// refused and the serving one stays. `hot` (`hotUpdateEnabled`): it loads beside the
    /// serving one while frames go on. Otherwise the worker restarts: it stops between two
    /// frames, loads the model and goes on; frames wait meanwhile, none is dropped.
    pub fn swap_model(&self, model: &Path, hot: bool) -> Result<(), PluginError> {
        let started = std::time::Instant::now();
        let _stopped = (!hot).then(|| self.frame_gate.lock().unwrap_or_else(|e| e.into_inner()));
        let current = self.estimator.get();
        let source = current.source().clone();
        let sandbox = Sandbox {
            models: vec![("model".into(), model.to_path_buf())],
            ..current.sandbox().clone()
        };
        self.estimator
            .replace_with(&source, current.params().to_vec(), sandbox)?;
        self.stats.swaps.inc();
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.last_swap_micros.store(took, Ordering::Relaxed);
        Ok(())
    }

    /// Binds another HEM component (with `params`, else the serving one's): it is loaded
    /// and initialised beside the serving one, then swapped in between two frames. One
    /// that fails to load or initialise is refused and the serving one stays.
    pub fn bind_hem(&self, source: &Source, params: Option<Vec<Param>>) -> Result<(), PluginError> {
        rebind(&self.hem, source, params)
    }

    /// Binds another estimator component on the serving model, as `bind_hem` does.
    pub fn bind_estimator(
        &self,
        source: &Source,
        params: Option<Vec<Param>>,
    ) -> Result<(), PluginError> {
        rebind(&self.estimator, source, params)?;
        self.stats.swaps.inc();
        Ok(())
    }

    /// The recent decisions, oldest first, as 1 (hard) and 0: the `hard_examples` metric
    /// trigger conditions read.
    pub fn recent_decisions(&self) -> Vec<f64> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.values()
    }

    /// The estimator serving now.
    pub fn estimator(&self) -> Arc<Plugin<Estimator>> {
        self.estimator.get()
    }

    /// Why the source cannot be read now, if it cannot.
    pub fn source_failure(&self) -> Option<String> {
        self.source_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The HEM serving now.
    pub fn hem(&self) -> Arc<Plugin<Hem>> {
        self.hem.get()
    }

    pub fn store(&self) -> &HardExampleStore {
        &self.store
    }
}

/// Frames from a [`FrameSource`](super::FrameSource): read, then processed; a frame that
/// fails is counted and logged, and the next one goes on.
impl FrameSink for InferenceWorker {
    fn frame(&self, name: &str, frame: Result<Frame, InferError>, read: Duration) {
        self.stats.stages.read.observe(read);
        match frame {
            Ok(frame) => {
                if let Err(e) = self.process(name, &Arc::new(frame)) {
                    tracing::warn!("inference on {name}: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("{e}");
                self.unreadable(name, &e.to_string());
            }
        }
    }

    fn source(&self, failure: Option<&str>) {
        if failure.is_some() {
            self.stats.source_failures.inc();
        }
        *self
            .source_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = failure.map(str::to_string);
    }
}

/// Swaps `source` into `slot` with `params` (else the serving plugin's) and its sandbox.
fn rebind<W: World>(
    slot: &Slot<W>,
    source: &Source,
    params: Option<Vec<Param>>,
) -> Result<(), PluginError> {
    let current = slot.get();
    let params = params.unwrap_or_else(|| current.params().to_vec());
    slot.replace_with(source, params, current.sandbox().clone())
}
