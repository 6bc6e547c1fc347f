//! The built-in `ONNX` estimator component, end to end: a small grid detector the test
//! writes itself, synthetic images, then predict, evaluate, train, save and reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::support::models::*;
use crate::support::*;
use sedna::media::{Frame, Label, Model, Sample};
use sedna::plugin::{Cause, DirGrant, Estimator, Metric, Plugin, Prediction, Sandbox};

struct Job {
    dir: tempfile::TempDir,
    base: PathBuf,
}

impl Job {
    fn new(model: &Model) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let base = dir.path().join("base.onnx");
        model.save(&base).unwrap();
        Job { dir, base }
    }

    fn sandbox(&self) -> Sandbox {
        Sandbox {
            deadline: Duration::from_secs(120),
            models: vec![("base".into(), self.base.clone())],
            dirs: vec![DirGrant {
                host_path: self.dir.path().join("out"),
                guest_path: "/out".into(),
                writable: true,
            }],
            ..Sandbox::default()
        }
    }

    fn estimator(
        &self,
        extra: &[(&str, &str)],
    ) -> Result<Plugin<Estimator>, sedna::plugin::PluginError> {
        let mut pairs = vec![("model_url", "base")];
        pairs.extend_from_slice(extra);
        Plugin::<Estimator>::load(runtime(), &builtin("ONNX"), params(&pairs), self.sandbox())
    }
}

fn metric<'a>(metrics: &'a [Metric], name: &str) -> &'a [f64] {
    &metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric `{name}` in {metrics:?}"))
        .values
}

#[test]
fn training_on_the_device_raises_held_out_map_and_the_saved_model_predicts_the_same() {
    let job = Job::new(&detector(CONVENTIONS));
    let estimator = job
        .estimator(&[
            ("epochs", "40"),
            ("learning_rate", "0.1"),
            ("batch_size", "8"),
            ("seed", "3"),
        ])
        .unwrap();
    let data = job.dir.path();
    let train = dataset(data, 0, 64);
    let held_out = dataset(data, 1000, 24);

    let before = estimator.evaluate(&held_out).unwrap();
    assert_eq!(metric(&before, "precision").len(), 2, "per class");
    assert_eq!(metric(&before, "samples"), [24.0]);

    let report = estimator.train(&train, Some(&held_out)).unwrap();
    let loss = metric(&report, "loss");
    assert_eq!(loss.len(), 40, "one loss per epoch");
    assert!(loss[39] < loss[0] * 0.8, "the loss falls: {loss:?}");
    let after = estimator.evaluate(&held_out).unwrap();
    let (map_before, map_after) = (metric(&before, "map")[0], metric(&after, "map")[0]);
    assert!(
        map_after >= map_before + 0.4 && map_after >= 0.7,
        "mAP {map_before} -> {map_after}: {after:?} {report:?}"
    );
    assert_eq!(
        metric(&report, "valid_map"),
        [map_after],
        "train validates on the valid set"
    );

    // The trained model, saved and loaded by a fresh estimator, predicts exactly alike.
    estimator.save("/out/tuned.onnx").unwrap();
    let saved = job.dir.path().join("out/tuned.onnx");
    Model::load(&saved).unwrap();
    let mut sandbox = job.sandbox();
    sandbox.models.push(("tuned".into(), saved));
    let reloaded = Plugin::<Estimator>::load(
        runtime(),
        &builtin("ONNX"),
        params(&[("model_url", "tuned")]),
        sandbox,
    )
    .unwrap();
    let (frame, truth) = scene(5000, 1);
    let frame = Arc::new(frame);
    let prediction = estimator.predict(&frame).unwrap();
    assert_eq!(reloaded.predict(&frame).unwrap(), prediction);
    let Prediction::Detections(found) = prediction else {
        panic!("a detector predicts boxes");
    };
    assert_eq!(found.len(), truth.len(), "{found:?} vs {truth:?}");

    // A frame twice the input size: boxes come back in its own pixels.
    let (big, big_truth) = scene(5000, 2);
    let Prediction::Detections(big_found) = estimator.predict(&Arc::new(big)).unwrap() else {
        panic!("boxes");
    };
    assert_eq!(big_found.len(), big_truth.len());
    for ((big, _, _), (small, _, _)) in big_found.rows().zip(found.rows()) {
        for (a, b) in big.iter().zip(small) {
            assert!((a - b * 2.0).abs() < 4.0, "{big:?} vs {small:?} x 2");
        }
    }
}

#[test]
fn a_classifier_predicts_class_scores_and_learns_from_named_labels() {
    let job = Job::new(&classifier());
    let estimator = job
        .estimator(&[
            ("epochs", "20"),
            ("learning_rate", "0.5"),
            ("batch_size", "4"),
        ])
        .unwrap();
    let train = colour_samples(job.dir.path(), 0, 24);
    let held_out = colour_samples(job.dir.path(), 100, 12);
    let before = metric(&estimator.evaluate(&held_out).unwrap(), "accuracy")[0];
    let report = estimator.train(&train, None).unwrap();
    let loss = metric(&report, "loss");
    assert!(loss.last().unwrap() < &loss[0], "{loss:?}");
    let after = estimator.evaluate(&held_out).unwrap();
    assert_eq!(
        metric(&after, "accuracy"),
        [1.0],
        "accuracy {before} -> {after:?}"
    );
    assert!(
        before < 0.2,
        "the untrained head is wrong on purpose: {before}"
    );
    assert_eq!(metric(&after, "recall"), [1.0, 1.0]);

    let (frame, _) = (Frame::open(&held_out[1].image).unwrap(), ());
    let Prediction::ClassScores(scores) = estimator.predict(&Arc::new(frame)).unwrap() else {
        panic!("a classifier predicts class scores");
    };
    assert!(
        (scores.iter().sum::<f32>() - 1.0).abs() < 1e-5,
        "softmax: {scores:?}"
    );
    assert!(scores[1] > 0.5, "sample 101 is blue: {scores:?}");
}

#[test]
fn weights_are_read_and_replaced_by_name() {
    let job = Job::new(&detector(CONVENTIONS));
    let estimator = job.estimator(&[]).unwrap();
    let mut weights = estimator.get_weights().unwrap();
    let names: Vec<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["head.w", "head.b"]);
    assert_eq!(weights[0].1.dims, vec![7, 8, 1, 1]);

    // Every cell certain of an object: the estimator finds boxes everywhere (NMS aside).
    let frame = Arc::new(scene(1, 1).0);
    let count = |p: Prediction| match p {
        Prediction::Detections(d) => d.len(),
        _ => panic!("boxes"),
    };
    let before = count(estimator.predict(&frame).unwrap());
    weights[1].1.data[0] = 50.0;
    estimator.set_weights(weights.clone()).unwrap();
    let after = count(estimator.predict(&frame).unwrap());
    assert!(after > before, "{before} -> {after}");
    assert_eq!(estimator.get_weights().unwrap(), weights);

    let wrong = vec![("head.b".to_string(), sedna::media::Tensor::zeros(vec![3]))];
    let error = estimator.set_weights(wrong).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has dimensions [3], the model's has [7]"),
        "{error}"
    );
    assert_eq!(
        count(estimator.predict(&frame).unwrap()),
        after,
        "the refused weights changed nothing"
    );
}

#[test]
fn unusable_samples_are_skipped_and_counted_not_fatal() {
    let job = Job::new(&detector(CONVENTIONS));
    let estimator = job.estimator(&[]).unwrap();
    let mut samples: Vec<Sample> = dataset(job.dir.path(), 0, 3).to_vec();
    samples.push(Sample {
        line: 9,
        image: job.dir.path().join("missing.png"),
        label: Label::Boxes(vec![]),
    });
    let broken = job.dir.path().join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    samples.push(Sample {
        line: 10,
        image: broken,
        label: Label::Boxes(vec![]),
    });
    let metrics = estimator.evaluate(&samples.into()).unwrap();
    assert_eq!(metric(&metrics, "samples"), [3.0]);
    assert_eq!(metric(&metrics, "skipped"), [2.0]);
}

#[test]
fn a_model_without_its_conventions_is_refused_with_the_fix() {
    let job = Job::new(&detector(&[("sedna.class_names", "red,blue")]));
    let error = job.estimator(&[]).err().unwrap();
    assert_eq!(error.call, "init");
    assert!(
        matches!(&error.cause, Cause::Refused(m) if m.contains("sedna.task") && m.contains("parameter `task`")),
        "{error}"
    );
    // The job's parameters can supply what the model does not say.
    job.estimator(&[("task", "detection")]).unwrap();

    // A model that names no layer to fine-tune trains whole.
    let no_head = Job::new(&detector(&CONVENTIONS[..2]));
    let estimator = no_head.estimator(&[("epochs", "2")]).unwrap();
    let train = dataset(no_head.dir.path(), 0, 2);
    let report = estimator.train(&train, None).unwrap();
    assert_eq!(metric(&report, "loss").len(), 2, "{report:?}");
}

/// A model's initializers as stored.
fn initializers(model: &Model) -> &[tract_onnx::pb::TensorProto] {
    &model.proto().graph.as_ref().unwrap().initializer
}

#[test]
fn the_whole_model_trains_and_frozen_weights_stay_byte_identical() {
    let job = Job::new(&classifier());
    let train = colour_samples(job.dir.path(), 0, 24);
    let held_out = colour_samples(job.dir.path(), 100, 12);
    let trained = |extra: &[(&str, &str)]| -> Model {
        let mut pairs = vec![
            ("epochs", "10"),
            ("learning_rate", "0.1"),
            ("batch_size", "4"),
        ];
        pairs.extend_from_slice(extra);
        let estimator = job.estimator(&pairs).unwrap();
        let report = estimator.train(&train, None).unwrap();
        let accuracy = metric(&estimator.evaluate(&held_out).unwrap(), "accuracy")[0];
        assert!(
            accuracy >= 0.9,
            "{extra:?}: accuracy {accuracy}, {report:?}"
        );
        estimator.save("/out/trained.onnx").unwrap();
        Model::load(&job.dir.path().join("out/trained.onnx")).unwrap()
    };
    let base = classifier();
    let weight = |model: &Model, name: &str| model.weights(&[name.to_string()]).unwrap();
    let whole = trained(&[
        ("trainable", "all"),
        ("optimizer", "adamw"),
        ("lr_schedule", "cosine"),
        ("warmup_epochs", "1"),
        ("augment", "true"),
    ]);
    assert_ne!(
        weight(&whole, "backbone.w"),
        weight(&base, "backbone.w"),
        "the backbone trained"
    );
    let frozen = trained(&[("trainable", "all"), ("freeze", "backbone")]);
    let stored = |model: &Model| {
        initializers(model)
            .iter()
            .find(|t| t.name == "backbone.w")
            .cloned()
    };
    assert_eq!(
        stored(&frozen),
        stored(&base),
        "a frozen weight keeps its bytes"
    );
    assert_ne!(weight(&frozen, "head.w"), weight(&base, "head.w"));
}

#[test]
fn models_and_paths_outside_the_jobs_grants_are_refused() {
    let job = Job::new(&detector(CONVENTIONS));
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = outside.path().join("elsewhere.onnx");
    detector(CONVENTIONS).save(&elsewhere).unwrap();
    let estimator = job.estimator(&[]).unwrap();
    let error = estimator
        .load_model(elsewhere.to_str().unwrap())
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not a model the job names (base)"),
        "{error}"
    );
    let error = estimator.load_model("/out/../base.onnx").unwrap_err();
    assert!(
        error.to_string().contains("not a model the job names"),
        "{error}"
    );
    let error = estimator.save("/elsewhere/tuned.onnx").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not in a directory the job grants for writing"),
        "{error}"
    );
    // The estimator still serves after refusing.
    estimator.predict(&Arc::new(scene(1, 1).0)).unwrap();
}

#[test]
fn corrupt_models_and_mismatched_inputs_are_clear_errors() {
    let job = Job::new(&detector(CONVENTIONS));
    std::fs::write(&job.base, b"\x08\x01garbage").unwrap();
    let error = job.estimator(&[]).err().unwrap();
    assert!(
        error.to_string().contains("not a valid ONNX model"),
        "{error}"
    );
    assert!(error.to_string().contains("base.onnx"), "{error}");

    let job = Job::new(&detector(CONVENTIONS));
    let error = job.estimator(&[("input_shape", "16,16")]).err().unwrap();
    assert!(
        error
            .to_string()
            .contains("`input_shape` 16,16 does not fit the model's input `image` [1, 3, 32, 64]"),
        "{error}"
    );
}

/// Fine-tunes `job`'s model (2 classes, 64x64) for 4 epochs on 8 scenes with no parameter
/// but the schedule, and checks that its loss falls and that it evaluates; returns the
/// scenes.
fn fine_tunes(job: &Job) -> Arc<[Sample]> {
    fine_tunes_with(job, &[]).1
}

/// [`fine_tunes`] with `extra` parameters; returns the estimator too.
fn fine_tunes_with(job: &Job, extra: &[(&str, &str)]) -> (Plugin<Estimator>, Arc<[Sample]>) {
    let mut pairs = vec![
        ("epochs", "4"),
        ("batch_size", "4"),
        ("optimizer", "adamw"),
        ("learning_rate", "0.002"),
    ];
    pairs.extend_from_slice(extra);
    let estimator = job.estimator(&pairs).unwrap();
    let train = dataset(job.dir.path(), 0, 8);
    let report = estimator.train(&train, None).unwrap();
    let loss = metric(&report, "loss");
    assert_eq!(loss.len(), 4);
    assert!(loss[3] < loss[0], "the detection loss falls: {loss:?}");
    let metrics = estimator.evaluate(&train).unwrap();
    assert_eq!(metric(&metrics, "samples"), [8.0], "{metrics:?}");
    (estimator, train)
}

#[test]
fn a_yolov8_shaped_export_fine_tunes_with_no_parameters_but_the_schedule() {
    // Ultralytics' metadata (task, names, imgsz) is all the estimator needs; the YOLOv8
    // loss (task-aligned assignment, BCE, CIoU) is written in the component.
    fine_tunes(&Job::new(&sedna::media::zoo::yolov8n(2, 64).unwrap()));
}

#[test]
fn batch_norm_learn_moves_the_running_statistics_of_what_trains() {
    // `batch_norm=learn`: the normalisations of the layers that train follow the batches'
    // statistics and the saved model carries them; a frozen backbone keeps its own.
    let base = sedna::media::zoo::yolov8n(2, 64).unwrap();
    let job = Job::new(&base);
    let (estimator, _) = fine_tunes_with(
        &job,
        &[
            ("batch_norm", "learn"),
            ("batch_norm_momentum", "0.5"),
            ("freeze", "backbone"),
        ],
    );
    estimator.save("/out/learnt.onnx").unwrap();
    let learnt = Model::load(&job.dir.path().join("out/learnt.onnx")).unwrap();
    let statistics = |model: &Model, part: &str| -> Vec<(String, sedna::media::Tensor)> {
        let names: Vec<String> = initializers(model)
            .iter()
            .filter(|t| t.name.starts_with(part) && t.name.contains("bn.running_"))
            .map(|t| t.name.clone())
            .collect();
        assert!(!names.is_empty(), "{part} has normalisations");
        model.weights(&names).unwrap()
    };
    assert_eq!(
        statistics(&learnt, "backbone."),
        statistics(&base, "backbone."),
        "a frozen layer's statistics stay"
    );
    let (before, after) = (statistics(&base, "neck."), statistics(&learnt, "neck."));
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "every trained normalisation's statistics moved"
    );
    let error = job
        .estimator(&[("batch_norm", "sometimes")])
        .and_then(|e| e.train(&dataset(job.dir.path(), 0, 2), None))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("`batch_norm` is \"sometimes\""), "{error}");
}

#[test]
fn a_classic_yolov5_shaped_export_fine_tunes_with_its_anchor_based_loss() {
    // Its `stride` and `names` and its [N, boxes, 5 + C] output say what it is; the
    // YOLOv5 loss (anchor matching, objectness, CIoU) is written in the component.
    let job = Job::new(&sedna::media::zoo::yolov5n(2, 64).unwrap());
    let train = fine_tunes(&job);
    let estimator = job.estimator(&[("anchors", "10,13,16")]).unwrap();
    let error = estimator.train(&train, None).unwrap_err().to_string();
    assert!(error.contains("`anchors` is \"10,13,16\""), "{error}");
}

#[test]
fn graphs_and_sessions_count_against_the_memory_cap() {
    // A 32 MiB model (an unused 8M-float weight beside a small classifier): refused under
    // a 24 MiB cap when the estimator loads it, served under 256 MiB.
    let mut model = classifier();
    let mut proto = model.proto().clone();
    let ballast = sedna::media::model::float_initializer(
        "ballast",
        &sedna::media::Tensor::zeros(vec![8 << 20]),
    );
    proto.graph.as_mut().unwrap().initializer.push(ballast);
    model = Model::from_proto("heavy", proto).unwrap();
    let job = Job::new(&model);
    let load = |memory: u64| {
        let sandbox = Sandbox {
            memory,
            ..job.sandbox()
        };
        Plugin::<Estimator>::load(
            runtime(),
            &builtin("ONNX"),
            params(&[("model_url", "base")]),
            sandbox,
        )
    };
    let error = load(24 << 20).err().unwrap().to_string();
    assert!(
        error.contains("base.onnx: 33 MiB more would exceed the plugin's memory cap of 24 MiB"),
        "{error}"
    );
    load(256 << 20).unwrap();
}

#[test]
fn an_input_too_large_for_the_memory_cap_is_refused_before_it_is_made() {
    // A model whose input size is the job's to give; asked for 8192x8192 (805 MB of
    // floats) under a 256 MiB cap.
    let model = sedna::media::ModelBuilder::new("any-size")
        .input("image", &[Some(1), Some(3), None, None])
        .node("GlobalAveragePool", &["image"], &["pooled"], &[])
        .node(
            "Flatten",
            &["pooled"],
            &["logits"],
            &[sedna::media::Attr::Int("axis", 1)],
        )
        .output("logits", &[Some(1), Some(3)])
        .metadata("sedna.task", "classification")
        .metadata("sedna.class_names", "r,g,b")
        .build()
        .unwrap();
    let job = Job::new(&model);
    let huge = job.estimator(&[("input_shape", "8192,8192")]).unwrap();
    let error = huge
        .predict(&Arc::new(scene(1, 1).0))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("a 8192x8192 input") && error.contains("memory cap of 256 MiB"),
        "{error}"
    );
    // The same model at a sensible size serves.
    let fine = job.estimator(&[("input_shape", "64,64")]).unwrap();
    fine.predict(&Arc::new(scene(1, 1).0)).unwrap();
}

#[test]
fn training_reports_its_progress_to_the_sandboxs_sink() {
    let job = Job::new(&classifier());
    let seen: Arc<std::sync::Mutex<Vec<sedna::train::Progress>>> = Default::default();
    let sink = {
        let seen = seen.clone();
        sedna::plugin::ProgressSink(Arc::new(move |p: &sedna::train::Progress| {
            seen.lock().unwrap().push(p.clone())
        }))
    };
    let sandbox = Sandbox {
        progress: Some(sink),
        ..job.sandbox()
    };
    let params = params(&[
        ("model_url", "base"),
        ("epochs", "3"),
        ("batch_size", "4"),
        ("trainable", "all"),
    ]);
    let estimator =
        Plugin::<Estimator>::load(runtime(), &builtin("ONNX"), params, sandbox).unwrap();
    estimator
        .train(&colour_samples(job.dir.path(), 0, 8), None)
        .unwrap();
    let seen = seen.lock().unwrap();
    let last = seen.last().expect("progress was reported");
    assert_eq!(last.epoch, Some((3, 3)), "{last:?}");
    assert_eq!(last.steps, 6, "two batches of 4 an epoch");
    assert_eq!(last.samples, 24);
    assert!(last.loss.is_some_and(f64::is_finite), "{last:?}");
    assert!(
        seen.windows(2).all(|w| w[0].steps <= w[1].steps),
        "steps only grow"
    );
}

#[test]
fn training_stops_at_the_calls_deadline_inside_a_pass_not_after_it() {
    let job = Job::new(&sedna::media::zoo::yolov8n(2, 160).unwrap());
    let train = dataset(job.dir.path(), 0, 8);
    let pairs = params(&[("model_url", "base"), ("epochs", "1"), ("batch_size", "8")]);
    let load = |deadline| {
        let sandbox = Sandbox {
            deadline,
            ..job.sandbox()
        };
        Plugin::<Estimator>::load(runtime(), &builtin("ONNX"), pairs.clone(), sandbox).unwrap()
    };
    let started = std::time::Instant::now();
    load(Duration::from_secs(120)).train(&train, None).unwrap();
    let whole = started.elapsed();
    assert!(
        whole > Duration::from_secs(1),
        "one epoch took {whole:?}: too short to see where the deadline stops it"
    );
    let deadline = whole / 10;
    let estimator = load(deadline);
    let started = std::time::Instant::now();
    let err = estimator.train(&train, None).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err.cause, Cause::Timeout(_)), "{err}");
    // The epoch is one forward pass (about a third of it) and one backward: stopped node
    // by node, the call ends soon after its deadline, not with the pass it fell in.
    assert!(
        took < whole / 5,
        "stopped after {took:?}, deadline {deadline:?}, the whole epoch {whole:?}"
    );
}
