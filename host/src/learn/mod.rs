//! The learning loop: dataset monitor, triggers, the train/eval/deploy round and its
//! persisted state.

pub mod dataset;
pub mod job;
pub mod labels;
pub mod split;
pub mod state;
pub mod trigger;

pub use job::{Checked, LocalJob, RoundReport};
