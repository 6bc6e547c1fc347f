//! Sedna's resources on Kubernetes. `sedna controller` (Sedna's GlobalManager role)
//! makes each job's Pods from its templates and follows them; `sedna agent` (the
//! LocalController role), on the node that holds the job's dataset, counts samples, fires
//! the train trigger and decides deploys with the same code as `sedna run`
//! ([`LocalJob`](crate::learn::LocalJob)); the Pods run `sedna worker train|eval|infer`.
//!
//! The job's status conditions are how the two hand the round to each other. Each
//! condition's `data` holds the round's [`RoundData`]; the last condition says whose
//! move it is:
//!
//! | last condition                          | who        | what happens next                                   |
//! |-----------------------------------------|------------|-----------------------------------------------------|
//! | none                                    | controller | `Train Waiting`                                     |
//! | `Train Waiting`, `Deploy Completed`     | agent      | the train trigger fires: `Train Ready`              |
//! | `Train Ready`, `Eval Ready`             | controller | the stage's Pod is created: `Starting`              |
//! | `Starting`, `Running`                   | controller | follows the Pod: `Running`, `Completed`, `Failed`   |
//! | `Train Completed`                       | controller | the eval Pod is created: `Eval Starting`            |
//! | `Eval Completed`                        | agent      | the deploy trigger: `Deploy Ready` (model copied) or `Deploy Completed` |
//! | `Deploy Ready`                          | controller | hot update: `Deploy Completed`; else the inference Pod is replaced first |
//! | `Train Failed`, `Eval Failed`           | agent      | at the next check, the same stage again: `Ready`    |
//!
//! Unlike Sedna, the condition list is bounded ([`STATUS_CONDITIONS_KEPT`]) and a stage's
//! result travels in its Pod's termination message, not in a fire-and-forget report.

pub mod agent;
pub mod controller;
pub mod env;
pub mod pods;
pub mod worker;

use serde::{Deserialize, Serialize};

use crate::plugin::{Metric, MetricMap, metric_map, metrics_of};
use crate::spec::{
    ConditionType, IncrementalLearningJob, IncrementalLearningJobStatus, JobCondition, Stage,
};

/// Conditions kept in a job's status, newest last (Sedna's list grows without bound).
pub const STATUS_CONDITIONS_KEPT: usize = 20;

/// What a round's conditions carry from stage to stage (the condition's `data`, JSON).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundData {
    pub round: u64,
    /// The new training samples (a `txt` index on the dataset's node).
    pub train_dataset_url: String,
    /// The evaluation set.
    pub test_dataset_url: String,
    /// The model training starts from and the new model is compared with.
    pub base_model_url: String,
    /// Where the trained model goes.
    pub model_url: String,
    /// What the last stage's worker reported (its Pod's termination message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

/// The stage and type of a job's last condition, with its round data when it has some.
pub fn last_condition(job: &IncrementalLearningJob) -> Option<(&JobCondition, Option<RoundData>)> {
    let condition = job.status.as_ref()?.conditions.last()?;
    let data = condition
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok());
    Some((condition, data))
}

/// Now, as the API server writes times (RFC 3339, seconds, UTC).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A new condition, stamped now.
pub fn condition(
    stage: Stage,
    kind: ConditionType,
    reason: &str,
    message: impl Into<String>,
    data: Option<&RoundData>,
) -> JobCondition {
    let now = now();
    JobCondition {
        kind: kind.name().into(),
        status: "True".into(),
        stage: stage.name().into(),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
        reason: Some(reason.into()),
        message: Some(message.into()),
        data: data.map(|d| serde_json::to_string(d).expect("round data serializes")),
    }
}

/// The job's status with `condition` appended (the oldest dropped past
/// [`STATUS_CONDITIONS_KEPT`]); `startTime` is set at the first condition.
pub fn appended(
    job: &IncrementalLearningJob,
    condition: JobCondition,
) -> IncrementalLearningJobStatus {
    let mut status = job.status.clone().unwrap_or_default();
    if status.start_time.is_none() {
        status.start_time = condition.last_transition_time.clone();
    }
    status.conditions.push(condition);
    let excess = status
        .conditions
        .len()
        .saturating_sub(STATUS_CONDITIONS_KEPT);
    status.conditions.drain(..excess);
    status
}

/// The merge patch that sets a job's status to `status`. It carries the
/// `resourceVersion` the status was computed from, so the API server refuses it (409)
/// when someone else wrote in between, rather than one side's conditions overwriting
/// the other's.
pub fn status_patch(
    job: &IncrementalLearningJob,
    status: &IncrementalLearningJobStatus,
) -> serde_json::Value {
    match &job.metadata.resource_version {
        Some(version) => serde_json::json!({
            "metadata": { "resourceVersion": version },
            "status": status,
        }),
        None => serde_json::json!({ "status": status }),
    }
}

/// What `sedna worker train` and `sedna worker eval` write to their Pod's termination
/// message, and the agent reads from the stage's `Completed` condition.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct WorkerReport {
    /// Samples trained or evaluated on.
    pub samples: usize,
    /// Training: the trained model's metrics (loss per epoch). Evaluation: each model's,
    /// in `MODEL_URLS` order (the new model first).
    pub models: Vec<ModelMetrics>,
}

/// One model's metrics in a worker's report.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ModelMetrics {
    pub url: String,
    pub metrics: MetricMap,
}

impl ModelMetrics {
    pub fn new(url: &str, metrics: &[Metric]) -> Self {
        ModelMetrics {
            url: url.into(),
            metrics: metric_map(metrics),
        }
    }

    pub fn metrics(&self) -> Vec<Metric> {
        metrics_of(&self.metrics)
    }
}
