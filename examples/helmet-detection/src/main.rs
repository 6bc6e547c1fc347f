//! Sedna's helmet-detection example on one machine. See README.md.

mod data;
mod detector;
mod lab;
mod scene;

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};

use scene::Look;

#[derive(Parser)]
#[command(about = "Sedna's helmet-detection example, end to end on one machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Seeds of the held-out test scenes: never used for training or deploy decisions.
const TEST_SEEDS: u64 = 100_000;

#[derive(Subcommand)]
enum Command {
    /// Generates the base training set and the held-out test sets of both looks, trains
    /// the base model with the `ONNX` estimator and prints its metrics on both.
    BaseModel {
        /// Where the data (`data/`) and the models (`models/`) go.
        #[arg(long, default_value = "helmet-out")]
        out: PathBuf,
        /// Base-look training scenes.
        #[arg(long, default_value_t = 300)]
        train: u64,
        /// Held-out test scenes of each look.
        #[arg(long, default_value_t = 100)]
        test: u64,
        /// Estimator parameters for training and evaluation (`epochs`, `learning_rate`,
        /// `obj_threshold`, `nms_threshold`, ...).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BaseModel {
            out,
            train,
            test,
            params,
        } => base_model(&out, train, test, &params),
    }
}

fn base_model(
    out: &std::path::Path,
    train: u64,
    test: u64,
    params: &[String],
) -> anyhow::Result<()> {
    let params = sedna::cli::parse_params(params)?;
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    let started = Instant::now();
    let data = out.join("data");
    let train_set = data::write_set(&data, "base-train", Look::Base, 0..train)?;
    let tests = [Look::Base, Look::Shifted].map(|look| {
        let name = format!("{}-test", look.name());
        (
            look,
            data::write_set(&data, &name, look, TEST_SEEDS..TEST_SEEDS + test),
        )
    });
    println!(
        "data: {} training scenes in {:.1?}",
        train,
        started.elapsed()
    );

    let models = out.join("models");
    std::fs::create_dir_all(&models)?;
    detector::untrained().save(&models.join("untrained.onnx"))?;
    let lab = lab::Lab::new()?;
    let estimator = lab.estimator(&models.join("untrained.onnx"), &models, &params)?;
    let started = Instant::now();
    let report = estimator.train(&train_set, None)?;
    let loss = lab::metric(&report, "loss").unwrap_or_default();
    println!(
        "trained in {:.1?}; loss {:.3} -> {:.3}",
        started.elapsed(),
        loss.first().unwrap_or(&f64::NAN),
        loss.last().unwrap_or(&f64::NAN)
    );
    estimator.save("/out/base.onnx")?;
    println!("model: {}", models.join("base.onnx").display());
    for (look, set) in tests {
        let metrics = estimator.evaluate(&set?)?;
        let values = |name| lab::metric(&metrics, name).unwrap_or_default();
        println!("{} test set: mAP@0.5 {:.3}", look.name(), values("map")[0]);
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
