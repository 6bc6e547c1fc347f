//! What the benches share: detector models of a given cost at the seed's input size.
#![allow(dead_code)]

use sedna::media::{Attr, Model, ModelBuilder, Tensor};

pub const CLASSES: usize = 4;

pub fn weights(dims: &[usize], salt: f32) -> Tensor {
    let len: usize = dims.iter().product();
    let fan_in = (len / dims[0]) as f32;
    let data = (0..len)
        .map(|i| ((i as f32 + salt) * 1.37).sin() / fan_in.sqrt())
        .collect();
    Tensor::new("w", dims.to_vec(), data).unwrap()
}

/// 3x3 convolutions `(inputs, outputs, stride)` then a 1x1 grid head at stride 16.
pub fn detector(layers: &[(usize, usize, i64)]) -> Model {
    let mut b = ModelBuilder::new("bench-detector");
    b.input("image", &[Some(1), Some(3), Some(352), Some(640)]);
    let mut previous = "image".to_string();
    for (i, &(inputs, outputs, stride)) in layers.iter().enumerate() {
        let (w, bias, conv, relu) = (
            format!("c{i}.w"),
            format!("c{i}.b"),
            format!("c{i}"),
            format!("r{i}"),
        );
        b.weight(&w, &weights(&[outputs, inputs, 3, 3], i as f32))
            .weight(&bias, &Tensor::zeros(vec![outputs]))
            .node(
                "Conv",
                &[&previous, &w, &bias],
                &[&conv],
                &[
                    Attr::Ints("strides", vec![stride, stride]),
                    Attr::Ints("pads", vec![1, 1, 1, 1]),
                ],
            )
            .node("Relu", &[&conv], &[&relu], &[]);
        previous = relu;
    }
    // Objectness starts low, as a trained detector's does on most cells.
    let mut head_bias = Tensor::zeros(vec![5 + CLASSES]);
    head_bias.data[0] = -4.0;
    let features = layers.last().unwrap().1;
    b.weight("head.w", &weights(&[5 + CLASSES, features, 1, 1], 9.0))
        .weight("head.b", &head_bias)
        .node("Conv", &[&previous, "head.w", "head.b"], &["grid"], &[])
        .output("grid", &[Some(1), Some(5 + CLASSES), Some(22), Some(40)])
        .metadata("sedna.task", "detection")
        .metadata("sedna.class_names", "person,helmet,helmet-on,helmet-off");
    b.build().unwrap()
}

/// ~0.19 G multiply-adds per frame: a very small detector.
pub const SMALL: &[(usize, usize, i64)] = &[(3, 16, 2), (16, 32, 2), (32, 64, 2), (64, 64, 2)];
/// ~1.3 G multiply-adds per frame, a YOLOv3-tiny-class budget (the seed's helmet model,
/// YOLOv3-tiny at 352x640, is ~3.6 G).
pub const TINY_YOLO_CLASS: &[(usize, usize, i64)] = &[
    (3, 16, 2),
    (16, 32, 2),
    (32, 64, 2),
    (64, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 1),
    (256, 256, 1),
];
