//! Progress on a terminal: a spinner naming the stage a round is in and how long it has
//! run; a line of a training's epoch, steps, loss and samples a second. indicatif hides
//! them when stderr is not a terminal, so logs and CI output stay clean.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::learn::LocalJob;
use crate::plugin::ProgressSink;
use crate::train::Progress;

pub struct RoundProgress {
    spinner: Arc<Mutex<Option<ProgressBar>>>,
}

impl RoundProgress {
    /// Shows `job`'s rounds as they enter each stage.
    pub fn attach(job: &mut LocalJob) -> Self {
        let spinner: Arc<Mutex<Option<ProgressBar>>> = Default::default();
        let shared = spinner.clone();
        let name = job.name().to_string();
        job.on_stage(move |round, stage| {
            let mut spinner = shared.lock().unwrap_or_else(|e| e.into_inner());
            let bar = spinner.get_or_insert_with(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .expect("a valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
            bar.reset_elapsed();
            bar.set_message(format!("{name}: round {round}, {}", stage.name()));
        });
        RoundProgress { spinner }
    }

    /// Clears the spinner once the check that ran the round returns.
    pub fn done(&self) {
        let taken = self
            .spinner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(bar) = taken {
            bar.finish_and_clear();
        }
    }
}

/// `sedna train`'s progress: epoch, step, loss and samples a second, as training reports.
pub struct TrainingBar {
    bar: ProgressBar,
}

impl TrainingBar {
    /// Starts the spinner (shown only when stderr is a terminal).
    pub fn start() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} training: {msg} ({elapsed})")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("loading the model");
        TrainingBar { bar }
    }

    /// What the estimator's sandbox tells of each step.
    pub fn sink(&self) -> ProgressSink {
        let bar = self.bar.clone();
        ProgressSink(Arc::new(move |p: &Progress| bar.set_message(describe(p))))
    }

    pub fn done(&self) {
        self.bar.finish_and_clear();
    }
}

/// `epoch 3/20, step 41, loss 0.4213, 18.2 samples/s`.
fn describe(p: &Progress) -> String {
    let mut parts = Vec::new();
    if let Some((epoch, epochs)) = p.epoch {
        parts.push(format!("epoch {epoch}/{epochs}"));
    }
    parts.push(format!("step {}", p.steps));
    if let Some(loss) = p.loss {
        parts.push(format!("loss {loss:.4}"));
    }
    let seconds = p.elapsed.as_secs_f64();
    if seconds > 0.0 {
        parts.push(format!("{:.1} samples/s", p.samples as f64 / seconds));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_progress_reads_as_a_line() {
        let p = Progress {
            steps: 41,
            samples: 328,
            epoch: Some((3, 20)),
            loss: Some(0.42131),
            elapsed: Duration::from_secs(16),
        };
        assert_eq!(
            describe(&p),
            "epoch 3/20, step 41, loss 0.4213, 20.5 samples/s"
        );
        assert_eq!(describe(&Progress::default()), "step 0");
    }
}
