//! The estimator a job trains, evaluates and infers with: which plugin, and the sandbox a
//! round gives it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::plugin::{
    DirGrant, Estimator, Param, Plugin, PluginStore, Runtime, Sandbox, Source, setting,
};

/// The estimator a job uses unless its train template's `env` names one (`estimator`).
pub const DEFAULT_ESTIMATOR: &str = "ONNX";
/// The metrics the built-in estimator reports per class: a trigger must index them.
pub const PER_CLASS_METRICS: &[&str] = &["precision", "recall", "f1_score", "ap"];
/// How long one estimator call may take in a round (a whole training, or an evaluation).
pub const ROUND_DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// How long the inference worker's estimator may take over one frame.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(30);
/// Memory an estimator instance may use (its features cache lives there).
const ESTIMATOR_MEMORY: u64 = 2 << 30;
/// Where the granted output directory appears inside the estimator.
pub const GUEST_OUTPUT: &str = "/out";

/// The estimator the parameters name (`estimator`), else [`DEFAULT_ESTIMATOR`].
pub fn estimator_source(store: &PluginStore, params: &[Param]) -> anyhow::Result<Source> {
    let name = setting(params, "estimator").unwrap_or(DEFAULT_ESTIMATOR);
    store
        .resolve(name)
        .with_context(|| format!("estimator {name}"))
}

/// An estimator plugin from `source` on `model`, with `output` granted read-write as
/// [`GUEST_OUTPUT`] (where it saves models).
pub fn estimator_on(
    runtime: &Runtime,
    source: &Source,
    params: &[Param],
    model: &Path,
    output: &Path,
    deadline: Duration,
) -> anyhow::Result<Plugin<Estimator>> {
    let mut params = params.to_vec();
    params.push(Param {
        key: "model_url".into(),
        value: "model".into(),
    });
    let sandbox = Sandbox {
        deadline,
        memory: ESTIMATOR_MEMORY,
        models: vec![("model".into(), model.to_path_buf())],
        dirs: vec![DirGrant {
            host_path: output.to_path_buf(),
            guest_path: GUEST_OUTPUT.into(),
            writable: true,
        }],
        ..Sandbox::default()
    };
    Ok(Plugin::<Estimator>::load(runtime, source, params, sandbox)?)
}
