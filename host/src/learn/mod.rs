//! The learning loop: dataset monitor, triggers, the train/eval/deploy round and its
//! persisted state.

pub mod dataset;
pub mod handle;
pub mod job;
pub mod labels;
pub mod split;
pub mod state;
pub mod status;
pub mod trigger;

pub use handle::{BindError, JobHandle, SlotName};
pub use job::{Checked, Collected, LocalJob, ModelWatch, RoundFiles, RoundReport, RoundStats};
pub use status::JobStatus;
