//! `cargo run --release -p sedna-bench`: the benchmarks in one run, side by side, on the
//! helmet-detection example's model and frames, printed as the table `BENCHMARKS.md`
//! holds:
//!
//! - the limit: image decode alone, and the ONNX backend's `run` alone on ready tensors;
//! - ours: the inference worker per frame (decode, pre-processing, the `ONNX` estimator
//!   component, the `IBT` component, the hard-example write, the results log);
//! - what Sedna users run today: a Python loop with Pillow, numpy, onnxruntime and
//!   Sedna's IBT rule, in a virtual environment the bench makes from PyPI; its
//!   decisions and boxes are compared with ours;
//! - peak memory of the worker alone and of the Python loop, each in its own process;
//! - model hot swap, plugin upload to serving over HTTP, the dataset check.
//!
//! Each ONNX backend runs in a child process of its own (the backend is chosen once a
//! process). Times are medians over rounds; ratios are the medians of per-round ratios.

mod dataset;
mod pipeline;
mod python;
mod upload;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Parser, Subcommand};
use helmet_detection::base;
use helmet_detection::demo::{self, Sizes};
use helmet_detection::lab::Lab;
use sedna::media::backend::BACKEND_ENV;

#[derive(Parser)]
#[command(about = "Sedna for Rust's benchmarks in one run (see BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    /// Where the example's data, the Python environment and the outputs go (the data,
    /// the base model and the environment are kept for the next run).
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Rounds of each measurement.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Frames a round: the example's shifted test scenes, 640x352 PNG.
    #[arg(long, default_value_t = 100)]
    frames: usize,
    /// Leave out the Python loop (it needs python3 with venv, and PyPI).
    #[arg(long)]
    no_python: bool,
}

/// What the bench runs in child processes of its own.
#[derive(Subcommand)]
enum Internal {
    #[command(hide = true)]
    Pipeline(pipeline::Args),
    #[command(hide = true)]
    WorkerRss(pipeline::RssArgs),
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median of `a[i] / b[i]`.
fn ratio(a: &[f64], b: &[f64]) -> f64 {
    median(&mut a.iter().zip(b).map(|(a, b)| a / b).collect::<Vec<_>>())
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first thing the process does; no other thread exists yet.
    unsafe { sedna::threads::settle_thread_count() };
    let cli = Cli::parse();
    match &cli.command {
        Some(Internal::Pipeline(args)) => {
            println!("{}", serde_json::to_string(&pipeline::measure(args)?)?);
            Ok(())
        }
        Some(Internal::WorkerRss(args)) => {
            let (kib, frames) = pipeline::peak_memory(args)?;
            println!(
                "{}",
                serde_json::json!({"peak_rss_kib": kib, "frames": frames})
            );
            Ok(())
        }
        None => run(&cli),
    }
}

/// Runs this program again with `args`, on `backend`, and reads the JSON it prints.
fn child<T: serde::de::DeserializeOwned>(backend: &str, args: &[&str]) -> anyhow::Result<T> {
    json_output(
        Command::new(std::env::current_exe()?)
            .args(args)
            .env(BACKEND_ENV, backend)
            .env("SEDNA_LOG", "warn"),
        &format!("{args:?} on {backend}"),
    )
}

/// Runs `command` (`what` in the error) and reads the JSON it prints.
pub fn json_output<T: serde::de::DeserializeOwned>(
    command: &mut Command,
    what: &str,
) -> anyhow::Result<T> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The example's base model and `count` of its shifted test frames, copied into a folder
/// of their own that holds nothing else (and listed in `frames.txt`).
fn example(out: &Path, count: usize) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let sizes = Sizes::FULL;
    let committed = base::committed();
    let scenes = if committed.is_some() {
        0
    } else {
        sizes.base.scenes
    };
    let data = demo::data(out, scenes, sizes.test)?;
    let model = match committed {
        Some(model) => model,
        None => {
            let trained = out.join("models/base.onnx");
            if !trained.exists() {
                eprintln!("training the example's base model (once)");
                base::train(&Lab::new()?, out, &data, sizes.base, &[])?;
            }
            trained
        }
    };
    // Exactly these frames: the worker runs the whole folder.
    let dir = out.join("frames");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut list = String::new();
    for sample in data.shifted_test.iter().take(count) {
        let copy = dir.join(sample.image.file_name().unwrap());
        std::fs::copy(&sample.image, &copy)?;
        list.push_str(&format!("{}\n", copy.display()));
    }
    let listed = out.join("frames.txt");
    std::fs::write(&listed, list)?;
    Ok((model, dir, listed))
}

/// How many frames agree: the same decision; and the same boxes (count, class, corners
/// within 0.5 px, score within 1e-3).
fn agreement(ours: &[pipeline::Decision], theirs: &[pipeline::Decision]) -> (usize, usize, usize) {
    let (mut decisions, mut boxes) = (0, 0);
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!(a.frame, b.frame, "the same frames in the same order");
        decisions += usize::from(a.hard == b.hard);
        let same = a.boxes.len() == b.boxes.len()
            && a.labels == b.labels
            && a.boxes
                .iter()
                .zip(&b.boxes)
                .all(|(x, y)| x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 0.5))
            && a.scores
                .iter()
                .zip(&b.scores)
                .all(|(p, q)| (p - q).abs() <= 1e-3);
        boxes += usize::from(same);
    }
    (decisions, boxes, ours.len().min(theirs.len()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = pipeline::proc_kib("/proc/meminfo", "MemTotal")
        .map_or(String::new(), |kib| format!(", {} GiB", kib >> 20));
    format!("{cpu}, {cores} cores{memory}")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let out = &cli.out;
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    let (model, frames_dir, frames) = example(&out, cli.frames)?;
    let rounds = cli.rounds.to_string();
    let frames_count = std::fs::read_to_string(&frames)?.lines().count();

    let active = sedna::media::backend().map_err(anyhow::Error::msg)?;
    let mut backends = vec![];
    if active.kind == sedna::media::BackendKind::OnnxRuntime {
        backends.push("onnxruntime");
    } else {
        eprintln!(
            "ONNX Runtime not found ({}): measuring tract only",
            active.fallback.as_deref().unwrap_or("?")
        );
    }
    backends.push("tract");

    let mut columns = Vec::new();
    for backend in &backends {
        eprintln!("{backend}: per-frame rounds");
        let work = out.join(format!("work-{backend}"));
        let report: pipeline::Report = child(
            backend,
            &[
                "pipeline",
                "--model",
                model.to_str().unwrap(),
                "--frames",
                frames.to_str().unwrap(),
                "--out",
                work.to_str().unwrap(),
                "--rounds",
                &rounds,
            ],
        )?;
        eprintln!("{backend}: the worker alone, for its memory");
        let rss: serde_json::Value = child(
            backend,
            &[
                "worker-rss",
                "--model",
                model.to_str().unwrap(),
                "--frames-dir",
                frames_dir.to_str().unwrap(),
                "--out",
                out.join(format!("rss-{backend}")).to_str().unwrap(),
                "--passes",
                "3",
            ],
        )?;
        columns.push((report, rss["peak_rss_kib"].as_u64().unwrap_or(0)));
    }

    let python = if cli.no_python {
        None
    } else {
        eprintln!("the Python loop");
        Some(
            python::Loop {
                venv: &out.join("venv"),
                model: &model,
                frames: &frames,
                out: &out.join("work-python"),
                rounds: cli.rounds,
                threads: columns[0].0.threads,
            }
            .run()?,
        )
    };
    eprintln!("plugin upload to serving");
    let first_frame = std::fs::read_to_string(&frames)?
        .lines()
        .next()
        .unwrap()
        .to_string();
    let upload = upload::measure(&model, Path::new(&first_frame), 15);
    eprintln!("the dataset check");
    let (small, large) = dataset::measure(15);

    // The table.
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, cells: Vec<String>| rows.push((name.to_string(), cells));
    let each = |f: &dyn Fn(&pipeline::Report, u64) -> String| -> Vec<String> {
        columns.iter().map(|(r, kib)| f(r, *kib)).collect()
    };
    let ms = |v: &[f64]| format!("{:.2} ms", median(&mut v.to_vec()));
    row("image decode alone (PNG)", each(&|r, _| ms(&r.decode)));
    row(
        "backend `run` alone, ready tensor",
        each(&|r, _| ms(&r.run)),
    );
    row(
        "pre-processing alone (not in the limit)",
        each(&|r, _| ms(&r.preprocess)),
    );
    let limit = |r: &pipeline::Report| -> Vec<f64> {
        r.decode.iter().zip(&r.run).map(|(d, n)| d + n).collect()
    };
    row("**the limit**: decode + run", each(&|r, _| ms(&limit(r))));
    row(
        "**inference worker**, whole frame",
        each(&|r, _| ms(&r.worker)),
    );
    row(
        "worker / limit (target <= 1.05)",
        each(&|r, _| format!("**{:.3}**", ratio(&r.worker, &limit(r)))),
    );
    row(
        "worker frames/s",
        each(&|r, _| format!("{:.1}", 1e3 / median(&mut r.worker.clone()))),
    );
    row(
        "hard examples (share of frames)",
        each(&|r, _| format!("{:.0}%", r.hard_share * 100.0)),
    );
    row(
        "worker peak RSS, alone (target <= 150 MB)",
        each(&|_, kib| format!("**{:.0} MiB**", mib(kib))),
    );
    if let Some(py) = &python {
        row(
            "Python loop, whole frame",
            each(&|_, _| ms(&py.ms_per_frame)),
        );
        row(
            "Python frames/s",
            each(&|_, _| format!("{:.1}", 1e3 / median(&mut py.ms_per_frame.clone()))),
        );
        row(
            "worker fps / Python fps (target >= 1.5)",
            each(&|r, _| format!("**{:.2}**", ratio(&py.ms_per_frame, &r.worker))),
        );
        row(
            "Python peak RSS",
            each(&|_, _| format!("{:.0} MiB", mib(py.peak_rss_kib))),
        );
        row(
            "Python / worker peak RSS (target >= 3)",
            each(&|_, kib| format!("**{:.1}**", py.peak_rss_kib as f64 / kib as f64)),
        );
        row(
            "decisions agreeing with Python",
            each(&|r, _| {
                let (d, _, n) = agreement(&r.decisions, &py.decisions);
                format!("{d}/{n}")
            }),
        );
        row(
            "boxes agreeing with Python",
            each(&|r, _| {
                let (_, b, n) = agreement(&r.decisions, &py.decisions);
                format!("{b}/{n}")
            }),
        );
    }
    row(
        "hot swap: load beside + swap",
        each(&|r, _| ms(&r.swap_load)),
    );
    row(
        "hot swap: then the first frame",
        each(&|r, _| ms(&r.swap_first_frame)),
    );

    let header: Vec<String> = columns
        .iter()
        .map(|(r, _)| format!("{} ({} threads)", r.backend, r.threads))
        .collect();
    println!("Machine: {}", machine());
    println!(
        "Frames: {frames_count} of the helmet example's shifted test scenes (640x352 PNG), {} rounds; medians, ratios are medians of per-round ratios.\n",
        cli.rounds
    );
    println!("| per frame | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(header.len()));
    for (name, cells) in &rows {
        println!("| {name} | {} |", cells.join(" | "));
    }
    if let Some(py) = &python {
        println!("\nPython: {}", py.versions);
    }
    println!(
        "\n| plugin upload to serving (HTTP, IBT {} KiB, 15 rounds) | median |",
        upload.wasm_kib
    );
    println!("|---|---|");
    println!(
        "| upload (checks, precompile, store) | {:.1} ms |",
        upload.upload
    );
    println!(
        "| **bind after the upload** (target <= 50 ms) | **{:.2} ms** |",
        upload.bind
    );
    println!(
        "| upload done -> first frame decided by the new HEM | {:.1} ms |",
        upload.to_first_frame
    );
    println!(
        "| bind from the precompiled file on disk | {:.2} ms |",
        upload.bind_from_disk
    );
    println!(
        "| frames run meanwhile, failed | {}, {} |",
        upload.frames, upload.failed
    );
    println!(
        "\n| dataset check, {} new lines (15 checks) | median |",
        dataset::NEW_LINES
    );
    println!("|---|---|");
    println!("| index of 10,000 lines | {small:.2} ms |");
    println!("| **index of 1,000,000 lines** (target <= 50 ms) | **{large:.2} ms** |");
    println!("| ratio | {:.2} |", large / small);
    Ok(())
}
