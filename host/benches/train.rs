//! The training engine, side by side in one run (issue 19):
//! - a train step (forward + backward + optimizer) against the active ONNX backend's
//!   forward alone on the same batch, on a YOLOv8n-shaped detector (batch 8, 320x320) and
//!   a small CNN classifier (target: <= 6x);
//! - the same YOLOv8n-shaped step with BatchNormalization learning its statistics
//!   (`batch_norm=learn`: not folded into the convolutions) against the frozen one;
//! - the peak RSS a session adds;
//! - inference frames/s while a training session runs on its own thread pool, against
//!   idle;
//! - PyTorch on CPU with the same model (converted from the same ONNX by onnx2torch),
//!   batch, loss, optimizer and threads, in a virtual environment the bench makes once
//!   (`SEDNA_TORCH_VENV`, default a directory in the system's temp dir; skipped, and
//!   said so, when it cannot be made or with `--no-pytorch`).
//!
//! `cargo bench -p sedna --bench train [-- --quick] [-- --no-pytorch]`: medians of the
//! steps measured.

use std::time::{Duration, Instant};

use sedna::media::{Model, SessionOptions, Tensor, zoo};
use sedna::train::{Loss, Optimizer, Options, Session, Statistics, Trainable};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn batch(dims: &[usize]) -> Tensor {
    let len: usize = dims.iter().product();
    Tensor {
        dims: dims.to_vec(),
        data: (0..len)
            .map(|i| ((i * 7919) % 251) as f32 / 251.0)
            .collect(),
    }
}

/// A memory figure of this process in MiB: `VmHWM` (the peak since the last reset) or
/// `VmRSS` (now).
fn memory(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Case {
    name: &'static str,
    model: Model,
    input: &'static str,
    output: &'static str,
    dims: Vec<usize>,
    freeze: Vec<String>,
}

fn main() {
    // SAFETY: the first thing the process does; no other thread exists yet.
    unsafe { sedna::threads::settle_thread_count() };
    let quick = std::env::args().any(|a| a == "--quick");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let backend = sedna::media::backend().expect("an ONNX backend");
    println!(
        "backend {} {}, {threads} threads for training and for the forward",
        backend.kind, backend.version
    );
    let cases = [
        Case {
            name: "YOLOv8n-shaped, batch 8, 320x320",
            model: zoo::yolov8n(80, 320).unwrap(),
            input: "images",
            output: "output0",
            dims: vec![8, 3, 320, 320],
            freeze: vec!["head.dfl".into()],
        },
        Case {
            name: "CNN classifier, batch 32, 64x64",
            model: zoo::cnn_classifier(10, 64).unwrap(),
            input: "image",
            output: "logits",
            dims: vec![32, 3, 64, 64],
            freeze: Vec::new(),
        },
    ];
    let steps = if quick { 2 } else { 5 };
    let measured: Vec<Measured> = cases
        .iter()
        .map(|c| measure(c, threads, steps, Statistics::Frozen))
        .collect();
    let learning = measure(
        &cases[0],
        threads,
        steps,
        Statistics::Learn { momentum: None },
    );
    println!(
        "  batch statistics learnt: the step takes {:.2}x the frozen one's",
        learning.step / measured[0].step
    );
    worker_during_a_round(&cases[0], quick);
    if std::env::args().any(|a| a == "--no-pytorch") {
        println!("\nPyTorch comparison skipped (--no-pytorch)");
    } else {
        for (case, ours) in cases.iter().zip(&measured) {
            pytorch(case, ours, threads, steps);
        }
    }
}

/// A train step's median time and the peak RSS a session added.
struct Measured {
    step: f64,
    rss: f64,
}

fn measure(case: &Case, threads: usize, steps: usize, statistics: Statistics) -> Measured {
    let input = batch(&case.dims);
    let mut forward = case
        .model
        .session(&SessionOptions {
            intra_threads: threads,
        })
        .unwrap();
    forward.run(&[(case.input, &input)]).unwrap();
    let before = memory("VmRSS:");
    reset_peak();
    let options = Options {
        trainable: Trainable::All,
        freeze: case.freeze.clone(),
        optimizer: Optimizer::adamw(),
        threads,
        ..Options::default()
    };
    let mut session = Session::open(&case.model, options).unwrap();
    let learning = session.set_statistics(statistics).unwrap();
    let (mut trains, mut forwards, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut parts = (Vec::new(), Vec::new(), Vec::new());
    // Each round runs the backend's forward and then a train step, so that the two are
    // measured under the same load and their ratio taken pair by pair.
    for step in 0..=steps {
        let start = Instant::now();
        forward.run(&[(case.input, &input)]).unwrap();
        let alone = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let out = session
            .forward(&[(case.input.into(), input.clone())], &[case.output.into()])
            .unwrap();
        let forwarded = start.elapsed().as_secs_f64();
        let target = Tensor::zeros(out[0].1.dims.clone());
        session
            .backward_loss(case.output, Loss::Mse, &target)
            .unwrap();
        let backwarded = start.elapsed().as_secs_f64();
        session.step(None).unwrap();
        let total = start.elapsed().as_secs_f64();
        if step > 0 {
            trains.push(total);
            forwards.push(alone);
            ratios.push(total / alone);
            parts.0.push(forwarded);
            parts.1.push(backwarded - forwarded);
            parts.2.push(total - backwarded);
        }
    }
    let peak = memory("VmHWM:");
    let step = median(&mut trains);
    println!(
        "\n{}: {} weight tensors train, {learning} normalisations learn their statistics",
        case.name,
        session.trainable().len()
    );
    println!(
        "  train step {:.3} s (forward {:.3}, backward {:.3}, AdamW {:.3}); backend forward alone {:.3} s",
        step,
        median(&mut parts.0),
        median(&mut parts.1),
        median(&mut parts.2),
        median(&mut forwards)
    );
    println!(
        "  ratio train step / forward, median of {} pairs: {:.1}x (target <= 6x)",
        ratios.len(),
        median(&mut ratios)
    );
    println!(
        "  peak RSS during training {peak:.0} MiB ({:.0} MiB above the process before the session)",
        peak - before
    );
    Measured {
        step,
        rss: peak - before,
    }
}

/// Inference frames/s (batch 1, one thread as an edge worker gets) alone, then while a
/// session trains on one thread of its own pool.
fn worker_during_a_round(case: &Case, quick: bool) {
    let frame = batch(&[1, 3, 320, 320]);
    let mut worker = case
        .model
        .session(&SessionOptions { intra_threads: 1 })
        .unwrap();
    let window = Duration::from_secs(if quick { 3 } else { 10 });
    let rate = |worker: &mut sedna::media::Session| {
        let start = Instant::now();
        let mut frames = 0;
        while start.elapsed() < window {
            worker.run(&[(case.input, &frame)]).unwrap();
            frames += 1;
        }
        frames as f64 / start.elapsed().as_secs_f64()
    };
    let idle = rate(&mut worker);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trainer = {
        let (model, stop) = (case.model.clone(), stop.clone());
        let (input, output) = (case.input.to_string(), case.output.to_string());
        std::thread::spawn(move || {
            let options = Options {
                threads: 1,
                freeze: vec!["head.dfl".into()],
                ..Options::default()
            };
            let mut session = Session::open(&model, options).unwrap();
            let images = batch(&[2, 3, 320, 320]);
            let mut steps = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = session
                    .forward(
                        &[(input.clone(), images.clone())],
                        std::slice::from_ref(&output),
                    )
                    .unwrap();
                let target = Tensor::zeros(out[0].1.dims.clone());
                session.backward_loss(&output, Loss::Mse, &target).unwrap();
                session.step(None).unwrap();
                steps += 1;
            }
            steps
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let busy = rate(&mut worker);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let steps = trainer.join().unwrap();
    println!(
        "\ninference worker (batch 1, 1 thread): {idle:.1} frames/s idle, {busy:.1} frames/s while a round trains on a 1-thread pool ({:.0}%; {steps} train steps of batch 2 meanwhile)",
        100.0 * busy / idle
    );
}

/// Where the bench keeps PyTorch (about 5 GB: PyPI's Linux wheel brings CUDA's
/// libraries, unused here).
fn torch_venv() -> std::path::PathBuf {
    std::env::var_os("SEDNA_TORCH_VENV")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("sedna-torch-venv"))
}

/// PyTorch on CPU, same model (converted from the same ONNX by onnx2torch), batch, loss,
/// optimizer and threads, in a virtual environment the bench makes once.
fn pytorch(case: &Case, ours: &Measured, threads: usize, steps: usize) {
    const PACKAGES: &[&str] = &["torch==2.15.0", "onnx==1.23.2", "onnx2torch==1.5.15"];
    let venv = torch_venv();
    let python = venv.join("bin/python");
    let stamp = venv.join("packages.txt");
    if !std::fs::read_to_string(&stamp).is_ok_and(|s| s == PACKAGES.join("\n")) {
        println!(
            "\nmaking {} with {} (once; about 5 GB)",
            venv.display(),
            PACKAGES.join(" ")
        );
        let made = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(PACKAGES)
                .status()
                .is_ok_and(|s| s.success());
        if !made {
            println!("PyTorch comparison skipped: the environment could not be made");
            return;
        }
        let _ = std::fs::write(&stamp, PACKAGES.join("\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    case.model.save(&model).unwrap();
    let dims: Vec<String> = case.dims.iter().map(ToString::to_string).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/train_pytorch.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(&model)
        .args([
            case.input,
            case.output,
            &dims.join(","),
            &threads.to_string(),
            &steps.to_string(),
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(report) if out.status.success() => report,
        _ => {
            println!(
                "PyTorch comparison failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            return;
        }
    };
    let number = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    let (step, rss) = (
        number("step_s"),
        number("peak_rss_mib") - number("rss_before_model_mib"),
    );
    println!(
        "\nPyTorch {} (CPU, {threads} threads, onnx2torch, {} trainable tensors), {}: train step {step:.3} s (forward {:.3}, backward {:.3}, AdamW {:.3}); peak RSS {rss:.0} MiB above the process before the model",
        report["torch"].as_str().unwrap_or("?"),
        report["trainable"],
        case.name,
        number("forward_s"),
        number("backward_s"),
        number("optimizer_s"),
    );
    // Under a few MiB the peak is within what the process's allocator keeps anyway.
    let memory = if rss >= 4.0 {
        format!("{:.2} of its peak RSS", ours.rss / rss)
    } else {
        format!("its peak RSS ({rss:.0} MiB) too small to compare")
    };
    println!(
        "  ours / PyTorch: {:.2}x the steps per second (target >= 2x), {memory} (target <= 0.5)",
        step / ours.step,
    );
}
