//! The ONNX estimator: predicts, evaluates and fine-tunes ONNX models that the host runs.
//!
//! The model's conventions (task, classes, input, output layout, which layer trains) come
//! from its `metadata_props`, overridable by job parameters: see the README. The math
//! (decoders, NMS, metrics, training) lives in plain modules, tested natively; the
//! component glue is in `guest`, built for wasm only.

pub mod conventions;
pub mod decode;
pub mod metrics;
pub mod train;
pub mod yolo;

#[cfg(target_family = "wasm")]
mod guest;
