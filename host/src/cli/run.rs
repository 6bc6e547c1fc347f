//! `sedna run` and `sedna status`: an incremental-learning job in this process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::api;
use crate::learn::state::JobState;
use crate::learn::trigger::ClockTime;
use crate::learn::{Checked, LocalJob};

/// How often the inference worker looks for new images.
const FEED_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

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
}

impl Run {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let resources = api::load(&self.files)?;
        tracing::info!(
            "local mode: container images, node names, volumes and resources are not used"
        );
        let mut job = LocalJob::open(
            &resources,
            self.job.as_deref(),
            &context.runtime()?,
            &context.store()?,
        )?;
        tracing::info!(
            job = job.name(),
            "running; checking every {:?}, state in {}",
            job.period(),
            job.state().path().display()
        );
        let feed = job.take_feed();
        if let Some((worker, mut source)) = feed {
            tracing::info!(
                job = job.name(),
                "inference on the images in {}",
                source.dir().display()
            );
            if self.once {
                source.feed(&worker)?;
            } else {
                std::thread::spawn(move || {
                    loop {
                        if let Err(e) = source.feed(&worker) {
                            tracing::warn!("cannot read {}: {e}", source.dir().display());
                        }
                        std::thread::sleep(FEED_PERIOD);
                    }
                });
            }
        }
        loop {
            match job.check(ClockTime::now()) {
                Ok(Checked::Waiting { pending, decision }) => tracing::info!(
                    job = job.name(),
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
                // A failed check is recorded in the job's status; the next one retries.
                Err(e) if !self.once => tracing::error!(job = job.name(), "{e:#}"),
                Err(e) => return Err(e),
            }
            if self.once {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(job.period());
        }
    }
}

#[derive(Args)]
pub struct Status {
    /// The YAML files the job was started with.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long)]
    job: Option<String>,
}

impl Status {
    pub fn run(self, _context: &Context) -> anyhow::Result<ExitCode> {
        let resources = api::load(&self.files)?;
        let job = match (&self.job, resources.jobs.as_slice()) {
            (Some(name), jobs) => jobs.iter().find(|j| &j.metadata.name == name),
            (None, [job]) => Some(job),
            _ => None,
        }
        .ok_or_else(|| {
            anyhow::anyhow!(
                "name the job with --job (the files hold {})",
                resources.jobs.len()
            )
        })?;
        let path = PathBuf::from(&job.spec.output_dir).join("state.db");
        if !path.is_file() {
            anyhow::bail!(
                "job {} has not run yet (no {})",
                job.metadata.name,
                path.display()
            );
        }
        let state = JobState::open(&path)?;
        let (pending, used) = state.sample_counts()?;
        println!("job:       {}", job.metadata.name);
        println!("round:     {}", state.round()?);
        if let Some((round, stage)) = state.in_progress()? {
            println!("running:   round {round}, {}", stage.name());
        }
        println!("samples:   {pending} waiting, {used} used in rounds");
        match state.deployed()? {
            Some(model) => println!("deployed:  {}", model.display()),
            None => println!("deployed:  the initial model"),
        }
        let round = state.round()?;
        for model in ["new", "deployed"] {
            for metric in state.metrics(round, model)? {
                println!(
                    "metric:    round {round} {model} {} = {:?}",
                    metric.name, metric.values
                );
            }
        }
        println!("conditions:");
        for c in state.conditions()?.iter().rev().take(10).rev() {
            println!(
                "  {} round {} {} {}: {}",
                c.at, c.round, c.stage, c.kind, c.message
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
