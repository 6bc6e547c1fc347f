//! The demo: the real incremental-learning job (`sedna::learn::LocalJob`, as `sedna run`
//! runs it) on the example's data. The inference worker streams the shifted video and
//! mines hard examples; a simulated annotator labels them from the generator's ground
//! truth and appends them to the data index; the train trigger fires; the round trains,
//! evaluates and deploys; the worker swaps to the new model while streaming.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sedna::cli::progress::RoundProgress;
use sedna::learn::{Checked, LocalJob};
use sedna::media::{Sample, VideoWriter};
use sedna::pipeline::InferenceWorker;
use sedna::plugin::{Metric, PluginStore};
use sedna::spec::ClockTime;

use crate::lab::{self, Lab};
use crate::scene::{self, Look};

/// Seeds of the video's frames: frame `i` is the shifted scene `VIDEO_SEEDS + i`.
pub const VIDEO_SEEDS: u64 = 200_000;

/// How big a demo to run.
pub struct Sizes {
    pub train: u64,
    pub test: u64,
    pub video_frames: u32,
    pub fps: u32,
    /// Base training lines the data index starts with (the data the base model knew).
    pub known: u64,
    /// Labelled hard examples the round waits for.
    pub hard_examples: u64,
    pub base_epochs: u32,
    pub round_epochs: u32,
    /// IBT's `threshold_img` and `threshold_box`.
    pub mining: (f32, f32),
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
        train: 300,
        test: 100,
        video_frames: 250,
        fps: 25,
        known: 100,
        hard_examples: 100,
        base_epochs: 30,
        round_epochs: 10,
        mining: (0.5, 0.3),
    };
    /// Small enough for a test: a round completes, the numbers mean little.
    pub const QUICK: Sizes = Sizes {
        train: 40,
        test: 10,
        video_frames: 30,
        fps: 25,
        known: 10,
        hard_examples: 8,
        base_epochs: 5,
        round_epochs: 3,
        // The quick base model is poor: mine nearly every frame so the round comes soon.
        mining: (0.9, 0.5),
    };
}

/// The estimator parameters the demo's models are evaluated and run with.
pub const PARAMS: [(&str, &str); 2] = [("obj_threshold", "0.25"), ("nms_threshold", "0.45")];

/// How the base model learns from random weights: Ultralytics' recipe for a small data
/// set (AdamW, warm-up then a cosine schedule, flips, colour jitter, scale and shift).
pub const BASE_TRAINING: [(&str, &str); 9] = [
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

pub struct Data {
    pub dir: PathBuf,
    pub train: Arc<[Sample]>,
    pub base_test: Arc<[Sample]>,
    pub shifted_test: Arc<[Sample]>,
}

/// Generates (or finds) the training and held-out test scenes.
pub fn data(out: &Path, sizes: &Sizes) -> anyhow::Result<Data> {
    let dir = out.join("data");
    let test = crate::TEST_SEEDS..crate::TEST_SEEDS + sizes.test;
    Ok(Data {
        train: crate::data::write_set(&dir, "base-train", Look::Base, 0..sizes.train)?,
        base_test: crate::data::write_set(&dir, "base-test", Look::Base, test.clone())?,
        shifted_test: crate::data::write_set(&dir, "shifted-test", Look::Shifted, test)?,
        dir,
    })
}

/// Trains the base model from the untrained detector on the base training scenes, with
/// [`BASE_TRAINING`] and then `extra` parameters; returns its path and the training
/// report (the loss per epoch among it).
pub fn base_model(
    lab: &Lab,
    out: &Path,
    data: &Data,
    epochs: u32,
    extra: &[(String, String)],
) -> anyhow::Result<(PathBuf, Vec<Metric>)> {
    let models = out.join("models");
    std::fs::create_dir_all(&models)?;
    crate::detector::untrained(1)?.save(&models.join("untrained.onnx"))?;
    let epochs = epochs.to_string();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let mut params: Vec<(&str, &str)> = PARAMS.to_vec();
    params.extend(BASE_TRAINING);
    params.extend([("epochs", epochs.as_str()), ("threads", threads.as_str())]);
    params.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let estimator = lab.estimator(&models.join("untrained.onnx"), &models, &params)?;
    let report = estimator.train(&data.train, None)?;
    estimator.save("/out/base.onnx")?;
    Ok((models.join("base.onnx"), report))
}

/// The shifted look as the edge camera records it: an MP4 (H.264) video.
fn video(path: &Path, sizes: &Sizes) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut video = VideoWriter::create(path, scene::WIDTH, scene::HEIGHT, sizes.fps)?;
    for i in 0..sizes.video_frames {
        video.write(&scene::render(Look::Shifted, VIDEO_SEEDS + u64::from(i)).image)?;
    }
    video.finish()?;
    Ok(())
}

/// Sedna's quick-start resources with the example's paths, plugins and triggers.
fn job_yaml(out: &Path, base: &Path, sizes: &Sizes) -> String {
    let out = out.display();
    let params: String = PARAMS
        .iter()
        .map(|(k, v)| format!("{{name: {k}, value: \"{v}\"}}, "))
        .collect();
    format!(
        r#"apiVersion: sedna.io/v1alpha1
kind: Dataset
metadata: {{name: incremental-dataset}}
spec: {{url: "{out}/data/index.txt", format: txt, nodeName: edge-node}}
---
apiVersion: sedna.io/v1alpha1
kind: Model
metadata: {{name: initial-model}}
spec: {{url: "{base}", format: onnx}}
---
apiVersion: sedna.io/v1alpha1
kind: Model
metadata: {{name: deploy-model}}
spec: {{url: "{out}/deploy/model.onnx", format: onnx}}
---
apiVersion: sedna.io/v1alpha1
kind: IncrementalLearningJob
metadata: {{name: helmet-detection-demo}}
spec:
  initialModel: {{name: initial-model}}
  dataset: {{name: incremental-dataset, trainProb: 0.8}}
  trainSpec:
    template: {{spec: {{containers: [{{name: train, image: ignored, env: [{params}{{name: epochs, value: "{epochs}"}}]}}]}}}}
    trigger:
      checkPeriodSeconds: 1
      condition: {{operator: ">", threshold: {threshold}, metric: num_of_samples}}
  evalSpec:
    template: {{spec: {{containers: [{{name: eval, image: ignored, env: [{params}]}}]}}}}
  deploySpec:
    model: {{name: deploy-model, hotUpdateEnabled: true, pollPeriodSeconds: 60}}
    trigger:
      condition: {{operator: ">", threshold: 0.05, metric: map_delta}}
    hardExampleMining:
      name: IBT
      parameters: [{{key: threshold_img, value: "{img}"}}, {{key: threshold_box, value: "{boxes}"}}]
    template: {{spec: {{containers: [{{name: infer, image: ignored, env: [{params}{{name: video_url, value: "file://{out}/data/shifted.mp4"}}, {{name: HE_SAVED_URL, value: "{out}/hard_examples"}}]}}]}}}}
  outputDir: "{out}/job"
"#,
        base = base.display(),
        epochs = sizes.round_epochs,
        threshold = sizes.known + sizes.hard_examples - 1,
        img = sizes.mining.0,
        boxes = sizes.mining.1,
    )
}

/// The person who labels: takes each new hard example (a frame of the shifted video),
/// labels it from the generator's ground truth and appends it to the data index.
struct Annotator {
    hard_examples: PathBuf,
    data: PathBuf,
    seen_lines: usize,
    labelled: std::collections::HashSet<u64>,
}

impl Annotator {
    /// Labels what is new; returns how many samples it appended.
    fn label_new(&mut self) -> anyhow::Result<usize> {
        let Ok(index) = std::fs::read_to_string(self.hard_examples.join("index.jsonl")) else {
            return Ok(0);
        };
        // The worker may be writing the last line: only whole lines are read.
        let whole = &index[..index.rfind('\n').map_or(0, |end| end + 1)];
        let mut lines = String::new();
        for line in whole.lines().skip(self.seen_lines) {
            self.seen_lines += 1;
            let entry: serde_json::Value = serde_json::from_str(line)?;
            let image = entry["image"].as_str().unwrap_or_default();
            // `shifted-<pass>-<frame>.png`: the frame number gives the scene.
            let Some(frame) = image
                .trim_end_matches(".png")
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if !self.labelled.insert(frame) {
                continue; // the same frame again, a later pass of the video
            }
            let relative = format!("images/hard-{frame:06}.png");
            std::fs::copy(self.hard_examples.join(image), self.data.join(&relative))?;
            let truth = scene::render(Look::Shifted, VIDEO_SEEDS + frame);
            lines.push_str(&scene::index_line(&relative, &truth.objects));
            lines.push('\n');
        }
        if !lines.is_empty() {
            let mut index = std::fs::OpenOptions::new()
                .append(true)
                .open(self.data.join("index.txt"))?;
            index.write_all(lines.as_bytes())?;
        }
        Ok(lines.lines().count())
    }
}

/// What the demo measured.
pub struct Outcome {
    pub before: [Vec<Metric>; 2],
    pub after: [Vec<Metric>; 2],
    pub frames: u64,
    pub streaming: Duration,
    pub hard_before: (u64, u64),
    pub hard_after: (u64, u64),
    pub swap: Duration,
    pub round: Duration,
    pub total: Duration,
}

pub fn run(out: &Path, sizes: &Sizes) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    std::fs::create_dir_all(out)?;
    let out = &out.canonicalize()?;
    let lab = Lab::new()?;
    println!("[1/5] data: scenes and held-out test sets");
    let data = data(out, sizes)?;
    println!("[2/5] base model: trained on {} base scenes", sizes.train);
    let working = spinner("training");
    let base = match out.join("models/base.onnx") {
        path if path.exists() => path,
        _ => base_model(&lab, out, &data, sizes.base_epochs, &[])?.0,
    };
    working.finish_and_clear();
    println!("[3/5] the shifted video the camera streams");
    let working = spinner("encoding");
    video(&data.dir.join("shifted.mp4"), sizes)?;
    working.finish_and_clear();

    // A fresh job: the index holds the data the base model knew; hard examples follow.
    for dir in ["job", "deploy", "hard_examples", "home"] {
        let _ = std::fs::remove_dir_all(out.join(dir));
    }
    let known: String = std::fs::read_to_string(data.dir.join("base-train.txt"))?
        .lines()
        .take(sizes.known as usize)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        data.dir.join("index.txt"),
        format!("# helmet-detection data index\n{known}"),
    )?;
    let yaml = out.join("job.yaml");
    std::fs::write(&yaml, job_yaml(out, &base, sizes))?;

    println!("[4/5] the job: streaming, mining, labelling, training, deploying");
    let resources = sedna::spec::load(std::slice::from_ref(&yaml))?;
    let store = PluginStore::open(&out.join("home"))?;
    let mut job = LocalJob::open(&resources, None, lab.runtime(), &store)?;
    let progress = RoundProgress::attach(&mut job);
    let (worker, mut source) = job
        .take_feed()
        .ok_or_else(|| anyhow::anyhow!("the job has no inference worker"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let streaming_started = Instant::now();
    let feeder = {
        let (worker, stop) = (worker.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ran = source.feed(&worker).unwrap_or(0);
                std::thread::sleep(source.pause_after(ran));
            }
        })
    };
    let mut annotator = Annotator {
        hard_examples: out.join("hard_examples"),
        data: data.dir.clone(),
        seen_lines: 0,
        labelled: Default::default(),
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    let labelling = ProgressBar::new(sizes.hard_examples).with_style(
        ProgressStyle::with_template("      {bar:30} {pos}/{len} hard examples labelled")
            .expect("a valid template"),
    );
    let (round, hard_before) = loop {
        anyhow::ensure!(Instant::now() < deadline, "no round after 15 minutes");
        annotator.label_new()?;
        labelling.set_position(annotator.labelled.len() as u64);
        let round_started = Instant::now();
        let counts = hard_counts(&worker);
        let checked = job.check(ClockTime::now())?;
        progress.done();
        if let Checked::Round(report) = checked {
            labelling.finish_and_clear();
            println!(
                "      round {}: {} ({})",
                report.round,
                if report.deployed {
                    "deployed"
                } else {
                    "not deployed"
                },
                report.reasons.join("; ")
            );
            anyhow::ensure!(report.deployed, "the round did not deploy");
            break (round_started.elapsed(), counts);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Stream on the new model for as long as the video lasts.
    let after_swap = hard_counts(&worker);
    std::thread::sleep(Duration::from_secs_f64(
        f64::from(sizes.video_frames) / f64::from(sizes.fps),
    ));
    let now = hard_counts(&worker);
    stop.store(true, Ordering::Relaxed);
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feeder panicked"))?;
    let streaming = streaming_started.elapsed();

    println!("[5/5] held-out evaluation of the base and the deployed model");
    let working = spinner("evaluating");
    let deployed = out.join("deploy/model.onnx");
    let evaluate = |model: &Path| -> anyhow::Result<[Vec<Metric>; 2]> {
        let estimator = lab.estimator(model, out, &PARAMS)?;
        Ok([
            estimator.evaluate(&data.base_test)?,
            estimator.evaluate(&data.shifted_test)?,
        ])
    };
    let (before, after) = (evaluate(&base)?, evaluate(&deployed)?);
    working.finish_and_clear();
    Ok(Outcome {
        before,
        after,
        frames: worker.stats.frames.get(),
        streaming,
        hard_before,
        hard_after: (now.0 - after_swap.0, now.1 - after_swap.1),
        swap: Duration::from_micros(worker.stats.last_swap_micros.load(Ordering::Relaxed)),
        round,
        total: started.elapsed(),
    })
}

/// Metric `name`'s `i`-th value, NaN when absent.
fn value(metrics: &[Metric], name: &str, i: usize) -> f64 {
    lab::metric(metrics, name)
        .and_then(|v| v.get(i).copied())
        .unwrap_or(f64::NAN)
}

/// A spinner with `message` and the time taken, on a terminal.
fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.set_style(
        ProgressStyle::with_template("      {spinner} {msg} ({elapsed})")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// (hard examples, frames) so far.
fn hard_counts(worker: &InferenceWorker) -> (u64, u64) {
    (worker.stats.hard.get(), worker.stats.frames.get())
}

impl Outcome {
    /// The before/after table, as Markdown.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| metric | base model, base test | deployed, base test | base model, shifted test | deployed, shifted test |\n|---|---|---|---|---|\n",
        );
        let mut row = |label: String, name: &str, i: usize| {
            t.push_str(&format!(
                "| {label} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                value(&self.before[0], name, i),
                value(&self.after[0], name, i),
                value(&self.before[1], name, i),
                value(&self.after[1], name, i)
            ));
        };
        row("mAP@0.5".into(), "map", 0);
        for (i, class) in scene::CLASSES.iter().enumerate() {
            row(format!("{class} precision"), "precision", i);
            row(format!("{class} recall"), "recall", i);
        }
        let ratio = |(hard, frames): (u64, u64)| hard as f64 / frames.max(1) as f64;
        t.push_str(&format!(
            "\n- frames streamed: {} in {:.1?} ({:.1} frames/s)\n- hard-example ratio: {:.3} before the swap, {:.3} after\n- swap (load, smoke test, swap): {:.1?}\n- the round (train, eval, deploy): {:.1?}\n- the whole demo: {:.1?}\n",
            self.frames,
            self.streaming,
            self.frames as f64 / self.streaming.as_secs_f64(),
            ratio(self.hard_before),
            ratio(self.hard_after),
            self.swap,
            self.round,
            self.total
        ));
        t
    }

    /// The mAP@0.5 change on the base and the shifted test set.
    pub fn map_change(&self) -> (f64, f64) {
        let map = |m: &[Metric]| lab::metric(m, "map").map_or(f64::NAN, |v| v[0]);
        (
            map(&self.after[0]) - map(&self.before[0]),
            map(&self.after[1]) - map(&self.before[1]),
        )
    }
}

/// Bars for `groups` of (label, before, after) values on [0, 1], as an SVG chart.
fn bar_chart(title: &str, groups: &[(String, f64, f64)]) -> String {
    let (width, height, left, top) = ((120 * groups.len() + 60).max(380), 260, 40, 30);
    let plot = (height - top - 50) as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><text x="{left}" y="18" font-weight="bold">{title}</text><line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#444"/>"##,
        base = top as f64 + plot,
        right = width - 10
    );
    for (i, (label, before, after)) in groups.iter().enumerate() {
        let x = left + 10 + i * 120;
        for (j, (value, colour)) in [(before, "#9aa5b1"), (after, "#2f7ed8")].iter().enumerate() {
            let value = if value.is_finite() {
                value.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let h = value * plot;
            let bx = x + j * 46;
            svg.push_str(&format!(
                r##"<rect x="{bx}" y="{y:.1}" width="40" height="{h:.1}" fill="{colour}"/><text x="{tx}" y="{ty:.1}" text-anchor="middle">{value:.2}</text>"##,
                y = top as f64 + plot - h,
                tx = bx + 20,
                ty = top as f64 + plot - h - 4.0
            ));
        }
        svg.push_str(&format!(
            r##"<text x="{tx}" y="{ty}" text-anchor="middle">{label}</text>"##,
            tx = x + 43,
            ty = height - 28
        ));
    }
    svg.push_str(&format!(
        r##"<rect x="{left}" y="{ly}" width="12" height="12" fill="#9aa5b1"/><text x="{t1}" y="{ty}">base model</text><rect x="{l2}" y="{ly}" width="12" height="12" fill="#2f7ed8"/><text x="{t2}" y="{ty}">deployed after one round</text></svg>"##,
        ly = height - 16,
        ty = height - 6,
        t1 = left + 16,
        l2 = left + 110,
        t2 = left + 126
    ));
    svg
}

impl Outcome {
    /// The report as HTML: the table and two charts.
    pub fn html(&self) -> String {
        let map = bar_chart(
            "mAP@0.5 on the held-out test sets",
            &[
                (
                    "base look".into(),
                    value(&self.before[0], "map", 0),
                    value(&self.after[0], "map", 0),
                ),
                (
                    "shifted look".into(),
                    value(&self.before[1], "map", 0),
                    value(&self.after[1], "map", 0),
                ),
            ],
        );
        let classes: Vec<(String, f64, f64)> = scene::CLASSES
            .iter()
            .enumerate()
            .map(|(i, class)| {
                (
                    class.to_string(),
                    value(&self.before[1], "ap", i),
                    value(&self.after[1], "ap", i),
                )
            })
            .collect();
        let per_class = bar_chart("AP per class, shifted test set", &classes);
        let rows: String = self
            .table()
            .lines()
            .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
            .map(|l| {
                let cells: String = l
                    .trim_matches('|')
                    .split('|')
                    .map(|c| format!("<td>{}</td>", c.trim()))
                    .collect();
                format!("<tr>{cells}</tr>\n")
            })
            .collect();
        let notes: String = self
            .table()
            .lines()
            .filter_map(|l| l.strip_prefix("- "))
            .map(|l| format!("<li>{l}</li>"))
            .collect();
        format!(
            "<!doctype html><meta charset=\"utf-8\"><title>Helmet detection: one round</title>\n<body style=\"font-family:sans-serif;max-width:60em;margin:2em auto\">\n<h1>Helmet detection: one round of incremental learning</h1>\n{map}\n{per_class}\n<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\n{rows}</table>\n<ul>{notes}</ul>\n</body>\n"
        )
    }
}
