//! A job's resource as the API server would hold it, built up a condition at a time (in
//! the style of kube-rs controller-rs `fixtures.rs`): what the agent's `step` is handed.

use sedna::cluster::{RoundData, appended, condition};
use sedna::learn::LocalJob;
use sedna::plugin::PluginStore;
use sedna::spec::{ConditionType, IncrementalLearningJob, JobCondition, Stage};

use super::job::Job;

/// `IncrementalLearningJob` documents, e.g. the agent's turn after an evaluation:
/// `JobDoc::of(&job).started().then(Stage::Eval, ConditionType::Completed, "PodSucceeded",
/// &round).doc()`.
pub struct JobDoc {
    job: IncrementalLearningJob,
}

impl JobDoc {
    /// The job as its YAML has it: no status.
    pub fn of(job: &Job) -> Self {
        let job = sedna::spec::load(std::slice::from_ref(&job.yaml))
            .unwrap()
            .jobs
            .remove(0);
        JobDoc { job }
    }

    /// The controller's first condition: `Train Waiting`.
    pub fn started(self) -> Self {
        self.then_condition(condition(
            Stage::Train,
            ConditionType::Waiting,
            "JobStarted",
            "",
            None,
        ))
    }

    /// `condition` appended as the job's last.
    pub fn then_condition(mut self, condition: JobCondition) -> Self {
        self.job.status = Some(appended(&self.job, condition));
        self
    }

    /// A condition `stage kind` for `round` appended, with the reason `reason`.
    pub fn then(self, stage: Stage, kind: ConditionType, reason: &str, round: &RoundData) -> Self {
        self.then_condition(condition(stage, kind, reason, "", Some(round)))
    }

    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.job.metadata.namespace = Some(namespace.into());
        self
    }

    pub fn doc(self) -> IncrementalLearningJob {
        self.job
    }
}

impl Job {
    /// The job as the agent opens it on the dataset's node: no worker here.
    pub fn deciding(&self) -> LocalJob {
        let resources = sedna::spec::load(std::slice::from_ref(&self.yaml)).unwrap();
        let store = PluginStore::open(&self.root().join("home")).unwrap();
        LocalJob::open_deciding(&resources, None, super::runtime(), &store).unwrap()
    }
}
