//! Runs the built-in `ONNX` estimator on the example's models, as a job would.

use std::path::Path;
use std::time::Duration;

use sedna::plugin::{Builtin, DirGrant, Estimator, Metric, Param, Plugin, Runtime, Sandbox};

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
        let mut params: Vec<Param> = params
            .iter()
            .map(|(k, v)| Param {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        params.push(Param {
            key: "model_url".into(),
            value: "model".into(),
        });
        let sandbox = Sandbox {
            deadline: Duration::from_secs(3600),
            memory: 2 << 30,
            models: vec![("model".into(), model.to_path_buf())],
            dirs: vec![DirGrant {
                host_path: dir.to_path_buf(),
                guest_path: "/out".into(),
                writable: true,
            }],
            ..Sandbox::default()
        };
        let source = Builtin::find("ONNX")
            .ok_or_else(|| anyhow::anyhow!("the ONNX estimator is not built in"))?
            .source();
        Ok(Plugin::load(&self.runtime, &source, params, sandbox)?)
    }
}

/// A metric's values by name.
pub fn metric<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a [f64]> {
    metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.values.as_slice())
}
