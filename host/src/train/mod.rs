//! The training engine: an ONNX model's graph evaluated node by node over candle's tensors
//! with its trainable weights as variables, so that backpropagation reaches every layer of
//! a real model (a YOLO detector, a CNN classifier), not just a head on fixed features.
//!
//! [`Session`] is the host side of the estimator's `training` interface: forward on a
//! batch, backward from a host [`Loss`] or from output gradients a component computed,
//! accumulation, an [`Optimizer`] step, export of the complete model. Operators are in
//! `ops` (each with a gradient checked against central differences in the tests); a model
//! with any other operator is refused when the session opens, naming the node.
//!
//! BatchNormalization trains its scale and shift; its running statistics stay frozen (the
//! inference form), which keeps small incremental rounds from drifting them, unless the
//! session is told to learn them ([`Statistics`], `norm`).
//!
//! Imports `media` (models, tensors, errors) and nothing above it.

mod backward;
mod conv;
mod fuse;
mod graph;
mod loss;
mod norm;
mod ops;
mod optim;
mod pointwise;
mod session;
mod value;

pub use graph::Trainable;
pub use loss::Loss;
pub use norm::Statistics;
pub use ops::SUPPORTED;
pub use optim::Optimizer;
pub use session::{Options, Precision, Progress, Session, default_threads};
