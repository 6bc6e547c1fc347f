//! An incremental-learning job in one process: `sedna run job.yaml`.
//!
//! Each check reads what was appended to the data index, counts it towards the train
//! trigger and, when the trigger fires, runs a round: train (fine-tune the deployed
//! model on the new training samples), eval (the new and the deployed model on the same
//! evaluation set), deploy (the deploy trigger on the new metrics and their `_delta`
//! against the deployed model). Every stage writes its files under a temporary name and
//! records its end in the state database, so a killed process resumes where it stopped.
//!
//! Output under `outputDir`: `data/train/<round>/{train,eval}.txt` (the round's training
//! samples, and its evaluation set: its own and the last rounds' eval samples), `train/<round>/`
//! (`model.onnx`, `report.json`), `eval/<round>/metrics.json`, `state.db`; the deployed
//! model goes to the deploy `Model`'s `url`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use kube::{Resource, ResourceExt};

use super::dataset::{DatasetMonitor, Label, Sample};
use super::handle::JobHandle;
use super::split::{EvalSets, split};
use super::state::{JobState, Stage};
use super::trigger::{ClockTime, Decision, MAX_CONDITIONS, MAX_PLUGINS, PluginConditions, Trigger};
use crate::api::{self, IncrementalLearningJob, KeyValue, Resources};
use crate::files::write_atomically;
use crate::infer::{DecisionTail, FrameSource, HardExampleStore, InferenceWorker, ResultLog};
use crate::metrics::{Counter, Histogram};
use crate::plugin::{
    DirGrant, Estimator, Hem, Metric, Param, Plugin, PluginStore, Runtime, Sandbox, Slot, Source,
    TriggerCondition,
};

/// The estimator a job uses unless its train template's `env` names one (`estimator`).
pub const DEFAULT_ESTIMATOR: &str = "ONNX";
/// The metrics the built-in estimator reports per class: a trigger must index them.
pub const PER_CLASS_METRICS: &[&str] = &["precision", "recall", "f1_score", "ap"];
/// How long one estimator call may take in a round (a whole training, or an evaluation).
pub const ROUND_DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// How long the inference worker's estimator may take over one frame.
const FRAME_DEADLINE: Duration = Duration::from_secs(30);
/// Memory an estimator instance may use (its features cache lives there).
const ESTIMATOR_MEMORY: u64 = 2 << 30;
/// Where the job's output directory appears inside the estimator.
pub const GUEST_OUTPUT: &str = "/out";

/// What one check did.
#[derive(Debug)]
pub enum Checked {
    /// The train trigger did not fire: the samples waiting and why.
    Waiting { pending: u64, decision: Decision },
    /// A round ran to its end.
    Round(RoundReport),
}

/// What reading the data index and the train trigger did.
#[derive(Debug)]
pub enum Collected {
    /// The train trigger did not fire: the samples waiting and why.
    Waiting { pending: u64, decision: Decision },
    /// The trigger fired and round `round` started: its samples are split and written.
    Started { round: u64, decision: Decision },
}

/// The files of one round: what a train and an eval worker read and write.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundFiles {
    /// The new training samples (a `txt` index).
    pub train_index: PathBuf,
    /// The evaluation set: this round's and the last rounds' eval samples, no duplicates.
    pub test_index: PathBuf,
    /// The model training starts from, and the one the new model is compared with.
    pub base_model: PathBuf,
    /// Where the trained model goes.
    pub model: PathBuf,
}

/// One finished round.
#[derive(Debug)]
pub struct RoundReport {
    pub round: u64,
    pub loss: Vec<f64>,
    pub new: Vec<Metric>,
    pub deployed_before: Vec<Metric>,
    pub deployed: bool,
    pub reasons: Vec<String>,
}

/// Rounds and the time their stages take, for `/metrics`.
#[derive(Debug, Default)]
pub struct RoundStats {
    pub completed: Counter,
    pub failed: Counter,
    pub deploys: Counter,
    pub train: Histogram,
    pub eval: Histogram,
    pub deploy: Histogram,
}

impl RoundStats {
    /// Each stage with its name in `/metrics`.
    pub fn stages(&self) -> [(&'static str, &Histogram); 3] {
        [
            ("train", &self.train),
            ("eval", &self.eval),
            ("deploy", &self.deploy),
        ]
    }
}

pub struct LocalJob {
    name: String,
    spec: Arc<IncrementalLearningJob>,
    train_prob: f64,
    initial_model: PathBuf,
    deploy_model: PathBuf,
    output: PathBuf,
    state: JobState,
    monitor: DatasetMonitor,
    train_trigger: Trigger,
    deploy_trigger: Trigger,
    period: Duration,
    runtime: Runtime,
    /// The estimator rounds use; a plugin bound while the job runs replaces it.
    estimator: Arc<ArcSwap<Source>>,
    train_params: Vec<Param>,
    eval_params: Vec<Param>,
    inference: Option<Inference>,
    /// Without a worker here (`sedna agent`), the decisions of the one in the inference
    /// Pod, read from its results log on this node.
    decisions: Option<DecisionTail>,
    poll_period: Duration,
    /// `hotUpdateEnabled`: swap beside the serving model rather than restart the worker.
    hot_update: bool,
    /// Told when a round enters a stage (for progress on a terminal).
    stage_observer: Option<Box<dyn Fn(u64, Stage) + Send>>,
    stats: Arc<RoundStats>,
    /// The deploy model file, to notice a model written there by someone else.
    deployed_watch: ModelWatch,
}

/// The job's inference worker and the frames it reads (until the caller takes them
/// to feed the worker on a thread of its own).
pub struct Inference {
    pub worker: Arc<InferenceWorker>,
    pub source: Option<FrameSource>,
}

/// Size of the inference results file before it is rotated (one old file is kept).
const RESULTS_MAX_BYTES: u64 = 64 << 20;

/// Where the inference worker logs every frame's outcome.
fn results_dir(output: &Path) -> PathBuf {
    output.join("inference")
}

/// Hard examples kept on disk before the oldest are deleted.
const HARD_EXAMPLES_KEPT: usize = 10_000;

/// The parameter `key` (the last entry wins, as later `env` entries do).
pub fn setting<'a>(params: &'a [Param], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

/// The estimator the parameters name (`estimator`), else [`DEFAULT_ESTIMATOR`].
pub fn estimator_source(store: &PluginStore, params: &[Param]) -> anyhow::Result<Source> {
    let name = setting(params, "estimator").unwrap_or(DEFAULT_ESTIMATOR);
    store
        .resolve(name)
        .with_context(|| format!("estimator {name}"))
}

/// Sedna's `{key, value}` entries as plugin parameters.
pub fn params(values: &[KeyValue]) -> Vec<Param> {
    values
        .iter()
        .map(|kv| Param {
            key: kv.key.clone(),
            value: kv.value.clone(),
        })
        .collect()
}

impl LocalJob {
    /// Prepares the job `name` (or the only one) from checked resources: resolves its
    /// models, dataset and estimator, checks its triggers, opens its state, and starts
    /// its inference worker when the deploy template names a source.
    pub fn open(
        resources: &Resources,
        name: Option<&str>,
        runtime: &Runtime,
        store: &PluginStore,
    ) -> anyhow::Result<Self> {
        Self::open_with(resources, name, runtime, store, true)
    }

    /// The job without an inference worker: what `sedna agent` decides with, while the
    /// rounds' stages and inference run in Pods.
    pub fn open_deciding(
        resources: &Resources,
        name: Option<&str>,
        runtime: &Runtime,
        store: &PluginStore,
    ) -> anyhow::Result<Self> {
        Self::open_with(resources, name, runtime, store, false)
    }

    fn open_with(
        resources: &Resources,
        name: Option<&str>,
        runtime: &Runtime,
        store: &PluginStore,
        with_worker: bool,
    ) -> anyhow::Result<Self> {
        let job = pick(resources, name)?;
        let spec = &job.spec;
        let job_name = job.name_any();
        let what = |field: &str| format!("IncrementalLearningJob {job_name}, field `{field}`");
        let model_file = |model_name: &str, field: &str| -> anyhow::Result<PathBuf> {
            let model = resources
                .models
                .iter()
                .find(|m| m.name_any() == model_name)
                .expect("references are checked at load");
            let path = PathBuf::from(&model.spec.url);
            if path.is_dir() {
                bail!(
                    "{}: Model {model_name} points at the directory {}: point its `spec.url` at the .onnx file",
                    what(field),
                    path.display()
                );
            }
            Ok(path)
        };
        let initial_model = model_file(&spec.initial_model.name, "spec.initialModel")?;
        if !initial_model.is_file() {
            bail!(
                "{}: the initial model {} does not exist",
                what("spec.initialModel"),
                initial_model.display()
            );
        }
        let deploy_model = model_file(&spec.deploy_spec.model.name, "spec.deploySpec.model")?;
        let dataset = resources
            .datasets
            .iter()
            .find(|d| d.name_any() == spec.dataset.name)
            .expect("references are checked at load");

        // A trigger's plugin conditions, loaded and initialised now: a bad one stops the
        // job here, naming its field.
        let plugins = |plugins: &[api::PluginRef], field: &str| -> anyhow::Result<_> {
            if plugins.len() > MAX_PLUGINS {
                bail!(
                    "{}: a trigger holds at most {MAX_CONDITIONS} conditions, its `condition` and {MAX_PLUGINS} plugins",
                    what(field)
                );
            }
            let loaded = plugins
                .iter()
                .enumerate()
                .map(|(i, plugin)| {
                    let field = format!("{field}[{i}]");
                    let source = store
                        .resolve(&plugin.name)
                        .with_context(|| what(&format!("{field}.name")))?;
                    let params = params(&plugin.parameters);
                    Plugin::<TriggerCondition>::load(runtime, &source, params, Sandbox::default())
                        .with_context(|| what(&field))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(PluginConditions::new(loaded))
        };
        let train = &spec.train_spec.trigger;
        let train_trigger = Trigger {
            timer: train.timer,
            conditions: vec![train.condition.clone()],
            plugins: plugins(&train.plugins, "spec.trainSpec.trigger.plugins")?,
        };
        let deploy = &spec.deploy_spec.trigger;
        let deploy_trigger = Trigger {
            timer: None,
            conditions: vec![deploy.condition.clone()],
            plugins: plugins(&deploy.plugins, "spec.deploySpec.trigger.plugins")?,
        };
        let per_class: Vec<String> = PER_CLASS_METRICS
            .iter()
            .flat_map(|m| [m.to_string(), format!("{m}_delta")])
            .collect();
        let per_class: Vec<&str> = per_class.iter().map(String::as_str).collect();
        train_trigger
            .validate(&[])
            .map_err(|e| anyhow::anyhow!("{}: {e}", what("spec.trainSpec.trigger")))?;
        deploy_trigger.validate(&per_class).map_err(|e| {
            anyhow::anyhow!("{}: {e}", what("spec.deploySpec.trigger.condition.metric"))
        })?;

        let train_params = params(&api::parameters(&spec.train_spec.template));
        let estimator = estimator_source(store, &train_params)
            .with_context(|| what("spec.trainSpec env `estimator`"))?;

        let output = PathBuf::from(&spec.output_dir);
        std::fs::create_dir_all(&output).with_context(|| {
            format!(
                "{}: cannot create {}",
                what("spec.outputDir"),
                output.display()
            )
        })?;
        let state = JobState::open(&output.join("state.db"))?;
        let monitor =
            DatasetMonitor::resume(&dataset.spec.url, dataset.spec.format, state.cursor()?);
        let deploy_params = params(&api::parameters(&spec.deploy_spec.template));
        let decisions = (!with_worker).then(|| DecisionTail::new(&results_dir(&output)));
        let mut job = LocalJob {
            name: job_name,
            spec: Arc::new(job.clone()),
            train_prob: spec.dataset.train_prob,
            initial_model,
            output,
            state,
            monitor,
            train_trigger,
            deploy_trigger,
            period: Duration::from_secs(train.check_period_seconds.max(1)),
            runtime: runtime.clone(),
            estimator: Arc::new(ArcSwap::from_pointee(estimator)),
            train_params,
            eval_params: params(&api::parameters(&spec.eval_spec.template)),
            inference: None,
            decisions,
            poll_period: Duration::from_secs(spec.deploy_spec.model.poll_period_seconds.max(1)),
            hot_update: spec.deploy_spec.model.hot_update_enabled,
            stage_observer: None,
            stats: Arc::default(),
            deployed_watch: ModelWatch::new(&deploy_model),
            deploy_model,
        };
        if with_worker {
            job.inference = inference(
                &job.name,
                &job.runtime,
                &deploy_params,
                &spec.deploy_spec.hard_example_mining,
                &job.estimator.load(),
                &job.serving_model()?,
                &job.output,
                store,
            )?;
        }
        Ok(job)
    }

    /// The inference worker (to which deployed models are swapped) and its frame source,
    /// once: the caller feeds the worker, on a thread of its own or between checks.
    pub fn take_feed(&mut self) -> Option<(Arc<InferenceWorker>, FrameSource)> {
        let inference = self.inference.as_mut()?;
        Some((inference.worker.clone(), inference.source.take()?))
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
            self.inference.as_ref().map(|i| i.worker.clone()),
            self.estimator.clone(),
            [
                self.train_trigger.plugins.clone(),
                self.deploy_trigger.plugins.clone(),
            ],
        )
    }

    /// How often the deploy model's file is checked for changes made outside the job
    /// (`pollPeriodSeconds`).
    pub fn poll_period(&self) -> Duration {
        self.poll_period
    }

    /// Swaps the worker to the deploy model when its file changed since the job last saw
    /// it (someone else wrote it). Returns whether it swapped.
    pub fn poll_deployed_model(&mut self) -> anyhow::Result<bool> {
        if !self.deployed_watch.changed() {
            return Ok(false);
        }
        let Some(inference) = &self.inference else {
            return Ok(false);
        };
        let worker = inference.worker.clone();
        let round = self.state.round()?;
        self.swap_worker(&worker, round, "changed")
    }

    /// Swaps the worker to the deploy model and records the outcome; a model that does
    /// not load is refused and the worker keeps the one it has. Returns whether it swapped.
    fn swap_worker(
        &mut self,
        worker: &InferenceWorker,
        round: u64,
        why: &str,
    ) -> anyhow::Result<bool> {
        let model = self.deploy_model.display().to_string();
        let (kind, message, swapped) = match worker.swap_model(&self.deploy_model, self.hot_update)
        {
            Ok(()) => ("Completed", format!("{model} {why}: now serving it"), true),
            Err(e) => (
                "Failed",
                format!("{model} {why} but the worker kept its model: {e}"),
                false,
            ),
        };
        self.state
            .record_condition(round, "Deploy", kind, &message)?;
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
    pub fn serving_model(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .state
            .deployed()?
            .unwrap_or_else(|| self.initial_model.clone()))
    }

    /// One check at local time `now`: finishes an interrupted round, reads new samples,
    /// evaluates the train trigger and runs a round when it fires.
    pub fn check(&mut self, now: ClockTime) -> anyhow::Result<Checked> {
        if let Some((round, stage)) = self.state.in_progress()? {
            tracing::info!(job = %self.name, round, "resuming round {round} at {}", stage.name());
            return Ok(Checked::Round(self.run_round(round, stage, now)?));
        }
        match self.collect(now)? {
            Collected::Waiting { pending, decision } => Ok(Checked::Waiting { pending, decision }),
            Collected::Started { round, decision } => {
                self.state.record_condition(
                    round,
                    "Train",
                    "Running",
                    &decision.reasons.join("; "),
                )?;
                Ok(Checked::Round(self.run_round(round, Stage::Train, now)?))
            }
        }
    }

    /// Reads what was appended to the data index and evaluates the train trigger; when
    /// it fires, starts a round: splits the new samples and writes the round's index
    /// files ([`LocalJob::round_files`]). Call it only with no round in progress.
    pub fn collect(&mut self, now: ClockTime) -> anyhow::Result<Collected> {
        let read = self
            .monitor
            .check()
            .with_context(|| format!("cannot read the data index {}", self.monitor_index()))?;
        if read.rescanned {
            tracing::warn!(job = %self.name, "the data index was truncated or replaced: read again from its start");
        }
        for rejected in read.rejected.iter().take(3) {
            tracing::warn!(job = %self.name, "{}:{}: {}", self.monitor_index(), rejected.line, rejected.reason);
        }
        if !read.rejected.is_empty() {
            let lines: Vec<String> = read
                .rejected
                .iter()
                .take(10)
                .map(|r| r.line.to_string())
                .collect();
            self.state.record_condition(
                self.state.round()?,
                "Train",
                "Waiting",
                &format!(
                    "{} lines of the data index are not samples (lines {})",
                    read.rejected.len(),
                    lines.join(", ")
                ),
            )?;
        }
        self.state
            .add_samples(&read.samples, self.monitor.cursor())?;

        let pending = self.state.pending()?;
        let mut stats = vec![Metric {
            name: "num_of_samples".into(),
            values: vec![pending.len() as f64],
        }];
        let hard_examples = match (&self.inference, &mut self.decisions) {
            (Some(inference), _) => Some(inference.worker.recent_decisions()),
            (None, Some(tail)) => {
                if let Err(e) = tail.update() {
                    tracing::warn!(job = %self.name, "the inference results: {e:#}");
                }
                Some(tail.recent())
            }
            (None, None) => None,
        };
        if let Some(values) = hard_examples {
            stats.push(Metric {
                name: "hard_examples".into(),
                values,
            });
        }
        let decision = self.train_trigger.evaluate(&stats, now);
        if !decision.fire {
            return Ok(Collected::Waiting {
                pending: pending.len() as u64,
                decision,
            });
        }
        let round = self.state.round()? + 1;
        let (train, eval) = split(pending, self.train_prob, round);
        // The files first: a round the state records as started always has them.
        self.write_split(round, &train, eval.clone())?;
        self.state.start_round(round, &train, &eval)?;
        Ok(Collected::Started { round, decision })
    }

    /// Where round `round`'s samples, base model and new model are.
    pub fn round_files(&self, round: u64) -> anyhow::Result<RoundFiles> {
        let data = self.output.join(format!("data/train/{round}"));
        Ok(RoundFiles {
            train_index: data.join("train.txt"),
            test_index: data.join("eval.txt"),
            base_model: self.serving_model()?,
            model: self.output.join(format!("train/{round}/model.onnx")),
        })
    }

    /// Calls `observer` each time a round enters a stage.
    pub fn on_stage(&mut self, observer: impl Fn(u64, Stage) + Send + 'static) {
        self.stage_observer = Some(Box::new(observer));
    }

    fn entered(&self, round: u64, stage: Stage) {
        if let Some(observer) = &self.stage_observer {
            observer(round, stage);
        }
        // A fault-injection point for tests that kill the process inside a stage too
        // short to hit by timing (Deploy): `SEDNA_TEST_PAUSE_AT=Deploy` holds it there.
        if std::env::var("SEDNA_TEST_PAUSE_AT").is_ok_and(|s| s == stage.name()) {
            tracing::warn!(job = %self.name, "SEDNA_TEST_PAUSE_AT: holding round {round} in {}", stage.name());
            std::thread::sleep(Duration::from_secs(60));
        }
    }

    fn monitor_index(&self) -> String {
        self.monitor.index().display().to_string()
    }

    fn run_round(
        &mut self,
        round: u64,
        from: Stage,
        now: ClockTime,
    ) -> anyhow::Result<RoundReport> {
        let result = self.stages(round, from, now);
        match &result {
            Ok(report) => {
                self.stats.completed.inc();
                if report.deployed {
                    self.stats.deploys.inc();
                }
            }
            Err(_) => self.stats.failed.inc(),
        }
        if let Err(e) = &result {
            let stage = self.state.in_progress()?.map_or("Train", |(_, s)| s.name());
            self.state
                .record_condition(round, stage, "Failed", &format!("{e:#}"))?;
        }
        result
    }

    fn stages(&mut self, round: u64, from: Stage, now: ClockTime) -> anyhow::Result<RoundReport> {
        let model_path = self.round_files(round)?.model;
        let mut loss = Vec::new();
        if from == Stage::Train {
            self.entered(round, Stage::Train);
            let started = Instant::now();
            let train: Arc<[Sample]> = self.state.round_samples(round, "train")?.into();
            let estimator =
                self.estimator(&self.train_params, &self.serving_model()?, ROUND_DEADLINE)?;
            let report = estimator.train(&train, None)?;
            std::fs::create_dir_all(model_path.parent().unwrap())?;
            estimator.save(&format!("{GUEST_OUTPUT}/train/{round}/model.onnx"))?;
            write_json(
                &self.output.join(format!("train/{round}/report.json")),
                &metrics_json(&report),
            )?;
            loss = report
                .iter()
                .find(|m| m.name == "loss")
                .map(|m| m.values.clone())
                .unwrap_or_default();
            self.state.record_metrics(round, "train", &report)?;
            self.stats.train.observe(started.elapsed());
            self.state.set_stage(Some(Stage::Eval))?;
            self.state.record_condition(
                round,
                "Train",
                "Completed",
                &format!("{} samples, loss per epoch {loss:?}", train.len()),
            )?;
        }
        let (new, old) = if from != Stage::Deploy {
            self.entered(round, Stage::Eval);
            let started = Instant::now();
            let eval = self.eval_set(round, None)?;
            let new = self
                .estimator(&self.eval_params, &model_path, ROUND_DEADLINE)?
                .evaluate(&eval)?;
            let old = self
                .estimator(&self.eval_params, &self.serving_model()?, ROUND_DEADLINE)?
                .evaluate(&eval)?;
            let report = serde_json::json!({
                "samples": eval.len(),
                "new": metrics_json(&new),
                "deployed": metrics_json(&old),
            });
            write_json(
                &self.output.join(format!("eval/{round}/metrics.json")),
                &report,
            )?;
            self.state.record_metrics(round, "new", &new)?;
            self.state.record_metrics(round, "deployed", &old)?;
            self.stats.eval.observe(started.elapsed());
            self.state.set_stage(Some(Stage::Deploy))?;
            self.state.record_condition(
                round,
                "Eval",
                "Completed",
                &format!("{} samples", eval.len()),
            )?;
            (new, old)
        } else {
            (
                self.state.metrics(round, "new")?,
                self.state.metrics(round, "deployed")?,
            )
        };

        self.entered(round, Stage::Deploy);
        let started = Instant::now();
        let decision = self.decide(round, &new, &old, now)?;
        if let (true, Some(inference)) = (decision.fire, &self.inference) {
            let worker = inference.worker.clone();
            self.swap_worker(&worker, round, "deployed")?;
        }
        self.stats.deploy.observe(started.elapsed());
        let outcome = if decision.fire {
            "deployed"
        } else {
            "not deployed"
        };
        self.state.record_condition(
            round,
            "Deploy",
            "Completed",
            &format!("{outcome}: {}", decision.reasons.join("; ")),
        )?;
        Ok(RoundReport {
            round,
            loss,
            new,
            deployed_before: old,
            deployed: decision.fire,
            reasons: decision.reasons,
        })
    }

    /// Ends round `round`: the deploy trigger on the new model's metrics and their
    /// `_delta` against the deployed model's; when it holds, the new model is copied to
    /// the deploy model's file. Returns the deploy trigger's decision.
    pub fn decide(
        &mut self,
        round: u64,
        new: &[Metric],
        deployed: &[Metric],
        now: ClockTime,
    ) -> anyhow::Result<Decision> {
        let mut stats = new.to_vec();
        stats.extend(deltas(new, deployed));
        let decision = self.deploy_trigger.evaluate(&stats, now);
        if decision.fire {
            copy_atomically(&self.round_files(round)?.model, &self.deploy_model)?;
            // The job wrote it: polling must not take it for a model from elsewhere.
            self.deployed_watch.changed();
        }
        self.state
            .finish_round(decision.fire.then_some(self.deploy_model.as_path()))?;
        Ok(decision)
    }

    /// The evaluation sets of the last rounds up to `round`, without duplicates; round
    /// `round`'s own is `current` when given (before the state records it).
    fn eval_set(&self, round: u64, current: Option<Vec<Sample>>) -> anyhow::Result<Arc<[Sample]>> {
        let mut sets = EvalSets::default();
        let first = round
            .saturating_sub(super::split::EVAL_SETS_KEPT as u64 - 1)
            .max(1);
        for r in first..round {
            sets.add(r, self.state.round_samples(r, "eval")?);
        }
        let current = match current {
            Some(samples) => samples,
            None => self.state.round_samples(round, "eval")?,
        };
        sets.add(round, current);
        Ok(sets.samples().cloned().collect())
    }

    /// An estimator on `model`, allowed to write into the job's output directory.
    fn estimator(
        &self,
        params: &[Param],
        model: &Path,
        deadline: Duration,
    ) -> anyhow::Result<Plugin<Estimator>> {
        estimator_on(
            &self.runtime,
            &self.estimator.load(),
            params,
            model,
            &self.output,
            deadline,
        )
    }

    /// Writes round `round`'s training samples and its evaluation set (see
    /// [`RoundFiles`]) as `txt` indexes.
    fn write_split(&self, round: u64, train: &[Sample], eval: Vec<Sample>) -> anyhow::Result<()> {
        let files = self.round_files(round)?;
        std::fs::create_dir_all(files.train_index.parent().unwrap())?;
        let eval = self.eval_set(round, Some(eval))?;
        for (path, samples) in [(&files.train_index, train), (&files.test_index, &eval)] {
            let text: String = samples
                .iter()
                .map(|s| format!("{}\n", index_line(s)))
                .collect();
            write_atomically(path, text.as_bytes())?;
        }
        Ok(())
    }
}

/// An estimator plugin from `source` on `model`, with `output` granted read-write as
/// `/out` (where it saves models).
pub fn estimator_on(
    runtime: &Runtime,
    source: &Source,
    params: &[Param],
    model: &Path,
    output: &Path,
    deadline: Duration,
) -> anyhow::Result<Plugin<Estimator>> {
    {
        let mut params = params.to_vec();
        params.push(Param {
            key: "model_url".into(),
            value: "model".into(),
        });
        let sandbox = Sandbox {
            deadline,
            memory: ESTIMATOR_MEMORY,
            models: vec![("model".into(), model.to_path_buf())],
            dirs: vec![DirGrant {
                host_path: output.to_path_buf(),
                guest_path: GUEST_OUTPUT.into(),
                writable: true,
            }],
            ..Sandbox::default()
        };
        Ok(Plugin::<Estimator>::load(runtime, source, params, sandbox)?)
    }
}

/// The inference worker, when the deploy template names its source (`video_url`: a
/// folder of images or an MP4 file; `every_nth_frame` samples it, `video_realtime:
/// "false"` plays a video as fast as the worker goes; `hem_deadline_ms` and
/// `hem_memory_mib` bound each HEM call): the deploy template's
/// parameters, the serving model, the job's HEM, hard examples in `HE_SAVED_URL`
/// (else `<outputDir>/hard_examples`).
#[allow(clippy::too_many_arguments)]
pub fn inference(
    job: &str,
    runtime: &Runtime,
    deploy_params: &[Param],
    mining: &api::PluginRef,
    estimator: &Source,
    model: &Path,
    output: &Path,
    store: &PluginStore,
) -> anyhow::Result<Option<Inference>> {
    let setting = |key: &str| setting(deploy_params, key).map(str::to_string);
    let Some(url) = setting("video_url") else {
        return Ok(None);
    };
    // A whole number >= 1, or `default` when the entry is absent.
    let count = |key: &str, default: u64| -> anyhow::Result<u64> {
        match setting(key) {
            None => Ok(default),
            Some(n) => n.trim().parse::<u64>().ok().filter(|n| *n >= 1).with_context(|| {
                format!(
                    "IncrementalLearningJob {}, deploy template env `{key}` is {n:?}: give a whole number >= 1",
                    job
                )
            }),
        }
    };
    let every = count("every_nth_frame", 1)? as usize;
    let hem_sandbox = Sandbox {
        deadline: Duration::from_millis(count(
            "hem_deadline_ms",
            Sandbox::default().deadline.as_millis() as u64,
        )?),
        memory: count("hem_memory_mib", Sandbox::default().memory >> 20)? << 20,
        ..Sandbox::default()
    };
    let realtime = match setting("video_realtime").as_deref().map(str::trim) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => anyhow::bail!(
            "IncrementalLearningJob {}, deploy template env `video_realtime` is {other:?}: give \"true\" or \"false\"",
            job
        ),
    };
    let source = match FrameSource::open(&url, every, realtime) {
        Ok(source) => source,
        Err(e) => {
            tracing::warn!(
                job = %job,
                "inference worker not started: deploy template env `video_url`: {e}"
            );
            return Ok(None);
        }
    };
    let hem_source = store.resolve(&mining.name).with_context(|| {
        format!(
            "IncrementalLearningJob {}, field `spec.deploySpec.hardExampleMining.name`",
            job
        )
    })?;
    let hem = Plugin::<Hem>::load(
        runtime,
        &hem_source,
        params(&mining.parameters),
        hem_sandbox,
    )?;
    let estimator = estimator_on(
        runtime,
        estimator,
        deploy_params,
        model,
        output,
        FRAME_DEADLINE,
    )?;
    let he_dir =
        setting("HE_SAVED_URL").map_or_else(|| output.join("hard_examples"), PathBuf::from);
    let worker = InferenceWorker::new(
        Slot::new(estimator),
        Slot::new(hem),
        HardExampleStore::open(&he_dir, HARD_EXAMPLES_KEPT)?,
    )
    .with_results(ResultLog::new(&results_dir(output), RESULTS_MAX_BYTES)?);
    Ok(Some(Inference {
        worker: Arc::new(worker),
        source: Some(source),
    }))
}

/// A model file whose changes are noticed by its modified time and length.
#[derive(Debug)]
pub struct ModelWatch {
    path: PathBuf,
    seen: Option<(std::time::SystemTime, u64)>,
}

impl ModelWatch {
    /// Watches `path` from its current state: only later changes count (a file that
    /// does not exist yet counts when it appears).
    pub fn new(path: &Path) -> Self {
        ModelWatch {
            path: path.to_path_buf(),
            seen: file_stamp(path),
        }
    }

    /// Whether the file exists and changed since the last call (or since `new`).
    pub fn changed(&mut self) -> bool {
        let stamp = file_stamp(&self.path);
        if stamp.is_none() || stamp == self.seen {
            return false;
        }
        self.seen = stamp;
        true
    }
}

/// A file's modified time and length, when it exists.
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The job called `name`, or the only one.
fn pick<'a>(
    resources: &'a Resources,
    name: Option<&str>,
) -> anyhow::Result<&'a IncrementalLearningJob> {
    let names: Vec<&str> = resources
        .jobs
        .iter()
        .map(|j| j.meta().name.as_deref().unwrap_or_default())
        .collect();
    match name {
        Some(name) => resources
            .jobs
            .iter()
            .find(|j| j.name_any() == name)
            .with_context(|| {
                format!(
                    "no IncrementalLearningJob named {name} (the files hold: {})",
                    names.join(", ")
                )
            }),
        None => match resources.jobs.as_slice() {
            [job] => Ok(job),
            [] => bail!("the files hold no IncrementalLearningJob"),
            _ => bail!(
                "the files hold several jobs ({}): choose one with --job",
                names.join(", ")
            ),
        },
    }
}

/// `new - deployed` for every metric both have, element by element, as `<name>_delta`.
pub fn deltas(new: &[Metric], deployed: &[Metric]) -> Vec<Metric> {
    new.iter()
        .filter_map(|n| {
            let d = deployed.iter().find(|d| d.name == n.name)?;
            (n.values.len() == d.values.len()).then(|| Metric {
                name: format!("{}_delta", n.name),
                values: n.values.iter().zip(&d.values).map(|(a, b)| a - b).collect(),
            })
        })
        .collect()
}

fn metrics_json(metrics: &[Metric]) -> serde_json::Value {
    let map: BTreeMap<&str, &Vec<f64>> = metrics
        .iter()
        .map(|m| (m.name.as_str(), &m.values))
        .collect();
    serde_json::json!(map)
}

/// A sample as a Sedna `txt` index line (absolute image path).
fn index_line(sample: &Sample) -> String {
    let image = sample.image.display();
    match &sample.label {
        Label::Class(class) => format!("{image} {class}"),
        Label::Boxes(boxes) => {
            let boxes: Vec<String> = boxes
                .iter()
                .map(|([x1, y1, x2, y2], c)| format!("{x1},{y1},{x2},{y2},{c}"))
                .collect();
            format!("{image} {}", boxes.join(" "))
        }
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    write_atomically(path, serde_json::to_string_pretty(value)?.as_bytes())
}

fn copy_atomically(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    write_atomically(to, &bytes)
}
