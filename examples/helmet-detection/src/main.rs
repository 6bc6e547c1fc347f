//! Sedna's helmet-detection example on one machine. See README.md.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
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
    /// Generates the base training set and the held-out test sets of both looks, trains
    /// the base model with the `ONNX` estimator and prints its metrics on both.
    BaseModel {
        #[arg(long, default_value = "helmet-out")]
        out: PathBuf,
        /// Base training scenes.
        #[arg(long)]
        scenes: Option<u64>,
        #[arg(long)]
        epochs: Option<u32>,
        /// An estimator parameter over the recipe's, `key=value` (repeatable).
        #[arg(long = "param", value_parser = key_value)]
        params: Vec<(String, String)>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo { out, quick } => {
            let sizes = if quick {
                demo::Sizes::QUICK
            } else {
                demo::Sizes::FULL
            };
            let outcome = demo::run(&out, &sizes)?;
            let table = outcome.table();
            let (base, shifted) = outcome.map_change();
            let report = format!(
                "# Helmet detection: one round of incremental learning\n\n{table}\nmAP@0.5 change: {base:+.3} on the base test set, {shifted:+.3} on the shifted test set.\n"
            );
            sedna::files::write_atomically(&out.join("report.md"), report.as_bytes())?;
            sedna::files::write_atomically(&out.join("report.html"), outcome.html().as_bytes())?;
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
            params,
        } => base_model(&out, scenes, epochs, &params)?,
    }
    Ok(())
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{text}`: expected key=value"))
}

fn base_model(
    out: &Path,
    scenes: Option<u64>,
    epochs: Option<u32>,
    params: &[(String, String)],
) -> anyhow::Result<()> {
    let sizes = demo::Sizes {
        train: scenes.unwrap_or(demo::Sizes::FULL.train),
        base_epochs: epochs.unwrap_or(demo::Sizes::FULL.base_epochs),
        ..demo::Sizes::FULL
    };
    let started = Instant::now();
    let data = demo::data(out, &sizes)?;
    println!(
        "data: {} training scenes in {:.1?}",
        sizes.train,
        started.elapsed()
    );
    let lab = lab::Lab::new()?;
    let started = Instant::now();
    let (model, report) = demo::base_model(&lab, out, &data, sizes.base_epochs, params)?;
    println!("trained in {:.1?}: {}", started.elapsed(), model.display());
    if let Some(losses) = lab::metric(&report, "loss") {
        let losses: Vec<String> = losses.iter().map(|l| format!("{l:.4}")).collect();
        println!("loss per epoch: {}", losses.join(" "));
    }
    let estimator = lab.estimator(&model, out, &demo::PARAMS)?;
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
    }
    Ok(())
}
