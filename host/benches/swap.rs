//! Model hot swap while frames flow (640x352, the 1.3 GMAC detector): from the deploy
//! decision to the first frame predicted by the new model. Target (issue 4): <= 100 ms
//! plus the model load. Prints medians of the load (the new estimator instance with its
//! session, made beside the serving one) and of the wait for the first new-model frame.
//!
//! `cargo bench -p sedna --bench swap`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sedna::media::Frame;
use sedna::pipeline::{HardExampleStore, InferenceWorker};
use sedna::plugin::{
    Builtin, Estimator, Hem, Param, Plugin, Prediction, Runtime, RuntimeConfig, Sandbox, Slot,
};

mod support;
use support::{CLASSES, TINY_YOLO_CLASS, detector};

const SWAPS: usize = 9;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    // Two versions told apart by their output: `a` finds no box, `b` some.
    let base = detector(TINY_YOLO_CLASS);
    let objectness = |value: f32| {
        let mut bias = base.weights(&["head.b".to_string()]).unwrap().remove(0).1;
        bias.data[0] = value;
        bias.data[5] = value; // and sure of class 0, so that scores pass the threshold
        base.with_weights(&[("head.b".into(), bias)]).unwrap()
    };
    let (a, b) = (objectness(-30.0), objectness(8.0));
    let paths = [dir.path().join("a.onnx"), dir.path().join("b.onnx")];
    a.save(&paths[0]).unwrap();
    b.save(&paths[1]).unwrap();

    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let sandbox = Sandbox {
        deadline: Duration::from_secs(60),
        models: vec![("model".into(), paths[0].clone())],
        ..Sandbox::default()
    };
    let params = vec![Param {
        key: "model_url".into(),
        value: "model".into(),
    }];
    let onnx = Builtin::find("ONNX").unwrap().source();
    let estimator = Plugin::<Estimator>::load(&runtime, &onnx, params, sandbox).unwrap();
    let edge_only = Builtin::find("EdgeOnly").unwrap().source();
    let hem = Plugin::<Hem>::load(&runtime, &edge_only, vec![], Sandbox::default()).unwrap();
    let store = HardExampleStore::open(&dir.path().join("hard"), 10).unwrap();
    let worker = Arc::new(InferenceWorker::new(
        Slot::new(estimator),
        Slot::new(hem),
        store,
    ));

    let pixels = (0..640 * 352 * 3)
        .map(|i| ((i * 7919) % 251) as u8)
        .collect();
    let frame = Arc::new(Frame::from_rgb("bench", 640, 352, pixels).unwrap());
    // The feeder streams frames and reports when each ended and which version served it.
    let (tx, rx) = mpsc::channel::<(Instant, bool)>();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (worker, frame, stop) = (worker.clone(), frame.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut frames = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let outcome = worker.process("frame", &frame).unwrap();
                let Prediction::Detections(found) = outcome.prediction else {
                    panic!()
                };
                tx.send((Instant::now(), !found.is_empty())).unwrap();
                frames += 1;
            }
            frames
        })
    };

    let (mut loads, mut first_frames) = (Vec::new(), Vec::new());
    for swap in 0..SWAPS {
        let to_b = swap % 2 == 0;
        std::thread::sleep(Duration::from_millis(200));
        while rx.try_recv().is_ok() {}
        let decided = Instant::now();
        worker.swap_model(&paths[usize::from(to_b)], true).unwrap();
        let swapped = Instant::now();
        let first = loop {
            let (ended, is_b) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the new model never served a frame");
            if is_b == to_b {
                break ended;
            }
        };
        loads.push((swapped - decided).as_secs_f64() * 1e3);
        first_frames.push((first - swapped).as_secs_f64() * 1e3);
    }
    stop.store(true, Ordering::Relaxed);
    let frames = feeder.join().unwrap();
    println!(
        "hot swap of a 640x352 detector ({} classes, 1.3 GMAC) while frames flow, {SWAPS} swaps, {frames} frames, 0 dropped:",
        CLASSES
    );
    println!(
        "  load beside the serving model   {:8.1} ms (median)",
        median(&mut loads)
    );
    println!(
        "  swap to first new-model frame   {:8.1} ms (median; target <= 100 ms)",
        median(&mut first_frames)
    );
}
