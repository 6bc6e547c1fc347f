//! A training session: forward on a batch, backward from a host loss or from output
//! gradients a component computed, gradient accumulation, an optimizer step, and export of
//! the complete model.
//!
//! The session runs in a thread pool of its own, sized by its options and at a lower
//! scheduling priority, so that a round does not take the cores the live inference
//! worker runs on. Its activations count
//! against a memory cap: a forward whose values would exceed it fails and says to lower
//! `batch_size`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor as Dense, Var};
use tract_onnx::pb;

use super::backward::{self, Gradients};
use super::fuse::{self, Found, Fusion, Plan};
use super::graph::{Trainable, prepare, untie};
use super::loss::{Loss, scalar};
use super::norm::{self, Normalised, Statistics};
use super::ops::{self, Call};
use super::optim::{self, Optimizer};
use super::pointwise::Act;
use super::value::{self, Value};
use crate::media::{ErrorKind, InferError, Model, Tensor};

/// The float type a session computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    /// For gradient checks.
    F64,
}

/// How a session trains.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub trainable: Trainable,
    /// Name prefixes of weights that stay as they are.
    pub freeze: Vec<String>,
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Threads of the session's pool.
    pub threads: usize,
    /// Bytes the session's activations and weights may take (`None`: no cap).
    pub memory_cap: Option<u64>,
    pub precision: Precision,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trainable: Trainable::All,
            freeze: Vec::new(),
            optimizer: Optimizer::adamw(),
            learning_rate: 1e-3,
            weight_decay: 0.0,
            threads: default_threads(),
            memory_cap: None,
            precision: Precision::F32,
        }
    }
}

/// Half the cores (at least one): the rest stay with inference.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| (n.get() / 2).max(1))
        .unwrap_or(1)
}

struct Weight {
    name: String,
    var: Var,
    grad: Option<Dense>,
    state: optim::State,
}

/// Where a session is: what the host shows as training progress.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Optimizer steps taken.
    pub steps: u64,
    /// Samples through forward since the session opened.
    pub samples: u64,
    /// The epoch and the epochs, as the trainer reported them.
    pub epoch: Option<(u32, u32)>,
    /// The last loss: the trainer's report, or a host loss's value.
    pub loss: Option<f64>,
    /// Since the session opened.
    pub elapsed: std::time::Duration,
}

/// What one step of a forward ran: a node, or a chain of nodes computed as one (its last
/// node's index first).
enum Step {
    Node(usize),
    Silu(usize, String),
    Conv {
        at: usize,
        conv: usize,
        norm: Option<usize>,
        done: ops::Convolution,
    },
    /// A normalisation over its batch's statistics.
    Norm(usize, Normalised),
}

/// The values and steps of the last forward, kept for the backward that follows it, and
/// which values a trainable weight precedes (only they get gradients).
struct Tape {
    values: BTreeMap<String, Value>,
    steps: Vec<Step>,
    requires: BTreeSet<String>,
}

pub struct Session {
    name: String,
    proto: pb::ModelProto,
    opset: i64,
    dtype: DType,
    constants: BTreeMap<String, Value>,
    weights: Vec<Weight>,
    inputs: Vec<String>,
    /// Pairs of nodes computed as one op when their inner value is not asked for.
    fusions: Vec<Found>,
    options: Options,
    statistics: Statistics,
    /// The normalisations that learn their statistics (node indices).
    learning: BTreeSet<usize>,
    /// The running statistics a forward has moved (initializer names): export writes them.
    moved: BTreeSet<String>,
    pool: Arc<rayon::ThreadPool>,
    tape: Option<Tape>,
    /// Backward passes accumulated since the last step.
    accumulated: u32,
    steps: u64,
    /// Bytes the weights and their optimizer state take.
    weight_bytes: u64,
    progress: Progress,
    opened: std::time::Instant,
    /// Passes stop at the first node after it (a plugin call's deadline).
    deadline: Option<std::time::Instant>,
}

impl Session {
    /// Opens a session over `model`; refuses a model with an operator the engine does not
    /// support, naming the node.
    pub fn open(model: &Model, options: Options) -> Result<Session, InferError> {
        let name = model.name().to_string();
        let error = |kind, message: String| InferError::new(kind, &name, message);
        let prepared = prepare(
            &name,
            model.proto().clone(),
            &options.trainable,
            &options.freeze,
        )
        .map_err(|m| error(ErrorKind::Unsupported, m))?;
        let dtype = match options.precision {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        };
        let graph = prepared.proto.graph.as_ref().expect("checked at load");
        let trainable: BTreeSet<&str> = prepared.trainable.iter().map(String::as_str).collect();
        let mut constants = BTreeMap::new();
        let mut weights = Vec::new();
        for init in &graph.initializer {
            let value =
                value::from_proto(init, dtype).map_err(|m| error(ErrorKind::InvalidEncoding, m))?;
            if trainable.contains(init.name.as_str()) {
                let tensor = value
                    .float()
                    .map_err(|m| error(ErrorKind::InvalidArgument, m))?;
                let var = Var::from_tensor(tensor)
                    .map_err(|e| error(ErrorKind::Runtime, e.to_string()))?;
                weights.push(Weight {
                    name: init.name.clone(),
                    var,
                    grad: None,
                    state: optim::State::default(),
                });
            } else {
                constants.insert(init.name.clone(), value);
            }
        }
        let initialised: BTreeSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = graph
            .input
            .iter()
            .map(|i| i.name.clone())
            .filter(|n| !initialised.contains(n.as_str()))
            .collect();
        let opset = prepared
            .proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(13, |o| o.version);
        let per_weight = match options.optimizer {
            Optimizer::Sgd { .. } => 3,
            Optimizer::AdamW { .. } => 4,
        };
        let weight_bytes = weights
            .iter()
            .map(|w| (w.var.elem_count() * dtype.size_in_bytes()) as u64 * per_weight)
            .sum();
        let pool = crate::threads::pool("sedna-train", options.threads)
            .map(Arc::new)
            .map_err(|e| error(ErrorKind::Runtime, e))?;
        let fusions = fuse::find(graph, &BTreeSet::new());
        Ok(Session {
            name,
            fusions,
            statistics: Statistics::Frozen,
            learning: BTreeSet::new(),
            moved: BTreeSet::new(),
            proto: prepared.proto,
            opset,
            dtype,
            constants,
            weights,
            inputs,
            options,
            pool,
            tape: None,
            accumulated: 0,
            steps: 0,
            weight_bytes,
            progress: Progress::default(),
            opened: std::time::Instant::now(),
            deadline: None,
        })
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> InferError {
        InferError::new(kind, &self.name, message)
    }

    /// The names of the weights that train.
    pub fn trainable(&self) -> Vec<String> {
        self.weights.iter().map(|w| w.name.clone()).collect()
    }

    /// The graph's inputs (what `forward` must be given).
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Where training is.
    pub fn progress(&self) -> Progress {
        Progress {
            steps: self.steps,
            elapsed: self.opened.elapsed(),
            ..self.progress.clone()
        }
    }

    /// Chooses what BatchNormalization does with its running statistics from the next
    /// forward on (see [`Statistics`]); returns how many normalisations learn them: those
    /// whose scale or shift trains (a frozen layer stays byte for byte as it was). Running
    /// statistics several normalisations share get a copy each first.
    pub fn set_statistics(&mut self, statistics: Statistics) -> Result<usize, InferError> {
        if let Statistics::Learn { momentum: Some(m) } = statistics
            && !(0.0..1.0).contains(&m)
        {
            return Err(self.error(
                ErrorKind::InvalidArgument,
                format!("a statistics momentum of {m}: give one in [0, 1) (the share of the running statistics kept per batch)"),
            ));
        }
        self.tape = None;
        let graph = self.proto.graph.as_mut().expect("checked at load");
        let trained: BTreeSet<&str> = self.weights.iter().map(|w| w.name.as_str()).collect();
        let learning: BTreeSet<usize> = match statistics {
            Statistics::Frozen => BTreeSet::new(),
            Statistics::Learn { .. } => graph
                .node
                .iter()
                .enumerate()
                .filter(|(_, n)| {
                    n.op_type == "BatchNormalization"
                        && n.input
                            .iter()
                            .skip(1)
                            .take(2)
                            .any(|i| trained.contains(i.as_str()))
                })
                .map(|(index, _)| index)
                .collect(),
        };
        let running: Vec<String> = learning
            .iter()
            .flat_map(|&i| graph.node[i].input.iter().skip(3).take(2).cloned())
            .collect();
        if let Some(missing) = running.iter().find(|r| !self.constants.contains_key(*r)) {
            return Err(self.error(
                ErrorKind::Unsupported,
                format!("the running statistic `{missing}` is not an initializer: its normalisation cannot learn it; keep the statistics frozen"),
            ));
        }
        for (original, copy) in untie(graph, &running) {
            let value = self.constants[&original].clone();
            self.constants.insert(copy, value);
        }
        self.fusions = fuse::find(graph, &learning);
        self.learning = learning;
        self.statistics = statistics;
        Ok(self.learning.len())
    }

    /// Moves the running statistics toward the batch's ones a forward measured.
    fn learn_from(&mut self, tape: &Tape) -> Result<(), InferError> {
        let Statistics::Learn { momentum } = self.statistics else {
            return Ok(());
        };
        let graph = self.proto.graph.as_ref().expect("checked at load");
        // A normalisation that learns has a weight (its scale or shift): its step is kept.
        let measured = tape.steps.iter().filter_map(|step| match step {
            Step::Norm(index, done) => Some((index, &done.mean, &done.variance)),
            _ => None,
        });
        for (index, mean, variance) in measured {
            let node = &graph.node[*index];
            let momentum = momentum.unwrap_or_else(|| {
                node.attribute
                    .iter()
                    .find(|a| a.name == "momentum")
                    .map_or(0.9, |a| a.f as f64)
            });
            for (name, batch) in node.input.iter().skip(3).zip([mean, variance]) {
                let Some(Value::Float(old)) = self.constants.get(name) else {
                    continue;
                };
                let new =
                    norm::running(old, batch, momentum).map_err(|m| self.node_error(node, m))?;
                self.constants.insert(name.clone(), Value::Float(new));
                self.moved.insert(name.clone());
            }
        }
        Ok(())
    }

    /// Records the trainer's own account of where it is (its epoch and loss).
    pub fn report(&mut self, epoch: u32, epochs: u32, loss: f64) {
        self.progress.epoch = Some((epoch, epochs));
        self.progress.loss = Some(loss);
    }

    /// Runs the graph on `inputs` and returns the values named `wanted` (any value of the
    /// graph, intermediates too). An input may name an intermediate value: the nodes that
    /// produce it are not run (a frozen backbone's features, computed once). The values
    /// are kept for one `backward`.
    pub fn forward(
        &mut self,
        inputs: &[(String, Tensor)],
        wanted: &[String],
    ) -> Result<Vec<(String, Tensor)>, InferError> {
        self.tape = None;
        let pool = self.pool.clone();
        let result = pool.install(|| self.forward_on_pool(inputs, wanted));
        let tape = result?;
        self.learn_from(&tape)?;
        self.progress.samples += inputs
            .first()
            .and_then(|(_, t)| t.dims.first())
            .copied()
            .unwrap_or(0) as u64;
        let out = wanted
            .iter()
            .map(|name| {
                let value = tape
                    .values
                    .get(name)
                    .or_else(|| self.constants.get(name))
                    .ok_or_else(|| {
                        self.error(
                            ErrorKind::NotFound,
                            format!("`{name}` was not computed: it is an input not given, or an output its node does not produce"),
                        )
                    })?;
                Ok((name.clone(), self.to_host(name, value)?))
            })
            .collect::<Result<_, InferError>>()?;
        self.tape = Some(tape);
        Ok(out)
    }

    fn forward_on_pool(
        &self,
        inputs: &[(String, Tensor)],
        wanted: &[String],
    ) -> Result<Tape, InferError> {
        let graph = self.proto.graph.as_ref().expect("checked at load");
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        let mut requires = BTreeSet::new();
        for weight in &self.weights {
            // Detached: candle records nothing, the gradients are this engine's.
            values.insert(
                weight.name.clone(),
                Value::Float(weight.var.as_tensor().detach()),
            );
            requires.insert(weight.name.clone());
        }
        for (name, tensor) in inputs {
            let produced = graph.node.iter().any(|n| n.output.contains(name));
            if !produced && !self.inputs.contains(name) {
                return Err(self.error(
                    ErrorKind::NotFound,
                    format!(
                        "the graph has no value named `{name}` to feed (its inputs: {:?})",
                        self.inputs
                    ),
                ));
            }
            let dense = Dense::from_vec(tensor.data.clone(), tensor.dims.as_slice(), &Device::Cpu)
                .and_then(|t| t.to_dtype(self.dtype))
                .map_err(|e| {
                    self.error(
                        ErrorKind::InvalidArgument,
                        format!("input `{name}`: {}", ops::describe(e)),
                    )
                })?;
            values.insert(name.clone(), Value::Float(dense));
        }
        let needed = self.needed(graph, wanted, &values)?;
        let plan = fuse::plan(&self.fusions, wanted, |v| values.contains_key(v));
        let mut steps = Vec::new();
        let mut bytes = self.weight_bytes;
        for (index, node) in graph.node.iter().enumerate() {
            if !needed.contains(&index) || plan.skipped.contains(&index) {
                continue;
            }
            self.check_deadline(node)?;
            let call = self.call(node, &values, &plan)?;
            // The nodes whose inputs this step reads.
            let mut read = vec![node];
            let (outputs, step) = match plan.fused.get(&index).map(|f| &f.fusion) {
                None if node.op_type == "Conv" => {
                    let done = ops::conv_block(&call, None, None);
                    let done = done.map_err(|m| self.node_error(node, m))?;
                    let y = Value::Float(done.output.clone());
                    (
                        vec![y],
                        Step::Conv {
                            at: index,
                            conv: index,
                            norm: None,
                            done,
                        },
                    )
                }
                None if self.learning.contains(&index) => {
                    let done = ops::Norm::of(&call)
                        .and_then(|n| {
                            let [scale, shift, ..] = &n.params;
                            norm::forward(&call.x(0)?, scale, shift, n.epsilon)
                        })
                        .map_err(|m| self.node_error(node, m))?;
                    // The normalised input is kept for the backward too.
                    bytes += done.xhat.elem_count() as u64 * self.dtype.size_in_bytes() as u64;
                    (vec![Value::Float(done.y.clone())], Step::Norm(index, done))
                }
                None => (
                    ops::run(&call).map_err(|m| self.node_error(node, m))?,
                    Step::Node(index),
                ),
                Some(Fusion::Silu { input }) => (
                    ops::silu(&call, input).map_err(|m| self.node_error(node, m))?,
                    Step::Silu(index, input.clone()),
                ),
                Some(Fusion::Conv {
                    conv,
                    norm,
                    activation,
                }) => {
                    let conv_call = self.call(&graph.node[*conv], &values, &plan)?;
                    let norm_call = norm
                        .map(|n| self.call(&graph.node[n], &values, &plan))
                        .transpose()?;
                    read = vec![&graph.node[*conv]];
                    read.extend(norm.map(|n| &graph.node[n]));
                    let done = ops::conv_block(&conv_call, norm_call.as_ref(), *activation)
                        .map_err(|m| self.node_error(node, m))?;
                    let y = Value::Float(done.output.clone());
                    let step = Step::Conv {
                        at: index,
                        conv: *conv,
                        norm: *norm,
                        done,
                    };
                    (vec![y], step)
                }
            };
            let trained = read
                .iter()
                .flat_map(|n| &n.input)
                .any(|i| requires.contains(i));
            // A convolution with an activation keeps its output before it too.
            let kept = match &step {
                Step::Conv { done, .. } if done.before.is_some() => 3,
                _ => 2,
            };
            for (name, value) in node.output.iter().zip(outputs) {
                // Activations and, in backward, their gradients.
                bytes += kept * value.bytes();
                if trained && matches!(value, Value::Float(_)) {
                    requires.insert(name.clone());
                }
                values.insert(name.clone(), value);
            }
            if trained {
                steps.push(step);
            }
            if let Some(cap) = self.options.memory_cap.filter(|&cap| bytes > cap) {
                return Err(self.error(
                    ErrorKind::TooLarge,
                    format!(
                        "training this batch needs more than {} MiB, over the estimator's memory cap of {} MiB: lower `batch_size` (or raise the job's memory limit)",
                        bytes >> 20,
                        cap >> 20
                    ),
                ));
            }
        }
        Ok(Tape {
            values,
            steps,
            requires,
        })
    }

    /// `node` with its inputs from `values` (a fused inner value, never made, as absent).
    fn call<'a>(
        &'a self,
        node: &'a pb::NodeProto,
        values: &'a BTreeMap<String, Value>,
        plan: &Plan,
    ) -> Result<Call<'a>, InferError> {
        let inputs = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() || plan.inner.contains(name.as_str()) {
                    return Ok(None);
                }
                if let Some(value) = values.get(name).or_else(|| self.constants.get(name)) {
                    return Ok(Some(value));
                }
                Err(if self.inputs.contains(name) {
                    self.error(
                        ErrorKind::InvalidArgument,
                        format!(
                            "input `{name}` is missing (the model's inputs: {:?})",
                            self.inputs
                        ),
                    )
                } else {
                    self.node_error(
                        node,
                        format!("its input `{name}` is not computed before it"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Call {
            node,
            inputs,
            opset: self.opset,
            dtype: self.dtype,
        })
    }

    /// Stops forward and backward passes at `deadline`, node by node; `None` runs them
    /// to their end.
    pub fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
    }

    fn check_deadline(&self, node: &pb::NodeProto) -> Result<(), InferError> {
        match self.deadline {
            Some(deadline) if std::time::Instant::now() >= deadline => {
                Err(self.node_error(node, "stopped before it: the call's deadline passed".into()))
            }
            _ => Ok(()),
        }
    }

    fn node_error(&self, node: &pb::NodeProto, message: String) -> InferError {
        self.error(
            ErrorKind::Runtime,
            format!("node `{}` ({}): {message}", node.name, node.op_type),
        )
    }

    /// The nodes needed to compute `wanted` from the values `given`.
    fn needed(
        &self,
        graph: &pb::GraphProto,
        wanted: &[String],
        given: &BTreeMap<String, Value>,
    ) -> Result<BTreeSet<usize>, InferError> {
        let mut producer = BTreeMap::new();
        for (index, node) in graph.node.iter().enumerate() {
            for output in &node.output {
                producer.insert(output.as_str(), index);
            }
        }
        let mut needed = BTreeSet::new();
        let mut stack: Vec<&str> = Vec::new();
        for name in wanted {
            let known = producer.contains_key(name.as_str())
                || self.inputs.contains(name)
                || self.constants.contains_key(name)
                || self.weights.iter().any(|w| &w.name == name);
            if !known {
                return Err(self.error(
                    ErrorKind::NotFound,
                    format!("the graph has no value named `{name}`"),
                ));
            }
            stack.push(name);
        }
        while let Some(name) = stack.pop() {
            if given.contains_key(name) {
                continue;
            }
            if let Some(&index) = producer.get(name)
                && needed.insert(index)
            {
                stack.extend(graph.node[index].input.iter().map(String::as_str));
            }
        }
        Ok(needed)
    }

    fn to_host(&self, name: &str, value: &Value) -> Result<Tensor, InferError> {
        let dense = match value {
            Value::Float(t) => t.clone(),
            Value::Int(i) => Dense::from_vec(
                i.data.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                i.dims.as_slice(),
                &Device::Cpu,
            )
            .map_err(|e| self.error(ErrorKind::Runtime, e.to_string()))?,
        };
        let data = dense
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| self.error(ErrorKind::Runtime, e.to_string()))?;
        Tensor::new(name, dense.dims().to_vec(), data)
    }

    fn tape_value(&self, name: &str) -> Result<Dense, InferError> {
        let tape = self.tape.as_ref().ok_or_else(|| {
            self.error(
                ErrorKind::InvalidArgument,
                "backward before forward: run `forward` on the batch first (each forward allows one backward)",
            )
        })?;
        match tape.values.get(name) {
            Some(Value::Float(t)) => Ok(t.clone()),
            Some(Value::Int(_)) => Err(self.error(
                ErrorKind::InvalidArgument,
                format!("`{name}` is integer shape arithmetic: it has no gradient"),
            )),
            None => Err(self.error(
                ErrorKind::InvalidArgument,
                format!("`{name}` was not asked for in the last forward"),
            )),
        }
    }

    /// Backward from `loss` on output `name` against `target`; accumulates the weights'
    /// gradients and returns the loss. A loss that is not finite accumulates nothing.
    pub fn backward_loss(
        &mut self,
        name: &str,
        loss: Loss,
        target: &Tensor,
    ) -> Result<f64, InferError> {
        let output = self.tape_value(name)?;
        let runtime = |e: candle_core::Error| self.error(ErrorKind::Runtime, ops::describe(e));
        let var = Var::from_tensor(&output).map_err(runtime)?;
        let value = loss
            .compute(var.as_tensor(), &target.dims, &target.data)
            .map_err(|m| self.error(ErrorKind::InvalidArgument, format!("output `{name}`: {m}")))?;
        let number = scalar(&value).map_err(|m| self.error(ErrorKind::Runtime, m))?;
        if !number.is_finite() {
            self.tape = None;
            return Err(self.error(
                ErrorKind::Runtime,
                format!(
                    "the loss is {number}: lower `learning_rate` (now {}) or check the labels",
                    self.options.learning_rate
                ),
            ));
        }
        let grads = value.backward().map_err(runtime)?;
        let gradient = grads.get(var.as_tensor()).cloned().ok_or_else(|| {
            self.error(ErrorKind::Runtime, "the loss does not depend on the output")
        })?;
        self.backward_from(vec![(name.to_string(), gradient)])?;
        self.progress.loss = Some(number);
        Ok(number)
    }

    /// Backward from gradients of named outputs (a loss the component computed).
    pub fn backward(&mut self, gradients: &[(String, Tensor)]) -> Result<(), InferError> {
        if gradients.is_empty() {
            return Err(self.error(ErrorKind::InvalidArgument, "no gradients were given"));
        }
        let mut seeds = Vec::new();
        for (name, gradient) in gradients {
            let output = self.tape_value(name)?;
            if gradient.dims != output.dims() {
                return Err(self.error(
                    ErrorKind::InvalidArgument,
                    format!(
                        "the gradient of `{name}` is {:?}, the output {:?}",
                        gradient.dims,
                        output.dims()
                    ),
                ));
            }
            if gradient.data.iter().any(|v| !v.is_finite()) {
                return Err(self.error(
                    ErrorKind::InvalidArgument,
                    format!("the gradient of `{name}` holds NaN or infinite values"),
                ));
            }
            let g = Dense::from_vec(
                gradient.data.clone(),
                gradient.dims.as_slice(),
                &Device::Cpu,
            )
            .and_then(|t| t.to_dtype(self.dtype))
            .map_err(|e| self.error(ErrorKind::Runtime, e.to_string()))?;
            seeds.push((name.clone(), g));
        }
        self.backward_from(seeds)
    }

    /// Backpropagates `seeds` (gradients of values) through the last forward's steps and
    /// adds the weights' gradients to what earlier backward passes accumulated.
    fn backward_from(&mut self, seeds: Vec<(String, Dense)>) -> Result<(), InferError> {
        let tape = self.tape.take().ok_or_else(|| {
            self.error(
                ErrorKind::InvalidArgument,
                "backward before forward: run `forward` on the batch first (each forward allows one backward)",
            )
        })?;
        let mut grads = Gradients::default();
        for (name, g) in seeds {
            if tape.requires.contains(&name) {
                grads
                    .add(&name, g)
                    .map_err(|m| self.error(ErrorKind::Runtime, m))?;
            }
        }
        let pool = self.pool.clone();
        pool.install(|| self.reverse(&tape, &mut grads))?;
        for weight in &mut self.weights {
            let Some(g) = grads.take(&weight.name) else {
                continue;
            };
            weight.grad = Some(match weight.grad.take() {
                None => g,
                Some(sum) => sum
                    .add(&g)
                    .map_err(|e| InferError::new(ErrorKind::Runtime, &self.name, e.to_string()))?,
            });
        }
        self.accumulated += 1;
        Ok(())
    }

    /// The forward's steps in reverse, each taking its outputs' gradients and giving its
    /// inputs' (those a trainable weight precedes).
    fn reverse(&self, tape: &Tape, grads: &mut Gradients) -> Result<(), InferError> {
        let graph = self.proto.graph.as_ref().expect("checked at load");
        let wanted = |names: &[String]| -> Vec<bool> {
            names.iter().map(|n| tape.requires.contains(n)).collect()
        };
        for step in tape.steps.iter().rev() {
            let at = match step {
                Step::Node(at) | Step::Silu(at, _) | Step::Conv { at, .. } | Step::Norm(at, _) => {
                    *at
                }
            };
            let node = &graph.node[at];
            self.check_deadline(node)?;
            let outputs: Vec<Option<Dense>> = node.output.iter().map(|o| grads.take(o)).collect();
            if outputs.iter().all(Option::is_none) {
                continue;
            }
            let fail = |m: String| self.node_error(node, format!("backward: {m}"));
            let (names, inputs): (Vec<&String>, Vec<Option<Dense>>) = match step {
                Step::Node(_) => {
                    let call = self.call(node, &tape.values, &Plan::default())?;
                    let made: Vec<Value> =
                        node.output.iter().map(|o| tape.values[o].clone()).collect();
                    let refs: Vec<Option<&Dense>> = outputs.iter().map(Option::as_ref).collect();
                    let given =
                        backward::node(&call, &made, &refs, &wanted(&node.input)).map_err(fail)?;
                    (node.input.iter().collect(), given)
                }
                Step::Silu(_, input) => {
                    let (Some(Value::Float(x)), Some(Value::Float(y)), Some(g)) = (
                        tape.values.get(input),
                        tape.values.get(&node.output[0]),
                        &outputs[0],
                    ) else {
                        continue;
                    };
                    let dx = Act::Silu
                        .backward(x, y, g)
                        .map_err(|e| fail(ops::describe(e)))?;
                    (vec![input], vec![Some(dx)])
                }
                Step::Norm(_, done) => {
                    let (Some(g), Some(Value::Float(scale))) = (
                        &outputs[0],
                        node.input
                            .get(1)
                            .and_then(|n| tape.values.get(n).or_else(|| self.constants.get(n))),
                    ) else {
                        continue;
                    };
                    let given = norm::backward(done, scale, g).map_err(fail)?;
                    (
                        node.input.iter().take(3).collect(),
                        given.into_iter().map(Some).collect(),
                    )
                }
                Step::Conv {
                    conv, norm, done, ..
                } => {
                    let Some(g) = &outputs[0] else { continue };
                    let conv_node = &graph.node[*conv];
                    let conv_call = self.call(conv_node, &tape.values, &Plan::default())?;
                    let norm_node = norm.map(|n| &graph.node[n]);
                    // The normalisation reads the convolution's output, never made.
                    let mut inner = Plan::default();
                    inner
                        .inner
                        .extend(conv_node.output.iter().map(String::as_str));
                    let norm_call = norm_node
                        .map(|n| self.call(n, &tape.values, &inner))
                        .transpose()?;
                    fn slot(n: Option<&pb::NodeProto>, i: usize) -> Option<&String> {
                        n.and_then(|n| n.input.get(i)).filter(|s| !s.is_empty())
                    }
                    let names: [Option<&String>; 7] = [
                        slot(Some(conv_node), 0),
                        slot(Some(conv_node), 1),
                        slot(Some(conv_node), 2),
                        slot(norm_node, 1),
                        slot(norm_node, 2),
                        slot(norm_node, 3),
                        slot(norm_node, 4),
                    ];
                    let want = names.map(|n| n.is_some_and(|n| tape.requires.contains(n)));
                    let given =
                        backward::convolution(done, &conv_call, norm_call.as_ref(), g, &want)
                            .map_err(fail)?;
                    names
                        .into_iter()
                        .zip(given)
                        .filter_map(|(n, g)| n.map(|n| (n, g)))
                        .unzip()
                }
            };
            for (name, g) in names.into_iter().zip(inputs) {
                if let Some(g) = g
                    && tape.requires.contains(name)
                {
                    grads.add(name, g).map_err(fail)?;
                }
            }
        }
        Ok(())
    }

    /// The accumulated gradient of weight `name` (the mean over the backward passes since
    /// the last step); `None` before any backward reached it.
    pub fn gradient(&self, name: &str) -> Option<Tensor> {
        let weight = self.weights.iter().find(|w| w.name == name)?;
        let g = weight.grad.as_ref()?;
        let g = g.affine(1.0 / self.accumulated.max(1) as f64, 0.0).ok()?;
        self.to_host(name, &Value::Float(g)).ok()
    }

    /// One optimizer step with the mean of the accumulated gradients; `learning_rate`
    /// overrides the options' (for schedules). Writes nothing when a weight would become
    /// non-finite.
    pub fn step(&mut self, learning_rate: Option<f64>) -> Result<(), InferError> {
        if self.accumulated == 0 {
            return Err(self.error(
                ErrorKind::InvalidArgument,
                "step before any backward: nothing to apply",
            ));
        }
        let lr = learning_rate.unwrap_or(self.options.learning_rate);
        let scale = 1.0 / self.accumulated as f64;
        let step = self.steps + 1;
        let (optimizer, decay) = (self.options.optimizer, self.options.weight_decay);
        let updates = self.pool.install(|| {
            self.weights
                .iter()
                .map(|w| match &w.grad {
                    None => Ok(None),
                    Some(g) => {
                        let g = g.affine(scale, 0.0)?;
                        let (new, state) =
                            optim::update(optimizer, &w.var, &g, &w.state, step, lr, decay)?;
                        let finite = new
                            .abs()?
                            .max_all()?
                            .to_dtype(DType::F64)?
                            .to_scalar::<f64>()?
                            .is_finite();
                        Ok(Some((new, state, finite)))
                    }
                })
                .collect::<candle_core::Result<Vec<_>>>()
        });
        let updates = updates.map_err(|e| self.error(ErrorKind::Runtime, e.to_string()))?;
        if let Some((w, _)) = self
            .weights
            .iter()
            .zip(&updates)
            .find(|(_, u)| matches!(u, Some((_, _, false))))
        {
            return Err(self.error(
                ErrorKind::Runtime,
                format!(
                    "the step would make `{}` non-finite: lower `learning_rate` (now {lr})",
                    w.name
                ),
            ));
        }
        for (weight, update) in self.weights.iter_mut().zip(updates) {
            weight.grad = None;
            if let Some((new, state, _)) = update {
                weight
                    .var
                    .set(&new)
                    .map_err(|e| InferError::new(ErrorKind::Runtime, &self.name, e.to_string()))?;
                weight.state = state;
            }
        }
        self.accumulated = 0;
        self.steps = step;
        Ok(())
    }

    /// The current values of the trainable weights.
    pub fn weights(&self) -> Result<Vec<(String, Tensor)>, InferError> {
        self.weights
            .iter()
            .map(|w| {
                Ok((
                    w.name.clone(),
                    self.to_host(&w.name, &Value::Float(w.var.as_tensor().clone()))?,
                ))
            })
            .collect()
    }

    /// The complete model with the trained weights: every other byte as it was read
    /// (untied copies and lifted constants aside).
    pub fn export(&self) -> Result<Model, InferError> {
        let mut proto = self.proto.clone();
        let graph = proto.graph.as_mut().expect("checked at load");
        for weight in &self.weights {
            let slot = graph
                .initializer
                .iter_mut()
                .find(|t| t.name == weight.name)
                .expect("a trainable weight is an initializer");
            *slot = value::to_proto(&weight.name, weight.var.as_tensor(), slot.data_type)
                .map_err(|m| self.error(ErrorKind::Runtime, m))?;
        }
        for name in &self.moved {
            let (Some(slot), Some(Value::Float(value))) = (
                graph.initializer.iter_mut().find(|t| &t.name == name),
                self.constants.get(name),
            ) else {
                continue;
            };
            *slot = value::to_proto(name, value, slot.data_type)
                .map_err(|m| self.error(ErrorKind::Runtime, m))?;
        }
        Model::from_proto(&self.name, proto)
    }
}

#[cfg(test)]
impl Session {
    /// `sum(output * gradient)` in the session's precision: what central differences
    /// differentiate in the gradient checks.
    pub(super) fn objective(
        &self,
        inputs: &[(String, Tensor)],
        output: &str,
        gradient: &Dense,
    ) -> f64 {
        let values = self
            .pool
            .install(|| self.forward_on_pool(inputs, &[output.to_string()]))
            .expect("forward")
            .values;
        let out = values[output].float().expect("a float output").clone();
        scalar(
            &out.mul(gradient)
                .and_then(|t| t.sum_all())
                .expect("product"),
        )
        .expect("scalar")
    }

    /// Adds `delta` to element `element` of trainable weight `weight`.
    pub(super) fn nudge(&self, weight: usize, element: usize, delta: f64) {
        let var = &self.weights[weight].var;
        let dims = var.dims().to_vec();
        let mut data = var
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f64>())
            .expect("f64 weights");
        data[element] += delta;
        var.set(&Dense::from_vec(data, dims.as_slice(), &Device::Cpu).expect("tensor"))
            .expect("set");
    }

    /// The accumulated gradient in the session's precision.
    pub(super) fn gradient_f64(&self, weight: usize) -> Vec<f64> {
        self.weights[weight]
            .grad
            .as_ref()
            .expect("a gradient")
            .flatten_all()
            .and_then(|t| t.to_vec1::<f64>())
            .expect("f64")
    }
}

#[cfg(test)]
mod tests;
