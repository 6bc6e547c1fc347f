//! `sedna worker train|eval|infer`: what a job's Pods run, set up by the env the
//! controller gives them ([`super::env`]). Train and eval write their [`WorkerReport`]
//! to the Pod's termination message, where the controller reads it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::env::{CommonEnv, EvalEnv, InferEnv, REPORT_PATH, TrainEnv};
use super::{ModelMetrics, WorkerReport};
use crate::learn::estimator::{estimator_source, evaluate, train_to};
use crate::learn::{DeployedModel, OutputLayout, ServingPlan, Staging};
use crate::plugin::{Param, PluginStore, Runtime, Source, params};
use crate::spec::PluginRef;
use crate::storage::{CACHE_BYTES, Cache, Location, Storage};

/// Where a worker's report goes unless [`REPORT_PATH`] says otherwise: the file
/// Kubernetes makes the container's termination message from.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// What the workers share: the runtime, the plugin store, and who this worker is with
/// the estimator's parameters.
pub struct Workers<'a> {
    pub runtime: &'a Runtime,
    pub store: &'a PluginStore,
    pub common: CommonEnv,
    pub params: Vec<Param>,
}

impl Workers<'_> {
    pub fn new<'a>(runtime: &'a Runtime, store: &'a PluginStore, common: CommonEnv) -> Workers<'a> {
        Workers {
            runtime,
            store,
            params: params(&common.parameters),
            common,
        }
    }

    fn estimator(&self) -> anyhow::Result<Source> {
        estimator_source(self.store, &self.params).context("the template's env `estimator`")
    }

    /// What a stage needs, fetched into the data directory first (Sedna's storage
    /// initializer).
    fn staging(&self) -> anyhow::Result<Staging> {
        Staging::new(&crate::files::default_home().join("storage"))
    }

    /// Fine-tunes the base model on the training index and saves (or publishes) the
    /// model.
    pub fn train(&self, env: &TrainEnv) -> anyhow::Result<WorkerReport> {
        let staging = self.staging()?;
        let base = staging.model(&env.base_model, "BASE_MODEL_URL")?;
        let samples = staging.index(&env.train_dataset, "TRAIN_DATASET_URL")?;
        let output = staging.output(&env.model, "MODEL_URL")?;
        let metrics = train_to(
            self.runtime,
            &self.estimator()?,
            &self.params,
            &base,
            &samples,
            None,
            &output,
            None,
        )
        .context("MODEL_URL")?;
        staging.publish(&output, &env.model, "MODEL_URL")?;
        Ok(WorkerReport {
            samples: samples.len(),
            models: vec![ModelMetrics::new(&env.model, &metrics)],
        })
    }

    /// Evaluates each model on the test index.
    pub fn eval(&self, env: &EvalEnv) -> anyhow::Result<WorkerReport> {
        let staging = self.staging()?;
        let samples = staging.index(&env.test_dataset, "TEST_DATASET_URL")?;
        let source = self.estimator()?;
        let mut models = Vec::new();
        for url in &env.models {
            let model = staging.model(url, "MODEL_URLS")?;
            let metrics = evaluate(self.runtime, &source, &self.params, &model, &samples)
                .with_context(|| format!("MODEL_URLS: {url}"))?;
            models.push(ModelMetrics::new(url, &metrics));
        }
        Ok(WorkerReport {
            samples: samples.len(),
            models,
        })
    }

    /// Serves the model on the deploy template's `video_url` until the process ends; with
    /// hot update, swaps to `MODEL_URL` when it changes (a model in object storage only
    /// once fetched whole and verified against its manifest).
    pub fn infer(&self, env: &InferEnv) -> anyhow::Result<()> {
        let layout = OutputLayout::of(&env.output_dir, &crate::files::default_home())
            .context("OUTPUT_DIR")?;
        std::fs::create_dir_all(layout.output())
            .with_context(|| format!("OUTPUT_DIR: cannot create {}", env.output_dir))?;
        let storage = Arc::new(Storage::from_env()?);
        let cache = Arc::new(Cache::new(layout.cache(), CACHE_BYTES));
        let location = Location::parse(&env.model).context("MODEL_URL")?;
        // Watched before it is looked for: a model that is not there yet counts as a change
        // when it appears.
        let mut deployed = DeployedModel::new(location.clone(), storage.clone(), cache.clone());
        let model = match cache.fetch_or_cached(&storage, &location) {
            Ok(file) if file.is_file() => file,
            found => match &env.base_model {
                Some(base) => {
                    let base = Location::parse(base).context("BASE_MODEL_URL")?;
                    cache
                        .fetch_or_cached(&storage, &base)
                        .context("BASE_MODEL_URL")?
                }
                None => found.context("MODEL_URL")?,
            },
        };
        let mining = PluginRef {
            name: env.hem_name.clone(),
            parameters: env.hem_parameters.clone(),
        };
        let Some(serving) = (ServingPlan {
            job: &self.common.job_name,
            deploy_params: &self.params,
            mining: &mining,
            estimator: &self.estimator()?,
            model: &model,
            layout: &layout,
            storage: &storage,
        })
        .open(self.runtime, self.store)?
        else {
            anyhow::bail!(
                "the deploy template's env has no usable `video_url`: name the video file or image folder to run on"
            );
        };
        let worker = serving.worker.clone();
        let source = serving.source.expect("a new worker has its source");
        tracing::info!("serving {} on {}", model.display(), source.describe());
        std::thread::spawn(move || source.feed_forever(&*worker));
        loop {
            std::thread::sleep(Duration::from_secs(env.poll_period_seconds));
            if !env.hot_update {
                continue;
            }
            match deployed.changed() {
                Ok(None) => {}
                Ok(Some(file)) => match serving.worker.swap_model(&file, true) {
                    Ok(()) => tracing::info!("now serving {location}"),
                    Err(e) => {
                        tracing::error!("{location} changed but the worker kept its model: {e}")
                    }
                },
                Err(e) => tracing::warn!("{e}: the worker keeps its model"),
            }
        }
    }
}

/// Prints the report and writes it where the Pod's termination message comes from.
pub fn report(report: &WorkerReport) -> anyhow::Result<()> {
    let json = serde_json::to_string(report)?;
    println!("{json}");
    let path = std::env::var(REPORT_PATH).unwrap_or_else(|_| TERMINATION_LOG.into());
    if json.len() > 4096 {
        tracing::warn!(
            "the report is {} bytes; Kubernetes keeps 4096 of a termination message",
            json.len()
        );
    }
    if let Err(e) = std::fs::write(&path, &json) {
        // Outside a Pod there is no termination log; the report is on stdout.
        tracing::info!("report not written to {path}: {e}");
    }
    Ok(())
}
