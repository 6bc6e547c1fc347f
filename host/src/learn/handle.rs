//! What the HTTP service sees and changes of a job running in this process: its status,
//! its counters, and its plugin slots (`hem`, `estimator`, `train-trigger`,
//! `deploy-trigger`), to which a stored plugin can be bound while the job runs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use kube::Resource;

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
    /// Where the job's files are (its state, for the status).
    layout: OutputLayout,
}

/// Plugin binds since the process started.
#[derive(Debug, Default)]
pub struct BindStats {
    pub swapped: Counter,
    pub refused: Counter,
}

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

/// Why a bind was refused; the slot keeps what it had.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "job {job} runs no inference worker (its deploy template has no `video_url`), so it has no `{slot}` to replace"
    )]
    NoWorker { job: String, slot: SlotName },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl JobHandle {
    pub(super) fn new(
        spec: Arc<IncrementalLearningJob>,
        runtime: Runtime,
        rounds: Arc<RoundStats>,
        worker: Option<Arc<InferenceWorker>>,
        estimator: Arc<ArcSwap<Source>>,
        triggers: [Arc<PluginConditions>; 2],
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
            Ok(()) => {
                self.binds.swapped.inc();
                tracing::info!(job = self.name(), %slot, plugin = %source.name, "plugin bound");
            }
            Err(e) => {
                self.binds.refused.inc();
                tracing::warn!(job = self.name(), %slot, "bind refused: {e}");
            }
        }
        result
    }

    fn swap(
        &self,
        slot: SlotName,
        source: &Source,
        params: Option<Vec<Param>>,
    ) -> Result<(), BindError> {
        let worker = || {
            self.worker.as_deref().ok_or_else(|| BindError::NoWorker {
                job: self.name().to_string(),
                slot,
            })
        };
        match slot {
            SlotName::Hem => worker()?.bind_hem(source, params)?,
            SlotName::Estimator => {
                match self.worker.as_deref() {
                    Some(worker) => worker.bind_estimator(source, params)?,
                    None => drop(Plugin::<Estimator>::check(&self.runtime, source)?),
                }
                self.estimator.store(Arc::new(source.clone()));
            }
            SlotName::TrainTrigger | SlotName::DeployTrigger => {
                let condition = Plugin::<TriggerCondition>::load(
                    &self.runtime,
                    source,
                    params.unwrap_or_default(),
                    Sandbox::default(),
                )?;
                let index = usize::from(slot == SlotName::DeployTrigger);
                self.triggers[index].replace(vec![condition]);
            }
        }
        Ok(())
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
