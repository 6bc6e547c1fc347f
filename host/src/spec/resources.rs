//! Sedna's resources, `sedna.io/v1alpha1`: `Dataset`, `Model` and
//! `IncrementalLearningJob`, with Sedna's field names, so the quick start's YAML is
//! accepted as written. Kubernetes fields of pod templates (image, volumes, resources)
//! are accepted and, in one process, ignored; container `env` entries become the stage's
//! parameters.
//!
//! The same types are Kubernetes custom resources (`kube`'s `CustomResource`): `crds()`
//! generates their definitions (`sedna crds`, `deploy/crds.yaml`).
//!
//! Every error names the file, the document, the field path and what to write instead.

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::{Condition, ConditionType, Format, MAX_PLUGINS, Stage, Timer};

pub const API_VERSION: &str = "sedna.io/v1alpha1";

/// A data index: one sample per line (`txt` or `csv`).
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "sedna.io",
    version = "v1alpha1",
    kind = "Dataset",
    namespaced,
    derive = "PartialEq",
    status = "DatasetStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Samples","type":"integer","jsonPath":".status.numberOfSamples"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetSpec {
    /// The data index file.
    pub url: String,
    pub format: Format,
    /// The node that holds the index (Kubernetes mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Directories outside the index's own whose images its lines may name (absolute
    /// paths). By default a local index names images only under its own directory, after
    /// `..` and symbolic links are resolved: whoever can append a line cannot make the job
    /// read any other file. Not in Sedna.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_dirs: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_samples: Option<u64>,
}

/// A model file (ONNX).
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "sedna.io",
    version = "v1alpha1",
    kind = "Model",
    namespaced,
    derive = "PartialEq",
    status = "ModelStatus",
    printcolumn = r#"{"name":"Format","type":"string","jsonPath":".spec.format"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    pub url: String,
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<KeyValue>,
}

/// Sedna's incremental-learning job: a dataset that grows, a train trigger, an
/// evaluation, a deploy trigger and an inference worker that mines hard examples.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "sedna.io",
    version = "v1alpha1",
    kind = "IncrementalLearningJob",
    namespaced,
    derive = "PartialEq",
    shortname = "il",
    status = "IncrementalLearningJobStatus",
    printcolumn = r#"{"name":"Stage","type":"string","jsonPath":".status.conditions[-1].stage"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[-1].type"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncrementalLearningJobSpec {
    pub initial_model: NameRef,
    pub dataset: DatasetRef,
    pub train_spec: TrainSpec,
    pub eval_spec: EvalSpec,
    pub deploy_spec: DeploySpec,
    pub output_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
}

/// What the job's status subresource reports: the stage transitions (bounded, newest
/// last) and when the job started and ended.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncrementalLearningJobStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<JobCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// One stage transition, with Sedna's field names.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCondition {
    /// `Waiting`, `Ready`, `Starting`, `Running`, `Completed` or `Failed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True` or `False`.
    pub status: String,
    /// `Train`, `Eval` or `Deploy`.
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the stage produced (the model's path, the metrics), as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl JobCondition {
    /// The stage, when it is one of Sedna's (a condition written by hand may hold anything).
    pub fn stage(&self) -> Option<Stage> {
        self.stage.parse().ok()
    }

    /// The condition's type, when it is one of Sedna's.
    pub fn kind(&self) -> Option<ConditionType> {
        self.kind.parse().ok()
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameRef {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
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

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,
    pub trigger: TrainTrigger,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainTrigger {
    #[serde(default = "default_period")]
    pub check_period_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<Timer>,
    pub condition: Condition,
    /// `trigger-condition` plugins, each ANDed with `condition` (Sedna has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PLUGINS))]
    pub plugins: Vec<PluginRef>,
}

fn default_period() -> u64 {
    60
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploySpec {
    pub model: DeployModel,
    pub trigger: DeployTrigger,
    pub hard_example_mining: PluginRef,
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployModel {
    pub name: String,
    #[serde(default)]
    pub hot_update_enabled: bool,
    #[serde(default = "default_period")]
    pub poll_period_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployTrigger {
    pub condition: Condition,
    /// `trigger-condition` plugins, each ANDed with `condition` (Sedna has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PLUGINS))]
    pub plugins: Vec<PluginRef>,
}

/// A plugin by built-in name (`IBT`, `HardExampleRatio`), store name (`name@version`) or
/// `.wasm` path, with its parameters as Sedna writes them.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// A pod template is a Kubernetes `PodTemplateSpec`; the CRD keeps its schema open
/// (the API server checks the Pods made from it) rather than repeat ~5,000 lines of it.
fn pod_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A pod template's containers' `env` entries, in order: the stage's parameters.
pub fn parameters(template: &PodTemplateSpec) -> Vec<KeyValue> {
    template
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|c| c.env.iter().flatten())
        .map(|e| KeyValue {
            key: e.name.clone(),
            value: e.value.clone().unwrap_or_default(),
        })
        .collect()
}

/// The three custom resource definitions.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Dataset::crd(), Model::crd(), IncrementalLearningJob::crd()]
}

/// The custom resource definitions as one multi-document YAML text: what `sedna crds`
/// prints and `deploy/crds.yaml` holds.
pub fn crds_yaml() -> String {
    let mut text = String::from(
        "# The CustomResourceDefinitions of Sedna's resources (sedna.io/v1alpha1).\n\
         # Generated by `sedna crds` from the Rust types; do not edit.\n",
    );
    for crd in crds() {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(&crd).expect("a CRD serializes"));
    }
    text
}

/// Every resource the files hold, by kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub datasets: Vec<Dataset>,
    pub models: Vec<Model>,
    pub jobs: Vec<IncrementalLearningJob>,
    /// Secrets (`v1`) the files hold: the object-storage credentials a `credentialName`
    /// names, as a cluster would give them.
    pub secrets: Vec<Secret>,
}

impl Resources {
    /// The keys of the Secret `name` (its `stringData` over its `data`), when the files
    /// hold it.
    pub fn secret(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        let secret = self.secrets.iter().find(|s| s.name_any() == name)?;
        let mut keys: std::collections::BTreeMap<String, String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        keys.extend(secret.string_data.clone().unwrap_or_default());
        Some(keys)
    }
}

/// A resource that cannot be used: where it is and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SpecError {
    pub file: PathBuf,
    /// 1-based document number within the file.
    pub document: usize,
    /// `Kind name` when known.
    pub resource: Option<String>,
    /// The field path, e.g. `spec.trainSpec.trigger.condition.operator`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
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
pub fn load(paths: &[PathBuf]) -> Result<Resources, SpecError> {
    let mut resources = Resources::default();
    let mut origins = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?;
        parse_into(path, &text, &mut resources, &mut origins)?;
    }
    check_references(&resources, &origins)?;
    Ok(resources)
}

/// Reads the resources in `paths` (YAML files, and the `.yaml` and `.yml` files of
/// directories) file by file: a file that cannot be read or parsed, and a job whose
/// resources are not in any file, are left out, each with its error; the rest are
/// returned. For a process that runs several jobs, so that one broken job does not stop
/// the others.
pub fn load_each(paths: &[PathBuf]) -> (Resources, Vec<SpecError>) {
    let mut resources = Resources::default();
    let (mut origins, mut errors) = (Vec::new(), Vec::new());
    for path in expand(paths, &mut errors) {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| unreadable(&path, e))
            .and_then(|text| {
                let (mut one, mut from) = (Resources::default(), Vec::new());
                parse_into(&path, &text, &mut one, &mut from).map(|()| (one, from))
            });
        match parsed {
            Ok((one, from)) => {
                resources.datasets.extend(one.datasets);
                resources.models.extend(one.models);
                resources.jobs.extend(one.jobs);
                resources.secrets.extend(one.secrets);
                origins.extend(from);
            }
            Err(e) => errors.push(e),
        }
    }
    let checked: Vec<bool> = resources
        .jobs
        .iter()
        .zip(&origins)
        .map(|(job, origin)| match check_job(&resources, job, origin) {
            Ok(()) => true,
            Err(e) => {
                errors.push(e);
                false
            }
        })
        .collect();
    let mut keep = checked.into_iter();
    resources.jobs.retain(|_| keep.next().unwrap_or(false));
    (resources, errors)
}

/// The files of `paths`: a directory stands for its YAML files, in name order.
fn expand(paths: &[PathBuf], errors: &mut Vec<SpecError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut yaml: Vec<PathBuf> = entries
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| {
                        p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                    })
                    .collect();
                yaml.sort();
                files.extend(yaml);
            }
            Err(e) => errors.push(unreadable(path, e)),
        }
    }
    files
}

fn unreadable(path: &Path, e: std::io::Error) -> SpecError {
    SpecError {
        file: path.to_path_buf(),
        document: 0,
        resource: None,
        field: None,
        message: format!("cannot read it: {e}"),
    }
}

/// Reads and checks the resources in one YAML text, as if it were the file `file`.
pub fn parse(file: &Path, text: &str) -> Result<Resources, SpecError> {
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

const KINDS: &str = "Dataset, Model, IncrementalLearningJob or Secret (v1)";

/// The largest resource file read: jobs are a few kilobytes.
const MAX_FILE: usize = 4 << 20;
/// The deepest nesting of flow collections (`[`, `{`) a file may have: the YAML parser
/// spends time quadratic in it before its own limit.
const MAX_DEPTH: usize = 64;

/// Refuses a file too large or nested too deep before it is parsed.
fn check_shape(file: &Path, text: &str) -> Result<(), SpecError> {
    let refuse = |line: usize, message: String| SpecError {
        file: file.to_path_buf(),
        document: 0,
        resource: None,
        field: None,
        message: if line > 0 {
            format!("line {line}: {message}")
        } else {
            message
        },
    };
    if text.len() > MAX_FILE {
        return Err(refuse(
            0,
            format!(
                "{} bytes: resource files are at most {MAX_FILE} bytes",
                text.len()
            ),
        ));
    }
    let (mut depth, mut quote, mut escaped) = (0usize, None, false);
    for (number, line) in text.lines().enumerate() {
        let mut previous = ' ';
        for c in line.chars() {
            match (quote, c) {
                (Some(_), _) if escaped => escaped = false,
                (Some('"'), '\\') => escaped = true,
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                // Quoted scalars start where a scalar may (not in `it's`) and may span lines.
                (None, '\'' | '"') if previous.is_whitespace() || "[{,:".contains(previous) => {
                    quote = Some(c)
                }
                // A comment runs to the end of its line.
                (None, '#') if previous.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(refuse(
                            number + 1,
                            format!("nested deeper than {MAX_DEPTH} levels: not a resource"),
                        ));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            previous = c;
        }
    }
    Ok(())
}

fn parse_into(
    file: &Path,
    text: &str,
    resources: &mut Resources,
    origins: &mut Vec<Origin>,
) -> Result<(), SpecError> {
    check_shape(file, text)?;
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let error = |resource: Option<String>, field: Option<String>, message: String| SpecError {
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
        let Some(name) = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
        else {
            return Err(error(
                Some(kind),
                Some("metadata.name".into()),
                "missing: give the resource a name".into(),
            ));
        };
        let resource = Some(format!("{kind} {name}"));
        if kind == "Secret" && text_field("apiVersion").as_deref() == Some("v1") {
            resources
                .secrets
                .push(typed_value(&value).map_err(|e| error(resource, e.0, e.1))?);
            continue;
        }
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
fn check_references(resources: &Resources, origins: &[Origin]) -> Result<(), SpecError> {
    for (job, origin) in resources.jobs.iter().zip(origins) {
        check_job(resources, job, origin)?;
    }
    Ok(())
}

/// Checks that the resources `job` names are among `resources`.
fn check_job(
    resources: &Resources,
    job: &IncrementalLearningJob,
    origin: &Origin,
) -> Result<(), SpecError> {
    let models: Vec<&str> = resources
        .models
        .iter()
        .map(|m| m.meta().name.as_deref().unwrap_or_default())
        .collect();
    let datasets: Vec<&str> = resources
        .datasets
        .iter()
        .map(|d| d.meta().name.as_deref().unwrap_or_default())
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
            return Err(SpecError {
                file: origin.file.clone(),
                document: origin.document,
                resource: Some(format!("IncrementalLearningJob {}", job.name_any())),
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
    Ok(())
}
