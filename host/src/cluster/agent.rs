//! `sedna agent --node NAME`: Sedna's LocalController role. On the node that holds a
//! job's dataset it reads the data index, fires the train trigger and decides deploys
//! with [`LocalJob`], the code `sedna run` runs, and hands each round to the controller
//! through the job's status (see the table in [`super`]). It also reports the
//! Dataset's sample count.
//!
//! The job's progress (index cursor, samples, round) is in `<outputDir>/state.db` on the
//! node, as with `sedna run`, so a restarted agent carries on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::{RoundData, WorkerReport, appended, condition, last_condition, status_patch};
use crate::api::{Dataset, IncrementalLearningJob, JobCondition, Model, Resources};
use crate::learn::trigger::{CheckSchedule, ClockTime};
use crate::learn::{Collected, LocalJob};
use crate::plugin::{PluginStore, Runtime};

/// One job the agent decides for.
struct Tracked {
    job: LocalJob,
    check: CheckSchedule,
    /// The sample count last written to the Dataset's status.
    reported_samples: Option<u64>,
    /// A move decided but not yet written to the job's status (the API server refused
    /// it): sent again before anything else, as the decision cannot be taken twice.
    unsent: Option<JobCondition>,
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
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Looks at every job whose dataset is on this node, forever, every `tick`.
    pub async fn run(mut self, tick: Duration) -> anyhow::Result<()> {
        self.api::<IncrementalLearningJob>()
            .list(&ListParams::default().limit(1))
            .await
            .map_err(|e| anyhow::anyhow!("cannot list IncrementalLearningJobs: {e}; install the CRDs and deploy/rbac.yaml"))?;
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(node = %self.node, "{e:#}");
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// One look at every job of this node.
    pub async fn pass(&mut self) -> anyhow::Result<()> {
        let params = ListParams::default();
        let jobs = self
            .api::<IncrementalLearningJob>()
            .list(&params)
            .await?
            .items;
        let datasets = self.api::<Dataset>().list(&params).await?.items;
        let models = self.api::<Model>().list(&params).await?.items;
        let mut seen = Vec::new();
        for job in jobs {
            let namespace = job.namespace().unwrap_or_default();
            let in_namespace = |ns: Option<String>| ns.unwrap_or_default() == namespace;
            let Some(dataset) = datasets
                .iter()
                .find(|d| d.name_any() == job.spec.dataset.name && in_namespace(d.namespace()))
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
                .unwrap_or_else(|| format!("{namespace}/{}", job.name_any()));
            seen.push(uid.clone());
            let result = self.look(&uid, &job, dataset, &models).await;
            if let Err(e) = result {
                tracing::warn!(job = %job.name_any(), "{e:#}");
            }
        }
        self.jobs.retain(|uid, _| seen.contains(uid));
        Ok(())
    }

    async fn look(
        &mut self,
        uid: &str,
        job: &IncrementalLearningJob,
        dataset: &Dataset,
        models: &[Model],
    ) -> anyhow::Result<()> {
        if !self.jobs.contains_key(uid) {
            let namespace = job.namespace();
            let resources = Resources {
                datasets: vec![dataset.clone()],
                models: models
                    .iter()
                    .filter(|m| m.namespace() == namespace)
                    .cloned()
                    .collect(),
                jobs: vec![job.clone()],
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
                },
            );
        }
        let tracked = self.jobs.get_mut(uid).expect("inserted above");
        let next = match tracked.unsent.take() {
            Some(unsent) => Some(unsent),
            None => {
                let due = tracked.check.due(Instant::now());
                step(&mut tracked.job, job, due, ClockTime::now())?
            }
        };
        let namespace = job.namespace().unwrap_or_default();
        if let Some(next) = next {
            let jobs: Api<IncrementalLearningJob> =
                Api::namespaced(self.client.clone(), &namespace);
            tracing::info!(job = %job.name_any(), "{} {}: {}", next.stage, next.kind, next.message.as_deref().unwrap_or_default());
            let patch = Patch::Merge(status_patch(&appended(job, next.clone())));
            if let Err(e) = jobs
                .patch_status(&job.name_any(), &PatchParams::default(), &patch)
                .await
            {
                tracked.unsent = Some(next);
                return Err(e.into());
            }
        }
        let (pending, used) = tracked.job.state().sample_counts()?;
        let samples = pending + used;
        if tracked.reported_samples != Some(samples) {
            let datasets: Api<Dataset> = Api::namespaced(self.client.clone(), &namespace);
            let status = serde_json::json!({ "status": {
                "numberOfSamples": samples,
                "updateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
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
    match (last.stage.as_str(), last.kind.as_str()) {
        ("Eval", "Completed") => {
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
                    "Eval",
                    "Failed",
                    "BadReport",
                    format!(
                        "round {}: the eval worker did not report two models' metrics (the new and the deployed): run `sedna worker eval` in the eval template",
                        data.round
                    ),
                    Some(&data),
                )));
            };
            let decision =
                job.decide(data.round, &new.to_metrics(), &deployed.to_metrics(), now)?;
            let reasons = decision.reasons.join("; ");
            Ok(Some(if decision.fire {
                condition(
                    "Deploy",
                    "Ready",
                    "Deploy",
                    format!("round {}: deploying: {reasons}", data.round),
                    Some(&data),
                )
            } else {
                condition(
                    "Deploy",
                    "Completed",
                    "NotDeployed",
                    format!("round {}: not deployed: {reasons}", data.round),
                    Some(&data),
                )
            }))
        }
        ("Train" | "Eval", "Failed") if check_due => match (data, in_progress) {
            (Some(data), Some(round)) if data.round == round => {
                let data = RoundData {
                    report: None,
                    ..data
                };
                let message = format!("round {round}: trying the {} stage again", last.stage);
                Ok(Some(condition(
                    &last.stage,
                    "Ready",
                    "Retry",
                    message,
                    Some(&data),
                )))
            }
            _ => start(job, now),
        },
        ("Train", "Waiting") | ("Deploy", "Completed" | "Failed") if check_due => start(job, now),
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
        train_dataset_url: files.train_index.display().to_string(),
        test_dataset_url: files.test_index.display().to_string(),
        base_model_url: files.base_model.display().to_string(),
        model_url: files.model.display().to_string(),
        report: None,
    };
    Ok(condition(
        "Train",
        "Ready",
        "TriggerFired",
        message,
        Some(&data),
    ))
}
