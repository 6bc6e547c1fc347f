//! Progress on a terminal: a spinner naming the stage a round is in and how long it has
//! run. indicatif hides it when stderr is not a terminal, so logs and CI output stay clean.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::learn::LocalJob;

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
