//! ONNX models, sessions and image pre-processing on the host.

use std::path::Path;

use crate::support;
use sedna::media::{
    Attr, BackendKind, ErrorKind, Frame, Layout, Model, ModelBuilder, Preprocess, SessionOptions,
    Tensor,
};

/// Deterministic weights that are not all alike.
fn weights(dims: &[usize], salt: f32) -> Tensor {
    let len = dims.iter().product();
    let data = (0..len)
        .map(|i| ((i as f32 + salt) * 0.731).sin() * 0.5)
        .collect();
    Tensor::new("w", dims.to_vec(), data).unwrap()
}

/// conv 3x3 (3 -> 4 channels) -> relu -> global average pool -> flatten -> gemm (4 -> 3)
/// -> softmax, on a 1x3x8x8 input; `features` is the pooled 4-vector.
fn classifier() -> Model {
    ModelBuilder::new("tiny-classifier")
        .input("image", &[Some(1), Some(3), Some(8), Some(8)])
        .weight("conv.w", &weights(&[4, 3, 3, 3], 0.0))
        .weight("conv.b", &weights(&[4], 1.0))
        .weight("head.w", &weights(&[3, 4], 2.0))
        .weight("head.b", &weights(&[3], 3.0))
        .node(
            "Conv",
            &["image", "conv.w", "conv.b"],
            &["conv"],
            &[Attr::Ints("pads", vec![1, 1, 1, 1])],
        )
        .node("Relu", &["conv"], &["relu"], &[])
        .node("GlobalAveragePool", &["relu"], &["pooled"], &[])
        .node(
            "Flatten",
            &["pooled"],
            &["features"],
            &[Attr::Int("axis", 1)],
        )
        .node(
            "Gemm",
            &["features", "head.w", "head.b"],
            &["logits"],
            &[Attr::Int("transB", 1)],
        )
        .node("Softmax", &["logits"], &["scores"], &[Attr::Int("axis", 1)])
        .output("scores", &[Some(1), Some(3)])
        .metadata("sedna.task", "classification")
        .build()
        .unwrap()
}

fn image_input() -> Tensor {
    weights(&[1, 3, 8, 8], 7.0)
}

fn scores(model: &Model, input: &Tensor) -> Vec<f32> {
    let mut session = model.session(&SessionOptions::default()).unwrap();
    let outputs = session.run(&[("image", input)]).unwrap();
    let (name, tensor) = &outputs[0];
    assert_eq!(name, "scores");
    assert_eq!(tensor.dims, vec![1, 3]);
    tensor.data.clone()
}

fn assert_close(a: &[f32], b: &[f32], tolerance: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tolerance, "{a:?} vs {b:?}");
    }
}

#[test]
fn a_model_runs_and_its_scores_are_a_distribution() {
    let scores = scores(&classifier(), &image_input());
    assert!(
        (scores.iter().sum::<f32>() - 1.0).abs() < 1e-5,
        "{scores:?}"
    );
    assert!(scores.iter().all(|s| *s > 0.0));
}

/// The child half of `both_backends_give_the_same_scores`: prints the scores on the
/// backend its parent chose.
#[test]
#[ignore = "run by both_backends_give_the_same_scores in a process of its own"]
fn print_scores_on_the_chosen_backend() {
    let backend = sedna::media::backend().unwrap();
    let scores = scores(&classifier(), &image_input());
    println!(
        "backend={} scores={}",
        backend.kind,
        serde_json::to_string(&scores).unwrap()
    );
}

fn scores_on(backend: &str) -> Option<Vec<f32>> {
    let output = support::this_binary_running("infer::print_scores_on_the_chosen_backend")
        .env("SEDNA_ONNX_BACKEND", backend)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // One test thread: libtest writes the test's name on the line the child prints to.
    let prefix = format!("backend={backend} scores=");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, json)| json));
    match line {
        Some(json) => Some(serde_json::from_str(json).unwrap()),
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                backend == "onnxruntime" && std::env::var_os("CI").is_none(),
                "no scores from the {backend} backend:\n{stdout}\n{stderr}"
            );
            eprintln!(
                "ONNX Runtime is not installed here, so only tract was tested ({}): {stderr}",
                sedna::media::backend::HOW_TO_GET_ORT
            );
            None
        }
    }
}

#[test]
fn both_backends_give_the_same_scores() {
    let tract = scores_on("tract").unwrap();
    if let Some(onnxruntime) = scores_on("onnxruntime") {
        assert_close(&tract, &onnxruntime, 1e-4);
    }
}

#[test]
fn the_backend_is_named_and_auto_prefers_onnx_runtime_when_installed() {
    let backend = sedna::media::backend().unwrap();
    match backend.kind {
        BackendKind::OnnxRuntime => {
            assert!(backend.library.is_some());
            assert!(backend.version.starts_with("1."), "{}", backend.version);
        }
        BackendKind::Tract => {
            let chosen = std::env::var("SEDNA_ONNX_BACKEND").is_ok_and(|b| b == "tract");
            assert_eq!(backend.fallback.is_none(), chosen, "a fallback says why");
        }
    }
}

#[test]
fn corrupt_and_truncated_models_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\xff\xfe this is not protobuf \x00\x01").unwrap();
    let error = Model::load(&junk).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidEncoding);
    assert!(error.to_string().contains("junk.onnx"), "{error}");
    assert!(
        error.to_string().contains("not a valid ONNX model"),
        "{error}"
    );

    let bytes = classifier().to_bytes();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let error = Model::load(&truncated).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidEncoding, "{error}");

    let missing = Model::load(&dir.path().join("absent.onnx")).unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert!(missing.to_string().contains("absent.onnx"), "{missing}");
}

#[test]
fn a_graph_the_backend_cannot_load_names_the_model() {
    let mut builder = ModelBuilder::new("bad-op");
    builder
        .input("x", &[Some(1)])
        .node("NoSuchOperator", &["x"], &["y"], &[])
        .output("y", &[Some(1)]);
    let error = builder
        .build()
        .unwrap()
        .session(&SessionOptions::default())
        .err()
        .unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidEncoding);
    assert!(error.to_string().starts_with("bad-op: "), "{error}");
}

#[test]
fn inputs_are_checked_against_the_declared_shape_and_names() {
    let mut session = classifier().session(&SessionOptions::default()).unwrap();
    let wrong = Tensor::zeros(vec![1, 3, 16, 16]);
    let error = session.run(&[("image", &wrong)]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidArgument);
    assert!(
        error
            .to_string()
            .contains("input `image` must be [1, 3, 8, 8]"),
        "{error}"
    );
    assert!(error.to_string().contains("[1, 3, 16, 16]"), "{error}");

    let error = session.run(&[]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("input `image` [1, 3, 8, 8] was not given"),
        "{error}"
    );

    let input = image_input();
    let error = session
        .run(&[("image", &input), ("mask", &input)])
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no input `mask` (its inputs: image)"),
        "{error}"
    );
}

#[test]
fn weights_are_read_replaced_and_saved_and_the_saved_model_predicts_the_same() {
    let model = classifier();
    let names = vec!["head.w".to_string(), "head.b".to_string()];
    let mut head = model.weights(&names).unwrap();
    assert_eq!(head[0].1.dims, vec![3, 4]);
    for value in &mut head[1].1.data {
        *value += 1.0;
    }
    let tuned = model.with_weights(&head).unwrap();
    let input = image_input();
    let before = scores(&model, &input);
    let after = scores(&tuned, &input);
    assert_ne!(before, after, "a changed bias changes the scores");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuned.onnx");
    tuned.save(&path).unwrap();
    let reloaded = Model::load(&path).unwrap();
    assert_eq!(reloaded.weights(&names).unwrap(), head);
    assert_eq!(scores(&reloaded, &input), after);
    assert_eq!(reloaded.metadata()["sedna.task"], "classification");
}

#[test]
fn bad_weights_are_refused_and_leave_the_model_as_it_was() {
    let model = classifier();
    let error = model.weights(&["nope".to_string()]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);

    let wrong_shape = vec![("head.b".to_string(), Tensor::zeros(vec![4]))];
    let error = model.with_weights(&wrong_shape).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has dimensions [4], the model's has [3]"),
        "{error}"
    );

    let nan = vec![(
        "head.b".to_string(),
        Tensor::new("b", vec![3], vec![0.0, f32::NAN, 0.0]).unwrap(),
    )];
    let error = model.with_weights(&nan).unwrap_err();
    assert!(error.to_string().contains("NaN"), "{error}");
}

#[test]
fn intermediate_values_can_be_returned_as_extra_outputs() {
    let model = classifier()
        .with_outputs(&["features".to_string()])
        .unwrap();
    let mut session = model.session(&SessionOptions::default()).unwrap();
    let input = image_input();
    let outputs = session.run(&[("image", &input)]).unwrap();
    let features = &outputs.iter().find(|(n, _)| n == "features").unwrap().1;
    assert_eq!(features.dims, vec![1, 4]);
    assert!(features.data.iter().all(|v| *v >= 0.0), "after a relu");

    let error = classifier()
        .with_outputs(&["nowhere".to_string()])
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no node produces a value named `nowhere`"),
        "{error}"
    );
}

fn spec(width: u32, height: u32, letterbox: bool, layout: Layout) -> Preprocess {
    Preprocess {
        width,
        height,
        letterbox,
        mean: [0.0; 3],
        std: [1.0; 3],
        layout,
    }
}

/// A `width` x `height` image whose pixel (x, y) is (x, y, 200).
fn gradient(width: u32, height: u32) -> Frame {
    let pixels = (0..height)
        .flat_map(|y| (0..width).flat_map(move |x| [x as u8, y as u8, 200]))
        .collect();
    Frame::from_rgb("gradient", width, height, pixels).unwrap()
}

#[test]
fn letterboxing_keeps_the_aspect_ratio_and_maps_back_to_source_pixels() {
    let fit = spec(640, 352, true, Layout::Nchw).fit(1280, 1280);
    assert_eq!(
        (fit.width, fit.height, fit.pad_x, fit.pad_y),
        (352, 352, 144, 0)
    );
    assert_eq!(fit.to_source(144.0 + 176.0, 176.0), (640.0, 640.0));

    let stretched = spec(640, 352, false, Layout::Nchw).fit(1280, 1280);
    assert_eq!((stretched.pad_x, stretched.pad_y), (0, 0));
    assert_eq!(stretched.to_source(320.0, 176.0), (640.0, 640.0));
}

#[test]
fn pre_processing_normalises_lays_out_and_pads() {
    let frame = gradient(4, 2);
    // Same size, no letterbox: every pixel is copied, scaled and normalised.
    let mut same = spec(4, 2, false, Layout::Nchw);
    same.mean = [0.5; 3];
    same.std = [0.5; 3];
    let tensor = frame.to_tensor(&same).unwrap();
    assert_eq!(tensor.dims, vec![1, 3, 2, 4]);
    let at = |c: usize, y: usize, x: usize| tensor.data[c * 8 + y * 4 + x];
    assert!((at(0, 1, 3) - (3.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    assert!((at(1, 1, 3) - (1.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    assert!((at(2, 0, 0) - (200.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);

    // NHWC holds the same values in another order.
    let nhwc = frame
        .to_tensor(&Preprocess {
            layout: Layout::Nhwc,
            ..same.clone()
        })
        .unwrap();
    assert_eq!(nhwc.dims, vec![1, 2, 4, 3]);
    for (c, y, x) in (0..3).flat_map(|c| (0..2).flat_map(move |y| (0..4).map(move |x| (c, y, x)))) {
        assert_eq!(
            nhwc.data[(y * 4 + x) * 3 + c],
            at(c, y, x),
            "({c}, {y}, {x})"
        );
    }

    // A 4x2 image letterboxed into 4x4 is padded with grey above and below.
    let boxed = frame.to_tensor(&spec(4, 4, true, Layout::Nchw)).unwrap();
    let grey = 114.0 / 255.0;
    assert!((boxed.data[0] - grey).abs() < 1e-6);
    assert_eq!(
        boxed.data[4], 0.0,
        "row 1 is the image's first row, pixel (0, 0)"
    );
    assert!((boxed.data[15] - grey).abs() < 1e-6);
}

#[test]
fn resizing_is_bilinear_with_half_pixel_centres() {
    // Doubling a 2-pixel ramp 0, 100 gives 0, 25, 75, 100 (OpenCV's INTER_LINEAR).
    let frame = Frame::from_rgb("ramp", 2, 1, vec![0, 0, 0, 100, 100, 100]).unwrap();
    let tensor = frame.to_tensor(&spec(4, 1, false, Layout::Nchw)).unwrap();
    let red: Vec<f32> = tensor.data[..4]
        .iter()
        .map(|v| (v * 255.0).round())
        .collect();
    assert_eq!(red, vec![0.0, 25.0, 75.0, 100.0]);
}

#[test]
fn bad_images_and_bad_specs_are_clear_errors() {
    let error = Frame::decode("frame-0001.jpg", b"\xff\xd8 not really a jpeg").unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidEncoding);
    assert!(
        error
            .to_string()
            .starts_with("frame-0001.jpg: cannot decode the image"),
        "{error}"
    );

    let error = Frame::open(Path::new("/nonexistent/frame.png")).unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);

    let error = Frame::from_rgb("short", 4, 4, vec![0; 10]).unwrap_err();
    assert!(error.to_string().contains("needs 48 bytes"), "{error}");

    let frame = gradient(4, 2);
    let error = frame
        .to_tensor(&spec(0, 4, false, Layout::Nchw))
        .unwrap_err();
    assert!(error.to_string().contains("input size 0x4"), "{error}");
    let mut zero_std = spec(4, 4, false, Layout::Nchw);
    zero_std.std = [1.0, 0.0, 1.0];
    assert!(
        frame
            .to_tensor(&zero_std)
            .unwrap_err()
            .to_string()
            .contains("positive")
    );
}

#[test]
fn a_png_written_to_disk_decodes_to_its_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frame.png");
    gradient(5, 3).pixels().save(&path).unwrap();
    let frame = Frame::open(&path).unwrap();
    assert_eq!((frame.width(), frame.height()), (5, 3));
    assert_eq!(frame.pixels().get_pixel(4, 2).0, [4, 2, 200]);
}

/// Sixteen 3x3 convolutions of `channels` channels on a 256x256 input: with 64, half a
/// second of one ONNX Runtime run on 2 cores.
fn slow_model(channels: usize) -> Model {
    let mut builder = ModelBuilder::new("slow");
    builder
        .input("x", &[Some(1), Some(channels), Some(256), Some(256)])
        .weight("w", &weights(&[channels, channels, 3, 3], 0.5));
    let mut last = "x".to_string();
    for i in 0..16 {
        let next = format!("y{i}");
        builder.node(
            "Conv",
            &[&last, "w"],
            &[&next],
            &[Attr::Ints("pads", vec![1, 1, 1, 1])],
        );
        last = next;
    }
    builder
        .output(&last, &[Some(1), Some(channels), Some(256), Some(256)])
        .build()
        .unwrap()
}

#[test]
fn a_run_past_its_deadline_stops_where_the_backend_can_stop_it() {
    use std::time::{Duration, Instant};
    let kind = sedna::media::backend().unwrap().kind;
    // tract cannot stop a run: a smaller model shows that it runs to its end.
    let channels = if kind == BackendKind::OnnxRuntime {
        64
    } else {
        8
    };
    let model = slow_model(channels);
    let mut session = model.session(&SessionOptions::default()).unwrap();
    let input = weights(&[1, channels, 256, 256], 1.0);
    let inputs = [("x", &input)];
    // A deadline already passed: nothing runs, on either backend.
    let err = session
        .run_until(&inputs, Some(Instant::now()))
        .unwrap_err();
    assert!(err.message.contains("deadline passed"), "{err}");

    let started = Instant::now();
    session
        .run(&inputs)
        .expect("runs to its end without a deadline");
    let whole = started.elapsed();
    let started = Instant::now();
    let stopped = session.run_until(&inputs, Some(Instant::now() + Duration::from_millis(50)));
    let took = started.elapsed();
    match kind {
        BackendKind::OnnxRuntime => {
            let err = stopped.expect_err("ONNX Runtime stops the run");
            assert_eq!(err.kind, ErrorKind::Runtime);
            assert!(err.message.contains("the call's deadline passed"), "{err}");
            assert!(
                took < whole / 2,
                "stopped after {took:?}; a whole run {whole:?}"
            );
        }
        BackendKind::Tract => assert!(stopped.is_ok(), "{:?}", stopped.err()),
    }
    // The session serves the next run.
    session.run(&inputs).expect("the next run");
}
