//! Sedna's resources and the values they are written with: `Dataset`, `Model` and
//! `IncrementalLearningJob` (`sedna.io/v1alpha1`), trigger conditions, operators, metric
//! references, timers, data formats, and the stage and condition-type enums of a round.
//!
//! The bottom layer: imports nothing of ours.

mod condition;
mod format;
mod resources;
mod stage;

pub use condition::{
    ClockTime, Condition, MAX_PLUGINS, MAX_TRIGGER_CONDITIONS, MetricRef, Operator, Timer,
};
pub use format::Format;
pub use resources::*;
pub use stage::{ConditionType, Stage};
