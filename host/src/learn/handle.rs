//! What the HTTP service sees and changes of a job running in this process: its status,
//! its counters, and its plugin slots (`hem`, `estimator`, `train-trigger`,
//! `deploy-trigger`), to which a stored plugin can be bound while the job runs. Binds are
//! kept ([`BindHistory`]): a restarted job restores them, and a slot can be rolled back.

use std::sync::Arc;

use arc_swap::ArcSwap;
use kube::Resource;

use super::binds::{BindHistory, BindRecord, SlotName};
use super::layout::OutputLayout;
use super::stats::RoundStats;
use super::status::{InferenceStatus, JobStatus};
use super::trigger::PluginConditions;
use crate::metrics::Counter;
use crate::pipeline::InferenceWorker;
use crate::plugin::{
    Estimator, Param, Plugin, PluginError, Runtime, Sandbox, Source, TriggerCondition,
};
use crate::spec::IncrementalLearningJob;

/// A running job's shared parts. Cheap to clone.
#[derive(Clone)]
pub struct JobHandle {
    spec: Arc<IncrementalLearningJob>,
    runtime: Runtime,
    pub rounds: Arc<RoundStats>,
    pub worker: Option<Arc<InferenceWorker>>,
    estimator: Arc<ArcSwap<Source>>,
    /// The train trigger's and the deploy trigger's plugin conditions.
    triggers: [Arc<PluginConditions>; 2],
    pub binds: Arc<BindStats>,
    history: Arc<BindHistory>,
    job_file: Arc<JobFilePlugins>,
    /// Where the job's files are (its state, for the status).
    layout: OutputLayout,
}

/// What the job file put in each slot: what a rollback past the first bind returns to.
pub struct JobFilePlugins {
    hem: Option<(Source, Vec<Param>)>,
    estimator: (Source, Vec<Param>),
    triggers: [Arc<Vec<Plugin<TriggerCondition>>>; 2],
}

impl JobFilePlugins {
    /// What the slots hold as the job opens: the worker's plugins (when it has one), the
    /// rounds' estimator and the triggers' plugin conditions.
    pub fn of(
        worker: Option<&InferenceWorker>,
        estimator: &Source,
        triggers: [&PluginConditions; 2],
    ) -> Self {
        let held = |source: &Source, params: &[Param]| (source.clone(), params.to_vec());
        JobFilePlugins {
            hem: worker.map(|w| {
                let hem = w.hem();
                held(hem.source(), hem.params())
            }),
            estimator: match worker {
                Some(w) => {
                    let serving = w.estimator();
                    held(serving.source(), serving.params())
                }
                None => (estimator.clone(), Vec::new()),
            },
            triggers: triggers.map(|t| t.load()),
        }
    }
}

/// Plugin binds since the process started.
#[derive(Debug, Default)]
pub struct BindStats {
    pub swapped: Counter,
    pub refused: Counter,
}

/// Why a bind was refused; the slot keeps what it had.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "job {job} runs no inference worker (its deploy template has no `video_url`), so it has no `{slot}` to replace"
    )]
    NoWorker { job: String, slot: SlotName },
    #[error("job {job}'s `{slot}` slot holds the job file's plugin: there is no bind to roll back")]
    NothingToRollBack { job: String, slot: SlotName },
    #[error("the `{slot}` slot cannot return to its previous plugin: {why}; bind another")]
    Gone { slot: SlotName, why: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl JobHandle {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        spec: Arc<IncrementalLearningJob>,
        runtime: Runtime,
        rounds: Arc<RoundStats>,
        worker: Option<Arc<InferenceWorker>>,
        estimator: Arc<ArcSwap<Source>>,
        triggers: [Arc<PluginConditions>; 2],
        (history, job_file): (Arc<BindHistory>, Arc<JobFilePlugins>),
        layout: OutputLayout,
    ) -> Self {
        JobHandle {
            spec,
            layout,
            runtime,
            rounds,
            worker,
            estimator,
            triggers,
            binds: Arc::default(),
            history,
            job_file,
        }
    }

    pub fn name(&self) -> &str {
        self.spec.meta().name.as_deref().unwrap_or_default()
    }

    /// The job's status from its state database, with the live worker's counters.
    pub fn status(&self) -> anyhow::Result<JobStatus> {
        let mut status = JobStatus::read_at(&self.spec, &self.layout)?;
        status.inference = self.worker.as_deref().map(InferenceStatus::of);
        Ok(status)
    }

    /// Binds `source` to `slot`, with `params` (else, for the worker's slots, the serving
    /// plugin's). The plugin is compiled (from the cache when it was precompiled at
    /// upload), type-checked against the slot's world and initialised before it replaces
    /// anything; one that fails is refused and the slot keeps what it had.
    pub fn bind(
        &self,
        slot: SlotName,
        source: &Source,
        params: Option<Vec<Param>>,
    ) -> Result<(), BindError> {
        let result = self.swap(slot, source, params);
        match &result {
            Ok(params) => {
                self.binds.swapped.inc();
                tracing::info!(job = self.name(), %slot, plugin = %source.name, "plugin bound");
                if let Err(e) = self.history.push(slot, BindRecord::new(source, params)) {
                    tracing::warn!(
                        job = self.name(),
                        %slot,
                        "the bind is made but not kept for a restart: {e:#}"
                    );
                }
            }
            Err(e) => {
                self.binds.refused.inc();
                tracing::warn!(job = self.name(), %slot, "bind refused: {e}");
            }
        }
        result.map(drop)
    }

    /// Binds again what the binds kept before a restart: per slot, the last. One whose
    /// plugin is gone from the store (or changed), or fails to start, is left with a
    /// warning: the slot serves the job file's plugin.
    pub fn restore(&self) {
        for slot in SlotName::ALL {
            let Some(record) = self.history.current(slot) else {
                continue;
            };
            let restored = self.history.source(&record).and_then(|source| {
                self.swap(slot, &source, Some(record.params()))
                    .map_err(|e| e.to_string())
            });
            match restored {
                Ok(_) => tracing::info!(
                    job = self.name(),
                    %slot,
                    "restored {} (bound on {}, before the restart)",
                    record.plugin,
                    record.bound_at
                ),
                Err(why) => tracing::warn!(
                    job = self.name(),
                    %slot,
                    "{} (bound on {}) is not restored: {why}; the slot serves the job file's plugin",
                    record.plugin,
                    record.bound_at
                ),
            }
        }
    }

    /// Returns `slot` to what it held before its last bind: the bind before, or the job
    /// file's plugin. Returns what it holds now (`None`: a trigger slot with no plugin).
    pub fn rollback(&self, slot: SlotName) -> Result<Option<String>, BindError> {
        let Some(last) = self.history.current(slot) else {
            return Err(BindError::NothingToRollBack {
                job: self.name().to_string(),
                slot,
            });
        };
        let now = match self.history.previous(slot) {
            Some(previous) => {
                let source = self
                    .history
                    .source(&previous)
                    .map_err(|why| BindError::Gone { slot, why })?;
                self.swap(slot, &source, Some(previous.params()))?;
                Some(previous.plugin)
            }
            None => self.restore_job_file(slot)?,
        };
        if let Err(e) = self.history.pop(slot) {
            tracing::warn!(job = self.name(), %slot, "the rollback is made but not kept for a restart: {e:#}");
        }
        tracing::info!(
            job = self.name(),
            %slot,
            "rolled back from {} to {}",
            last.plugin,
            now.as_deref().unwrap_or("no plugin")
        );
        Ok(now)
    }

    fn restore_job_file(&self, slot: SlotName) -> Result<Option<String>, BindError> {
        let no_worker = || BindError::NoWorker {
            job: self.name().to_string(),
            slot,
        };
        Ok(match slot {
            SlotName::Hem => {
                let (source, params) = self.job_file.hem.as_ref().ok_or_else(no_worker)?;
                let worker = self.worker.as_deref().ok_or_else(no_worker)?;
                worker.bind_hem(source, Some(params.clone()))?;
                Some(source.name.clone())
            }
            SlotName::Estimator => {
                let (source, params) = &self.job_file.estimator;
                if let Some(worker) = self.worker.as_deref() {
                    worker.bind_estimator(source, Some(params.clone()))?;
                }
                self.estimator.store(Arc::new(source.clone()));
                Some(source.name.clone())
            }
            SlotName::TrainTrigger | SlotName::DeployTrigger => {
                let index = usize::from(slot == SlotName::DeployTrigger);
                let plugins = self.job_file.triggers[index].clone();
                let names: Vec<&str> = plugins.iter().map(|p| p.name()).collect();
                let now = (!names.is_empty()).then(|| names.join(", "));
                self.triggers[index].set(plugins);
                now
            }
        })
    }

    /// Swaps `source` into `slot`; returns the parameters it runs with.
    fn swap(
        &self,
        slot: SlotName,
        source: &Source,
        params: Option<Vec<Param>>,
    ) -> Result<Vec<Param>, BindError> {
        let worker = || {
            self.worker.as_deref().ok_or_else(|| BindError::NoWorker {
                job: self.name().to_string(),
                slot,
            })
        };
        Ok(match slot {
            SlotName::Hem => {
                let worker = worker()?;
                worker.bind_hem(source, params)?;
                worker.hem().params().to_vec()
            }
            SlotName::Estimator => {
                let params = match self.worker.as_deref() {
                    Some(worker) => {
                        worker.bind_estimator(source, params)?;
                        worker.estimator().params().to_vec()
                    }
                    None => {
                        drop(Plugin::<Estimator>::check(&self.runtime, source)?);
                        params.unwrap_or_default()
                    }
                };
                self.estimator.store(Arc::new(source.clone()));
                params
            }
            SlotName::TrainTrigger | SlotName::DeployTrigger => {
                let params = params.unwrap_or_default();
                let condition = Plugin::<TriggerCondition>::load(
                    &self.runtime,
                    source,
                    params.clone(),
                    Sandbox::default(),
                )?;
                let index = usize::from(slot == SlotName::DeployTrigger);
                self.triggers[index].replace(vec![condition]);
                params
            }
        })
    }

    /// The plugin in each slot now, by name (`None` for a trigger with no plugin).
    pub fn slots(&self) -> Vec<(SlotName, Option<String>)> {
        self.plugins()
            .into_iter()
            .map(|(slot, names)| (slot, (!names.is_empty()).then(|| names.join(", "))))
            .collect()
    }

    /// The slot that holds the plugin named `name`, if one does.
    pub fn holding(&self, name: &str) -> Option<SlotName> {
        self.plugins()
            .into_iter()
            .find(|(_, names)| names.iter().any(|n| n == name))
            .map(|(slot, _)| slot)
    }

    /// The plugins in each slot now, by name (a trigger slot holds any number).
    fn plugins(&self) -> Vec<(SlotName, Vec<String>)> {
        let worker = self.worker.as_deref();
        let trigger = |i: usize| {
            self.triggers[i]
                .load()
                .iter()
                .map(|p| p.name().to_string())
                .collect()
        };
        vec![
            (
                SlotName::Hem,
                worker
                    .map(|w| w.hem().name().to_string())
                    .into_iter()
                    .collect(),
            ),
            (
                SlotName::Estimator,
                vec![worker.map_or_else(
                    || self.estimator.load().name.clone(),
                    |w| w.estimator().name().to_string(),
                )],
            ),
            (SlotName::TrainTrigger, trigger(0)),
            (SlotName::DeployTrigger, trigger(1)),
        ]
    }
}
