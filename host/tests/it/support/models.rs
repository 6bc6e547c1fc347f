//! Small ONNX models and synthetic labelled images the tests make themselves.

use std::path::Path;
use std::sync::Arc;

use sedna::media::{Attr, Frame, Label, Model, ModelBuilder, Sample, Tensor};

/// 8 filters of `size` x `size` pixels, even over the patch: a stand-in for a pretrained backbone's
/// colour features. Filters 0-2 answer to one colour more than the other two, 3-5 to
/// the opposite, 6-7 to brightness.
pub fn colour_filters(size: usize) -> Tensor {
    let area = size * size;
    let data = (0..8 * 3 * area)
        .map(|i| {
            let (filter, channel) = (i / (3 * area), (i / area) % 3);
            let weight = match filter {
                0..=2 if channel == filter => 1.0,
                0..=2 => -0.5,
                3..=5 if channel == filter - 3 => -1.0,
                3..=5 => 0.5,
                _ => 1.0 / 3.0,
            };
            weight / area as f32
        })
        .collect();
    Tensor::new("backbone.w", vec![8, 3, size, size], data).unwrap()
}

/// Input 64x32; a stride-8 conv makes 8 features per 8x8 cell (a 4x8 grid); a 1x1 conv
/// head gives the grid head's 5 + 2 channels. The head starts from small arbitrary
/// weights: the untrained model finds nothing useful.
pub fn detector(metadata: &[(&str, &str)]) -> Model {
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
        .weight("backbone.w", &colour_filters(8))
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

/// Input 16x16; a 16x16 conv gives 8 colour features; a Gemm head (weight [2, 8]) gives
/// red/blue logits, wired the wrong way round before training.
pub fn classifier() -> Model {
    ModelBuilder::new("colour-classifier")
        .input("image", &[Some(1), Some(3), Some(16), Some(16)])
        .weight("backbone.w", &colour_filters(16))
        .weight("head.w", &swapped_head())
        .weight("head.b", &Tensor::zeros(vec![2]))
        .node("Conv", &["image", "backbone.w"], &["conv"], &[])
        .node("Relu", &["conv"], &["relu"], &[])
        .node("Flatten", &["relu"], &["features"], &[Attr::Int("axis", 1)])
        .node(
            "Gemm",
            &["features", "head.w", "head.b"],
            &["logits"],
            &[Attr::Int("transB", 1)],
        )
        .output("logits", &[Some(1), Some(2)])
        .metadata("sedna.task", "classification")
        .metadata("sedna.class_names", "red,blue")
        .metadata("sedna.features", "features")
        .metadata("sedna.trainable", "head.w,head.b")
        .build()
        .unwrap()
}

/// Class 0 (red) reads the blue feature and class 1 the red one.
pub fn swapped_head() -> Tensor {
    let mut head = Tensor::zeros(vec![2, 8]);
    head.data[2] = 1.0;
    head.data[8] = 1.0;
    head
}

/// Reddish or bluish 16x16 images, labelled by name or by index as indexes write them.
pub fn colour_samples(dir: &Path, first_seed: u64, count: u64) -> Arc<[Sample]> {
    (first_seed..first_seed + count)
        .map(|seed| {
            let blue = seed % 2 == 1;
            let tint = (seed * 37 % 60) as u8;
            let colour = if blue {
                [40 + tint, 60, 200]
            } else {
                [200, 60, 40 + tint]
            };
            let pixels = colour.repeat(16 * 16);
            let image = dir.join(format!("colour-{seed}.png"));
            Frame::from_rgb("colour", 16, 16, pixels)
                .unwrap()
                .pixels()
                .save(&image)
                .unwrap();
            let class = match (blue, seed % 3) {
                (true, 0) => "1",
                (true, _) => "blue",
                (false, _) => "red",
            };
            Sample {
                line: seed + 1,
                image,
                label: Label::Class(class.to_string()),
            }
        })
        .collect()
}

pub const CONVENTIONS: &[(&str, &str)] = &[
    ("sedna.task", "detection"),
    ("sedna.class_names", "red,blue"),
    ("sedna.features", "features"),
    ("sedna.trainable", "head.w,head.b"),
];

/// A 64x32 grey image (with a little texture) holding 1-3 cell-aligned 8x8 squares,
/// red for class 0 and blue for class 1; `scale` enlarges the whole picture.
pub fn scene(seed: u64, scale: u32) -> (Frame, Vec<([f32; 4], u32)>) {
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
pub fn dataset(dir: &Path, first_seed: u64, count: u64) -> Arc<[Sample]> {
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
