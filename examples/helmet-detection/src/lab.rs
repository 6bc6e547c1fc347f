//! Runs the built-in `ONNX` estimator on the example's models, as a job would.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sedna::cli::progress::TrainingBar;
use sedna::learn::estimator::{estimator_on, train_to};
use sedna::media::Sample;
use sedna::plugin::{Builtin, Estimator, Metric, Param, Plugin, Runtime, Source};

pub struct Lab {
    runtime: Runtime,
}

impl Lab {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Lab {
            runtime: Runtime::new(Default::default())?,
        })
    }

    /// The process's one plugin runtime, shared with the job.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The `ONNX` estimator on `model`, with `dir` writable at `/out` and `params`.
    pub fn estimator(
        &self,
        model: &Path,
        dir: &Path,
        params: &[(&str, &str)],
    ) -> anyhow::Result<Plugin<Estimator>> {
        estimator_on(
            &self.runtime,
            &onnx_estimator()?,
            &to_params(params),
            model,
            dir,
            Duration::from_secs(3600),
        )
    }

    /// Trains `model` on `data` with the `ONNX` estimator and `params` into `out`, as
    /// `sedna train` does (its progress on a terminal); returns what training reported.
    pub fn train(
        &self,
        model: &Path,
        data: &Arc<[Sample]>,
        params: &[(&str, &str)],
        out: &Path,
    ) -> anyhow::Result<Vec<Metric>> {
        let bar = TrainingBar::start();
        let report = train_to(
            &self.runtime,
            &onnx_estimator()?,
            &to_params(params),
            model,
            data,
            None,
            out,
            Some(bar.sink()),
        );
        bar.done();
        report
    }
}

fn onnx_estimator() -> anyhow::Result<Source> {
    Ok(Builtin::find("ONNX")
        .ok_or_else(|| anyhow::anyhow!("the ONNX estimator is not built in"))?
        .source())
}

fn to_params(params: &[(&str, &str)]) -> Vec<Param> {
    params
        .iter()
        .map(|(k, v)| Param {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// A metric's values by name.
pub fn metric<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a [f64]> {
    metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.values.as_slice())
}
