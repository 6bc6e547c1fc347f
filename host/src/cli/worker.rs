//! `sedna worker train|eval|infer`: the roles a job's Pods run on Kubernetes, set up by
//! the env variables `sedna controller` gives them (Sedna's names). Train and eval write
//! their report ([`WorkerReport`]) to the Pod's termination message, where the
//! controller reads it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;

use super::Context;
use crate::api::{KeyValue, PluginRef};
use crate::cluster::pods::PARAMETERS_ENV;
use crate::cluster::{ModelMetrics, WorkerReport};
use crate::learn::ModelWatch;
use crate::learn::dataset::{DatasetMonitor, Format, Sample};
use crate::learn::job::{self, ROUND_DEADLINE, estimator_on, estimator_source, params};
use crate::plugin::{Param, Source};

/// Where a worker's report goes unless `SEDNA_REPORT_PATH` says otherwise: the file
/// Kubernetes makes the container's termination message from.
const TERMINATION_LOG: &str = "/dev/termination-log";

#[derive(Subcommand)]
pub enum WorkerCommand {
    /// Fine-tune BASE_MODEL_URL on TRAIN_DATASET_URL and save the model to MODEL_URL.
    Train,
    /// Evaluate each model of MODEL_URLS (`;`-separated) on TEST_DATASET_URL.
    Eval,
    /// Serve MODEL_URL (BASE_MODEL_URL until it exists) on the deploy template's
    /// `video_url`, mine hard examples with HEM_NAME, and with MODEL_HOT_UPDATE=true swap
    /// to MODEL_URL when it changes (checked every MODEL_POLL_PERIOD_SECONDS).
    Infer,
}

impl WorkerCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let params = parameters()?;
        match self {
            WorkerCommand::Train => train(context, &params),
            WorkerCommand::Eval => eval(context, &params),
            WorkerCommand::Infer => infer(context, &params),
        }?;
        Ok(ExitCode::SUCCESS)
    }
}

/// An env variable the controller sets.
fn env(key: &str) -> anyhow::Result<String> {
    std::env::var(key).map_err(|_| {
        anyhow::anyhow!(
            "the env variable {key} is not set: `sedna controller` sets it in the Pods it makes; set it to run this worker by hand"
        )
    })
}

/// The estimator's parameters: `SEDNA_PARAMETERS` (the template's env entries), else,
/// as Sedna's workers take them, every env variable with a lower-case name.
fn parameters() -> anyhow::Result<Vec<Param>> {
    if let Ok(json) = std::env::var(PARAMETERS_ENV) {
        let entries: Vec<KeyValue> = serde_json::from_str(&json).with_context(|| {
            format!("the env variable {PARAMETERS_ENV} is not a JSON list of {{\"key\", \"value\"}}: {json}")
        })?;
        return Ok(params(&entries));
    }
    Ok(std::env::vars()
        .filter(|(k, _)| !k.chars().any(|c| c.is_ascii_uppercase()))
        .map(|(key, value)| Param { key, value })
        .collect())
}

fn estimator(context: &Context, params: &[Param]) -> anyhow::Result<Source> {
    estimator_source(&context.store()?, params).context("the template's env `estimator`")
}

/// Every sample of a `txt` index; lines that are not samples are reported, not fatal.
fn samples(index: &str, key: &str) -> anyhow::Result<Arc<[Sample]>> {
    let read = DatasetMonitor::new(index, Format::Txt)
        .check()
        .with_context(|| format!("{key}: cannot read {index}"))?;
    for rejected in read.rejected.iter().take(10) {
        tracing::warn!("{index}:{}: {}", rejected.line, rejected.reason);
    }
    if read.samples.is_empty() {
        anyhow::bail!("{key}: {index} holds no samples");
    }
    Ok(read.samples.into())
}

fn train(context: &Context, params: &[Param]) -> anyhow::Result<()> {
    let base = env("BASE_MODEL_URL")?;
    let index = env("TRAIN_DATASET_URL")?;
    let output = PathBuf::from(env("MODEL_URL")?);
    let (Some(dir), Some(file)) = (output.parent(), output.file_name()) else {
        anyhow::bail!(
            "MODEL_URL {}: give the path of the model file to write",
            output.display()
        );
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("MODEL_URL: cannot create {}", dir.display()))?;
    let samples = samples(&index, "TRAIN_DATASET_URL")?;
    let started = Instant::now();
    let estimator = estimator_on(
        &context.runtime()?,
        &estimator(context, params)?,
        params,
        Path::new(&base),
        dir,
        ROUND_DEADLINE,
    )?;
    let metrics = estimator.train(&samples, None)?;
    estimator.save(&format!("{}/{}", job::GUEST_OUTPUT, file.to_string_lossy()))?;
    tracing::info!(
        "trained on {} samples in {:.1?}: {}",
        samples.len(),
        started.elapsed(),
        output.display()
    );
    report(&WorkerReport {
        samples: samples.len(),
        models: vec![ModelMetrics::new(&output.display().to_string(), &metrics)],
    })
}

fn eval(context: &Context, params: &[Param]) -> anyhow::Result<()> {
    let urls = env("MODEL_URLS")?;
    let index = env("TEST_DATASET_URL")?;
    let samples = samples(&index, "TEST_DATASET_URL")?;
    let runtime = context.runtime()?;
    let source = estimator(context, params)?;
    let mut models = Vec::new();
    for url in urls
        .split([';', ','])
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        let model = Path::new(url);
        let scratch = tempfile::tempdir()?;
        let metrics = estimator_on(
            &runtime,
            &source,
            params,
            model,
            scratch.path(),
            ROUND_DEADLINE,
        )
        .and_then(|e| Ok(e.evaluate(&samples)?))
        .with_context(|| format!("MODEL_URLS: {url}"))?;
        models.push(ModelMetrics::new(url, &metrics));
    }
    if models.is_empty() {
        anyhow::bail!("MODEL_URLS is empty: give the models to evaluate, separated by `;`");
    }
    report(&WorkerReport {
        samples: samples.len(),
        models,
    })
}

/// Prints the report and writes it where the Pod's termination message comes from.
fn report(report: &WorkerReport) -> anyhow::Result<()> {
    let json = serde_json::to_string(report)?;
    println!("{json}");
    let path = std::env::var("SEDNA_REPORT_PATH").unwrap_or_else(|_| TERMINATION_LOG.into());
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

/// `HEM_PARAMETERS`: a JSON object of strings (what the controller writes) or Sedna's
/// list of `{key, value}`.
fn hem_parameters(json: &str) -> anyhow::Result<Vec<KeyValue>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(list) = serde_json::from_str::<Vec<KeyValue>>(json) {
        return Ok(list);
    }
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).with_context(|| {
        format!("HEM_PARAMETERS is neither a JSON object nor a list of {{\"key\", \"value\"}}: {json}")
    })?;
    Ok(map
        .into_iter()
        .map(|(key, value)| KeyValue {
            key,
            value: match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            },
        })
        .collect())
}

fn infer(context: &Context, params: &[Param]) -> anyhow::Result<()> {
    let deployed = PathBuf::from(env("MODEL_URL")?);
    // Watched before it is looked for: a model that is not there yet counts as a change
    // when it appears.
    let mut watch = ModelWatch::new(&deployed);
    let base = std::env::var("BASE_MODEL_URL").map(PathBuf::from).ok();
    let model = match base {
        Some(base) if !deployed.exists() => base,
        _ => deployed.clone(),
    };
    let mining = PluginRef {
        name: env("HEM_NAME")?,
        parameters: hem_parameters(&std::env::var("HEM_PARAMETERS").unwrap_or_default())?,
    };
    let hot = std::env::var("MODEL_HOT_UPDATE").is_ok_and(|v| v.trim() == "true");
    let poll = std::env::var("MODEL_POLL_PERIOD_SECONDS")
        .ok()
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .with_context(|| format!("MODEL_POLL_PERIOD_SECONDS is {v:?}: give whole seconds"))
        })
        .transpose()?
        .unwrap_or(60)
        .max(1);
    let output = PathBuf::from(env("OUTPUT_DIR")?);
    std::fs::create_dir_all(&output)
        .with_context(|| format!("OUTPUT_DIR: cannot create {}", output.display()))?;
    let name = std::env::var("JOB_NAME").unwrap_or_else(|_| "job".into());
    let runtime = context.runtime()?;
    let Some(inference) = job::inference(
        &name,
        &runtime,
        params,
        &mining,
        &estimator(context, params)?,
        &model,
        &output,
        &context.store()?,
    )?
    else {
        anyhow::bail!(
            "the deploy template's env has no usable `video_url`: name the video file or image folder to run on"
        );
    };
    let worker = inference.worker.clone();
    let source = inference.source.expect("a new inference has its source");
    tracing::info!("serving {} on {}", model.display(), source.describe());
    std::thread::spawn(move || source.feed_forever(&worker));
    loop {
        std::thread::sleep(Duration::from_secs(poll));
        if hot && watch.changed() {
            match inference.worker.swap_model(&deployed, true) {
                Ok(()) => tracing::info!("now serving {}", deployed.display()),
                Err(e) => tracing::error!(
                    "{} changed but the worker kept its model: {e}",
                    deployed.display()
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hem_parameters_read_both_shapes() {
        let expected = vec![KeyValue {
            key: "threshold_img".into(),
            value: "0.9".into(),
        }];
        assert_eq!(
            hem_parameters(r#"{"threshold_img":"0.9"}"#).unwrap(),
            expected
        );
        assert_eq!(
            hem_parameters(r#"[{"key":"threshold_img","value":"0.9"}]"#).unwrap(),
            expected
        );
        assert_eq!(hem_parameters(" ").unwrap(), vec![]);
        let error = hem_parameters("threshold=0.9").unwrap_err().to_string();
        assert!(error.contains("HEM_PARAMETERS"), "{error}");
    }
}
