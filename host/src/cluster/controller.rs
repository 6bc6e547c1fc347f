//! `sedna controller`: Sedna's GlobalManager role for IncrementalLearningJobs. It keeps
//! each job's inference Pod running, creates a round's train and eval Pods when the
//! agent asks for them, follows them into the job's conditions, and replaces the
//! inference Pod when a model is deployed without hot update. Every transition is also
//! an Event; a finalizer deletes the job's Pods before the job goes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::env::{EvalEnv, InferEnv, TrainEnv};
use super::pods::{self, JOB_LABEL, Phase, PodPlan, Worker};
use super::{RoundData, appended, condition, last_condition, status_patch};
use crate::spec::{ConditionType, Dataset, IncrementalLearningJob, Model, Stage};
use crate::storage::Location;

/// The finalizer the controller puts on each job.
pub const FINALIZER: &str = "sedna.io/incremental-learning-job";
/// How often a job is looked at again when nothing changed.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again after a step that waits on the API server (a Pod terminating).
const SOON: Duration = Duration::from_secs(2);

/// What reconciling a job needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// The node directories (and those under them) a job's Pods may mount: the paths a
    /// job names become read-write `hostPath`s, so whoever may create a job would
    /// otherwise mount any directory of a node.
    pub host_paths: Vec<std::path::PathBuf>,
}

impl Context {
    /// A context whose jobs may mount `host_paths` (absolute directories) and what lies
    /// under them.
    pub fn new(client: Client, host_paths: Vec<std::path::PathBuf>) -> Self {
        let reporter = Reporter {
            controller: "sedna-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            host_paths,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

/// Runs the controller on the jobs of `namespace` (or all namespaces) until a signal.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    host_paths: Vec<std::path::PathBuf>,
) -> anyhow::Result<()> {
    if let Some(relative) = host_paths.iter().find(|p| !p.is_absolute()) {
        anyhow::bail!(
            "--allow-host-path {}: give an absolute directory of the nodes",
            relative.display()
        );
    }
    let (jobs, pods): (Api<IncrementalLearningJob>, Api<Pod>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // Fail early, with the reason, when the CRDs are not installed or RBAC forbids it.
    jobs.list(&ListParams::default().limit(1)).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot list IncrementalLearningJobs: {e}; install the CRDs (`sedna crds | kubectl apply -f -`) and deploy/rbac.yaml"
        )
    })?;
    let context = Arc::new(Context::new(client, host_paths));
    Controller::new(jobs, watcher::Config::default())
        .owns(pods, watcher::Config::default().labels(JOB_LABEL))
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((job, _)) => tracing::debug!(
                    "reconciled {}/{}",
                    job.namespace.unwrap_or_default(),
                    job.name
                ),
                Err(e) => tracing::warn!("{e}"),
            }
        })
        .await;
    Ok(())
}

fn error_policy(job: Arc<IncrementalLearningJob>, error: &Error, _: Arc<Context>) -> Action {
    if let Error::Kube(kube::Error::Api(status)) = error
        && status.code == 409
    {
        // Someone wrote the job since this look: look again at the newer version.
        tracing::debug!(job = %job.name_any(), "{error}; looking again");
        return Action::requeue(SOON);
    }
    tracing::warn!(job = %job.name_any(), "{error}; retrying in 30 s");
    Action::requeue(Duration::from_secs(30))
}

/// One look at a job: its finalizer first, then [`apply`] or, when it is being deleted,
/// [`cleanup`].
pub async fn reconcile(
    job: Arc<IncrementalLearningJob>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_else(|| "default".into());
    let jobs: Api<IncrementalLearningJob> = Api::namespaced(context.client.clone(), &namespace);
    finalizer(&jobs, FINALIZER, job, |event| async {
        match event {
            finalizer::Event::Apply(job) => apply(&job, &context).await,
            finalizer::Event::Cleanup(job) => cleanup(&job, &context).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// A job's API handles.
struct Apis {
    jobs: Api<IncrementalLearningJob>,
    pods: Api<Pod>,
}

impl Apis {
    fn new(client: &Client, namespace: &str) -> Self {
        Apis {
            jobs: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
        }
    }
}

/// Where the job's files are, from its Models and Dataset.
struct Places {
    initial_model: String,
    deploy_model: String,
    /// The dataset's node: the inference worker's, and the stages' unless everything is
    /// in object storage.
    node: Option<String>,
    /// The local directories the paths name, mounted at the same place.
    host_dirs: Vec<std::path::PathBuf>,
    /// `outputDir`, when it is on the node: the only directory mounted writable.
    output: Option<std::path::PathBuf>,
    /// Every file of the job (outputDir, dataset, models) is in object storage: train
    /// and eval run where their templates say (a GPU node in the cloud), not pinned to
    /// the dataset's node.
    portable: bool,
    /// The Secret whose keys the Pods get as env (Sedna's credential names).
    credential: Option<String>,
}

/// Why a job's Pods cannot be made now: an event's reason and message.
struct Refusal {
    reason: &'static str,
    message: String,
}

async fn places(
    job: &IncrementalLearningJob,
    context: &Context,
) -> Result<Result<Places, Refusal>, Error> {
    let namespace = job.namespace().unwrap_or_default();
    let models: Api<Model> = Api::namespaced(context.client.clone(), &namespace);
    let datasets: Api<Dataset> = Api::namespaced(context.client.clone(), &namespace);
    let spec = &job.spec;
    let (Some(initial), Some(deploy), Some(dataset)) = (
        models.get_opt(&spec.initial_model.name).await?,
        models.get_opt(&spec.deploy_spec.model.name).await?,
        datasets.get_opt(&spec.dataset.name).await?,
    ) else {
        return Ok(Err(Refusal {
            reason: "MissingResource",
            message: format!(
                "the job names Model {}, Model {} and Dataset {}: create the missing ones in namespace {namespace}",
                spec.initial_model.name, spec.deploy_spec.model.name, spec.dataset.name
            ),
        }));
    };
    let local = |url: &str| match Location::parse(url) {
        Ok(Location::Local(path)) => Some(path),
        _ => None,
    };
    let parent = |url: &str| local(url).and_then(|p| p.parent().map(Path::to_path_buf));
    let dirs: Vec<_> = [
        local(&spec.output_dir),
        parent(&dataset.spec.url),
        parent(&initial.spec.url),
        parent(&deploy.spec.url),
    ]
    .into_iter()
    .flatten()
    .collect();
    let credential = [
        &spec.credential_name,
        &dataset.spec.credential_name,
        &initial.spec.credential_name,
        &deploy.spec.credential_name,
    ]
    .into_iter()
    .find_map(Clone::clone);
    let host_dirs = pods::host_dirs(dirs.iter().map(|d| d.as_path()));
    if let Some(refused) = host_dirs.iter().find(|d| {
        !context
            .host_paths
            .iter()
            .any(|allowed| d.starts_with(allowed))
    }) {
        let allowed: Vec<String> = context
            .host_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return Ok(Err(Refusal {
            reason: "HostPathNotAllowed",
            message: format!(
                "the job's files name {} on the node, which is not under a directory the administrator allows Pods to mount ({}): move the files under one, keep them in object storage, or have `sedna controller --allow-host-path` include it",
                refused.display(),
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        }));
    }
    Ok(Ok(Places {
        host_dirs,
        output: local(&spec.output_dir),
        portable: dirs.is_empty(),
        initial_model: initial.spec.url,
        deploy_model: deploy.spec.url,
        node: dataset.spec.node_name,
        credential,
    }))
}

/// Moves the job one step (see the table in [`super`]).
async fn apply(job: &IncrementalLearningJob, context: &Context) -> Result<Action, Error> {
    let name = job.name_any();
    let apis = Apis::new(&context.client, &job.namespace().unwrap_or_default());
    let places = match places(job, context).await? {
        Ok(places) => places,
        Err(refusal) => {
            publish(
                context,
                job,
                EventType::Warning,
                refusal.reason,
                &refusal.message,
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let listed = apis
        .pods
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={}", pods::job_label(&name))))
        .await?
        .items;
    let find = |pod_name: &str| listed.iter().find(|p| p.name_any() == pod_name);

    // The inference worker runs for the job's whole life.
    let infer_name = Worker::Infer.pod_name(&name, None);
    match find(&infer_name) {
        None => {
            let pod = pods::pod(job, &inference_plan(job, &places));
            apis.pods.create(&PostParams::default(), &pod).await?;
            let message = format!("created Pod {infer_name} serving {}", places.deploy_model);
            publish(
                context,
                job,
                EventType::Normal,
                "InferenceWorkerCreated",
                &message,
            )
            .await;
        }
        Some(pod) if pod.metadata.deletion_timestamp.is_none() && pods::phase(pod).ended() => {
            apis.pods
                .delete(&infer_name, &DeleteParams::default())
                .await?;
            let message = format!(
                "Pod {infer_name} ended ({}): replacing it",
                pods::termination_message(pod)
            );
            publish(
                context,
                job,
                EventType::Warning,
                "InferenceWorkerEnded",
                &message,
            )
            .await;
        }
        Some(_) => {}
    }

    let Some((last, data)) = last_condition(job) else {
        let waiting = condition(
            Stage::Train,
            ConditionType::Waiting,
            "JobStarted",
            "waiting for the train trigger",
            None,
        );
        transit(&apis, context, job, waiting, EventType::Normal).await?;
        return Ok(Action::requeue(RESYNC));
    };
    let Some(data) = data else {
        return Ok(Action::requeue(RESYNC));
    };
    let (stage, kind) = (last.stage(), last.kind());
    let worker = match stage {
        Some(Stage::Train) => Worker::Train,
        _ => Worker::Eval,
    };
    let pod_of = |worker: Worker| find(&worker.pod_name(&name, Some(data.round)));
    use ConditionType::{Completed, Ready, Running, Starting};
    use Stage::{Deploy, Eval, Train};
    match (stage, kind) {
        (Some(Train | Eval), Some(Ready)) | (Some(Train), Some(Completed)) => {
            // A trained round goes straight on to its evaluation.
            let worker = if kind == Some(Completed) {
                Worker::Eval
            } else {
                worker
            };
            let existing = pod_of(worker);
            start(&apis, context, job, &places, worker, &data, existing).await
        }
        (Some(Train | Eval), Some(kind @ (Starting | Running))) => {
            let pod = pod_of(worker);
            follow(&apis, context, job, worker, kind, data, pod).await
        }
        (Some(Deploy), Some(Ready)) => {
            deploy(&apis, context, job, &places, &data, find(&infer_name)).await
        }
        _ => Ok(Action::requeue(RESYNC)),
    }
}

fn inference_plan<'a>(job: &IncrementalLearningJob, places: &'a Places) -> PodPlan<'a> {
    let deploy = &job.spec.deploy_spec;
    let env = InferEnv {
        model: places.deploy_model.clone(),
        base_model: Some(places.initial_model.clone()),
        hem_name: deploy.hard_example_mining.name.clone(),
        hem_parameters: deploy.hard_example_mining.parameters.clone(),
        hot_update: deploy.model.hot_update_enabled,
        poll_period_seconds: deploy.model.poll_period_seconds,
        output_dir: job.spec.output_dir.clone(),
    };
    PodPlan {
        worker: Worker::Infer,
        round: None,
        env: env.to_env(),
        node: places.node.as_deref(),
        host_dirs: &places.host_dirs,
        output: places.output.as_deref(),
        secret: places.credential.as_deref(),
    }
}

/// Creates the stage's Pod for the round (after deleting an earlier attempt's).
async fn start(
    apis: &Apis,
    context: &Context,
    job: &IncrementalLearningJob,
    places: &Places,
    worker: Worker,
    data: &RoundData,
    existing: Option<&Pod>,
) -> Result<Action, Error> {
    let pod_name = worker.pod_name(&job.name_any(), Some(data.round));
    match existing {
        Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
            return Ok(Action::requeue(SOON));
        }
        // An earlier attempt that ended: it goes first.
        Some(pod) if pods::phase(pod).ended() => {
            apis.pods
                .delete(&pod_name, &DeleteParams::default())
                .await?;
            return Ok(Action::requeue(SOON));
        }
        // This attempt's Pod, made by a look whose status write did not land: record it.
        Some(_) => {}
        None => {
            let plan = stage_plan(worker, data, places);
            apis.pods
                .create(&PostParams::default(), &pods::pod(job, &plan))
                .await?;
        }
    }
    let data = RoundData {
        report: None,
        ..data.clone()
    };
    let message = format!("round {}: created Pod {pod_name}", data.round);
    let starting = condition(
        worker.stage(),
        ConditionType::Starting,
        "PodCreated",
        message,
        Some(&data),
    );
    transit(apis, context, job, starting, EventType::Normal).await?;
    Ok(Action::requeue(RESYNC))
}

/// A train or eval Pod's plan: the round's files.
fn stage_plan<'a>(worker: Worker, data: &RoundData, places: &'a Places) -> PodPlan<'a> {
    let env = match worker {
        Worker::Train => TrainEnv {
            base_model: data.base_model_url.clone(),
            train_dataset: data.train_dataset_url.clone(),
            model: data.model_url.clone(),
        }
        .to_env(),
        _ => EvalEnv {
            // The new model first, then the deployed one it is compared with.
            models: vec![data.model_url.clone(), data.base_model_url.clone()],
            test_dataset: data.test_dataset_url.clone(),
        }
        .to_env(),
    };
    PodPlan {
        worker,
        round: Some(data.round),
        env,
        node: places.node.as_deref().filter(|_| !places.portable),
        host_dirs: &places.host_dirs,
        output: places.output.as_deref(),
        secret: places.credential.as_deref(),
    }
}

/// Follows a stage's Pod into the job's conditions.
async fn follow(
    apis: &Apis,
    context: &Context,
    job: &IncrementalLearningJob,
    worker: Worker,
    kind: ConditionType,
    mut data: RoundData,
    pod: Option<&Pod>,
) -> Result<Action, Error> {
    let stage = worker.stage();
    let pod_name = worker.pod_name(&job.name_any(), Some(data.round));
    let round = data.round;
    let next = match pod.map(pods::phase) {
        None => Some((
            condition(
                stage,
                ConditionType::Failed,
                "PodDeleted",
                format!("round {round}: Pod {pod_name} was deleted"),
                Some(&data),
            ),
            EventType::Warning,
        )),
        Some(Phase::Running) if kind != ConditionType::Running => Some((
            condition(
                stage,
                ConditionType::Running,
                "PodRunning",
                format!("round {round}: Pod {pod_name} is running"),
                Some(&data),
            ),
            EventType::Normal,
        )),
        Some(Phase::Succeeded) => {
            let said = pods::termination_message(pod.expect("a phase means a Pod"));
            data.report =
                Some(serde_json::from_str(&said).unwrap_or(serde_json::Value::String(said)));
            Some((
                condition(
                    stage,
                    ConditionType::Completed,
                    "PodSucceeded",
                    format!("round {round}: Pod {pod_name} succeeded"),
                    Some(&data),
                ),
                EventType::Normal,
            ))
        }
        Some(Phase::Failed) => {
            let said = pods::termination_message(pod.expect("a phase means a Pod"));
            let said: String = said.chars().take(1024).collect();
            Some((
                condition(
                    stage,
                    ConditionType::Failed,
                    "PodFailed",
                    format!("round {round}: Pod {pod_name} failed: {said}"),
                    Some(&data),
                ),
                EventType::Warning,
            ))
        }
        _ => None,
    };
    if let Some((next, kind)) = next {
        transit(apis, context, job, next, kind).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// A model was deployed: with hot update the inference worker loads it itself; without,
/// its Pod is replaced (the next look creates it again on the new model).
async fn deploy(
    apis: &Apis,
    context: &Context,
    job: &IncrementalLearningJob,
    places: &Places,
    data: &RoundData,
    inference: Option<&Pod>,
) -> Result<Action, Error> {
    let model = &job.spec.deploy_spec.model;
    let message = if model.hot_update_enabled {
        format!(
            "round {}: {} deployed; the inference worker loads it within {} s (hot update)",
            data.round, places.deploy_model, model.poll_period_seconds
        )
    } else {
        let name = Worker::Infer.pod_name(&job.name_any(), None);
        if inference.is_some() {
            apis.pods.delete(&name, &DeleteParams::default()).await?;
        }
        format!(
            "round {}: {} deployed; Pod {name} replaced to serve it",
            data.round, places.deploy_model
        )
    };
    let done = condition(
        Stage::Deploy,
        ConditionType::Completed,
        "ModelDeployed",
        message,
        Some(data),
    );
    transit(apis, context, job, done, EventType::Normal).await?;
    Ok(Action::requeue(RESYNC))
}

/// The job is being deleted: its Pods go now (not whenever garbage collection reaches
/// them, which on an edge node cut off from the cluster can be long).
async fn cleanup(job: &IncrementalLearningJob, context: &Context) -> Result<Action, Error> {
    let name = job.name_any();
    let apis = Apis::new(&context.client, &job.namespace().unwrap_or_default());
    apis.pods
        .delete_collection(
            &DeleteParams::background(),
            &ListParams::default().labels(&format!("{JOB_LABEL}={}", pods::job_label(&name))),
        )
        .await?;
    publish(
        context,
        job,
        EventType::Normal,
        "Deleted",
        "deleted the job's Pods",
    )
    .await;
    Ok(Action::await_change())
}

/// Appends `next` to the job's conditions and says so in an Event.
async fn transit(
    apis: &Apis,
    context: &Context,
    job: &IncrementalLearningJob,
    next: crate::spec::JobCondition,
    kind: EventType,
) -> Result<(), Error> {
    let reason = format!("{}{}", next.stage, next.kind);
    let message = next.message.clone().unwrap_or_default();
    let status = appended(job, next);
    apis.jobs
        .patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status_patch(job, &status)),
        )
        .await?;
    publish(context, job, kind, &reason, &message).await;
    Ok(())
}

/// Publishes an Event about the job; an Event that cannot be written is logged, not fatal.
async fn publish(
    context: &Context,
    job: &IncrementalLearningJob,
    kind: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_: kind,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = context.recorder.publish(&event, &job.object_ref(&())).await {
        tracing::warn!(job = %job.name_any(), "cannot write the event {reason}: {e}");
    }
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
