//! The host side of the `training` interface: sessions of the training engine held by
//! handle, their batches, activations and gradients kept on the host. A session's memory
//! counts against the plugin's memory cap.

use wasmtime::component::Resource;

use crate::media::{ErrorKind, InferError, Tensor};
use crate::plugin::bindings::inference::NamedTensor;
use crate::plugin::bindings::training::{
    self, BatchStatistics, Loss as WitLoss, Optimizer as WitOptimizer, Options as WitOptions,
};
use crate::plugin::resources::{Graph, TrainingSession};
use crate::plugin::state::HostState;
use crate::train::{self, Loss, Optimizer, Statistics, Trainable};

type Answer<T> = wasmtime::Result<Result<T, Resource<InferError>>>;

impl HostState {
    fn training_options(&self, options: &WitOptions) -> train::Options {
        let trainable = match options.trainable.as_slice() {
            [] => Trainable::All,
            [one] => Trainable::parse(one),
            many => Trainable::Prefixes(many.to_vec()),
        };
        let optimizer = match options.optimizer {
            WitOptimizer::Sgd => Optimizer::sgd(options.momentum as f64),
            WitOptimizer::Adamw => Optimizer::adamw(),
        };
        train::Options {
            trainable,
            freeze: options.freeze.clone(),
            optimizer,
            learning_rate: options.learning_rate as f64,
            weight_decay: options.weight_decay as f64,
            threads: match options.threads {
                0 => train::default_threads(),
                n => (n as usize).min(std::thread::available_parallelism().map_or(1, |c| c.get())),
            },
            memory_cap: Some(self.sandbox.memory.saturating_sub(self.held_bytes)),
            precision: train::Precision::F32,
        }
    }

    /// A session, its passes to stop at the current call's deadline.
    fn session(
        &mut self,
        session: &Resource<TrainingSession>,
    ) -> wasmtime::Result<&mut train::Session> {
        let deadline = self.deadline;
        let session = &mut self.table.get_mut(session)?.0;
        session.set_deadline(deadline);
        Ok(session)
    }

    /// Tells the job's progress sink, if it has one, where the session is.
    fn show_progress(&mut self, session: &Resource<TrainingSession>) -> wasmtime::Result<()> {
        if let Some(sink) = self.sandbox.progress.clone() {
            (sink.0)(&self.session(session)?.progress());
        }
        Ok(())
    }
}

impl training::Host for HostState {
    fn open(
        &mut self,
        graph: Resource<Graph>,
        options: WitOptions,
    ) -> Answer<Resource<TrainingSession>> {
        let model = self.table.get(&graph)?.0.clone();
        let options = self.training_options(&options);
        match train::Session::open(&model, options) {
            Ok(session) => Ok(Ok(self.table.push(TrainingSession(session))?)),
            Err(e) => self.fail(e),
        }
    }

    fn batch(&mut self, tensors: Vec<Resource<Tensor>>) -> Answer<Resource<Tensor>> {
        let parts: Vec<&Tensor> = tensors
            .iter()
            .map(|t| self.table.get(t))
            .collect::<Result<_, _>>()?;
        match stack(&parts) {
            Ok(batch) => self.push_tensor(batch),
            Err(e) => self.fail(e),
        }
    }
}

/// Tensors of one shape `[k, ...]` laid end to end along the first axis.
fn stack(parts: &[&Tensor]) -> Result<Tensor, InferError> {
    let Some(first) = parts.first() else {
        return Err(InferError::new(
            ErrorKind::InvalidArgument,
            "batch",
            "no tensors to batch",
        ));
    };
    let inner = first.dims.get(1..).unwrap_or_default();
    let mut rows = 0;
    let mut data = Vec::with_capacity(first.len() * parts.len());
    for (i, part) in parts.iter().enumerate() {
        if part.dims.is_empty() || part.dims[1..] != *inner {
            return Err(InferError::new(
                ErrorKind::InvalidArgument,
                "batch",
                format!(
                    "tensor {i} is {:?}, the first {:?}: a batch needs one shape",
                    part.dims, first.dims
                ),
            ));
        }
        rows += part.dims[0];
        data.extend_from_slice(&part.data);
    }
    let mut dims = vec![rows];
    dims.extend_from_slice(inner);
    Tensor::new("batch", dims, data)
}

impl training::HostSession for HostState {
    fn trainable(&mut self, session: Resource<TrainingSession>) -> wasmtime::Result<Vec<String>> {
        Ok(self.session(&session)?.trainable())
    }

    fn forward(
        &mut self,
        session: Resource<TrainingSession>,
        inputs: Vec<NamedTensor>,
        outputs: Vec<String>,
    ) -> Answer<Vec<NamedTensor>> {
        let inputs = self.take_tensors(inputs)?;
        match self.session(&session)?.forward(&inputs, &outputs) {
            Ok(values) => self.push_tensors(values),
            Err(e) => self.fail(e),
        }
    }

    fn backward_loss(
        &mut self,
        session: Resource<TrainingSession>,
        output: String,
        loss: WitLoss,
        target: Resource<Tensor>,
    ) -> Answer<f64> {
        let target = self.table.get(&target)?.clone();
        let loss = match loss {
            WitLoss::CrossEntropy => Loss::CrossEntropy,
            WitLoss::BceWithLogits => Loss::BceWithLogits,
            WitLoss::Mse => Loss::Mse,
            WitLoss::L1 => Loss::L1,
            WitLoss::SmoothL1 => Loss::SmoothL1,
        };
        match self
            .session(&session)?
            .backward_loss(&output, loss, &target)
        {
            Ok(value) => Ok(Ok(value)),
            Err(e) => self.fail(e),
        }
    }

    fn backward(
        &mut self,
        session: Resource<TrainingSession>,
        gradients: Vec<NamedTensor>,
    ) -> Answer<()> {
        let gradients = self.take_tensors(gradients)?;
        match self.session(&session)?.backward(&gradients) {
            Ok(()) => Ok(Ok(())),
            Err(e) => self.fail(e),
        }
    }

    fn step(&mut self, session: Resource<TrainingSession>, learning_rate: f32) -> Answer<()> {
        match self.session(&session)?.step(Some(learning_rate as f64)) {
            Ok(()) => {
                self.show_progress(&session)?;
                Ok(Ok(()))
            }
            Err(e) => self.fail(e),
        }
    }

    fn report(
        &mut self,
        session: Resource<TrainingSession>,
        epoch: u32,
        epochs: u32,
        loss: f64,
    ) -> wasmtime::Result<()> {
        self.session(&session)?.report(epoch, epochs, loss);
        self.show_progress(&session)
    }

    fn to_graph(&mut self, session: Resource<TrainingSession>) -> Answer<Resource<Graph>> {
        match self.session(&session)?.export() {
            Ok(model) => self.push_graph(model),
            Err(e) => self.fail(e),
        }
    }

    fn set_batch_statistics(
        &mut self,
        session: Resource<TrainingSession>,
        statistics: BatchStatistics,
    ) -> Answer<u32> {
        let statistics = match statistics {
            BatchStatistics::Frozen => Statistics::Frozen,
            BatchStatistics::Learn(momentum) => Statistics::Learn {
                momentum: momentum.map(f64::from),
            },
        };
        match self.session(&session)?.set_statistics(statistics) {
            Ok(count) => Ok(Ok(count as u32)),
            Err(e) => self.fail(e),
        }
    }

    fn drop(&mut self, session: Resource<TrainingSession>) -> wasmtime::Result<()> {
        self.table.delete(session)?;
        Ok(())
    }
}
