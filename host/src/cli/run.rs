//! `sedna run` and `sedna status`: an incremental-learning job in this process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use kube::ResourceExt;

use super::Context;
use super::progress::RoundProgress;
use super::remote::{HostArgs, Remote};
use crate::api;
use crate::learn::trigger::{CheckSchedule, ClockTime};
use crate::learn::{Checked, JobStatus, LocalJob};
use crate::plugin::check_name;
use crate::server::{DEFAULT_LISTEN, DEFAULT_MAX_UPLOAD, Service, Token};

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
    /// Serve the HTTP API (plugin upload and binding, status, /metrics) on ADDR; without
    /// ADDR on 127.0.0.1:9301, this machine only.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_LISTEN)]
    listen: Option<std::net::SocketAddr>,
    /// The API's token, for calls that change the host; by default one made at the first
    /// start and kept in the data directory (mode 0600).
    #[arg(long, value_name = "FILE", requires = "listen")]
    token_file: Option<PathBuf>,
    /// The largest component the API accepts, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_UPLOAD, requires = "listen")]
    max_upload: usize,
}

impl Run {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let resources = api::load(&self.files)?;
        tracing::info!(
            "local mode: container images, node names, volumes and resources are not used"
        );
        let runtime = context.runtime()?;
        let mut job = LocalJob::open(&resources, self.job.as_deref(), &runtime, &context.store()?)?;
        if let Some(addr) = self.listen {
            let token = match &self.token_file {
                Some(file) => Token::read(file)?,
                None => {
                    let file = context.home.join("token");
                    let (token, made) = Token::read_or_create(&file)?;
                    if made {
                        println!(
                            "API token (printed once; kept in {}, mode 0600): {}",
                            file.display(),
                            token.as_str()
                        );
                    }
                    token
                }
            };
            let service =
                Service::new(runtime.clone(), context.store()?, token, vec![job.handle()])
                    .max_upload(self.max_upload);
            let bound = service.start(addr)?;
            println!("serving the API on http://{bound}");
        }
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
                std::thread::spawn(move || source.feed_forever(&worker));
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
                let remote =
                    Remote::connect(host, self.remote.token_file.as_deref(), &context.home)?;
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
                let resources = api::load(&self.files)?;
                let job = match (&self.job, resources.jobs.as_slice()) {
                    (Some(name), jobs) => jobs.iter().find(|j| &j.name_any() == name),
                    (None, [job]) => Some(job),
                    _ => None,
                }
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "name the job with --job (the files hold {})",
                        resources.jobs.len()
                    )
                })?;
                JobStatus::read(job)?
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
