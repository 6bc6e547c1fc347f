//! `sedna worker train|eval|infer`: the roles a job's Pods run on Kubernetes
//! ([`crate::cluster::worker`]), set up by the env variables `sedna controller` gives them.

use std::process::ExitCode;

use clap::Subcommand;

use super::Context;
use crate::cluster::env::{CommonEnv, EvalEnv, InferEnv, ProcessEnv, TrainEnv};
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
    /// Reads the env first: a missing or bad variable is said before anything loads.
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let common = CommonEnv::from_env(&ProcessEnv)?;
        let role = match self {
            WorkerCommand::Train => Role::Train(TrainEnv::from_env(&ProcessEnv)?),
            WorkerCommand::Eval => Role::Eval(EvalEnv::from_env(&ProcessEnv)?),
            WorkerCommand::Infer => Role::Infer(InferEnv::from_env(&ProcessEnv)?),
        };
        let (runtime, store) = (context.runtime()?, context.store()?);
        let workers = Workers::new(&runtime, &store, common);
        match role {
            Role::Train(env) => report(&workers.train(&env)?)?,
            Role::Eval(env) => report(&workers.eval(&env)?)?,
            Role::Infer(env) => workers.infer(&env)?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A worker's role with its env, read.
enum Role {
    Train(TrainEnv),
    Eval(EvalEnv),
    Infer(InferEnv),
}
