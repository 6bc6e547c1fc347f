//! What an estimator holds by handle through the `inference` interface: models, sessions,
//! data sets and frames stay on the host.

use std::sync::Arc;

use crate::media::{Frame, Model, Sample, Session};
use crate::train;

/// A model the guest holds (the `graph` resource).
pub struct Graph(pub(super) Arc<Model>);

/// A session the guest holds (the `graph-execution-context` resource).
/// With the bytes it is counted for (its model's).
pub struct ExecutionContext(pub(super) Session, pub(super) u64);

/// A training session the guest holds (the `training` interface's `session`).
pub struct TrainingSession(pub(super) train::Session);

/// A labelled data set the guest holds (the `dataset` resource).
pub struct Dataset(pub(super) Arc<[Sample]>);

/// A frame the guest holds (the `frame` resource): shared, never copied.
pub type FrameHandle = Arc<Frame>;
