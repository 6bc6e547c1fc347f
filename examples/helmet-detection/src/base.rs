//! The base model: the detector trained from random weights on the base scenes by the
//! project's own training engine, as `helmet-detection base-model` does. Because that
//! takes a while on two cores, the trained model is committed beside this crate
//! (`models/base.onnx`, with `models/base.json`: the command, seed and sizes that made it
//! and its held-out metrics); the demo uses it when it is there and trains one when not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sedna::plugin::Metric;
use serde_json::json;

use crate::demo::{Data, PARAMS};
use crate::lab::{self, Lab};
use crate::scene::CLASSES;

/// How the base model learns from random weights: Ultralytics' recipe for a small data
/// set (AdamW, warm-up then a cosine schedule, flips, scale and shift, saturation and
/// brightness jitter). Hue stays: the shifted look is a change of hue the base model must
/// not have seen.
pub const RECIPE: [(&str, &str); 9] = [
    ("optimizer", "adamw"),
    ("learning_rate", "0.002"),
    ("weight_decay", "0.0005"),
    ("batch_size", "16"),
    ("warmup_epochs", "2"),
    ("lr_schedule", "cosine"),
    ("augment", "true"),
    ("hsv_h", "0.0"),
    ("seed", "1"),
];

/// The sizes the committed model was made with (`helmet-detection base-model` defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Training {
    /// Base training scenes (seeds 0..scenes).
    pub scenes: u64,
    pub epochs: u32,
    /// Seeds the detector's random weights.
    pub seed: u64,
}

impl Training {
    pub const COMMITTED: Training = Training {
        scenes: 1000,
        epochs: 40,
        seed: 1,
    };
}

/// The committed base model, if this checkout has it.
pub fn committed() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/base.onnx");
    path.is_file().then_some(path)
}

/// The model trained, where it was written, what training reported and how long it took.
pub struct Trained {
    pub model: PathBuf,
    pub report: Vec<Metric>,
    pub took: Duration,
}

/// Trains the base model from random weights on `data.train` with [`RECIPE`], then the
/// `extra` parameters, into `out/models/base.onnx`; `progress` shows each step.
pub fn train(
    lab: &Lab,
    out: &Path,
    data: &Data,
    training: Training,
    extra: &[(String, String)],
) -> anyhow::Result<Trained> {
    let models = out.join("models");
    std::fs::create_dir_all(&models)?;
    let untrained = models.join("untrained.onnx");
    crate::detector::untrained(training.seed)?.save(&untrained)?;
    let epochs = training.epochs.to_string();
    // All the cores: nothing else runs while the base model trains.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let mut params: Vec<(&str, &str)> = PARAMS.to_vec();
    params.extend(RECIPE);
    params.extend([("epochs", epochs.as_str()), ("threads", threads.as_str())]);
    params.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let started = Instant::now();
    let model = models.join("base.onnx");
    let report = lab.train(&untrained, &data.train, &params, &model)?;
    Ok(Trained {
        model,
        report,
        took: started.elapsed(),
    })
}

/// The record kept beside a base model: how it was made and how it does on the held-out
/// sets.
pub fn record(
    training: Training,
    extra: &[(String, String)],
    trained: &Trained,
    held_out: &[(&str, Vec<Metric>)],
) -> serde_json::Value {
    let mut command = format!(
        "helmet-detection base-model --scenes {} --epochs {} --seed {}",
        training.scenes, training.epochs, training.seed
    );
    for (k, v) in extra {
        command.push_str(&format!(" --param {k}={v}"));
    }
    let metrics: serde_json::Map<String, serde_json::Value> = held_out
        .iter()
        .map(|(look, metrics)| {
            let per_class = |name: &str| lab::metric(metrics, name).unwrap_or_default().to_vec();
            (
                format!("{look}_test"),
                json!({
                    "map50": lab::metric(metrics, "map").and_then(|m| m.first()).copied(),
                    "ap": per_class("ap"),
                    "precision": per_class("precision"),
                    "recall": per_class("recall"),
                }),
            )
        })
        .collect();
    json!({
        "command": command,
        "classes": CLASSES,
        "input": format!("{}x{}", crate::detector::INPUT.1, crate::detector::INPUT.0),
        "recipe": RECIPE.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "loss_per_epoch": lab::metric(&trained.report, "loss").unwrap_or_default(),
        "training_seconds": trained.took.as_secs_f64().round(),
        "engine": "sedna::train (the host's training engine), release build, 2 cores",
        "held_out": metrics,
    })
}

/// The loss per epoch in the record beside the base model at `model` (empty when there
/// is none).
pub fn recorded_loss(model: &Path) -> Vec<f64> {
    std::fs::read(model.with_extension("json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|record| {
            record["loss_per_epoch"]
                .as_array()
                .map(|l| l.iter().filter_map(|v| v.as_f64()).collect())
        })
        .unwrap_or_default()
}
