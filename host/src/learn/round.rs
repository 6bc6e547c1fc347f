//! A job's checks and rounds. Each check reads what was appended to the data index,
//! counts it towards the train trigger and, when the trigger fires, starts a round. A
//! round's stages are one function each: train (fine-tune the serving model on the new
//! training samples), eval (the new and the serving model on the same evaluation set),
//! deploy (the deploy trigger on the new metrics and their `_delta` against the serving
//! model; when it holds, the new model becomes the deploy model and the worker swaps to
//! it). Each stage records its end in the state, so a round resumes at the stage it was in.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use super::dataset::Check;
use super::estimator::{GUEST_OUTPUT, ROUND_DEADLINE, estimator_on};
use super::job::LocalJob;
use super::layout::OutputLayout;
use super::split::{EVAL_SETS_KEPT, EvalSets, replay, split};
use super::state::{ModelRole, Split};
use super::trigger::Decision;
use crate::files::write_atomically;
use crate::media::{Label, Sample};
use crate::plugin::{Estimator, Metric, Param, Plugin, deltas, metric_map, setting};
use crate::spec::{ClockTime, ConditionType, Stage};
use crate::storage::Location;

/// What one check did.
#[derive(Debug)]
pub enum Checked {
    /// The train trigger did not fire: the samples waiting and why.
    Waiting { pending: u64, decision: Decision },
    /// A round ran to its end.
    Round(RoundReport),
}

/// What reading the data index and the train trigger did.
#[derive(Debug)]
pub enum Collected {
    /// The train trigger did not fire: the samples waiting and why.
    Waiting { pending: u64, decision: Decision },
    /// The trigger fired and round `round` started: its samples are split and written.
    Started { round: u64, decision: Decision },
}

/// One finished round.
#[derive(Debug)]
pub struct RoundReport {
    pub round: u64,
    pub loss: Vec<f64>,
    pub new: Vec<Metric>,
    pub deployed_before: Vec<Metric>,
    pub deployed: bool,
    pub reasons: Vec<String>,
}

impl LocalJob {
    /// One check at local time `now`: finishes an interrupted round, reads new samples,
    /// evaluates the train trigger and runs a round when it fires.
    pub fn check(&mut self, now: ClockTime) -> anyhow::Result<Checked> {
        // After a full disk, nothing runs until the space set aside can be set aside again:
        // a check is then a cheap failure, not a round that fails again.
        if let Err(e) = self.reserve.hold() {
            let dir = self.layout.output().display();
            if e.kind() == std::io::ErrorKind::StorageFull {
                anyhow::bail!(
                    "the disk of {dir} is still full: free space there; the job goes on by itself once there is"
                );
            }
            tracing::warn!(job = %self.name, "cannot set space aside in {dir}: {e}");
        }
        let checked = self.check_with_room(now);
        if let Err(e) = &checked
            && crate::files::is_disk_full(e)
            && self.reserve.release()
        {
            // Recorded once per full disk, in the room the reserve leaves (a round's
            // failure was recorded by the round).
            let round = self.state.round()?;
            if self.state.in_progress()?.is_none() {
                self.state.record_condition(
                    round + 1,
                    Stage::Train,
                    ConditionType::Failed,
                    &format!("{e:#}: free space in {}", self.layout.output().display()),
                )?;
            }
        }
        checked
    }

    fn check_with_room(&mut self, now: ClockTime) -> anyhow::Result<Checked> {
        if let Some((round, stage)) = self.state.in_progress()? {
            tracing::info!(job = %self.name, round, "resuming round {round} at {stage}");
            return Ok(Checked::Round(self.run_round(round, stage, now)?));
        }
        match self.collect(now)? {
            Collected::Waiting { pending, decision } => Ok(Checked::Waiting { pending, decision }),
            Collected::Started { round, decision } => {
                self.state.record_condition(
                    round,
                    Stage::Train,
                    ConditionType::Running,
                    &decision.reasons.join("; "),
                )?;
                Ok(Checked::Round(self.run_round(round, Stage::Train, now)?))
            }
        }
    }

    /// Reads what was appended to the data index and evaluates the train trigger; when
    /// it fires, starts a round: splits the new samples and writes the round's index
    /// files ([`LocalJob::round_files`]). Call it only with no round in progress.
    pub fn collect(&mut self, now: ClockTime) -> anyhow::Result<Collected> {
        let index = self.monitor.index().to_string();
        let before = self.monitor.cursor().clone();
        let read = self
            .monitor
            .check()
            .with_context(|| format!("cannot read the data index {index}"))?;
        if read.rescanned {
            tracing::warn!(job = %self.name, "the data index was truncated or replaced: read again from its start");
        }
        for rejected in &read.rejected {
            tracing::warn!(job = %self.name, "{index}:{}: {}", rejected.line, rejected.reason);
        }
        // What was read and not stored is read again next time (a full disk, say): none
        // of it is lost.
        if let Err(e) = self.store(&read) {
            self.monitor.rewind(before);
            return Err(e);
        }

        let pending = self.state.pending()?;
        let mut stats = vec![Metric {
            name: "num_of_samples".into(),
            values: vec![pending.len() as f64],
        }];
        if let Some(values) = self.hard_examples() {
            stats.push(Metric {
                name: "hard_examples".into(),
                values,
            });
        }
        let decision = self.train_trigger.evaluate(&stats, now);
        if !decision.fire {
            return Ok(Collected::Waiting {
                pending: pending.len() as u64,
                decision,
            });
        }
        let round = self.state.round()? + 1;
        let (train, eval) = split(pending, self.train_prob, round);
        // The files first: a round the state records as started always has them.
        self.write_split(round, &train, eval.clone())?;
        self.state.start_round(round, &train, &eval)?;
        Ok(Collected::Started { round, decision })
    }

    /// Keeps what a check of the index read: the samples, with the cursor after them,
    /// and a Waiting condition naming the lines that are not samples.
    fn store(&mut self, read: &Check) -> anyhow::Result<()> {
        if !read.rejected.is_empty() {
            let lines: Vec<String> = read
                .rejected
                .iter()
                .take(10)
                .map(|r| r.line.to_string())
                .collect();
            self.state.record_condition(
                self.state.round()?,
                Stage::Train,
                ConditionType::Waiting,
                &format!(
                    "{} lines of the data index are not samples (lines {})",
                    read.rejected.len(),
                    lines.join(", ")
                ),
            )?;
        }
        self.state.add_samples(&read.samples, self.monitor.cursor())
    }

    /// Runs round `round` from stage `from` to its end; a failure is counted and recorded
    /// as the failed stage's condition (the next check resumes there).
    pub(super) fn run_round(
        &mut self,
        round: u64,
        from: Stage,
        now: ClockTime,
    ) -> anyhow::Result<RoundReport> {
        let result = self.stages(round, from, now);
        match &result {
            Ok(report) => {
                self.stats.completed.inc();
                if report.deployed {
                    self.stats.deploys.inc();
                }
            }
            Err(e) => {
                self.stats.failed.inc();
                if crate::files::is_disk_full(e) {
                    self.reserve.release();
                }
                let stage = self.state.in_progress()?.map_or(Stage::Train, |(_, s)| s);
                self.state.record_condition(
                    round,
                    stage,
                    ConditionType::Failed,
                    &format!("{e:#}"),
                )?;
            }
        }
        result
    }

    fn stages(&mut self, round: u64, from: Stage, now: ClockTime) -> anyhow::Result<RoundReport> {
        let loss = match from {
            Stage::Train => self.train(round)?,
            Stage::Eval | Stage::Deploy => Vec::new(),
        };
        let (new, old) = match from {
            Stage::Train | Stage::Eval => self.eval(round)?,
            Stage::Deploy => (
                self.state.metrics(round, ModelRole::New)?,
                self.state.metrics(round, ModelRole::Deployed)?,
            ),
        };
        let decision = self.deploy(round, &new, &old, now)?;
        Ok(RoundReport {
            round,
            loss,
            new,
            deployed_before: old,
            deployed: decision.fire,
            reasons: decision.reasons,
        })
    }

    /// Fine-tunes the serving model on the round's training samples and saves the new
    /// model. Returns the loss per epoch.
    fn train(&mut self, round: u64) -> anyhow::Result<Vec<f64>> {
        self.entered(round, Stage::Train);
        let started = Instant::now();
        let new = self.state.round_samples(round, Split::Train)?;
        let fresh = new.len();
        let train: Arc<[Sample]> = self.training_set(round, new)?.into();
        // The round's own directory is all the estimator may write.
        let model = self.layout.model(round);
        let dir = model.parent().expect("a round's model is in a directory");
        std::fs::create_dir_all(dir)?;
        let estimator = self.estimator(&self.train_params, &self.base_model()?, dir)?;
        let report = background(|| estimator.train(&train, None))??;
        estimator.save(&format!("{GUEST_OUTPUT}/{}", OutputLayout::MODEL_FILE))?;
        write_json(&self.layout.train_report(round), &metric_map(&report))?;
        self.upload_output(&model)?;
        self.upload_output(&self.layout.train_report(round))?;
        let loss = report
            .iter()
            .find(|m| m.name == "loss")
            .map(|m| m.values.clone())
            .unwrap_or_default();
        self.state
            .record_metrics(round, ModelRole::Train, &report)?;
        let message = format!(
            "{fresh} new samples and {} replayed from earlier rounds, loss per epoch {loss:?}",
            train.len() - fresh
        );
        self.completed(round, Stage::Train, started, &message)?;
        Ok(loss)
    }

    /// Evaluates the new and the serving model on the round's evaluation set. Returns
    /// their metrics, the new model's first.
    fn eval(&mut self, round: u64) -> anyhow::Result<(Vec<Metric>, Vec<Metric>)> {
        self.entered(round, Stage::Eval);
        let started = Instant::now();
        let eval = self.eval_set(round, None)?;
        let earlier = self.earlier_eval_set(round)?;
        let mut measured = Vec::new();
        // Evaluating writes nothing worth keeping: a scratch directory.
        let scratch = tempfile::tempdir()?;
        for model in [self.layout.model(round), self.base_model()?] {
            let estimator = self.estimator(&self.eval_params, &model, scratch.path())?;
            let mut metrics = background(|| estimator.evaluate(&eval))??;
            if !earlier.is_empty() {
                // What the model still knows of earlier rounds: a deploy trigger on
                // `earlier_map_delta` refuses a model that forgot.
                let remembered = background(|| estimator.evaluate(&earlier))??;
                metrics.extend(remembered.into_iter().map(|m| Metric {
                    name: format!("{EARLIER}{}", m.name),
                    values: m.values,
                }));
            }
            measured.push(metrics);
        }
        let [new, old]: [Vec<Metric>; 2] = measured.try_into().expect("two models");
        let report = serde_json::json!({
            "samples": eval.len(),
            "new": metric_map(&new),
            "deployed": metric_map(&old),
        });
        write_json(&self.layout.eval_report(round), &report)?;
        self.upload_output(&self.layout.eval_report(round))?;
        self.state.record_metrics(round, ModelRole::New, &new)?;
        self.state
            .record_metrics(round, ModelRole::Deployed, &old)?;
        self.completed(
            round,
            Stage::Eval,
            started,
            &format!("{} samples", eval.len()),
        )?;
        Ok((new, old))
    }

    /// The deploy trigger, the copy to the deploy model and the worker's swap.
    fn deploy(
        &mut self,
        round: u64,
        new: &[Metric],
        old: &[Metric],
        now: ClockTime,
    ) -> anyhow::Result<Decision> {
        self.entered(round, Stage::Deploy);
        let started = Instant::now();
        let decision = self.decide(round, new, old, now)?;
        if decision.fire {
            self.swap_worker(round, "deployed", &self.layout.model(round))?;
        }
        let outcome = if decision.fire {
            "deployed"
        } else {
            "not deployed"
        };
        let message = format!("{outcome}: {}", decision.reasons.join("; "));
        self.completed(round, Stage::Deploy, started, &message)?;
        Ok(decision)
    }

    /// Ends `stage` of `round`: its time in the stats, the stage the round resumes at if
    /// the process stops now (none after Deploy: `decide` ended the round), its condition.
    fn completed(
        &mut self,
        round: u64,
        stage: Stage,
        started: Instant,
        message: &str,
    ) -> anyhow::Result<()> {
        self.stats.of(stage).observe(started.elapsed());
        let next = match stage {
            Stage::Train => Some(Stage::Eval),
            Stage::Eval => Some(Stage::Deploy),
            Stage::Deploy => None,
        };
        if let Some(next) = next {
            self.state.set_stage(Some(next))?;
        }
        self.state
            .record_condition(round, stage, ConditionType::Completed, message)
    }

    /// Ends round `round`: the deploy trigger on the new model's metrics and their
    /// `_delta` against the deployed model's; when it holds, the new model is published
    /// at the deploy model's url. Returns the deploy trigger's decision.
    pub fn decide(
        &mut self,
        round: u64,
        new: &[Metric],
        deployed: &[Metric],
        now: ClockTime,
    ) -> anyhow::Result<Decision> {
        let mut stats = new.to_vec();
        stats.extend(deltas(new, deployed));
        let decision = self.deploy_trigger.evaluate(&stats, now);
        let model = self.layout.model(round);
        if decision.fire {
            self.deployed.publish(&self.round_model(round)?)?;
        }
        let recorded = self.deployed.recorded(&model);
        self.state
            .finish_round(decision.fire.then_some(recorded.as_path()))?;
        Ok(decision)
    }

    /// The evaluation sets of the last rounds up to `round`, without duplicates; round
    /// `round`'s own is `current` when given (before the state records it).
    fn eval_set(&self, round: u64, current: Option<Vec<Sample>>) -> anyhow::Result<Arc<[Sample]>> {
        let mut sets = EvalSets::default();
        let first = round.saturating_sub(EVAL_SETS_KEPT as u64 - 1).max(1);
        for r in first..round {
            sets.add(r, self.state.round_samples(r, Split::Eval)?);
        }
        let current = match current {
            Some(samples) => samples,
            None => self.state.round_samples(round, Split::Eval)?,
        };
        sets.add(round, current);
        Ok(sets.samples().cloned().collect())
    }

    /// The evaluation sets of the rounds before `round` that [`LocalJob::eval_set`] keeps.
    fn earlier_eval_set(&self, round: u64) -> anyhow::Result<Arc<[Sample]>> {
        let mut sets = EvalSets::default();
        let first = round.saturating_sub(EVAL_SETS_KEPT as u64 - 1).max(1);
        for r in first..round {
            sets.add(r, self.state.round_samples(r, Split::Eval)?);
        }
        Ok(sets.samples().cloned().collect())
    }

    /// Round `round`'s new training samples and the earlier rounds' replayed beside them:
    /// `replay` of them (the train template's parameter; default as many as the new).
    fn training_set(&self, round: u64, mut new: Vec<Sample>) -> anyhow::Result<Vec<Sample>> {
        let count = match setting(&self.train_params, REPLAY) {
            Some(text) => text.trim().parse::<usize>().with_context(|| {
                format!("the train template's `{REPLAY}` is {text:?}: give how many earlier samples to train on again (0 for none)")
            })?,
            None => new.len(),
        };
        let mut earlier = Vec::new();
        if count > 0 {
            for r in 1..round {
                earlier.extend(self.state.round_samples(r, Split::Train)?);
            }
        }
        new.extend(replay(earlier, count, round));
        Ok(new)
    }

    /// An estimator on `model` for a round's stage, allowed to write into `writable` (as
    /// `/out`) and nowhere else: never the job's state, its logs or other rounds' files.
    fn estimator(
        &self,
        params: &[Param],
        model: &Path,
        writable: &Path,
    ) -> anyhow::Result<Plugin<Estimator>> {
        estimator_on(
            &self.runtime,
            &self.estimator.load(),
            params,
            model,
            writable,
            ROUND_DEADLINE,
        )
    }

    /// Writes round `round`'s training samples and its evaluation set (see
    /// [`RoundFiles`](super::RoundFiles)) as `txt` indexes.
    pub(super) fn write_split(
        &self,
        round: u64,
        train: &[Sample],
        eval: Vec<Sample>,
    ) -> anyhow::Result<()> {
        let (train_index, test_index) = self.layout.round_indexes(round);
        let eval = self.eval_set(round, Some(eval))?;
        let train = &self.training_set(round, train.to_vec())?;
        let objects = self.layout.objects();
        for (path, samples) in [(&train_index, &train[..]), (&test_index, &eval[..])] {
            let text: String = samples
                .iter()
                .map(|s| format!("{}\n", index_line(s, &objects)))
                .collect();
            write_atomically(path, text.as_bytes())?;
            self.upload_output(path)?;
        }
        Ok(())
    }
}

/// The train template's parameter: how many earlier training samples a round replays.
pub const REPLAY: &str = "replay";
/// The prefix of the metrics on the earlier rounds' evaluation sets.
pub const EARLIER: &str = "earlier_";

/// A sample as a Sedna `txt` index line: the image's absolute path, or its URL when it is
/// a copy (under `objects`) of an object, so that a worker on another node reads it too.
/// Runs an estimator call of a round at background priority (see
/// [`crate::threads::in_background`]): the inference worker's frames come first.
fn background<R: Send>(call: impl FnOnce() -> R + Send) -> std::io::Result<R> {
    crate::threads::in_background("sedna-round", call)
}

fn index_line(sample: &Sample, objects: &Path) -> String {
    let image = sample
        .image
        .strip_prefix(objects)
        .ok()
        .and_then(Location::mirrored)
        .map_or_else(|| sample.image.display().to_string(), |l| l.to_string());
    match &sample.label {
        Label::Class(class) => format!("{image} {class}"),
        Label::Boxes(boxes) => {
            let boxes: Vec<String> = boxes
                .iter()
                .map(|([x1, y1, x2, y2], c)| format!("{x1},{y1},{x2},{y2},{c}"))
                .collect();
            format!("{image} {}", boxes.join(" "))
        }
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    write_atomically(path, serde_json::to_string_pretty(value)?.as_bytes())
}
