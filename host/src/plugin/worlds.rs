//! One wrapper per WIT world: how to instantiate and initialise it, and its typed calls.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{InstancePre, Resource};

use super::bindings::types::{Metric, Param, Prediction};
use super::bindings::{estimator_bindings, hem_bindings, trigger_bindings};
use super::error::PluginError;
use super::instance::Plugin;
use super::resources::Dataset;
use super::state::HostState;
use super::world::{ESTIMATOR, HARD_EXAMPLE_MINER, TRIGGER_CONDITION, World};
use crate::media::{Frame, Sample, Tensor};

/// Implements [`World`] for a world whose exported interface starts with
/// `init(list<param>) -> result<_, string>`.
macro_rules! world {
    ($world:ident, $names:expr, $pre:ty, $bindings:ty, $interface:ident) => {
        impl World for $world {
            const NAME: &'static str = $names.0;
            const EXPORT: &'static str = $names.1;
            type Pre = $pre;
            type Bindings = $bindings;

            fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
                <$pre>::new(pre)
            }

            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<HostState>,
            ) -> wasmtime::Result<Self::Bindings> {
                pre.instantiate(&mut *store)
            }

            fn init(
                bindings: &Self::Bindings,
                store: &mut Store<HostState>,
                params: &[Param],
            ) -> wasmtime::Result<Result<(), String>> {
                bindings.$interface().call_init(store, params)
            }
        }
    };
}

/// The `hard-example-miner` world: decides which frames are worth labelling.
pub struct Hem;

world!(
    Hem,
    HARD_EXAMPLE_MINER,
    hem_bindings::HardExampleMinerPre<HostState>,
    hem_bindings::HardExampleMiner,
    sedna_plugin_mining
);

impl Plugin<Hem> {
    /// `true` when the frame is a hard example.
    pub fn is_hard_example(&self, prediction: &Prediction) -> Result<bool, PluginError> {
        self.call("is-hard-example", |b, s| {
            b.sedna_plugin_mining().call_is_hard_example(s, prediction)
        })
    }

    /// One decision per prediction, in order, in one call.
    pub fn is_hard_example_batch(
        &self,
        predictions: &[Prediction],
    ) -> Result<Vec<bool>, PluginError> {
        self.call("is-hard-example-batch", |b, s| {
            let answers = b
                .sedna_plugin_mining()
                .call_is_hard_example_batch(s, predictions)?;
            wasmtime::ensure!(
                answers.len() == predictions.len(),
                "it returned {} answers for {} predictions",
                answers.len(),
                predictions.len()
            );
            Ok(answers)
        })
    }
}

/// The `trigger-condition` world: decides from the job's statistics whether to act.
pub struct TriggerCondition;

world!(
    TriggerCondition,
    TRIGGER_CONDITION,
    trigger_bindings::TriggerConditionPre<HostState>,
    trigger_bindings::TriggerCondition,
    sedna_plugin_condition
);

impl Plugin<TriggerCondition> {
    /// `Ok(Ok(holds))` when the plugin could decide; `Ok(Err(why))` when it says it cannot
    /// (for example a metric is missing): the plugin itself is fine then.
    pub fn evaluate(&self, stats: &[Metric]) -> Result<Result<bool, String>, PluginError> {
        self.call("evaluate", |b, s| {
            b.sedna_plugin_condition().call_evaluate(s, stats)
        })
    }
}

/// The `estimator` world: predicts, evaluates and trains a model through the host's
/// `inference` interface.
pub struct Estimator;

world!(
    Estimator,
    ESTIMATOR,
    estimator_bindings::EstimatorPre<HostState>,
    estimator_bindings::Estimator,
    sedna_plugin_estimation
);

impl Plugin<Estimator> {
    /// The model's prediction for one frame; the frame is lent, not copied.
    pub fn predict(&self, frame: &Arc<Frame>) -> Result<Prediction, PluginError> {
        self.call_refusable("predict", |b, s| {
            let handle = s.data_mut().table.push(frame.clone())?;
            let borrowed = Resource::new_borrow(handle.rep());
            let answer = b.sedna_plugin_estimation().call_predict(&mut *s, borrowed);
            s.data_mut().table.delete(handle)?;
            answer
        })
    }

    /// Metrics of the loaded model on `samples` (per-class lists and scalars).
    pub fn evaluate(&self, samples: &Arc<[Sample]>) -> Result<Vec<Metric>, PluginError> {
        self.call_refusable("evaluate", |b, s| {
            let handle = s.data_mut().table.push(Dataset(samples.clone()))?;
            let borrowed = Resource::new_borrow(handle.rep());
            let answer = b.sedna_plugin_estimation().call_evaluate(&mut *s, borrowed);
            s.data_mut().table.delete(handle)?;
            answer
        })
    }

    /// Fine-tunes the loaded model on `train` (validating on `valid`); returns at least
    /// `loss` per epoch. The trained model stays in the instance until `save`.
    pub fn train(
        &self,
        train: &Arc<[Sample]>,
        valid: Option<&Arc<[Sample]>>,
    ) -> Result<Vec<Metric>, PluginError> {
        self.call_refusable("train", |b, s| {
            let train = s.data_mut().table.push(Dataset(train.clone()))?;
            let valid = match valid {
                Some(valid) => Some(s.data_mut().table.push(Dataset(valid.clone()))?),
                None => None,
            };
            let answer = b.sedna_plugin_estimation().call_train(
                &mut *s,
                Resource::new_borrow(train.rep()),
                valid.as_ref().map(|v| Resource::new_borrow(v.rep())),
            );
            s.data_mut().table.delete(train)?;
            if let Some(valid) = valid {
                s.data_mut().table.delete(valid)?;
            }
            answer
        })
    }

    /// The trainable weights (the model's `sedna.trainable`), by name.
    pub fn get_weights(&self) -> Result<Vec<(String, Tensor)>, PluginError> {
        self.call_refusable("get-weights", |b, s| {
            match b.sedna_plugin_estimation().call_get_weights(&mut *s)? {
                Ok(named) => Ok(Ok(s.data_mut().take_tensors(named)?)),
                Err(why) => Ok(Err(why)),
            }
        })
    }

    /// Replaces weights by name (same shapes); the estimator predicts with them next.
    pub fn set_weights(&self, weights: Vec<(String, Tensor)>) -> Result<(), PluginError> {
        self.call_refusable("set-weights", |b, s| {
            let named = match s.data_mut().push_tensors(weights)? {
                Ok(named) => named,
                Err(error) => return Ok(Err(s.data_mut().table.delete(error)?.to_string())),
            };
            b.sedna_plugin_estimation()
                .call_set_weights(&mut *s, &named)
        })
    }

    /// Loads a model the sandbox names or grants.
    pub fn load_model(&self, model: &str) -> Result<(), PluginError> {
        self.call_refusable("load", |b, s| {
            b.sedna_plugin_estimation().call_load(s, model)
        })
    }

    /// Writes the current model to `path`, a path the plugin sees in a writable grant.
    pub fn save(&self, path: &str) -> Result<(), PluginError> {
        self.call_refusable("save", |b, s| {
            b.sedna_plugin_estimation().call_save(s, path)
        })
    }
}
