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
        Command::BaseModel { out } => base_model(&out)?,
    }
    Ok(())
}

fn base_model(out: &Path) -> anyhow::Result<()> {
    let sizes = demo::Sizes::FULL;
    let started = Instant::now();
    let data = demo::data(out, &sizes)?;
    println!(
        "data: {} training scenes in {:.1?}",
        sizes.train,
        started.elapsed()
    );
    let lab = lab::Lab::new()?;
    let started = Instant::now();
    let model = demo::base_model(&lab, out, &data, sizes.base_epochs)?;
    println!("trained in {:.1?}: {}", started.elapsed(), model.display());
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
