//! `sedna predict`: an estimator over images, one prediction per line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::Context;
use crate::media::Frame;
use crate::plugin::{Estimator, Param, Plugin, Sandbox, json};

#[derive(Args)]
pub struct Predict {
    /// The ONNX model.
    model: PathBuf,
    /// Images (PNG or JPEG); an image that cannot be read is reported and skipped.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The estimator: a `.wasm` file, a stored NAME@VERSION or a built-in name.
    #[arg(long, default_value = "ONNX")]
    estimator: String,
    /// A parameter for the estimator (`class_names=a,b`, `obj_threshold=0.5`, ...); repeat
    /// for more.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
}

/// How long one estimator call may take (the first loads the model).
const DEADLINE: Duration = Duration::from_secs(60);

impl Predict {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        let mut params = super::parse_params(&self.params)?;
        params.push(Param {
            key: "model_url".into(),
            value: "model".into(),
        });
        let sandbox = Sandbox {
            deadline: DEADLINE,
            memory: 1 << 30,
            models: vec![("model".into(), self.model.clone())],
            ..Sandbox::default()
        };
        let source = context.store()?.resolve(&self.estimator)?;
        let estimator = Plugin::<Estimator>::load(&context.runtime()?, &source, params, sandbox)?;
        let mut out = std::io::stdout().lock();
        let mut bad = 0;
        for image in &self.images {
            let prediction = match Frame::open(image) {
                Ok(frame) => estimator
                    .predict(&Arc::new(frame))
                    .map_err(|e| format!("{}: {e}", image.display())),
                Err(e) => Err(e.to_string()),
            };
            match prediction {
                Ok(prediction) => writeln!(out, "{}", json::prediction_to_json(&prediction))?,
                Err(e) => {
                    bad += 1;
                    eprintln!("{e}");
                }
            }
        }
        if bad > 0 {
            eprintln!(
                "{} predictions, {bad} images skipped",
                self.images.len() - bad
            );
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}
