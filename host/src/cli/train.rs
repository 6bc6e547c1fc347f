//! `sedna train` and `sedna evaluate`: the estimator's verbs on a model and a data index,
//! as Sedna's scripts call them, on the path a round and `sedna worker train` take.

use std::process::ExitCode;

use clap::Args;

use super::Context;
use super::progress::TrainingBar;
use crate::learn::estimator::{evaluate, train_to};
use crate::plugin::{Metric, metric_map};

/// What both verbs share: the estimator and its parameters.
#[derive(Args)]
pub struct EstimatorArgs {
    /// The estimator: a `.wasm` file, a stored NAME@VERSION or a built-in name.
    #[arg(long, default_value = "ONNX")]
    estimator: String,
    /// A parameter for the estimator (`epochs=20`, `trainable=head`, `freeze=model.0`,
    /// `optimizer=adamw`, ...); repeat for more.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
}

/// Models and indexes are local paths or URLs (`s3://` with Sedna's credential variables
/// in the environment, `http(s)://` to read).
#[derive(Args)]
pub struct Train {
    /// The ONNX model to start from.
    model: String,
    /// The training data index (Sedna's format: `image label` lines).
    #[arg(long, value_name = "INDEX")]
    data: String,
    /// A validation index: the trained model's metrics on it come back as `valid_*`.
    #[arg(long, value_name = "INDEX")]
    valid: Option<String>,
    /// Where to write the trained model (whole or not at all; to `s3://` with a manifest).
    #[arg(long, value_name = "NEW.onnx")]
    out: String,
    #[command(flatten)]
    estimator: EstimatorArgs,
}

#[derive(Args)]
pub struct Evaluate {
    /// The ONNX model.
    model: String,
    /// The test data index.
    #[arg(long, value_name = "INDEX")]
    data: String,
    #[command(flatten)]
    estimator: EstimatorArgs,
}

/// Prints the metrics as one JSON object (`{"name": [values]}`).
fn print(metrics: &[Metric]) {
    println!(
        "{}",
        serde_json::to_string(&metric_map(metrics)).expect("metrics serialise")
    );
}

impl Train {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let params = super::parse_params(&self.estimator.params)?;
        let staging = context.staging()?;
        let model = staging.model(&self.model, "MODEL")?;
        let data = staging.index(&self.data, "--data")?;
        let valid = self
            .valid
            .as_deref()
            .map(|v| staging.index(v, "--valid"))
            .transpose()?;
        let out = staging.output(&self.out, "--out")?;
        let source = context.store()?.resolve(&self.estimator.estimator)?;
        let bar = TrainingBar::start();
        let metrics = train_to(
            &context.runtime()?,
            &source,
            &params,
            &model,
            &data,
            valid.as_ref(),
            &out,
            Some(bar.sink()),
        );
        bar.done();
        print(&metrics?);
        staging.publish(&out, &self.out, "--out")?;
        eprintln!("wrote {}", self.out);
        Ok(ExitCode::SUCCESS)
    }
}

impl Evaluate {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let params = super::parse_params(&self.estimator.params)?;
        let staging = context.staging()?;
        let model = staging.model(&self.model, "MODEL")?;
        let data = staging.index(&self.data, "--data")?;
        let source = context.store()?.resolve(&self.estimator.estimator)?;
        print(&evaluate(
            &context.runtime()?,
            &source,
            &params,
            &model,
            &data,
        )?);
        Ok(ExitCode::SUCCESS)
    }
}
