//! Sedna's resources, `sedna.io/v1alpha1`: `Dataset`, `Model` and
//! `IncrementalLearningJob`, with Sedna's field names, so the quick start's YAML is
//! accepted as written. Kubernetes fields of pod templates (image, volumes, resources)
//! are accepted and, in one process, ignored; container `env` entries become the stage's
//! parameters.
//!
//! Every error names the file, the document, the field path and what to write instead.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::learn::dataset::Format;
use crate::learn::trigger::{Condition, Timer};

pub const API_VERSION: &str = "sedna.io/v1alpha1";

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Dataset {
    pub metadata: ObjectMeta,
    pub spec: DatasetSpec,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetSpec {
    /// The data index file.
    pub url: String,
    pub format: Format,
    #[serde(default)]
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Model {
    pub metadata: ObjectMeta,
    pub spec: ModelSpec,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    pub url: String,
    pub format: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct IncrementalLearningJob {
    pub metadata: ObjectMeta,
    pub spec: JobSpec,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    pub initial_model: NameRef,
    pub dataset: DatasetRef,
    pub train_spec: TrainSpec,
    pub eval_spec: EvalSpec,
    pub deploy_spec: DeploySpec,
    pub output_dir: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRef {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetRef {
    pub name: String,
    /// The share of new samples that go to training; the rest go to evaluation.
    #[serde(default = "default_train_prob")]
    pub train_prob: f64,
}

fn default_train_prob() -> f64 {
    0.8
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub template: PodTemplate,
    pub trigger: TrainTrigger,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainTrigger {
    #[serde(default = "default_period")]
    pub check_period_seconds: u64,
    #[serde(default)]
    pub timer: Option<Timer>,
    pub condition: Condition,
}

fn default_period() -> u64 {
    60
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    pub template: PodTemplate,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploySpec {
    pub model: DeployModel,
    pub trigger: DeployTrigger,
    pub hard_example_mining: HardExampleMining,
    pub template: PodTemplate,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployModel {
    pub name: String,
    #[serde(default)]
    pub hot_update_enabled: bool,
    #[serde(default = "default_period")]
    pub poll_period_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployTrigger {
    pub condition: Condition,
}

/// A HEM plugin by built-in name (`IBT`), store name (`name@version`) or `.wasm` path.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardExampleMining {
    pub name: String,
    #[serde(default)]
    pub parameters: Vec<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// A Kubernetes pod template: only what a stage reads is kept.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PodTemplate {
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

impl PodTemplate {
    /// The containers' `env` entries, in order: the stage's parameters.
    pub fn parameters(&self) -> Vec<KeyValue> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.env)
            .map(|e| KeyValue {
                key: e.name.clone(),
                value: e.value.clone(),
            })
            .collect()
    }
}

/// Every resource the files hold, by kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub datasets: Vec<Dataset>,
    pub models: Vec<Model>,
    pub jobs: Vec<IncrementalLearningJob>,
}

/// A resource that cannot be used: where it is and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ApiError {
    pub file: PathBuf,
    /// 1-based document number within the file.
    pub document: usize,
    /// `Kind name` when known.
    pub resource: Option<String>,
    /// The field path, e.g. `spec.trainSpec.trigger.condition.operator`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)?;
        if let Some(resource) = &self.resource {
            write!(f, " ({resource})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads and checks the resources in `paths` (multi-document YAML files).
pub fn load(paths: &[PathBuf]) -> Result<Resources, ApiError> {
    let mut resources = Resources::default();
    let mut origins = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| ApiError {
            file: path.clone(),
            document: 0,
            resource: None,
            field: None,
            message: format!("cannot read it: {e}"),
        })?;
        parse_into(path, &text, &mut resources, &mut origins)?;
    }
    check_references(&resources, &origins)?;
    Ok(resources)
}

/// Reads and checks the resources in one YAML text, as if it were the file `file`.
pub fn parse(file: &Path, text: &str) -> Result<Resources, ApiError> {
    let mut resources = Resources::default();
    let mut origins = Vec::new();
    parse_into(file, text, &mut resources, &mut origins)?;
    check_references(&resources, &origins)?;
    Ok(resources)
}

/// Where each job came from, to name it in errors found after parsing.
struct Origin {
    file: PathBuf,
    document: usize,
}

const KINDS: &str = "Dataset, Model or IncrementalLearningJob";

fn parse_into(
    file: &Path,
    text: &str,
    resources: &mut Resources,
    origins: &mut Vec<Origin>,
) -> Result<(), ApiError> {
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let error = |resource: Option<String>, field: Option<String>, message: String| ApiError {
            file: file.to_path_buf(),
            document: number,
            resource,
            field,
            message,
        };
        let value = Value::deserialize(document)
            .map_err(|e| error(None, None, format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let text_field = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        let kind = text_field("kind").ok_or_else(|| {
            error(
                None,
                Some("kind".into()),
                format!("missing: write `kind: ` and one of {KINDS}"),
            )
        })?;
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("(no name)");
        let resource = Some(format!("{kind} {name}"));
        match text_field("apiVersion").as_deref() {
            Some(API_VERSION) => {}
            other => {
                return Err(error(
                    resource,
                    Some("apiVersion".into()),
                    format!("is {other:?}: write `apiVersion: {API_VERSION}`"),
                ));
            }
        }
        let typed =
            |r: Option<String>| move |e: (Option<String>, String)| error(r.clone(), e.0, e.1);
        match kind.as_str() {
            "Dataset" => resources
                .datasets
                .push(typed_value(&value).map_err(typed(resource))?),
            "Model" => resources
                .models
                .push(typed_value(&value).map_err(typed(resource))?),
            "IncrementalLearningJob" => {
                let job: IncrementalLearningJob =
                    typed_value(&value).map_err(typed(resource.clone()))?;
                let train_prob = job.spec.dataset.train_prob;
                if !(train_prob > 0.0 && train_prob <= 1.0) {
                    return Err(error(
                        resource,
                        Some("spec.dataset.trainProb".into()),
                        format!("is {train_prob}: write a share in (0, 1], e.g. 0.8"),
                    ));
                }
                resources.jobs.push(job);
                origins.push(Origin {
                    file: file.to_path_buf(),
                    document: number,
                });
            }
            other => {
                return Err(error(
                    resource,
                    Some("kind".into()),
                    format!("{other:?} is not a kind sedna runs: use {KINDS}"),
                ));
            }
        }
    }
    Ok(())
}

/// Deserializes with the path of the field that failed.
fn typed_value<T: DeserializeOwned>(value: &Value) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        (field, e.into_inner().to_string())
    })
}

/// Each job's model and dataset names must name resources given alongside it.
fn check_references(resources: &Resources, origins: &[Origin]) -> Result<(), ApiError> {
    for (job, origin) in resources.jobs.iter().zip(origins) {
        let models: Vec<&str> = resources
            .models
            .iter()
            .map(|m| m.metadata.name.as_str())
            .collect();
        let datasets: Vec<&str> = resources
            .datasets
            .iter()
            .map(|d| d.metadata.name.as_str())
            .collect();
        let references = [
            (
                "spec.initialModel.name",
                &job.spec.initial_model.name,
                "Model",
                &models,
            ),
            (
                "spec.deploySpec.model.name",
                &job.spec.deploy_spec.model.name,
                "Model",
                &models,
            ),
            (
                "spec.dataset.name",
                &job.spec.dataset.name,
                "Dataset",
                &datasets,
            ),
        ];
        for (field, name, kind, known) in references {
            if !known.contains(&name.as_str()) {
                return Err(ApiError {
                    file: origin.file.clone(),
                    document: origin.document,
                    resource: Some(format!("IncrementalLearningJob {}", job.metadata.name)),
                    field: Some(field.into()),
                    message: format!(
                        "no {kind} named {name:?} in the files given (there {}): add its document or fix the name",
                        match known.as_slice() {
                            [] => format!("is no {kind}"),
                            names => format!("are {}", names.join(", ")),
                        }
                    ),
                });
            }
        }
    }
    Ok(())
}
