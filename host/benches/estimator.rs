//! Per frame at the seed's input size (640x352): the `ONNX` estimator component's
//! `predict` (pre-processing, the session, decoding, NMS, the component boundary) against
//! the backend's `run` alone on the same, already made tensor. Target (issue 9): <= 5%
//! overhead. Rounds are interleaved; medians and the median of pairwise ratios.
//!
//! `cargo bench -p sedna --bench estimator` measures the active backend (ONNX Runtime
//! when installed) and then runs itself again on tract.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sedna::media::backend::BACKEND_ENV;
use sedna::media::{Frame, Layout, Model, Preprocess, SessionOptions};
use sedna::plugin::{Builtin, Estimator, Param, Plugin, Runtime, RuntimeConfig, Sandbox};

mod support;
use support::{SMALL, TINY_YOLO_CLASS, detector};

const ROUNDS: usize = 11;
const FRAMES_PER_ROUND: usize = 10;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn per_frame(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..FRAMES_PER_ROUND {
        f();
    }
    start.elapsed().as_secs_f64() * 1e3 / FRAMES_PER_ROUND as f64
}

fn main() {
    let backend = sedna::media::backend().expect("an ONNX backend");
    for (name, layers) in [("0.19 GMAC", SMALL), ("1.3 GMAC", TINY_YOLO_CLASS)] {
        measure(backend, name, layers);
    }
    if std::env::var_os(BACKEND_ENV).is_none() && backend.kind != sedna::media::BackendKind::Tract {
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env(BACKEND_ENV, "tract")
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn measure(backend: &sedna::media::Backend, name: &str, layers: &[(usize, usize, i64)]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("detector.onnx");
    detector(layers).save(&path).unwrap();

    let pixels = (0..640 * 352 * 3)
        .map(|i| ((i * 7919) % 251) as u8)
        .collect();
    let frame = Arc::new(Frame::from_rgb("bench", 640, 352, pixels).unwrap());
    let spec = Preprocess {
        width: 640,
        height: 352,
        letterbox: false,
        mean: [0.0; 3],
        std: [1.0; 3],
        layout: Layout::Nchw,
    };
    let tensor = frame.to_tensor(&spec).unwrap();
    let options = SessionOptions::default();
    let mut session = Model::load(&path).unwrap().session(&options).unwrap();

    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let source = Builtin::find("ONNX").unwrap().source();
    let sandbox = Sandbox {
        deadline: Duration::from_secs(60),
        models: vec![("detector".into(), path.clone())],
        threads: options.intra_threads,
        ..Sandbox::default()
    };
    let params = vec![Param {
        key: "model_url".into(),
        value: "detector".into(),
    }];
    let estimator = Plugin::<Estimator>::load(&runtime, &source, params, sandbox).unwrap();

    // Warm both paths up (first runs allocate and tune).
    for _ in 0..3 {
        session.run(&[("image", &tensor)]).unwrap();
        estimator.predict(&frame).unwrap();
    }
    let (mut direct, mut component, mut preprocess, mut ratios) = (vec![], vec![], vec![], vec![]);
    let (mut native, mut boundary) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let d = per_frame(|| drop(session.run(&[("image", &tensor)]).unwrap()));
        let c = per_frame(|| drop(estimator.predict(&frame).unwrap()));
        preprocess.push(per_frame(|| drop(frame.to_tensor(&spec).unwrap())));
        let n = per_frame(|| {
            let tensor = frame.to_tensor(&spec).unwrap();
            drop(session.run(&[("image", &tensor)]).unwrap())
        });
        native.push(n);
        boundary.push(c / n);
        direct.push(d);
        component.push(c);
        ratios.push(c / d);
    }
    println!(
        "{} {} ({} threads), 640x352 detector of {name}, {ROUNDS} rounds of {FRAMES_PER_ROUND} frames:",
        backend.kind, backend.version, options.intra_threads
    );
    println!(
        "  run alone on a ready tensor   {:8.2} ms/frame (median)",
        median(&mut direct)
    );
    println!(
        "  estimator component predict   {:8.2} ms/frame (median)",
        median(&mut component)
    );
    println!(
        "    of which pre-processing     {:8.2} ms/frame (median)",
        median(&mut preprocess)
    );
    println!(
        "  pre-processing + run, natively {:8.2} ms/frame (median)",
        median(&mut native)
    );
    println!(
        "  the component's own share (median ratio to the native path): {:+.1}%",
        (median(&mut boundary) - 1.0) * 100.0
    );
    println!(
        "  overhead (median of pairwise ratios): {:+.1}% (target <= 5%)",
        (median(&mut ratios) - 1.0) * 100.0
    );
}
