//! The contract between `sedna controller` and the Pods it makes: the env variables of
//! each worker, with Sedna's names, as types. The controller writes them with `to_env`;
//! `sedna worker` reads them back with `from_env`, so both sides spell every name once.

use anyhow::Context as _;

use crate::spec::KeyValue;

pub const NAMESPACE: &str = "NAMESPACE";
pub const JOB_NAME: &str = "JOB_NAME";
pub const WORKER_NAME: &str = "WORKER_NAME";
/// The template env entries, as `[{key, value}]` JSON: the parameters `sedna worker`
/// hands the estimator (the same ones `sedna run` reads from the template).
pub const PARAMETERS: &str = "SEDNA_PARAMETERS";
pub const BASE_MODEL_URL: &str = "BASE_MODEL_URL";
pub const MODEL_URL: &str = "MODEL_URL";
pub const MODEL_URLS: &str = "MODEL_URLS";
pub const TRAIN_DATASET_URL: &str = "TRAIN_DATASET_URL";
pub const TEST_DATASET_URL: &str = "TEST_DATASET_URL";
pub const HEM_NAME: &str = "HEM_NAME";
pub const HEM_PARAMETERS: &str = "HEM_PARAMETERS";
pub const MODEL_HOT_UPDATE: &str = "MODEL_HOT_UPDATE";
pub const MODEL_POLL_PERIOD_SECONDS: &str = "MODEL_POLL_PERIOD_SECONDS";
pub const OUTPUT_DIR: &str = "OUTPUT_DIR";
/// Where a train or eval worker writes its report, when not to Kubernetes's termination
/// log (tests; a worker run by hand).
pub const REPORT_PATH: &str = "SEDNA_REPORT_PATH";

/// A Pod's env, as `(name, value)` pairs.
pub type Env = Vec<(&'static str, String)>;

/// Where a worker reads its env from: the process's, or a test's map.
pub trait Vars {
    fn var(&self, name: &str) -> Option<String>;

    /// Every variable (Sedna's workers take the lower-case ones as parameters).
    fn all(&self) -> Vec<(String, String)>;

    /// A variable the controller always sets.
    fn required(&self, name: &str) -> anyhow::Result<String> {
        self.var(name).with_context(|| {
            format!(
                "the env variable {name} is not set: `sedna controller` sets it in the Pods it makes; set it to run this worker by hand"
            )
        })
    }
}

/// The process's env.
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn all(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Vars for [(&'static str, String)] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }

    fn all(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

/// What every worker's Pod gets: who it is and the template's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct CommonEnv {
    pub namespace: String,
    pub job_name: String,
    pub worker_name: String,
    pub parameters: Vec<KeyValue>,
}

impl CommonEnv {
    /// What a worker knows of itself; outside a Pod (run by hand) the names may be absent.
    pub fn from_env(vars: &(impl Vars + ?Sized)) -> anyhow::Result<Self> {
        Ok(CommonEnv {
            namespace: vars.var(NAMESPACE).unwrap_or_default(),
            job_name: vars.var(JOB_NAME).unwrap_or_else(|| "job".into()),
            worker_name: vars.var(WORKER_NAME).unwrap_or_default(),
            parameters: parameters(vars)?,
        })
    }

    pub fn to_env(&self) -> Env {
        vec![
            (NAMESPACE, self.namespace.clone()),
            (JOB_NAME, self.job_name.clone()),
            (WORKER_NAME, self.worker_name.clone()),
            (
                PARAMETERS,
                serde_json::to_string(&self.parameters).expect("parameters serialize"),
            ),
        ]
    }
}

/// The estimator's parameters: `SEDNA_PARAMETERS` (the template's env entries), else,
/// as Sedna's workers take them, every env variable with a lower-case name.
pub fn parameters(vars: &(impl Vars + ?Sized)) -> anyhow::Result<Vec<KeyValue>> {
    if let Some(json) = vars.var(PARAMETERS) {
        return serde_json::from_str(&json).with_context(|| {
            format!(
                "the env variable {PARAMETERS} is not a JSON list of {{\"key\", \"value\"}}: {json}"
            )
        });
    }
    Ok(vars
        .all()
        .into_iter()
        .filter(|(k, _)| !k.chars().any(|c| c.is_ascii_uppercase()))
        .map(|(key, value)| KeyValue { key, value })
        .collect())
}

/// `sedna worker train`: fine-tune `base_model` on `train_dataset`, save to `model`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainEnv {
    pub base_model: String,
    pub train_dataset: String,
    pub model: String,
}

impl TrainEnv {
    pub fn to_env(&self) -> Env {
        vec![
            (BASE_MODEL_URL, self.base_model.clone()),
            (TRAIN_DATASET_URL, self.train_dataset.clone()),
            (MODEL_URL, self.model.clone()),
        ]
    }

    pub fn from_env(vars: &(impl Vars + ?Sized)) -> anyhow::Result<Self> {
        Ok(TrainEnv {
            base_model: vars.required(BASE_MODEL_URL)?,
            train_dataset: vars.required(TRAIN_DATASET_URL)?,
            model: vars.required(MODEL_URL)?,
        })
    }
}

/// `sedna worker eval`: evaluate each of `models` on `test_dataset`.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalEnv {
    /// The new model first, then the deployed one it is compared with.
    pub models: Vec<String>,
    pub test_dataset: String,
}

impl EvalEnv {
    pub fn to_env(&self) -> Env {
        vec![
            (MODEL_URLS, self.models.join(";")),
            // Sedna's eval worker reads the new model here.
            (MODEL_URL, self.models.first().cloned().unwrap_or_default()),
            (TEST_DATASET_URL, self.test_dataset.clone()),
        ]
    }

    pub fn from_env(vars: &(impl Vars + ?Sized)) -> anyhow::Result<Self> {
        let models: Vec<String> = vars
            .required(MODEL_URLS)?
            .split([';', ','])
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if models.is_empty() {
            anyhow::bail!("{MODEL_URLS} is empty: give the models to evaluate, separated by `;`");
        }
        Ok(EvalEnv {
            models,
            test_dataset: vars.required(TEST_DATASET_URL)?,
        })
    }
}

/// `sedna worker infer`: serve `model` (`base_model` until it exists), mine with the HEM,
/// and with hot update swap to `model` when it changes.
#[derive(Clone, Debug, PartialEq)]
pub struct InferEnv {
    pub model: String,
    pub base_model: Option<String>,
    pub hem_name: String,
    pub hem_parameters: Vec<KeyValue>,
    pub hot_update: bool,
    pub poll_period_seconds: u64,
    pub output_dir: String,
}

/// How often the worker looks at its model without `MODEL_POLL_PERIOD_SECONDS`.
const DEFAULT_POLL_PERIOD: u64 = 60;

impl InferEnv {
    pub fn to_env(&self) -> Env {
        let hem_parameters: serde_json::Map<String, serde_json::Value> = self
            .hem_parameters
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().into()))
            .collect();
        let mut env = vec![(MODEL_URL, self.model.clone())];
        env.extend(self.base_model.clone().map(|b| (BASE_MODEL_URL, b)));
        env.extend([
            (HEM_NAME, self.hem_name.clone()),
            (
                HEM_PARAMETERS,
                serde_json::Value::Object(hem_parameters).to_string(),
            ),
            (MODEL_HOT_UPDATE, self.hot_update.to_string()),
            (
                MODEL_POLL_PERIOD_SECONDS,
                self.poll_period_seconds.to_string(),
            ),
            (OUTPUT_DIR, self.output_dir.clone()),
        ]);
        env
    }

    pub fn from_env(vars: &(impl Vars + ?Sized)) -> anyhow::Result<Self> {
        let poll_period_seconds = vars
            .var(MODEL_POLL_PERIOD_SECONDS)
            .map(|v| {
                v.trim().parse::<u64>().with_context(|| {
                    format!("{MODEL_POLL_PERIOD_SECONDS} is {v:?}: give whole seconds")
                })
            })
            .transpose()?
            .unwrap_or(DEFAULT_POLL_PERIOD)
            .max(1);
        Ok(InferEnv {
            model: vars.required(MODEL_URL)?,
            base_model: vars.var(BASE_MODEL_URL),
            hem_name: vars.required(HEM_NAME)?,
            hem_parameters: hem_parameters(&vars.var(HEM_PARAMETERS).unwrap_or_default())?,
            hot_update: vars
                .var(MODEL_HOT_UPDATE)
                .is_some_and(|v| v.trim() == "true"),
            poll_period_seconds,
            output_dir: vars.required(OUTPUT_DIR)?,
        })
    }
}

/// `HEM_PARAMETERS`: a JSON object of strings (what the controller writes) or Sedna's
/// list of `{key, value}`.
fn hem_parameters(json: &str) -> anyhow::Result<Vec<KeyValue>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(list) = serde_json::from_str::<Vec<KeyValue>>(json) {
        return Ok(list);
    }
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).with_context(|| {
        format!("{HEM_PARAMETERS} is neither a JSON object nor a list of {{\"key\", \"value\"}}: {json}")
    })?;
    Ok(map
        .into_iter()
        .map(|(key, value)| KeyValue {
            key,
            value: match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn each_workers_env_round_trips() {
        let train = TrainEnv {
            base_model: "/models/base.onnx".into(),
            train_dataset: "/out/data/train/3/train.txt".into(),
            model: "/out/train/3/model.onnx".into(),
        };
        assert_eq!(TrainEnv::from_env(&*train.to_env()).unwrap(), train);
        let eval = EvalEnv {
            models: vec!["/out/train/3/model.onnx".into(), "/models/base.onnx".into()],
            test_dataset: "/out/data/train/3/eval.txt".into(),
        };
        assert_eq!(EvalEnv::from_env(&*eval.to_env()).unwrap(), eval);
        let infer = InferEnv {
            model: "/models/deploy.onnx".into(),
            base_model: Some("/models/base.onnx".into()),
            hem_name: "IBT".into(),
            // As a JSON object: one value a key, in key order.
            hem_parameters: vec![kv("threshold_box", "0.5"), kv("threshold_img", "0.9")],
            hot_update: true,
            poll_period_seconds: 30,
            output_dir: "/out".into(),
        };
        assert_eq!(InferEnv::from_env(&*infer.to_env()).unwrap(), infer);
        let common = CommonEnv {
            namespace: "default".into(),
            job_name: "job".into(),
            worker_name: "job-infer".into(),
            parameters: vec![kv("epochs", "3")],
        };
        assert_eq!(CommonEnv::from_env(&*common.to_env()).unwrap(), common);
    }

    #[test]
    fn a_missing_or_bad_variable_is_named() {
        let empty: Env = Vec::new();
        let error = TrainEnv::from_env(&*empty).unwrap_err().to_string();
        assert!(error.contains("BASE_MODEL_URL is not set"), "{error}");
        let env: Env = vec![(MODEL_URLS, " ; ".into()), (TEST_DATASET_URL, "t".into())];
        let error = EvalEnv::from_env(&*env).unwrap_err().to_string();
        assert!(error.contains("MODEL_URLS is empty"), "{error}");
        let env: Env = vec![
            (MODEL_URL, "m".into()),
            (HEM_NAME, "IBT".into()),
            (OUTPUT_DIR, "/out".into()),
            (MODEL_POLL_PERIOD_SECONDS, "soon".into()),
        ];
        let error = InferEnv::from_env(&*env).unwrap_err().to_string();
        assert!(error.contains("MODEL_POLL_PERIOD_SECONDS"), "{error}");
    }

    #[test]
    fn hem_parameters_read_both_shapes() {
        let expected = vec![kv("threshold_img", "0.9")];
        assert_eq!(
            hem_parameters(r#"{"threshold_img":"0.9"}"#).unwrap(),
            expected
        );
        assert_eq!(
            hem_parameters(r#"[{"key":"threshold_img","value":"0.9"}]"#).unwrap(),
            expected
        );
        assert_eq!(hem_parameters(" ").unwrap(), vec![]);
        let error = hem_parameters("threshold=0.9").unwrap_err().to_string();
        assert!(error.contains("HEM_PARAMETERS"), "{error}");
    }
}
