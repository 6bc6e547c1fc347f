//! `sedna worker train|eval|infer`: the roles a job's Pods run on Kubernetes
//! ([`crate::cluster::worker`]), set up by the env variables `sedna controller` gives them.

use std::process::ExitCode;

use clap::Subcommand;

use super::Context;
use crate::cluster::env::{EvalEnv, InferEnv, JOB_NAME, ProcessEnv, TrainEnv, Vars as _};
use crate::cluster::worker::{Workers, report};

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
        let (runtime, store) = (context.runtime()?, context.store()?);
        let workers = Workers::new(&runtime, &store, &ProcessEnv)?;
        match self {
            WorkerCommand::Train => report(&workers.train(&TrainEnv::from_env(&ProcessEnv)?)?)?,
            WorkerCommand::Eval => report(&workers.eval(&EvalEnv::from_env(&ProcessEnv)?)?)?,
            WorkerCommand::Infer => {
                let job = ProcessEnv.var(JOB_NAME).unwrap_or_else(|| "job".into());
                workers.infer(&InferEnv::from_env(&ProcessEnv)?, &job)?
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
