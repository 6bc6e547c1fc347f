//! An incremental-learning job in one process: `sedna run job.yaml`. What it holds and how
//! it opens; its checks and rounds are in [`super::round`], its files where [`OutputLayout`]
//! says.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use super::binds::BindHistory;
use super::dataset::DatasetMonitor;
use super::handle::{JobFilePlugins, JobHandle};
use super::layout::OutputLayout;
use super::serving::{Serving, ServingPlan};
use super::setup::JobSetup;
use super::state::JobState;
use super::stats::RoundStats;
use super::trigger::Trigger;
use super::watch::DeployedModel;
use crate::files::{ExclusiveLock, SpaceReserve};
use crate::pipeline::{DecisionTail, FrameSource, InferenceWorker};
use crate::plugin::{Param, PluginStore, Runtime, Source};
use crate::spec::{ConditionType, IncrementalLearningJob, Resources, Stage};
use crate::storage::{Location, Storage};

/// Bytes set aside in `outputDir` for recording a failure when the disk fills: room for
/// SQLite's journal and a condition many times over.
const SPACE_RESERVE: u64 = 4 << 20;

/// The files of one round: what a train and an eval worker read and write, as their env
/// names them: paths on this node, or URLs when `outputDir` is in object storage (then
/// the stages may run on any node).
#[derive(Clone, Debug, PartialEq)]
pub struct RoundFiles {
    /// The new training samples (a `txt` index).
    pub train_index: String,
    /// The evaluation set: this round's and the last rounds' eval samples, no duplicates.
    pub test_index: String,
    /// The model training starts from, and the one the new model is compared with.
    pub base_model: String,
    /// Where the trained model goes.
    pub model: String,
}

/// Told when a round enters a stage: progress on a terminal, or a test's fault injection.
type StageObserver = Box<dyn Fn(u64, Stage) + Send>;

pub struct LocalJob {
    pub(super) name: String,
    spec: Arc<IncrementalLearningJob>,
    pub(super) train_prob: f64,
    initial_model: PathBuf,
    /// Where the initial model is (its `Model`'s url).
    initial_location: Location,
    /// The client for the job's own credentials: `outputDir`, `HE_SAVED_URL`.
    pub(super) storage: Arc<Storage>,
    pub(super) layout: OutputLayout,
    pub(super) state: JobState,
    /// Held for the job's life: one process runs a job at a time.
    _lock: ExclusiveLock,
    /// Released when the disk fills, so that the failure can be recorded.
    pub(super) reserve: SpaceReserve,
    pub(super) monitor: DatasetMonitor,
    pub(super) train_trigger: Trigger,
    pub(super) deploy_trigger: Trigger,
    period: Duration,
    pub(super) runtime: Runtime,
    /// The estimator rounds use; a plugin bound while the job runs replaces it.
    pub(super) estimator: Arc<ArcSwap<Source>>,
    pub(super) train_params: Vec<Param>,
    pub(super) eval_params: Vec<Param>,
    pub(super) serving: Option<Serving>,
    /// Without a worker here (`sedna agent`), the decisions of the one in the inference
    /// Pod, read from its results log on this node.
    decisions: Option<DecisionTail>,
    poll_period: Duration,
    /// `hotUpdateEnabled`: swap beside the serving model rather than restart the worker.
    hot_update: bool,
    stage_observer: Option<StageObserver>,
    pub(super) stats: Arc<RoundStats>,
    /// Where deployed models go, polled for a model written there by someone else.
    pub(super) deployed: DeployedModel,
    /// The binds made while the job ran, and what the job file put in the slots.
    binds: (Arc<BindHistory>, Arc<JobFilePlugins>),
}

impl LocalJob {
    /// Prepares the job `name` (or the only one) from checked resources (see
    /// [`JobSetup::read`]) and starts its inference worker when the deploy template names
    /// a source.
    pub fn open(
        resources: &Resources,
        name: Option<&str>,
        runtime: &Runtime,
        store: &PluginStore,
    ) -> anyhow::Result<Self> {
        let setup = JobSetup::read(resources, name, runtime, store)?;
        // Watched before the worker loads: a model written meanwhile counts as a change.
        let deployed = setup.deployed_model();
        let model = setup
            .state
            .deployed()?
            .unwrap_or_else(|| setup.initial_model.clone());
        let serving = ServingPlan {
            job: &setup.name,
            deploy_params: &setup.deploy_params,
            mining: &setup.spec.spec.deploy_spec.hard_example_mining,
            estimator: &setup.estimator,
            model: &model,
            layout: &setup.layout,
            storage: &setup.storage,
        }
        .open(runtime, store)?;
        let job = Self::from_setup(setup, runtime, store, deployed, serving, None);
        job.handle().restore();
        Ok(job)
    }

    /// The job without an inference worker: what `sedna agent` decides with, while the
    /// rounds' stages and inference run in Pods. The `hard_examples` metric comes from
    /// the inference Pod's results log.
    pub fn open_deciding(
        resources: &Resources,
        name: Option<&str>,
        runtime: &Runtime,
        store: &PluginStore,
    ) -> anyhow::Result<Self> {
        let setup = JobSetup::read(resources, name, runtime, store)?;
        let decisions = DecisionTail::new(&setup.layout.results_dir());
        let deployed = setup.deployed_model();
        Ok(Self::from_setup(
            setup,
            runtime,
            store,
            deployed,
            None,
            Some(decisions),
        ))
    }

    fn from_setup(
        setup: JobSetup,
        runtime: &Runtime,
        store: &PluginStore,
        deployed: DeployedModel,
        serving: Option<Serving>,
        decisions: Option<DecisionTail>,
    ) -> Self {
        let job_file = JobFilePlugins::of(
            serving.as_ref().map(|s| &*s.worker),
            &setup.estimator,
            [&setup.train_trigger.plugins, &setup.deploy_trigger.plugins],
        );
        let history = BindHistory::open(setup.layout.binds(), store.clone());
        let reserve = SpaceReserve::new(setup.layout.space_reserve(), SPACE_RESERVE);
        // A full disk now is found again, and said, by the first check.
        if let Err(e) = reserve.hold()
            && e.kind() != std::io::ErrorKind::StorageFull
        {
            tracing::warn!(job = %setup.name, "cannot set space aside in {}: {e}", setup.layout.output().display());
        }
        LocalJob {
            reserve,
            binds: (Arc::new(history), Arc::new(job_file)),
            name: setup.name,
            spec: Arc::new(setup.spec),
            train_prob: setup.train_prob,
            initial_model: setup.initial_model,
            initial_location: setup.initial,
            storage: setup.storage,
            deployed,
            layout: setup.layout,
            state: setup.state,
            _lock: setup.lock,
            monitor: setup.monitor,
            train_trigger: setup.train_trigger,
            deploy_trigger: setup.deploy_trigger,
            period: setup.period,
            runtime: runtime.clone(),
            estimator: Arc::new(ArcSwap::from_pointee(setup.estimator)),
            train_params: setup.train_params,
            eval_params: setup.eval_params,
            serving,
            decisions,
            poll_period: setup.poll_period,
            hot_update: setup.hot_update,
            stage_observer: None,
            stats: Arc::default(),
        }
    }

    /// The inference worker (to which deployed models are swapped) and its frame source,
    /// once: the caller feeds the worker, on a thread of its own or between checks.
    pub fn take_feed(&mut self) -> Option<(Arc<InferenceWorker>, FrameSource)> {
        let serving = self.serving.as_mut()?;
        Some((serving.worker.clone(), serving.source.take()?))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the HTTP service sees and changes of this job while it runs.
    pub fn handle(&self) -> JobHandle {
        JobHandle::new(
            self.spec.clone(),
            self.runtime.clone(),
            self.stats.clone(),
            self.serving.as_ref().map(|s| s.worker.clone()),
            self.estimator.clone(),
            [
                self.train_trigger.plugins.clone(),
                self.deploy_trigger.plugins.clone(),
            ],
            self.binds.clone(),
            self.layout.clone(),
        )
    }

    /// How often the deploy model's file is checked for changes made outside the job
    /// (`pollPeriodSeconds`).
    pub fn poll_period(&self) -> Duration {
        self.poll_period
    }

    /// Swaps the worker to the deploy model when it changed since the job last saw it
    /// (someone else wrote it). Returns whether it swapped. A remote model that cannot be
    /// fetched or verified now is an error; the worker keeps its model and the next poll
    /// tries again.
    pub fn poll_deployed_model(&mut self) -> anyhow::Result<bool> {
        if self.serving.is_none() {
            return Ok(false);
        }
        let Some(file) = self.deployed.changed()? else {
            return Ok(false);
        };
        let round = self.state.round()?;
        self.swap_worker(round, "changed", &file)
    }

    /// Swaps the worker (when there is one) to `file`, the deploy model, and records the
    /// outcome; a model that does not load is refused and the worker keeps the one it
    /// has. Returns whether it swapped.
    pub(super) fn swap_worker(
        &mut self,
        round: u64,
        why: &str,
        file: &Path,
    ) -> anyhow::Result<bool> {
        let Some(serving) = &self.serving else {
            return Ok(false);
        };
        let model = self.deployed.location().to_string();
        let (kind, message, swapped) = match serving.worker.swap_model(file, self.hot_update) {
            Ok(()) => (
                ConditionType::Completed,
                format!("{model} {why}: now serving it"),
                true,
            ),
            Err(e) => (
                ConditionType::Failed,
                format!("{model} {why} but the worker kept its model: {e}"),
                false,
            ),
        };
        self.state
            .record_condition(round, Stage::Deploy, kind, &message)?;
        Ok(swapped)
    }

    /// How often the job checks its dataset and trigger (`checkPeriodSeconds`).
    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn state(&self) -> &JobState {
        &self.state
    }

    /// The model training starts from and inference serves: the last deployed one.
    pub fn base_model(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .state
            .deployed()?
            .unwrap_or_else(|| self.initial_model.clone()))
    }

    /// The `hard_examples` metric: the worker's recent decisions, from this process or
    /// from the inference Pod's results log.
    pub(super) fn hard_examples(&mut self) -> Option<Vec<f64>> {
        match (&self.serving, &mut self.decisions) {
            (Some(serving), _) => Some(serving.worker.recent_decisions()),
            (None, Some(tail)) => {
                if let Err(e) = tail.update() {
                    tracing::warn!(job = %self.name, "the inference results: {e:#}");
                }
                Some(tail.recent())
            }
            (None, None) => None,
        }
    }

    /// Where round `round`'s samples, base model and new model are.
    pub fn round_files(&self, round: u64) -> anyhow::Result<RoundFiles> {
        let (train_index, test_index) = self.layout.round_indexes(round);
        let model = self.layout.model(round);
        let url = |local: &Path| {
            self.layout
                .remote(local)
                .map_or_else(|| local.display().to_string(), |l| l.to_string())
        };
        let base_model = match self.layout.remote(&model) {
            None => self.base_model()?.display().to_string(),
            Some(_) if self.state.deployed()?.is_some() => self.deployed.location().to_string(),
            Some(_) => self.initial_location.to_string(),
        };
        Ok(RoundFiles {
            train_index: url(&train_index),
            test_index: url(&test_index),
            base_model,
            model: url(&model),
        })
    }

    /// Copies a file of `outputDir` to its object-storage copy, when `outputDir` is there.
    pub(super) fn upload_output(&self, local: &Path) -> anyhow::Result<()> {
        if let Some(remote) = self.layout.remote(local) {
            let bytes =
                std::fs::read(local).with_context(|| format!("cannot read {}", local.display()))?;
            self.storage.put(&remote, bytes)?;
        }
        Ok(())
    }

    /// Round `round`'s trained model on this node: fetched from `outputDir` in object
    /// storage when a train worker elsewhere wrote it there.
    pub(super) fn round_model(&self, round: u64) -> anyhow::Result<PathBuf> {
        let model = self.layout.model(round);
        if let Some(remote) = self.layout.remote(&model)
            && !model.is_file()
        {
            self.storage
                .download(&remote, &model, None)
                .with_context(|| format!("round {round}: cannot fetch the trained model"))?;
        }
        Ok(model)
    }

    /// Calls `observer` each time a round enters a stage.
    pub fn on_stage(&mut self, observer: impl Fn(u64, Stage) + Send + 'static) {
        self.stage_observer = Some(Box::new(observer));
    }

    pub(super) fn entered(&self, round: u64, stage: Stage) {
        if let Some(observer) = &self.stage_observer {
            observer(round, stage);
        }
    }
}
