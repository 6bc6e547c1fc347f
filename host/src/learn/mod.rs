//! The learning loop: dataset monitor, triggers, the train/eval/deploy round.

pub mod dataset;
pub mod split;
pub mod trigger;
