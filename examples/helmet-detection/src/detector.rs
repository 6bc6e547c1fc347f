//! The example's detector, written as ONNX by the project's own code: a fixed backbone
//! and a trainable grid head, a 1x1 convolution the `ONNX` estimator fine-tunes. The
//! backbone stands in for a pretrained one and is never trained, so what the model
//! learns is in the head.
//!
//! The backbone: each pixel's membership of the eleven basic colour terms (black, white,
//! red, green, yellow, blue, brown, purple, pink, orange, grey), as a soft L1 ball around
//! a prototype colour; averaged over 8x8 patches; then each 16-pixel cell gathers the
//! 4x4 patches of the 32x32 window around it. Distinct colours land in distinct
//! features, so learning a new colour leaves what the head knows of the others alone.

use sedna::media::{Attr, Model, ModelBuilder, Tensor};

use crate::scene::{CLASSES, HEIGHT, WIDTH};

/// Prototype RGB of each basic colour term.
const COLOURS: [[u8; 3]; 11] = [
    [20, 20, 20],
    [240, 240, 240],
    [200, 30, 30],
    [60, 170, 60],
    [240, 220, 30],
    [40, 80, 210],
    [120, 75, 40],
    [130, 50, 160],
    [240, 170, 180],
    [250, 130, 20],
    [128, 128, 128],
];
/// A pixel belongs to a colour by `1 - L1 distance / RADIUS` (RGB on [0, 1]), at least 0.
const RADIUS: f32 = 0.45;
/// The image is averaged over 2x2 pixels first, then over patches of 4x4 of those.
const PATCH: usize = 4;
/// Each cell's window: 4x4 patches, one cell (2 patches) apart.
const WINDOW: usize = 4;
pub const FEATURES: usize = COLOURS.len() * WINDOW * WINDOW;
pub const ROWS: usize = HEIGHT as usize / 16;
pub const COLS: usize = WIDTH as usize / 16;

/// The detector with an untrained head (small fixed weights, objectness biased low).
pub fn untrained() -> Model {
    let n = COLOURS.len();
    // |x - c| per colour and channel as ReLU(x - c) + ReLU(c - x): 6 units a colour.
    let mut diff_w = Tensor::zeros(vec![6 * n, 3, 1, 1]);
    let mut diff_b = Tensor::zeros(vec![6 * n]);
    for (k, prototype) in COLOURS.iter().enumerate() {
        for (c, value) in prototype.iter().enumerate() {
            let value = f32::from(*value) / 255.0;
            for (sign, unit) in [(1.0, 6 * k + 2 * c), (-1.0, 6 * k + 2 * c + 1)] {
                diff_w.data[unit * 3 + c] = sign;
                diff_b.data[unit] = -sign * value;
            }
        }
    }
    let mut member_w = Tensor::zeros(vec![n, 6 * n, 1, 1]);
    for k in 0..n {
        member_w.data[k * 6 * n + 6 * k..k * 6 * n + 6 * k + 6].fill(-1.0 / RADIUS);
    }
    let member_b = Tensor::new("member.b", vec![n], vec![1.0; n]).expect("shape");
    let mut patch_w = Tensor::zeros(vec![n, 1, PATCH, PATCH]);
    patch_w.data.fill(1.0 / (PATCH * PATCH) as f32);
    let mut gather = Tensor::zeros(vec![FEATURES, n, WINDOW, WINDOW]);
    for f in 0..n {
        for k in 0..WINDOW * WINDOW {
            let out = f * WINDOW * WINDOW + k;
            gather.data[(out * n + f) * WINDOW * WINDOW + k] = 1.0;
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
        .weight("diff.w", &diff_w)
        .weight("diff.b", &diff_b)
        .weight("member.w", &member_w)
        .weight("member.b", &member_b)
        .weight("patch.w", &patch_w)
        .weight("gather.w", &gather)
        .weight("head.w", &head_w)
        .weight("head.b", &head_b)
        .node(
            "AveragePool",
            &["image"],
            &["half"],
            &[
                Attr::Ints("kernel_shape", vec![2, 2]),
                Attr::Ints("strides", vec![2, 2]),
            ],
        )
        .node("Conv", &["half", "diff.w", "diff.b"], &["diff"], &[])
        .node("Relu", &["diff"], &["distance"], &[])
        .node(
            "Conv",
            &["distance", "member.w", "member.b"],
            &["near"],
            &[],
        )
        .node("Relu", &["near"], &["membership"], &[])
        .node(
            "Conv",
            &["membership", "patch.w"],
            &["colour.relu"],
            &[
                Attr::Ints("strides", vec![PATCH as i64, PATCH as i64]),
                Attr::Int("group", n as i64),
            ],
        )
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
