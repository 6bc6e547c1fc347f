//! `sedna run` and `sedna status`: an incremental-learning job in this process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::Context;
use super::progress::RoundProgress;
use crate::api;
use crate::learn::job::deltas;
use crate::learn::state::JobState;
use crate::learn::trigger::{CheckSchedule, ClockTime};
use crate::learn::{Checked, LocalJob};

/// How often the run loop wakes to see whether a check or a poll is due.
const TICK: std::time::Duration = std::time::Duration::from_millis(200);

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
            tracing::info!(job = job.name(), "inference on {}", source.describe());
            if self.once {
                source.feed(&worker)?;
            } else {
                std::thread::spawn(move || {
                    loop {
                        let ran = source.feed(&worker).unwrap_or_else(|e| {
                            tracing::warn!("{e:#}");
                            0
                        });
                        std::thread::sleep(source.pause_after(ran));
                    }
                });
            }
        }
        let progress = RoundProgress::attach(&mut job);
        let mut check = CheckSchedule::new(job.period());
        let mut poll = CheckSchedule::new(job.poll_period());
        poll.due(Instant::now());
        loop {
            if !self.once
                && poll.due(Instant::now())
                && let Err(e) = job.poll_deployed_model()
            {
                tracing::error!(job = job.name(), "{e:#}");
            }
            if self.once || check.due(Instant::now()) {
                let checked = job.check(ClockTime::now());
                progress.done();
                match checked {
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
            }
            if self.once {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(TICK);
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
    /// Print JSON, for scripts.
    #[arg(long)]
    json: bool,
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
        let output = PathBuf::from(&job.spec.output_dir);
        let path = output.join("state.db");
        if !path.is_file() {
            anyhow::bail!(
                "job {} has not run yet (no {})",
                job.metadata.name,
                path.display()
            );
        }
        let state = JobState::open(&path)?;
        let (waiting, used) = state.sample_counts()?;
        let round = state.round()?;
        let metrics = |model: &str| -> anyhow::Result<serde_json::Value> {
            let metrics = state.metrics(round, model)?;
            Ok(metrics
                .iter()
                .map(|m| (m.name.clone(), serde_json::json!(m.values)))
                .collect())
        };
        let new = state.metrics(round, "new")?;
        let deployed = state.metrics(round, "deployed")?;
        let deltas: serde_json::Map<String, serde_json::Value> = deltas(&new, &deployed)
            .into_iter()
            .map(|m| (m.name, serde_json::json!(m.values)))
            .collect();
        let he_dir = job
            .spec
            .deploy_spec
            .template
            .parameters()
            .into_iter()
            .rev()
            .find(|p| p.key == "HE_SAVED_URL")
            .map_or_else(|| output.join("hard_examples"), |p| PathBuf::from(p.value));
        let hard_examples = std::fs::read_dir(&he_dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
                    .count()
            })
            .unwrap_or(0);
        let conditions: Vec<serde_json::Value> = state
            .conditions()?
            .iter()
            .rev()
            .take(CONDITIONS_SHOWN)
            .rev()
            .map(|c| {
                serde_json::json!({"at": c.at, "round": c.round, "stage": c.stage, "type": c.kind, "message": c.message})
            })
            .collect();
        let status = serde_json::json!({
            "job": job.metadata.name,
            "round": round,
            "running": state.in_progress()?.map(|(round, stage)| serde_json::json!({"round": round, "stage": stage.name()})),
            "samples": {"waiting": waiting, "used": used},
            "deployed_model": state.deployed()?,
            "metrics": {"new": metrics("new")?, "deployed": metrics("deployed")?, "delta": deltas},
            "hard_examples": hard_examples,
            "conditions": conditions,
        });
        if self.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!("job:       {}", job.metadata.name);
        println!("round:     {round}");
        if let Some((round, stage)) = state.in_progress()? {
            println!("running:   round {round}, {}", stage.name());
        }
        println!("samples:   {waiting} waiting, {used} used in rounds");
        match state.deployed()? {
            Some(model) => println!("deployed:  {}", model.display()),
            None => println!("deployed:  the initial model"),
        }
        println!("hard examples: {hard_examples} in {}", he_dir.display());
        for (model, metrics) in [("new", &new), ("deployed", &deployed)] {
            for m in metrics.iter() {
                println!(
                    "metric:    round {round} {model} {} = {:?}",
                    m.name, m.values
                );
            }
        }
        for (name, values) in &deltas {
            println!("metric:    round {round} {name} = {values}");
        }
        println!("conditions:");
        for c in state
            .conditions()?
            .iter()
            .rev()
            .take(CONDITIONS_SHOWN)
            .rev()
        {
            println!(
                "  {} round {} {} {}: {}",
                c.at, c.round, c.stage, c.kind, c.message
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Conditions `sedna status` shows, newest last.
const CONDITIONS_SHOWN: usize = 10;
