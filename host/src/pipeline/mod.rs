//! The inference pipeline: frame sources push frames into a [`FrameSink`] (the
//! [`InferenceWorker`]), which runs each through the estimator and the HEM, keeps hard
//! examples in the [`HardExampleStore`] and logs every outcome to the [`ResultLog`].
//!
//! Imports [`crate::media`] and [`crate::plugin`]; nothing above.

pub mod camera;
pub mod decisions;
pub mod hard_examples;
pub mod results;
pub mod source;
pub mod upload;
pub mod worker;

pub use camera::{CameraOptions, CameraStats};
pub use decisions::{RECENT_DECISIONS, RecentDecisions};
pub use hard_examples::{HardExampleRecord, HardExampleStore};
pub use results::{DecisionTail, ResultLine, ResultLog};
pub use source::{FrameSink, FrameSource, ImageDir, SourceOptions};
pub use upload::{HardExampleUpload, UploadStats};
pub use worker::{FrameStages, InferenceWorker, Outcome, WorkerStats};
