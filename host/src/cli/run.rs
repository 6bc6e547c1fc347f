//! `sedna run` and `sedna status`: an incremental-learning job in this process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Context;
use super::progress::RoundProgress;
use super::remote::{HostArgs, connect};
use crate::learn::setup::pick;
use crate::learn::{self, Checked, JobStatus, LocalJob, Runs};
use crate::plugin::check_name;
use crate::spec;

#[derive(Args)]
pub struct Run {
    /// YAML files holding the job's Dataset, Model and IncrementalLearningJob resources.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The job to run, when the files hold several.
    #[arg(long)]
    job: Option<String>,
    /// Check once (running a round to its end if the trigger fires), then exit.
    #[arg(long)]
    once: bool,
    #[cfg(feature = "server")]
    #[command(flatten)]
    serve: super::serve::ServeArgs,
}

impl Run {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let resources = spec::load(&self.files)?;
        tracing::info!(
            "local mode: container images, node names, volumes and resources are not used"
        );
        // Logs which backend runs the models (on tract, how to get the faster one) before
        // anything loads.
        crate::media::backend().map_err(|why| anyhow::anyhow!("no ONNX backend: {why}"))?;
        let runtime = context.runtime()?;
        let mut job = LocalJob::open(&resources, self.job.as_deref(), &runtime, &context.store()?)?;
        #[cfg(feature = "server")]
        self.serve.start(context, &runtime, &job)?;
        tracing::info!(
            job = job.name(),
            "running; checking every {:?}, state in {}",
            job.period(),
            job.state().path().display()
        );
        let progress = RoundProgress::attach(&mut job);
        let runs = if self.once { Runs::Once } else { Runs::Forever };
        let name = job.name().to_string();
        learn::run(&mut job, runs, |checked| {
            progress.done();
            match checked {
                Ok(Checked::Waiting { pending, decision }) => tracing::info!(
                    job = name,
                    "{pending} new samples; not training: {}",
                    decision.reasons.join("; ")
                ),
                Ok(Checked::Round(report)) => {
                    let outcome = if report.deployed {
                        "deployed"
                    } else {
                        "not deployed"
                    };
                    println!(
                        "round {}: {outcome} ({})",
                        report.round,
                        report.reasons.join("; ")
                    );
                }
                Err(_) => {}
            }
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
pub struct Status {
    /// The YAML files the job was started with (not needed with --host).
    #[arg(required_unless_present = "host")]
    files: Vec<PathBuf>,
    #[arg(long)]
    job: Option<String>,
    /// Print JSON, for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: HostArgs,
}

impl Status {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let status = match &self.remote.host {
            Some(host) => {
                let remote = connect(host, &self.remote, &context.home)?;
                match &self.job {
                    Some(name) => {
                        check_name("job", name)?;
                        remote.get(&format!("/v1/jobs/{name}"))?
                    }
                    None => {
                        let mut jobs: Vec<JobStatus> = remote.get("/v1/jobs")?;
                        if jobs.len() != 1 {
                            let names: Vec<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
                            anyhow::bail!(
                                "name the job with --job (the host runs {})",
                                names.join(", ")
                            );
                        }
                        jobs.remove(0)
                    }
                }
            }
            None => {
                let resources = spec::load(&self.files)?;
                JobStatus::read(pick(&resources, self.job.as_deref())?, &context.home)?
            }
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("{status}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
