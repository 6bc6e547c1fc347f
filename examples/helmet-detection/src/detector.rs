//! The example's detector, written as ONNX by the project's own code: a fixed backbone
//! (colour detectors on 8x8 patches, then each 32x32 window's 4x4 patches gathered into
//! one feature vector per 16-pixel cell) and a trainable grid head, a 1x1 convolution
//! the `ONNX` estimator fine-tunes. The backbone stands in for a pretrained one: it is
//! never trained, so what the model learns is in the head.

use sedna::infer::{Attr, Model, ModelBuilder, Tensor};

use crate::scene::{CLASSES, HEIGHT, WIDTH};

const PATCH: usize = 8;
/// Colour detectors: weights on the patch's mean R, G, B (on [0, 1]) and a threshold; the
/// ReLU keeps how far past the threshold the patch is.
const COLOURS: [([f32; 3], f32); 8] = [
    ([1.0, 0.0, -1.0], 0.15),                  // warm: skin, orange, yellow, red
    ([0.0, 1.0, -1.0], 0.15),                  // yellow, lime
    ([-1.0, 0.0, 1.0], 0.10),                  // blue
    ([1.0, -1.0, 0.0], 0.20),                  // red, orange
    ([-1.0, 1.0, 0.0], 0.05),                  // green
    ([1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], 0.70), // bright: white
    ([-1.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0], -0.30), // dark: hair, trousers
    ([1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], 0.45), // mid-bright
];
/// Each cell's window: 4x4 patches, one cell (2 patches) apart.
const WINDOW: usize = 4;
pub const FEATURES: usize = COLOURS.len() * WINDOW * WINDOW;
pub const ROWS: usize = HEIGHT as usize / 16;
pub const COLS: usize = WIDTH as usize / 16;

/// The detector with an untrained head (small fixed weights, objectness biased low).
pub fn untrained() -> Model {
    let area = (PATCH * PATCH) as f32;
    let mut colour_w = Tensor::zeros(vec![COLOURS.len(), 3, PATCH, PATCH]);
    for (f, (weights, _)) in COLOURS.iter().enumerate() {
        for (c, w) in weights.iter().enumerate() {
            let start = (f * 3 + c) * PATCH * PATCH;
            colour_w.data[start..start + PATCH * PATCH].fill(w / area);
        }
    }
    let colour_b = Tensor::new(
        "colour.b",
        vec![COLOURS.len()],
        COLOURS.iter().map(|(_, t)| -t).collect(),
    )
    .expect("shape");
    let mut gather = Tensor::zeros(vec![FEATURES, COLOURS.len(), WINDOW, WINDOW]);
    for f in 0..COLOURS.len() {
        for k in 0..WINDOW * WINDOW {
            let out = f * WINDOW * WINDOW + k;
            gather.data[(out * COLOURS.len() + f) * WINDOW * WINDOW + k] = 1.0;
        }
    }
    let outputs = 5 + CLASSES.len();
    let head_w = Tensor::new(
        "head.w",
        vec![outputs, FEATURES, 1, 1],
        (0..outputs * FEATURES)
            .map(|i| ((i as f32) * 0.618).sin() * 0.01)
            .collect(),
    )
    .expect("shape");
    let mut head_b = Tensor::zeros(vec![outputs]);
    head_b.data[0] = -4.0;
    let classes = CLASSES.join(",");
    let (h, w) = (HEIGHT as usize, WIDTH as usize);
    ModelBuilder::new("helmet-detector")
        .input("image", &[Some(1), Some(3), Some(h), Some(w)])
        .weight("colour.w", &colour_w)
        .weight("colour.b", &colour_b)
        .weight("gather.w", &gather)
        .weight("head.w", &head_w)
        .weight("head.b", &head_b)
        .node(
            "Conv",
            &["image", "colour.w", "colour.b"],
            &["colour"],
            &[Attr::Ints("strides", vec![8, 8])],
        )
        .node("Relu", &["colour"], &["colour.relu"], &[])
        .node(
            "Conv",
            &["colour.relu", "gather.w"],
            &["features"],
            &[
                Attr::Ints("strides", vec![2, 2]),
                Attr::Ints("pads", vec![1, 1, 1, 1]),
            ],
        )
        .node("Conv", &["features", "head.w", "head.b"], &["grid"], &[])
        .output("grid", &[Some(1), Some(outputs), Some(ROWS), Some(COLS)])
        .metadata("sedna.task", "detection")
        .metadata("sedna.head", "grid")
        .metadata("sedna.class_names", &classes)
        .metadata("sedna.features", "features")
        .metadata("sedna.trainable", "head.w,head.b")
        .build()
        .expect("the detector is a valid model")
}
