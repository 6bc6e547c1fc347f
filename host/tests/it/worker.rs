//! The inference worker under load: a model swapped while frames flow drops none and
//! mixes none; a model that does not load is refused while the old one serves on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::models;
use crate::support::*;
use sedna::media::{Frame, Tensor};
use sedna::pipeline::{HardExampleStore, InferenceWorker, ResultLog};
use sedna::plugin::{Estimator, Hem, Plugin, Prediction, Sandbox, Slot};

#[test]
fn a_model_swapped_while_frames_flow_drops_none_and_mixes_none() {
    let dir = tempfile::tempdir().unwrap();
    let (wrong, right) = (dir.path().join("wrong.onnx"), dir.path().join("right.onnx"));
    let base = models::classifier();
    base.save(&wrong).unwrap();
    // The same classifier with its head wired the right way round.
    let mut head = Tensor::zeros(vec![2, 8]);
    head.data[0] = 1.0;
    head.data[8 + 2] = 1.0;
    base.with_weights(&[("head.w".into(), head)])
        .unwrap()
        .save(&right)
        .unwrap();

    let sandbox = Sandbox {
        deadline: Duration::from_secs(30),
        models: vec![("model".into(), wrong.clone())],
        ..Sandbox::default()
    };
    let estimator = Plugin::<Estimator>::load(
        runtime(),
        &builtin("ONNX"),
        params(&[("model_url", "model")]),
        sandbox,
    )
    .unwrap();
    let hem =
        Plugin::<Hem>::load(runtime(), &builtin("EdgeOnly"), vec![], Sandbox::default()).unwrap();
    let store = HardExampleStore::open(&dir.path().join("hard"), 10).unwrap();
    let worker = Arc::new(InferenceWorker::new(
        Slot::new(estimator),
        Slot::new(hem),
        store,
    ));

    // A red frame: the wrong head calls it blue (class 1), the right one red (class 0).
    let red = Arc::new(Frame::from_rgb("red", 16, 16, [220, 30, 30].repeat(256)).unwrap());
    // The feeder streams frames until told to stop, recording which class each got.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (worker, red, stop) = (worker.clone(), red.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let outcome = worker
                    .process(&format!("frame-{}", answers.len()), &red)
                    .unwrap();
                let Prediction::ClassScores(scores) = outcome.prediction else {
                    panic!()
                };
                answers.push(usize::from(scores[0] > scores[1]));
            }
            answers
        })
    };
    let frames = || worker.stats.frames.get();
    while frames() < 50 {
        std::thread::yield_now();
    }
    // A corrupt model is refused; the worker keeps serving the one it has.
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"not onnx").unwrap();
    let error = worker.swap_model(&corrupt, true).unwrap_err();
    assert!(
        error.to_string().contains("not a valid ONNX model"),
        "{error}"
    );
    worker.swap_model(&right, true).unwrap();
    let swapped_at = frames();
    while frames() < swapped_at + 50 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let answers = feeder.join().unwrap();

    assert_eq!(answers.len() as u64, frames(), "no frame dropped");
    assert_eq!(worker.stats.failed.get(), 0);
    // Wrong (0) until the swap, right (1) after it: one change, never back and forth.
    let switch = answers
        .iter()
        .position(|&a| a == 1)
        .expect("the new model served");
    assert!(switch >= 50, "the old model served until the swap");
    assert!(
        answers[switch..].iter().all(|&a| a == 1),
        "no frame mixed models: {answers:?}"
    );
    assert!(answers[..switch].iter().all(|&a| a == 0));
    assert_eq!(worker.stats.swaps.get(), 1);
}

#[test]
fn hard_examples_keep_the_raw_frame_a_preview_and_a_pre_label_within_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("detector.onnx");
    models::detector(models::CONVENTIONS).save(&model).unwrap();
    let sandbox = Sandbox {
        deadline: Duration::from_secs(30),
        models: vec![("model".into(), model)],
        ..Sandbox::default()
    };
    let estimator = Plugin::<Estimator>::load(
        runtime(),
        &builtin("ONNX"),
        params(&[("model_url", "model"), ("obj_threshold", "0.01")]),
        sandbox,
    )
    .unwrap();
    let hem =
        Plugin::<Hem>::load(runtime(), &builtin("CloudOnly"), vec![], Sandbox::default()).unwrap();
    let store = HardExampleStore::open(&dir.path().join("hard"), 2).unwrap();
    let results = ResultLog::new(&dir.path().join("results"), 300).unwrap();
    let worker =
        InferenceWorker::new(Slot::new(estimator), Slot::new(hem), store).with_results(results);
    for i in 0..3 {
        let (frame, _) = models::scene(i, 1);
        let outcome = worker
            .process(&format!("frame/{i}"), &Arc::new(frame))
            .unwrap();
        assert!(outcome.hard);
    }
    // Written on the store's own thread: wait for it.
    worker.store().flush();
    let hard = dir.path().join("hard");
    let mut files: Vec<String> = std::fs::read_dir(&hard)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // The oldest (frame 0) went past the bound of 2; names are made safe for a file.
    assert_eq!(
        files,
        [
            "frame_1.png",
            "frame_1.preview.jpg",
            "frame_2.png",
            "frame_2.preview.jpg",
            "index.jsonl"
        ]
    );
    let preview = image::open(hard.join("frame_1.preview.jpg")).unwrap();
    assert_eq!(
        (preview.width(), preview.height()),
        (64, 32),
        "small frames keep their size"
    );
    let raw = image::open(hard.join("frame_1.png")).unwrap().to_rgb8();
    assert_eq!(
        raw,
        *models::scene(1, 1).0.pixels(),
        "the raw frame, not drawn on"
    );
    let lines = std::fs::read_to_string(hard.join("index.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3, "the index keeps every pre-label");

    // Every outcome is a JSON line; past 300 bytes the file rotates, one old one kept.
    let results = dir.path().join("results");
    let current = std::fs::read_to_string(results.join("results.jsonl")).unwrap();
    let rotated = std::fs::read_to_string(results.join("results.1.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(current.lines().last().unwrap()).unwrap();
    assert_eq!(
        (line["frame"].as_str(), line["hard"].as_bool()),
        (Some("frame/2"), Some(true))
    );
    assert!(current.lines().count() + rotated.lines().count() <= 3);
    assert!(rotated.len() >= 300);
    // A frame read from a file is kept as the file's own bytes, with its extension.
    let jpeg = dir.path().join("camera.jpg");
    models::scene(3, 1).0.pixels().save(&jpeg).unwrap();
    let frame = sedna::media::Frame::open(&jpeg).unwrap();
    assert!(worker.process("frame/3", &Arc::new(frame)).unwrap().hard);
    assert_eq!(
        worker.store().images(),
        [hard.join("frame_2.png"), hard.join("frame_3.jpg")]
    );
    assert_eq!(
        std::fs::read(hard.join("frame_3.jpg")).unwrap(),
        std::fs::read(&jpeg).unwrap()
    );
}
