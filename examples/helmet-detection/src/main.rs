//! Sedna's helmet-detection example on one machine. See README.md.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use helmet_detection::base::{self, Training};
use helmet_detection::{demo, lab, scene};

#[derive(Parser)]
#[command(about = "Sedna's helmet-detection example, end to end on one machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole loop: data, base model, video, the job, one round, the report.
    Demo {
        /// Where everything goes; data and the base model are kept for the next run.
        #[arg(long, default_value = "helmet-out")]
        out: PathBuf,
        /// A small, fast run (for tests): a round completes, the numbers mean little.
        #[arg(long)]
        quick: bool,
    },
    /// Generates the base training scenes and the held-out test sets of both looks,
    /// trains the detector from random weights with the `ONNX` estimator on the host's
    /// training engine (all cores), prints its metrics on both held-out sets and writes
    /// `models/base.onnx` with its record `models/base.json`. The defaults made the
    /// committed model.
    BaseModel {
        #[arg(long, default_value = "helmet-out")]
        out: PathBuf,
        /// Base training scenes.
        #[arg(long, default_value_t = Training::COMMITTED.scenes)]
        scenes: u64,
        #[arg(long, default_value_t = Training::COMMITTED.epochs)]
        epochs: u32,
        /// Seeds the detector's random weights.
        #[arg(long, default_value_t = Training::COMMITTED.seed)]
        seed: u64,
        /// An estimator parameter over the recipe's, `key=value` (repeatable).
        #[arg(long = "param", value_parser = key_value)]
        params: Vec<(String, String)>,
    },
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first thing the process does; no other thread exists yet.
    unsafe { sedna::threads::settle_thread_count() };
    match Cli::parse().command {
        Command::Demo { out, quick } => {
            let sizes = if quick {
                demo::Sizes::QUICK
            } else {
                demo::Sizes::FULL
            };
            let outcome = demo::run(&out, &sizes)?;
            let report = outcome.markdown();
            sedna::files::write_atomically(&out.join("report.md"), report.as_bytes())?;
            let html = outcome.html(&out.canonicalize()?);
            sedna::files::write_atomically(&out.join("report.html"), html.as_bytes())?;
            println!(
                "\n{report}\nreport: {} (with charts: {})",
                out.join("report.md").display(),
                out.join("report.html").display()
            );
        }
        Command::BaseModel {
            out,
            scenes,
            epochs,
            seed,
            params,
        } => base_model(
            &out,
            Training {
                scenes,
                epochs,
                seed,
            },
            &params,
        )?,
    }
    Ok(())
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{text}`: expected key=value"))
}

fn base_model(out: &Path, training: Training, params: &[(String, String)]) -> anyhow::Result<()> {
    let started = Instant::now();
    let data = demo::data(out, training.scenes, demo::Sizes::FULL.test)?;
    println!(
        "data: {} training scenes in {:.1?}",
        training.scenes,
        started.elapsed()
    );
    let lab = lab::Lab::new()?;
    println!(
        "{}",
        sedna::media::backend()
            .map_err(anyhow::Error::msg)?
            .summary()
    );
    let trained = base::train(&lab, out, &data, training, params)?;
    println!(
        "trained in {:.1?}: {}",
        trained.took,
        trained.model.display()
    );
    if let Some(losses) = lab::metric(&trained.report, "loss") {
        let losses: Vec<String> = losses.iter().map(|l| format!("{l:.4}")).collect();
        println!("loss per epoch: {}", losses.join(" "));
    }
    let estimator = lab.estimator(&trained.model, out, &demo::PARAMS)?;
    let mut held_out = Vec::new();
    for (look, set) in [("base", &data.base_test), ("shifted", &data.shifted_test)] {
        let metrics = estimator.evaluate(set)?;
        let values = |name| lab::metric(&metrics, name).unwrap_or_default();
        println!("{look} test set: mAP@0.5 {:.3}", values("map")[0]);
        for (i, class) in scene::CLASSES.iter().enumerate() {
            let at = |v: &[f64]| v.get(i).copied().unwrap_or(f64::NAN);
            println!(
                "  {class:<11} AP {:.3}  precision {:.3}  recall {:.3}",
                at(values("ap")),
                at(values("precision")),
                at(values("recall"))
            );
        }
        held_out.push((look, metrics));
    }
    let record = base::record(training, params, &trained, &held_out);
    let path = trained.model.with_extension("json");
    sedna::files::write_atomically(&path, serde_json::to_string_pretty(&record)?.as_bytes())?;
    println!("record: {}", path.display());
    Ok(())
}
