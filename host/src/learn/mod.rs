//! The learning loop of a job: [`LocalJob`] opened from its resources ([`setup`]), its
//! rounds ([`round`]: train, eval, deploy), where its files go ([`layout`]), its run loop
//! ([`run`]), persisted state, dataset monitor, train/eval split, triggers, status, the
//! handle the HTTP service holds, and label import and export.
//!
//! Imports [`crate::pipeline`], [`crate::plugin`], [`crate::media`] and [`crate::spec`].

pub mod binds;
pub mod dataset;
pub mod estimator;
pub mod handle;
pub mod job;
pub mod labels;
pub mod layout;
pub mod round;
pub mod run;
pub mod serving;
pub mod setup;
pub mod split;
pub mod staging;
pub mod state;
pub mod stats;
pub mod status;
pub mod trigger;
pub mod watch;

pub use binds::SlotName;
pub use handle::{BindError, JobHandle};
pub use job::{LocalJob, RoundFiles};
pub use layout::OutputLayout;
pub use round::{Checked, Collected, RoundReport};
pub use run::{Runs, run};
pub use serving::{Serving, ServingPlan};
pub use staging::Staging;
pub use stats::RoundStats;
pub use status::JobStatus;
pub use watch::DeployedModel;
