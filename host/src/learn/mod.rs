//! The learning loop: dataset monitor, triggers, the train/eval/deploy round.

pub mod trigger;
