//! Sedna's helmet-detection example: generated building-site scenes, a YOLO-style
//! detector trained from random weights by the project's training engine, a shifted video
//! stream and one round of incremental learning (`src/main.rs`, the README). The
//! benchmarks (`bench/`) run on the same data and model.

pub mod base;
pub mod data;
pub mod demo;
pub mod detector;
pub mod lab;
pub mod report;
pub mod scene;

/// Seeds of the held-out test scenes: never used for training or deploy decisions.
pub const TEST_SEEDS: u64 = 100_000;
