//! `sedna run` and `sedna status`: incremental-learning jobs in this process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use kube::ResourceExt as _;

use super::Context;
use super::progress::RoundProgress;
use super::remote::{HostArgs, connect};
use crate::learn::setup::pick;
use crate::learn::{self, Checked, JobStatus, LocalJob, Runs};
use crate::plugin::check_name;
use crate::spec;

#[derive(Args)]
pub struct Run {
    /// YAML files (or directories of them) holding the jobs' Dataset, Model and
    /// IncrementalLearningJob resources: every job they hold runs, each with its own
    /// state, worker and slots.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Run only this job of those the files hold.
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
    /// Opens every job the files hold (or `--job`), serves the API over them, and runs
    /// each on a thread of its own. A job that cannot start, or fails, is reported and
    /// the others run on; with none left to start, the errors are the command's.
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let (resources, errors) = spec::load_each(&self.files);
        let mut failed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let names: Vec<String> = match &self.job {
            Some(name) => vec![name.clone()],
            None => resources.jobs.iter().map(|j| j.name_any()).collect(),
        };
        if names.is_empty() && failed.is_empty() {
            bail!("the files hold no IncrementalLearningJob");
        }
        tracing::info!(
            "local mode: container images, node names, volumes and resources are not used"
        );
        // Logs which backend runs the models (on tract, how to get the faster one) before
        // anything loads.
        crate::media::backend().map_err(|why| anyhow::anyhow!("no ONNX backend: {why}"))?;
        let runtime = context.runtime()?;
        let store = context.store()?;
        let mut jobs = Vec::new();
        for name in &names {
            match LocalJob::open(&resources, Some(name), &runtime, &store) {
                Ok(job) => jobs.push(job),
                Err(e) => failed.push(format!("job {name}: {e:#}")),
            }
        }
        if jobs.is_empty() {
            bail!("{}", failed.join("\n"));
        }
        for why in &failed {
            tracing::error!("not running: {why}");
        }
        #[cfg(feature = "server")]
        self.serve.start(
            context,
            &runtime,
            jobs.iter().map(LocalJob::handle).collect(),
        )?;
        let runs = if self.once { Runs::Once } else { Runs::Forever };
        let several = jobs.len() > 1;
        let outcomes: Vec<(String, anyhow::Result<()>)> = std::thread::scope(|scope| {
            let running: Vec<_> = jobs
                .into_iter()
                .map(|mut job| {
                    let name = job.name().to_string();
                    let thread = std::thread::Builder::new()
                        .name(format!("job {name}"))
                        .spawn_scoped(scope, move || run_job(&mut job, runs, several));
                    (name, thread)
                })
                .collect();
            running
                .into_iter()
                .map(|(name, thread)| {
                    let outcome = match thread {
                        Ok(thread) => thread
                            .join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("its thread panicked"))),
                        Err(e) => Err(anyhow::anyhow!("cannot start its thread: {e}")),
                    };
                    (name, outcome)
                })
                .collect()
        });
        for (name, outcome) in outcomes {
            if let Err(e) = outcome {
                tracing::error!(job = name, "{e:#}");
                failed.push(format!("job {name}: {e:#}"));
            }
        }
        match failed.as_slice() {
            [] => Ok(ExitCode::SUCCESS),
            [one] if !several => bail!("{one}"),
            _ => bail!("{}", failed.join("\n")),
        }
    }
}

/// Runs one job: its checks, and the rounds they start. With several jobs in the
/// process, what it prints names the job and no progress bar is drawn.
fn run_job(job: &mut LocalJob, runs: Runs, several: bool) -> anyhow::Result<()> {
    tracing::info!(
        job = job.name(),
        "running; checking every {:?}, state in {}",
        job.period(),
        job.state().path().display()
    );
    let progress = (!several).then(|| RoundProgress::attach(job));
    let name = job.name().to_string();
    let prefix = if several {
        format!("{name}: ")
    } else {
        String::new()
    };
    learn::run(job, runs, |checked| {
        if let Some(progress) = &progress {
            progress.done();
        }
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
                    "{prefix}round {}: {outcome} ({})",
                    report.round,
                    report.reasons.join("; ")
                );
            }
            Err(_) => {}
        }
    })
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
