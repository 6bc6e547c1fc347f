//! The run loop of a job in one process (`sedna run`): checks at `checkPeriodSeconds`,
//! polls the deploy model at `pollPeriodSeconds`, and feeds the inference worker on a
//! thread of its own.

use std::time::{Duration, Instant};

use super::job::LocalJob;
use super::round::Checked;
use super::trigger::CheckSchedule;
use crate::spec::ClockTime;

/// How often the run loop wakes to see whether a check or a poll is due.
const TICK: Duration = Duration::from_millis(200);

/// How long the loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// One check (a round that fires runs to its end) over one pass of the source.
    Once,
    /// Until the process ends; a failed check is logged (and recorded in the job's
    /// status) and the next one retries.
    Forever,
}

/// Runs `job`; `checked` is told the outcome of every check, failed or not. With
/// [`Runs::Once`] a failed check is the error returned.
pub fn run(
    job: &mut LocalJob,
    runs: Runs,
    mut checked: impl FnMut(&anyhow::Result<Checked>),
) -> anyhow::Result<()> {
    if let Some((worker, mut source)) = job.take_feed() {
        tracing::info!(job = job.name(), "inference on {}", source.describe());
        match runs {
            Runs::Once => {
                source.feed(&*worker)?;
            }
            Runs::Forever => {
                std::thread::spawn(move || source.feed_forever(&*worker));
            }
        }
    }
    let mut check = CheckSchedule::new(job.period());
    let mut poll = CheckSchedule::new(job.poll_period());
    poll.due(Instant::now());
    loop {
        if runs == Runs::Forever
            && poll.due(Instant::now())
            && let Err(e) = job.poll_deployed_model()
        {
            tracing::error!(job = job.name(), "{e:#}");
        }
        if runs == Runs::Once || check.due(Instant::now()) {
            let outcome = job.check(ClockTime::now());
            checked(&outcome);
            match outcome {
                Ok(_) => {}
                Err(e) if runs == Runs::Forever => tracing::error!(job = job.name(), "{e:#}"),
                Err(e) => return Err(e),
            }
        }
        if runs == Runs::Once {
            return Ok(());
        }
        std::thread::sleep(TICK);
    }
}
