//! `sedna agent --node NAME`: Sedna's LocalController role. On the node that holds a
//! job's dataset it reads the data index, fires the train trigger and decides deploys
//! with [`LocalJob`], the code `sedna run` runs, and hands each round to the controller
//! through the job's status (see the table in [`super`]). It also reports the
//! Dataset's sample count.
//!
//! The job's progress (index cursor, samples, round) is in `<outputDir>/state.db` on the
//! node, as with `sedna run`, so a restarted agent carries on.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::{RoundData, WorkerReport, appended, condition, last_condition, now, status_patch};
use crate::learn::trigger::CheckSchedule;
use crate::learn::{Collected, LocalJob};
use crate::plugin::{PluginStore, Runtime};
use crate::spec::{
    ClockTime, ConditionType, Dataset, IncrementalLearningJob, JobCondition, Model, Resources,
    Stage,
};

/// One job the agent decides for.
struct Tracked {
    job: LocalJob,
    check: CheckSchedule,
    /// The sample count last written to the Dataset's status.
    reported_samples: Option<u64>,
    /// A move decided but not yet written to the job's status (the API server refused
    /// it): sent again before anything else, as a decision is not taken twice.
    unsent: Option<JobCondition>,
    /// The job's `resourceVersion` the last written move was made from: until the cache
    /// shows a newer one, the agent waits rather than act on what it already acted on.
    acted_on: Option<String>,
}

pub struct Agent {
    client: Client,
    node: String,
    namespace: Option<String>,
    runtime: Runtime,
    store: PluginStore,
    /// By the job's uid.
    jobs: HashMap<String, Tracked>,
}

/// What the agent sees: the jobs, Datasets and Models, as its watches keep them.
pub struct Snapshot {
    pub jobs: Vec<Arc<IncrementalLearningJob>>,
    pub datasets: Vec<Arc<Dataset>>,
    pub models: Vec<Arc<Model>>,
}

impl Agent {
    pub fn new(
        client: Client,
        node: &str,
        namespace: Option<&str>,
        runtime: Runtime,
        store: PluginStore,
    ) -> Self {
        Agent {
            client,
            node: node.into(),
            namespace: namespace.map(str::to_string),
            runtime,
            store,
            jobs: HashMap::new(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Watches the jobs, Datasets and Models and looks at this node's jobs every `tick`
    /// (from the watches' cache: a look costs the API server nothing unless it moves).
    pub async fn run(mut self, tick: Duration) -> anyhow::Result<()> {
        let jobs = watch(self.api::<IncrementalLearningJob>());
        let datasets = watch(self.api::<Dataset>());
        let models = watch(self.api::<Model>());
        for ready in [
            jobs.wait_until_ready().await,
            datasets.wait_until_ready().await,
            models.wait_until_ready().await,
        ] {
            ready.map_err(|_| anyhow::anyhow!("a watch ended before it listed anything"))?;
        }
        tracing::info!(node = %self.node, "watching jobs whose Dataset is on this node");
        loop {
            let snapshot = Snapshot {
                jobs: jobs.state(),
                datasets: datasets.state(),
                models: models.state(),
            };
            self.pass(&snapshot).await;
            tokio::time::sleep(tick).await;
        }
    }

    /// One look at every job of this node; a job that cannot move is logged and the
    /// others go on.
    pub async fn pass(&mut self, seen: &Snapshot) {
        let mut mine = Vec::new();
        for job in &seen.jobs {
            let namespace = job.namespace();
            let Some(dataset) = seen
                .datasets
                .iter()
                .find(|d| d.name_any() == job.spec.dataset.name && d.namespace() == namespace)
            else {
                continue;
            };
            if dataset.spec.node_name.as_deref() != Some(self.node.as_str())
                || job.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let uid = job
                .uid()
                .unwrap_or_else(|| format!("{}/{}", namespace.unwrap_or_default(), job.name_any()));
            mine.push(uid.clone());
            if let Err(e) = self.look(&uid, job, dataset, &seen.models).await {
                tracing::warn!(job = %job.name_any(), "{e:#}");
            }
        }
        self.jobs.retain(|uid, _| mine.contains(uid));
    }

    async fn look(
        &mut self,
        uid: &str,
        job: &IncrementalLearningJob,
        dataset: &Dataset,
        models: &[Arc<Model>],
    ) -> anyhow::Result<()> {
        if !self.jobs.contains_key(uid) {
            let resources = Resources {
                datasets: vec![dataset.clone()],
                models: models
                    .iter()
                    .filter(|m| m.namespace() == job.namespace())
                    .map(|m| Model::clone(m))
                    .collect(),
                jobs: vec![job.clone()],
                secrets: Vec::new(),
            };
            let opened = LocalJob::open_deciding(&resources, None, &self.runtime, &self.store)
                .with_context(|| format!("IncrementalLearningJob {}", job.name_any()))?;
            tracing::info!(job = %job.name_any(), "deciding for it; state in {}", opened.state().path().display());
            self.jobs.insert(
                uid.to_string(),
                Tracked {
                    check: CheckSchedule::new(opened.period()),
                    job: opened,
                    reported_samples: None,
                    unsent: None,
                    acted_on: None,
                },
            );
        }
        let tracked = self.jobs.get_mut(uid).expect("inserted above");
        let namespace = job.namespace().unwrap_or_default();
        let own_write_unseen =
            tracked.acted_on.is_some() && tracked.acted_on == job.metadata.resource_version;
        if !own_write_unseen {
            tracked.acted_on = None;
            let next = match tracked.unsent.take() {
                Some(unsent) => Some(unsent),
                None => {
                    let due = tracked.check.due(Instant::now());
                    step(&mut tracked.job, job, due, ClockTime::now())?
                }
            };
            if let Some(next) = next {
                let jobs: Api<IncrementalLearningJob> =
                    Api::namespaced(self.client.clone(), &namespace);
                tracing::info!(job = %job.name_any(), "{} {}: {}", next.stage, next.kind, next.message.as_deref().unwrap_or_default());
                let patch = Patch::Merge(status_patch(job, &appended(job, next.clone())));
                if let Err(e) = jobs
                    .patch_status(&job.name_any(), &PatchParams::default(), &patch)
                    .await
                {
                    tracked.unsent = Some(next);
                    return Err(e.into());
                }
                tracked.acted_on = job.metadata.resource_version.clone();
            }
        }
        let (pending, used) = tracked.job.state().sample_counts()?;
        let samples = pending + used;
        if tracked.reported_samples != Some(samples) {
            let datasets: Api<Dataset> = Api::namespaced(self.client.clone(), &namespace);
            let status = serde_json::json!({ "status": {
                "numberOfSamples": samples,
                "updateTime": now(),
            }});
            datasets
                .patch_status(
                    &dataset.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(status),
                )
                .await?;
            tracked.reported_samples = Some(samples);
        }
        Ok(())
    }
}

/// A cache of `api`'s objects, kept by a watch on a task of its own (which backs off and
/// re-lists when the connection drops).
fn watch<K>(api: Api<K>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(e) = event {
                    tracing::warn!("watch: {e}");
                }
            })
            .await;
    });
    reader
}

/// The agent's move on `resource` (the job as the API server has it), if the last
/// condition makes it the agent's turn: `check_due` says the check period has passed.
pub fn step(
    job: &mut LocalJob,
    resource: &IncrementalLearningJob,
    check_due: bool,
    now: ClockTime,
) -> anyhow::Result<Option<JobCondition>> {
    let Some((last, data)) = last_condition(resource) else {
        // The controller has not started the job yet.
        return Ok(None);
    };
    let in_progress = job.state().in_progress()?.map(|(round, _)| round);
    use ConditionType::{Completed, Failed, Waiting};
    use Stage::{Deploy, Eval, Train};
    match (last.stage(), last.kind()) {
        (Some(Eval), Some(Completed)) => {
            let Some(mut data) = data.filter(|d| Some(d.round) == in_progress) else {
                // Decided already.
                return Ok(None);
            };
            let report: Option<WorkerReport> = data
                .report
                .take()
                .and_then(|r| serde_json::from_value(r).ok());
            let Some([new, deployed]) = report
                .as_ref()
                .and_then(|r| <&[_; 2]>::try_from(r.models.as_slice()).ok())
            else {
                return Ok(Some(condition(
                    Eval,
                    Failed,
                    "BadReport",
                    format!(
                        "round {}: the eval worker did not report two models' metrics (the new and the deployed): run `sedna worker eval` in the eval template",
                        data.round
                    ),
                    Some(&data),
                )));
            };
            let decision = job.decide(data.round, &new.metrics(), &deployed.metrics(), now)?;
            let reasons = decision.reasons.join("; ");
            Ok(Some(if decision.fire {
                condition(
                    Deploy,
                    ConditionType::Ready,
                    "Deploy",
                    format!("round {}: deploying: {reasons}", data.round),
                    Some(&data),
                )
            } else {
                condition(
                    Deploy,
                    Completed,
                    "NotDeployed",
                    format!("round {}: not deployed: {reasons}", data.round),
                    Some(&data),
                )
            }))
        }
        (Some(stage @ (Train | Eval)), Some(Failed)) if check_due => match (data, in_progress) {
            (Some(data), Some(round)) if data.round == round => {
                let data = RoundData {
                    report: None,
                    ..data
                };
                let message = format!("round {round}: trying the {stage} stage again");
                Ok(Some(condition(
                    stage,
                    ConditionType::Ready,
                    "Retry",
                    message,
                    Some(&data),
                )))
            }
            _ => start(job, now),
        },
        (Some(Train), Some(Waiting)) | (Some(Deploy), Some(Completed | Failed)) if check_due => {
            start(job, now)
        }
        _ => Ok(None),
    }
}

/// Starts a round when the train trigger fires (or asks again for one started but never
/// handed over, e.g. when the agent stopped in between).
fn start(job: &mut LocalJob, now: ClockTime) -> anyhow::Result<Option<JobCondition>> {
    if let Some((round, _)) = job.state().in_progress()? {
        return Ok(Some(ready(
            job,
            round,
            format!("round {round}: handing over the round again"),
        )?));
    }
    match job.collect(now)? {
        Collected::Waiting { pending, decision } => {
            tracing::info!(
                job = job.name(),
                "{pending} new samples; not training: {}",
                decision.reasons.join("; ")
            );
            Ok(None)
        }
        Collected::Started { round, decision } => Ok(Some(ready(
            job,
            round,
            format!("round {round}: {}", decision.reasons.join("; ")),
        )?)),
    }
}

fn ready(job: &LocalJob, round: u64, message: String) -> anyhow::Result<JobCondition> {
    let files = job.round_files(round)?;
    let data = RoundData {
        round,
        train_dataset_url: files.train_index,
        test_dataset_url: files.test_index,
        base_model_url: files.base_model,
        model_url: files.model,
        report: None,
    };
    Ok(condition(
        Stage::Train,
        ConditionType::Ready,
        "TriggerFired",
        message,
        Some(&data),
    ))
}
