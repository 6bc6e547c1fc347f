//! The estimator a job trains, evaluates and infers with: which plugin, and the sandbox a
//! round gives it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::media::Sample;
use crate::plugin::{
    DirGrant, Estimator, Metric, Param, Plugin, PluginStore, ProgressSink, Runtime, Sandbox,
    Source, setting,
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
    load(
        runtime,
        source,
        params,
        estimator_sandbox(model, output, deadline),
    )
}

/// An estimator's sandbox: `model` loadable as `model`, `output` writable as
/// [`GUEST_OUTPUT`].
fn estimator_sandbox(model: &Path, output: &Path, deadline: Duration) -> Sandbox {
    Sandbox {
        deadline,
        memory: ESTIMATOR_MEMORY,
        models: vec![("model".into(), model.to_path_buf())],
        dirs: vec![DirGrant {
            host_path: output.to_path_buf(),
            guest_path: GUEST_OUTPUT.into(),
            writable: true,
        }],
        ..Sandbox::default()
    }
}

/// The estimator from `source` in `sandbox`, told to load its model at `init`.
fn load(
    runtime: &Runtime,
    source: &Source,
    params: &[Param],
    sandbox: Sandbox,
) -> anyhow::Result<Plugin<Estimator>> {
    let mut params = params.to_vec();
    params.push(Param {
        key: "model_url".into(),
        value: "model".into(),
    });
    Ok(Plugin::<Estimator>::load(runtime, source, params, sandbox)?)
}

/// Trains `model` on `data` (validating on `valid`) and writes the trained model to
/// `out`, whole or not at all: what `sedna train` and `sedna worker train` run. `progress`
/// is told where training is after each step.
#[allow(clippy::too_many_arguments)]
pub fn train_to(
    runtime: &Runtime,
    source: &Source,
    params: &[Param],
    model: &Path,
    data: &Arc<[Sample]>,
    valid: Option<&Arc<[Sample]>>,
    out: &Path,
    progress: Option<ProgressSink>,
) -> anyhow::Result<Vec<Metric>> {
    let (Some(dir), Some(file)) = (out.parent(), out.file_name()) else {
        anyhow::bail!(
            "{}: give the path of the model file to write",
            out.display()
        );
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let started = Instant::now();
    let sandbox = Sandbox {
        progress,
        ..estimator_sandbox(model, dir, ROUND_DEADLINE)
    };
    let estimator = load(runtime, source, params, sandbox)?;
    let metrics = estimator.train(data, valid)?;
    estimator.save(&format!("{GUEST_OUTPUT}/{}", file.to_string_lossy()))?;
    tracing::info!(
        "trained on {} samples in {:.1?}: {}",
        data.len(),
        started.elapsed(),
        out.display()
    );
    Ok(metrics)
}

/// The estimator's metrics of `model` on `data`: what `sedna evaluate` and `sedna worker
/// eval` run.
pub fn evaluate(
    runtime: &Runtime,
    source: &Source,
    params: &[Param],
    model: &Path,
    data: &Arc<[Sample]>,
) -> anyhow::Result<Vec<Metric>> {
    let scratch = tempfile::tempdir()?;
    let estimator = estimator_on(
        runtime,
        source,
        params,
        model,
        scratch.path(),
        ROUND_DEADLINE,
    )?;
    Ok(estimator.evaluate(data)?)
}
