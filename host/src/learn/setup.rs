//! Opening a job: its resources resolved and checked before anything runs. Every error
//! names the job and the field to fix.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::{Resource, ResourceExt};

use super::dataset::DatasetMonitor;
use super::estimator::{PER_CLASS_METRICS, estimator_source};
use super::layout::OutputLayout;
use super::state::JobState;
use super::trigger::{PluginConditions, Trigger};
use super::watch::DeployedModel;
use crate::files::ExclusiveLock;
use crate::plugin::{
    Param, Plugin, PluginStore, Runtime, Sandbox, Source, TriggerCondition, params,
};
use crate::spec::{
    self, IncrementalLearningJob, MAX_PLUGINS, MAX_TRIGGER_CONDITIONS, PluginRef, Resources,
};
use crate::storage::{CACHE_BYTES, Cache, Credentials, Location, RETRY, Storage};

/// A job's parts, checked: what [`LocalJob`](super::LocalJob) runs.
pub(super) struct JobSetup {
    pub(super) name: String,
    pub(super) spec: IncrementalLearningJob,
    pub(super) train_prob: f64,
    pub(super) initial_model: PathBuf,
    /// Where the initial model is (its `Model`'s url).
    pub(super) initial: Location,
    pub(super) deploy_model: Location,
    /// The client for the deploy model's credentials.
    pub(super) deploy_storage: Arc<Storage>,
    /// The client for the job's own credentials (`HE_SAVED_URL`).
    pub(super) storage: Arc<Storage>,
    pub(super) cache: Arc<Cache>,
    pub(super) layout: OutputLayout,
    pub(super) state: JobState,
    /// Held while the job is open: a second process on the job is refused.
    pub(super) lock: ExclusiveLock,
    pub(super) monitor: DatasetMonitor,
    pub(super) train_trigger: Trigger,
    pub(super) deploy_trigger: Trigger,
    /// `checkPeriodSeconds`.
    pub(super) period: Duration,
    /// `pollPeriodSeconds`.
    pub(super) poll_period: Duration,
    /// `hotUpdateEnabled`.
    pub(super) hot_update: bool,
    pub(super) estimator: Source,
    pub(super) train_params: Vec<Param>,
    pub(super) eval_params: Vec<Param>,
    pub(super) deploy_params: Vec<Param>,
}

impl JobSetup {
    /// Reads the job `name` (or the only one) from checked resources: resolves its models,
    /// dataset and estimator, loads and checks its triggers, opens its state.
    pub(super) fn read(
        resources: &Resources,
        name: Option<&str>,
        runtime: &Runtime,
        store: &PluginStore,
    ) -> anyhow::Result<Self> {
        let job = pick(resources, name)?;
        let spec = &job.spec;
        let job_name = job.name_any();
        let what = |field: &str| format!("IncrementalLearningJob {job_name}, field `{field}`");
        let layout = OutputLayout::of(&spec.output_dir, store.home())
            .with_context(|| what("spec.outputDir"))?;
        std::fs::create_dir_all(layout.output()).with_context(|| {
            format!(
                "{}: cannot create {}",
                what("spec.outputDir"),
                layout.output().display()
            )
        })?;
        let mut storages = Storages::new(resources);
        let cache = Arc::new(Cache::new(layout.cache(), CACHE_BYTES));
        let model = |model_name: &str| {
            resources
                .models
                .iter()
                .find(|m| m.name_any() == model_name)
                .expect("references are checked at load")
        };
        let model_location = |model_name: &str, field: &str| -> anyhow::Result<Location> {
            let model = model(model_name);
            let location = Location::parse(&model.spec.url)
                .with_context(|| format!("{}: Model {model_name}, `spec.url`", what(field)))?;
            if let Some(path) = location.local()
                && path.is_dir()
            {
                bail!(
                    "{}: Model {model_name} points at the directory {}: point its `spec.url` at the .onnx file",
                    what(field),
                    path.display()
                );
            }
            Ok(location)
        };
        let initial = model_location(&spec.initial_model.name, "spec.initialModel")?;
        if initial.local().is_some_and(|path| !path.is_file()) {
            bail!(
                "{}: the initial model {initial} does not exist",
                what("spec.initialModel"),
            );
        }
        let initial_storage = storages
            .get(
                model(&spec.initial_model.name)
                    .spec
                    .credential_name
                    .as_deref(),
            )
            .with_context(|| what("spec.initialModel"))?;
        let initial_model = cache
            .fetch_or_cached(&initial_storage, &initial)
            .with_context(|| {
                format!(
                    "{}: cannot fetch the initial model",
                    what("spec.initialModel")
                )
            })?;
        let deploy_model = model_location(&spec.deploy_spec.model.name, "spec.deploySpec.model")?;
        if let Location::Http(_) = deploy_model {
            bail!(
                "{}: {deploy_model} is read only: deploy to s3:// or a local path",
                what("spec.deploySpec.model")
            );
        }
        let dataset = resources
            .datasets
            .iter()
            .find(|d| d.name_any() == spec.dataset.name)
            .expect("references are checked at load");

        let load_plugins = |plugins: &[PluginRef], field: &str| {
            trigger_plugins(runtime, store, plugins, field, &what)
        };
        let train = &spec.train_spec.trigger;
        let train_trigger = Trigger {
            timer: train.timer,
            conditions: vec![train.condition.clone()],
            plugins: load_plugins(&train.plugins, "spec.trainSpec.trigger.plugins")?,
        };
        let deploy = &spec.deploy_spec.trigger;
        let deploy_trigger = Trigger {
            timer: None,
            conditions: vec![deploy.condition.clone()],
            plugins: load_plugins(&deploy.plugins, "spec.deploySpec.trigger.plugins")?,
        };
        let per_class: Vec<String> = PER_CLASS_METRICS
            .iter()
            .flat_map(|m| [m.to_string(), format!("{m}_delta")])
            .collect();
        let per_class: Vec<&str> = per_class.iter().map(String::as_str).collect();
        train_trigger
            .validate(&[])
            .map_err(|e| anyhow::anyhow!("{}: {e}", what("spec.trainSpec.trigger")))?;
        deploy_trigger.validate(&per_class).map_err(|e| {
            anyhow::anyhow!("{}: {e}", what("spec.deploySpec.trigger.condition.metric"))
        })?;

        let train_params = params(&spec::parameters(&spec.train_spec.template));
        let estimator = estimator_source(store, &train_params)
            .with_context(|| what("spec.trainSpec env `estimator`"))?;

        let lock = ExclusiveLock::acquire(&layout.lock())
            .with_context(|| format!("IncrementalLearningJob {job_name}"))?;
        let state = JobState::open(&layout.state_db())?;
        let index = Location::parse(&dataset.spec.url)
            .with_context(|| format!("Dataset {}, `spec.url`", spec.dataset.name))?;
        let monitor = DatasetMonitor::at(
            index,
            dataset.spec.format,
            state.cursor()?,
            storages
                .get(dataset.spec.credential_name.as_deref())
                .with_context(|| format!("Dataset {}", spec.dataset.name))?,
            layout.objects(),
        )
        .confined(&dataset.spec.image_dirs)
        .map_err(|e| anyhow::anyhow!("Dataset {}: {e}", spec.dataset.name))?;
        Ok(JobSetup {
            name: job_name.clone(),
            spec: job.clone(),
            train_prob: spec.dataset.train_prob,
            initial_model,
            initial,
            deploy_model,
            deploy_storage: storages
                .get(
                    model(&spec.deploy_spec.model.name)
                        .spec
                        .credential_name
                        .as_deref(),
                )
                .with_context(|| what("spec.deploySpec.model"))?,
            // The job's own Secret, else its dataset's: most jobs keep one store.
            storage: storages
                .get(
                    spec.credential_name
                        .as_deref()
                        .or(dataset.spec.credential_name.as_deref()),
                )
                .with_context(|| what("credentialName"))?,
            cache,
            layout,
            state,
            lock,
            monitor,
            train_trigger,
            deploy_trigger,
            period: Duration::from_secs(train.check_period_seconds.max(1)),
            poll_period: Duration::from_secs(spec.deploy_spec.model.poll_period_seconds.max(1)),
            hot_update: spec.deploy_spec.model.hot_update_enabled,
            estimator,
            train_params,
            eval_params: params(&spec::parameters(&spec.eval_spec.template)),
            deploy_params: params(&spec::parameters(&spec.deploy_spec.template)),
        })
    }
}

impl JobSetup {
    /// The deploy model's place, watched from now.
    pub(super) fn deployed_model(&self) -> DeployedModel {
        DeployedModel::new(
            self.deploy_model.clone(),
            self.deploy_storage.clone(),
            self.cache.clone(),
        )
    }
}

/// One object-storage client per credential set a job's resources name. A
/// `credentialName` names a Secret in the files (as a cluster would hold it); one that is
/// not there, or none, means Sedna's variables from the environment.
struct Storages<'a> {
    resources: &'a Resources,
    made: std::collections::HashMap<Option<String>, Arc<Storage>>,
}

impl<'a> Storages<'a> {
    fn new(resources: &'a Resources) -> Self {
        Storages {
            resources,
            made: Default::default(),
        }
    }

    fn get(&mut self, credential_name: Option<&str>) -> anyhow::Result<Arc<Storage>> {
        let key = credential_name.map(str::to_string);
        if let Some(storage) = self.made.get(&key) {
            return Ok(storage.clone());
        }
        let credentials = match credential_name.and_then(|n| Some((n, self.resources.secret(n)?))) {
            Some((name, keys)) => {
                Credentials::from_vars(|k| keys.get(k).cloned(), &format!("Secret {name}"))?
            }
            None => {
                let origin = match credential_name {
                    Some(name) => format!("the environment (Secret {name} is not in the files)"),
                    None => "the environment".into(),
                };
                Credentials::from_vars(|k| std::env::var(k).ok(), &origin)?
            }
        };
        let storage = Arc::new(Storage::new(credentials, RETRY));
        self.made.insert(key, storage.clone());
        Ok(storage)
    }
}

/// A trigger's plugin conditions, loaded and initialised now: a bad one stops the job
/// here, its error saying `what` field (`<field>[i].name`) to fix.
fn trigger_plugins(
    runtime: &Runtime,
    store: &PluginStore,
    plugins: &[PluginRef],
    field: &str,
    what: &dyn Fn(&str) -> String,
) -> anyhow::Result<std::sync::Arc<PluginConditions>> {
    if plugins.len() > MAX_PLUGINS {
        bail!(
            "{}: a trigger holds at most {MAX_TRIGGER_CONDITIONS} conditions, its `condition` and {MAX_PLUGINS} plugins",
            what(field)
        );
    }
    let loaded = plugins
        .iter()
        .enumerate()
        .map(|(i, plugin)| {
            let field = format!("{field}[{i}]");
            let source = store
                .resolve(&plugin.name)
                .with_context(|| what(&format!("{field}.name")))?;
            Plugin::<TriggerCondition>::load(
                runtime,
                &source,
                params(&plugin.parameters),
                Sandbox::default(),
            )
            .with_context(|| what(&field))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(PluginConditions::new(loaded))
}

/// The job called `name`, or the only one, from the resources the files hold.
pub fn pick<'a>(
    resources: &'a Resources,
    name: Option<&str>,
) -> anyhow::Result<&'a IncrementalLearningJob> {
    let names: Vec<&str> = resources
        .jobs
        .iter()
        .map(|j| j.meta().name.as_deref().unwrap_or_default())
        .collect();
    match name {
        Some(name) => resources
            .jobs
            .iter()
            .find(|j| j.name_any() == name)
            .with_context(|| {
                format!(
                    "no IncrementalLearningJob named {name} (the files hold: {})",
                    names.join(", ")
                )
            }),
        None => match resources.jobs.as_slice() {
            [job] => Ok(job),
            [] => bail!("the files hold no IncrementalLearningJob"),
            _ => bail!(
                "the files hold several jobs ({}): choose one with --job",
                names.join(", ")
            ),
        },
    }
}
