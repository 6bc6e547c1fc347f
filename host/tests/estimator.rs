//! The built-in `ONNX` estimator component, end to end: a small grid detector the test
//! writes itself, synthetic images, then predict, evaluate, train, save and reload.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sedna::infer::{Attr, Frame, Label, Model, ModelBuilder, Sample, Tensor};
use sedna::plugin::{Cause, DirGrant, Estimator, Metric, Plugin, Prediction, Sandbox};

/// 8 filters of 8x8 pixels, even over the patch: a stand-in for a pretrained backbone's
/// colour features. Filters 0-2 answer to one colour more than the other two, 3-5 to
/// the opposite, 6-7 to brightness.
fn colour_filters() -> Tensor {
    let data = (0..8 * 3 * 64)
        .map(|i| {
            let (filter, channel) = (i / 192, (i / 64) % 3);
            let weight = match filter {
                0..=2 if channel == filter => 1.0,
                0..=2 => -0.5,
                3..=5 if channel == filter - 3 => -1.0,
                3..=5 => 0.5,
                _ => 1.0 / 3.0,
            };
            weight / 64.0
        })
        .collect();
    Tensor::new("backbone.w", vec![8, 3, 8, 8], data).unwrap()
}

/// Input 64x32; a stride-8 conv makes 8 features per 8x8 cell (a 4x8 grid); a 1x1 conv
/// head gives the grid head's 5 + 2 channels. The head starts from small arbitrary
/// weights: the untrained model finds nothing useful.
fn detector(metadata: &[(&str, &str)]) -> Model {
    let weights = |dims: &[usize], salt: f32, scale: f32| {
        let len = dims.iter().product();
        let data = (0..len)
            .map(|i| ((i as f32 + salt) * 1.37).sin() * scale)
            .collect();
        Tensor::new("w", dims.to_vec(), data).unwrap()
    };
    let mut builder = ModelBuilder::new("grid-detector");
    builder
        .input("image", &[Some(1), Some(3), Some(32), Some(64)])
        .weight("backbone.w", &colour_filters())
        .weight("backbone.b", &weights(&[8], 1.0, 0.1))
        .weight("head.w", &weights(&[7, 8, 1, 1], 2.0, 0.3))
        .weight("head.b", &weights(&[7], 3.0, 0.3))
        .node(
            "Conv",
            &["image", "backbone.w", "backbone.b"],
            &["conv"],
            &[Attr::Ints("strides", vec![8, 8])],
        )
        .node("Relu", &["conv"], &["features"], &[])
        .node("Conv", &["features", "head.w", "head.b"], &["grid"], &[])
        .output("grid", &[Some(1), Some(7), Some(4), Some(8)]);
    for (key, value) in metadata {
        builder.metadata(key, value);
    }
    builder.build().unwrap()
}

const CONVENTIONS: &[(&str, &str)] = &[
    ("sedna.task", "detection"),
    ("sedna.class_names", "red,blue"),
    ("sedna.features", "features"),
    ("sedna.trainable", "head.w,head.b"),
];

/// A 64x32 grey image (with a little texture) holding 1-3 cell-aligned 8x8 squares,
/// red for class 0 and blue for class 1; `scale` enlarges the whole picture.
fn scene(seed: u64, scale: u32) -> (Frame, Vec<([f32; 4], u32)>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let (w, h) = (64 * scale, 32 * scale);
    let mut pixels: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let v = 120 + ((i * 7) % 17) as u8;
            [v, v, v]
        })
        .collect();
    let mut boxes = Vec::new();
    let mut used = Vec::new();
    for _ in 0..1 + next(3) {
        let cell = next(32) as u32;
        if used.contains(&cell) {
            continue;
        }
        used.push(cell);
        let class = next(2) as u32;
        let (x0, y0) = ((cell % 8) * 8 * scale, (cell / 8) * 8 * scale);
        let colour = if class == 0 {
            [220, 30, 30]
        } else {
            [30, 30, 220]
        };
        for y in y0..y0 + 8 * scale {
            for x in x0..x0 + 8 * scale {
                let at = ((y * w + x) * 3) as usize;
                pixels[at..at + 3].copy_from_slice(&colour);
            }
        }
        let corners = [x0, y0, x0 + 8 * scale, y0 + 8 * scale].map(|v| v as f32);
        boxes.push((corners, class));
    }
    (Frame::from_rgb("scene", w, h, pixels).unwrap(), boxes)
}

/// Writes `count` scenes as PNGs into `dir` and returns them as samples.
fn dataset(dir: &Path, first_seed: u64, count: u64) -> Arc<[Sample]> {
    (first_seed..first_seed + count)
        .map(|seed| {
            let (frame, boxes) = scene(seed, 1);
            let image = dir.join(format!("scene-{seed}.png"));
            frame.pixels().save(&image).unwrap();
            Sample {
                line: seed + 1,
                image,
                label: Label::Boxes(boxes),
            }
        })
        .collect()
}

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
    let scaled: Vec<f32> = found.boxes.iter().map(|v| v * 2.0).collect();
    assert_eq!(big_found.len(), big_truth.len());
    for (a, b) in big_found.boxes.iter().zip(&scaled) {
        assert!((a - b).abs() < 4.0, "{:?} vs {scaled:?}", big_found.boxes);
    }
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

    let no_head = Job::new(&detector(&CONVENTIONS[..2]));
    let estimator = no_head.estimator(&[]).unwrap();
    let train = dataset(no_head.dir.path(), 0, 2);
    let error = estimator.train(&train, None).unwrap_err();
    assert!(error.to_string().contains("sedna.trainable"), "{error}");
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
    let estimator = job.estimator(&[("input_shape", "16,16")]).unwrap();
    let error = estimator.predict(&Arc::new(scene(1, 1).0)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("input `image` must be [1, 3, 32, 64] but the tensor is [1, 3, 16, 16]"),
        "{error}"
    );
}
