//! Per frame, on one ONNX backend (the process's: `SEDNA_ONNX_BACKEND`): the limit
//! (image decode alone, the backend's `run` alone on ready tensors) and the inference
//! worker (decode, pre-processing, the `ONNX` estimator component, the `IBT` component,
//! the hard-example write, the results log), round by round; then model hot swaps.
//! Also the worker alone in a process of its own, for its peak memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use helmet_detection::demo;
use sedna::learn::{OutputLayout, ServingPlan};
use sedna::media::{Frame, Layout, Model, Preprocess, SessionOptions};
use sedna::pipeline::InferenceWorker;
use sedna::pipeline::{FrameSource, SourceOptions};
use sedna::plugin::json::parse_prediction;
use sedna::plugin::{Builtin, Param, PluginStore, Prediction, Runtime, RuntimeConfig};
use sedna::spec::PluginRef;
use serde::{Deserialize, Serialize};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub model: PathBuf,
    /// The frames, one path a line.
    #[arg(long)]
    pub frames: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub rounds: usize,
}

/// A frame's decision and boxes, to compare with the Python loop's.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Decision {
    pub frame: String,
    pub hard: bool,
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    pub labels: Vec<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Report {
    pub backend: String,
    pub threads: usize,
    /// Milliseconds a frame, per round.
    pub decode: Vec<f64>,
    pub run: Vec<f64>,
    /// Pre-processing alone (the decoded frame into the model's input tensor), which
    /// the limit leaves out.
    pub preprocess: Vec<f64>,
    pub worker: Vec<f64>,
    pub hard_share: f64,
    /// The worker's own stages, mean milliseconds a frame (`keep`: a hard frame).
    pub stages: Vec<(String, f64)>,
    pub decisions: Vec<Decision>,
    /// Hot swaps: the new model loaded beside the serving one and swapped in; then the
    /// first frame on it.
    pub swap_load: Vec<f64>,
    pub swap_first_frame: Vec<f64>,
}

/// IBT's thresholds in the example's job.
pub fn mining() -> PluginRef {
    let (img, boxes) = demo::Sizes::FULL.mining;
    PluginRef {
        name: "IBT".into(),
        parameters: vec![
            sedna::spec::KeyValue {
                key: "threshold_img".into(),
                value: img.to_string(),
            },
            sedna::spec::KeyValue {
                key: "threshold_box".into(),
                value: boxes.to_string(),
            },
        ],
    }
}

/// The worker `sedna worker infer` builds, on `model`, reading `frames_dir`.
fn worker(
    runtime: &Runtime,
    model: &Path,
    frames_dir: &Path,
    out: &Path,
) -> anyhow::Result<Arc<InferenceWorker>> {
    let mut params: Vec<Param> = demo::PARAMS
        .iter()
        .map(|(k, v)| Param {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect();
    params.push(Param {
        key: "video_url".into(),
        value: frames_dir.display().to_string(),
    });
    let store = PluginStore::open(&out.join("home"))?;
    let onnx = Builtin::find("ONNX").expect("built in").source();
    let served = ServingPlan {
        job: "bench",
        deploy_params: &params,
        mining: &mining(),
        estimator: &onnx,
        model,
        layout: &OutputLayout::new(out),
        storage: &std::sync::Arc::new(sedna::storage::Storage::new(None, sedna::storage::RETRY)),
    }
    .open(runtime, &store)?
    .expect("a folder of frames is a source");
    Ok(served.worker)
}

/// One pass of the worker over the folder, through the folder source `sedna` feeds it
/// with (a new one each pass: a folder source runs each image once). Returns the frames run.
fn one_pass(worker: &InferenceWorker, frames_dir: &Path) -> anyhow::Result<usize> {
    FrameSource::open(
        &frames_dir.display().to_string(),
        &SourceOptions {
            realtime: false,
            ..SourceOptions::default()
        },
    )
    .map_err(anyhow::Error::msg)?
    .feed(worker)
}

/// The plugin runtime as `sedna` sets it up: compiled components cached on disk (beside
/// `out`, shared by the bench's processes), so only the first process compiles.
fn runtime(out: &Path) -> anyhow::Result<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(out.with_file_name("cache")),
        ..RuntimeConfig::default()
    })
}

fn ms_per_frame(started: Instant, frames: usize) -> f64 {
    started.elapsed().as_secs_f64() * 1e3 / frames as f64
}

pub fn measure(args: &Args) -> anyhow::Result<Report> {
    let backend = sedna::media::backend().map_err(anyhow::Error::msg)?;
    let paths: Vec<PathBuf> = std::fs::read_to_string(&args.frames)?
        .lines()
        .map(PathBuf::from)
        .collect();
    let frames_dir = paths[0].parent().expect("frames are files").to_path_buf();
    let runtime = runtime(&args.out)?;
    let _ = std::fs::remove_dir_all(&args.out);
    let worker = worker(&runtime, &args.model, &frames_dir, &args.out)?;

    let options = SessionOptions::default();
    let model = Model::load(&args.model)?;
    // The limit feeds the model's own input, made as the estimator makes it for a YOLO
    // (letterboxed to the input's size, scaled to [0, 1]).
    let input = model
        .inputs()
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: the model has no input", args.model.display()))?
        .clone();
    let side = |axis: usize| {
        input.dims.get(axis).copied().flatten().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: input `{}` has no fixed size on axis {axis}",
                args.model.display(),
                input.name
            )
        })
    };
    let spec = Preprocess {
        width: side(3)? as u32,
        height: side(2)? as u32,
        letterbox: true,
        mean: [0.0; 3],
        std: [1.0; 3],
        layout: Layout::Nchw,
    };
    let mut session = model.session(&options)?;
    let decoded = paths
        .iter()
        .map(|p| Frame::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let tensors = decoded
        .iter()
        .map(|f| f.to_tensor(&spec))
        .collect::<Result<Vec<_>, _>>()?;
    let name = |p: &Path| p.file_stem().unwrap().to_string_lossy().into_owned();
    // Warm up both paths (first runs allocate and tune), as the Python loop does.
    for (path, tensor) in paths.iter().zip(&tensors).take(3) {
        session.run(&[(input.name.as_str(), tensor)])?;
        worker.process(&name(path), &Arc::new(Frame::open(path)?))?;
    }

    let mut report = Report {
        backend: format!("{} {}", backend.kind, backend.version),
        threads: options.intra_threads,
        decode: vec![],
        run: vec![],
        preprocess: vec![],
        worker: vec![],
        hard_share: 0.0,
        stages: vec![],
        decisions: vec![],
        swap_load: vec![],
        swap_first_frame: vec![],
    };
    for round in 0..args.rounds {
        let started = Instant::now();
        for path in &paths {
            std::hint::black_box(Frame::open(path)?);
        }
        report.decode.push(ms_per_frame(started, paths.len()));

        let started = Instant::now();
        for tensor in &tensors {
            std::hint::black_box(session.run(&[(input.name.as_str(), tensor)])?);
        }
        report.run.push(ms_per_frame(started, paths.len()));

        let started = Instant::now();
        for frame in &decoded {
            std::hint::black_box(frame.to_tensor(&spec)?);
        }
        report.preprocess.push(ms_per_frame(started, paths.len()));

        let started = Instant::now();
        let ran = one_pass(&worker, &frames_dir)?;
        report.worker.push(ms_per_frame(started, ran));
        anyhow::ensure!(ran == paths.len(), "the source ran {ran} frames");
        if round == 0 {
            report.decisions = decisions(&args.out.join("inference/results.jsonl"), ran)?;
        }
    }
    report.stages = worker
        .stats
        .stages
        .named()
        .iter()
        .filter(|(name, _)| *name != "read")
        .map(|(name, histogram)| {
            let taken = histogram.snapshot();
            let mean = taken.sum_seconds * 1e3 / taken.count.max(1) as f64;
            (name.to_string(), mean)
        })
        .collect();
    let hard = report.decisions.iter().filter(|d| d.hard).count();
    report.hard_share = hard as f64 / report.decisions.len().max(1) as f64;

    // Hot swaps between two copies of the model, frames in between.
    let copy = args.out.join("swapped.onnx");
    std::fs::copy(&args.model, &copy)?;
    let frame = Arc::new(Frame::open(&paths[0])?);
    for swap in 0..args.rounds.max(5) {
        let model = if swap % 2 == 0 { &copy } else { &args.model };
        let started = Instant::now();
        worker.swap_model(model, true)?;
        report.swap_load.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        worker.process("after-swap", &frame)?;
        report
            .swap_first_frame
            .push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(report)
}

/// The last `count` frames' decisions and boxes, from the worker's results log.
fn decisions(results: &Path, count: usize) -> anyhow::Result<Vec<Decision>> {
    let text = std::fs::read_to_string(results)?;
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line)?;
            let prediction =
                parse_prediction(&entry["prediction"].to_string()).map_err(anyhow::Error::msg)?;
            let Prediction::Detections(found) = prediction else {
                anyhow::bail!("the detector gave no detections: {line}");
            };
            Ok(Decision {
                frame: entry["frame"].as_str().unwrap_or_default().to_string(),
                hard: entry["hard"].as_bool().unwrap_or_default(),
                boxes: found.rows().map(|(corners, _, _)| corners).collect(),
                scores: found.rows().map(|(_, score, _)| score).collect(),
                labels: found.rows().map(|(_, _, label)| label).collect(),
            })
        })
        .collect()
}

#[derive(clap::Args)]
pub struct RssArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// A folder of frames.
    #[arg(long)]
    pub frames_dir: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub passes: usize,
}

/// The worker alone: runs every frame of the folder `passes` times, then prints its
/// peak resident memory (KiB) and the frames run.
pub fn peak_memory(args: &RssArgs) -> anyhow::Result<(u64, usize)> {
    let runtime = runtime(&args.out)?;
    let _ = std::fs::remove_dir_all(&args.out);
    let worker = worker(&runtime, &args.model, &args.frames_dir, &args.out)?;
    let mut ran = 0;
    for _ in 0..args.passes {
        ran += one_pass(&worker, &args.frames_dir)?;
    }
    let peak = proc_kib("/proc/self/status", "VmHWM")
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))?;
    Ok((peak, ran))
}

/// The `<key>: <n> kB` entry of a `/proc` file.
pub fn proc_kib(file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
