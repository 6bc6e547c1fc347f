//! Runs the built-in `ONNX` estimator on the example's models, as a job would.

use std::path::Path;
use std::time::Duration;

use sedna::learn::estimator::estimator_on;
use sedna::plugin::{Builtin, Estimator, Metric, Param, Plugin, Runtime};

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
        let params: Vec<Param> = params
            .iter()
            .map(|(k, v)| Param {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        let source = Builtin::find("ONNX")
            .ok_or_else(|| anyhow::anyhow!("the ONNX estimator is not built in"))?
            .source();
        estimator_on(
            &self.runtime,
            &source,
            &params,
            model,
            dir,
            Duration::from_secs(3600),
        )
    }
}

/// A metric's values by name.
pub fn metric<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a [f64]> {
    metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.values.as_slice())
}
