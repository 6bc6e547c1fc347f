//! The host side of the `inference` interface: models, sessions, frames, tensors and
//! datasets live here and the estimator holds them by handle. Pixels never enter the
//! guest; only what it asks to read (outputs, trainable weights) is copied in.

use std::sync::Arc;

use wasmtime::component::Resource;

use crate::media::{
    Augmentation, ErrorKind, Frame, InferError, Label, Layout, Model, Preprocess, Sample,
    SessionOptions, Tensor,
};
use crate::plugin::bindings::inference::{
    self, Augmentation as WitAugmentation, ErrorCode, Motion, NamedTensor, NodeInfo, Placement,
    Preprocess as WitPreprocess, TensorType, ValueInfo,
};
use crate::plugin::bindings::types::Detections;
use crate::plugin::resources::{Dataset, ExecutionContext, FrameHandle, Graph};
use crate::plugin::state::HostState;

/// Bytes of host memory an instance's tensors, graphs and sessions may hold, beyond its
/// linear memory: the same cap as its memory, so a plugin cannot grow the host without
/// bound. A graph counts its model's size; a session as much again (its weights).
impl HostState {
    /// Pushes `model` as a graph the plugin holds, if its cap has room for it.
    pub(super) fn push_graph(
        &mut self,
        model: Model,
    ) -> wasmtime::Result<Result<Resource<Graph>, Resource<InferError>>> {
        let bytes = graph_bytes(&model);
        if let Err(e) = self.room_for(bytes, &format!("model {}", model.name())) {
            return self.fail(e);
        }
        self.held_bytes += bytes;
        Ok(Ok(self.table.push(Graph(Arc::new(model)))?))
    }

    fn account(&mut self, tensor: &Tensor) -> Result<(), InferError> {
        let bytes = (tensor.len() * 4) as u64;
        self.room_for(bytes, "tensor")?;
        self.held_bytes += bytes;
        Ok(())
    }

    /// Whether `bytes` more fit the plugin's cap: asked before a tensor, graph or session
    /// is made, so that one too large is refused without being allocated.
    fn room_for(&self, bytes: u64, what: &str) -> Result<(), InferError> {
        if self.held_bytes.saturating_add(bytes) > self.sandbox.memory {
            return Err(InferError::new(
                ErrorKind::InvalidArgument,
                what,
                format!(
                    "{} MiB more would exceed the plugin's memory cap of {} MiB ({} MiB of tensors, graphs and sessions held)",
                    bytes.div_ceil(1 << 20),
                    self.sandbox.memory >> 20,
                    self.held_bytes >> 20
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn push_tensor(
        &mut self,
        tensor: Tensor,
    ) -> wasmtime::Result<Result<Resource<Tensor>, Resource<InferError>>> {
        match self.account(&tensor) {
            Ok(()) => Ok(Ok(self.table.push(tensor)?)),
            Err(e) => Ok(Err(self.table.push(e)?)),
        }
    }

    pub(crate) fn take_tensors(
        &mut self,
        named: Vec<NamedTensor>,
    ) -> wasmtime::Result<Vec<(String, Tensor)>> {
        named
            .into_iter()
            .map(|NamedTensor { name, tensor }| {
                let tensor = self.table.delete(tensor)?;
                self.held_bytes -= (tensor.len() * 4) as u64;
                Ok((name, tensor))
            })
            .collect()
    }

    pub(crate) fn push_tensors(
        &mut self,
        tensors: Vec<(String, Tensor)>,
    ) -> wasmtime::Result<Result<Vec<NamedTensor>, Resource<InferError>>> {
        let mut named = Vec::with_capacity(tensors.len());
        for (name, tensor) in tensors {
            match self.push_tensor(tensor)? {
                Ok(tensor) => named.push(NamedTensor { name, tensor }),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(named))
    }

    pub(super) fn fail<T>(
        &mut self,
        error: InferError,
    ) -> wasmtime::Result<Result<T, Resource<InferError>>> {
        Ok(Err(self.table.push(error)?))
    }

    fn session_options(&self) -> SessionOptions {
        SessionOptions {
            intra_threads: self.sandbox.threads,
        }
    }

    /// A model the guest names: one the job names, or a file in a granted directory.
    fn load_model(&self, name: &str) -> Result<Model, InferError> {
        if let Some((_, path)) = self.sandbox.models.iter().find(|(n, _)| n == name) {
            return Model::load(path);
        }
        let read = self.sandbox.read(name).ok_or_else(|| {
            let named: Vec<&str> = self
                .sandbox
                .models
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            InferError::new(
                ErrorKind::NotFound,
                name,
                format!(
                    "not a model the job names ({}) nor a path in a directory it grants",
                    if named.is_empty() {
                        "none".to_string()
                    } else {
                        named.join(", ")
                    }
                ),
            )
        })?;
        let bytes = read.map_err(|e| crate::media::read_failed(name, "model", &e))?;
        Model::from_bytes(name, &bytes)
    }
}

impl inference::Host for HostState {
    fn load_by_name(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Graph>, Resource<InferError>>> {
        match self.load_model(&name) {
            Ok(model) => self.push_graph(model),
            Err(e) => self.fail(e),
        }
    }
}

/// What a graph is counted for: its model's encoded size.
fn graph_bytes(model: &Model) -> u64 {
    use prost::Message as _;
    model.proto().encoded_len() as u64
}

impl inference::HostError for HostState {
    fn code(&mut self, error: Resource<InferError>) -> wasmtime::Result<ErrorCode> {
        Ok(match self.table.get(&error)?.kind {
            ErrorKind::InvalidArgument => ErrorCode::InvalidArgument,
            ErrorKind::InvalidEncoding => ErrorCode::InvalidEncoding,
            ErrorKind::Runtime => ErrorCode::RuntimeError,
            ErrorKind::Unsupported => ErrorCode::UnsupportedOperation,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::TooLarge => ErrorCode::TooLarge,
        })
    }

    fn data(&mut self, error: Resource<InferError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.to_string())
    }

    fn drop(&mut self, error: Resource<InferError>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}

impl inference::HostTensor for HostState {
    fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<Tensor>> {
        wasmtime::ensure!(
            ty == TensorType::Fp32,
            "tensor type {ty:?} is not supported: the host's tensors are FP32"
        );
        let values = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let dims = dimensions.iter().map(|&d| d as usize).collect();
        let tensor = Tensor::new("tensor", dims, values).map_err(wasmtime::Error::msg)?;
        self.account(&tensor).map_err(wasmtime::Error::msg)?;
        Ok(self.table.push(tensor)?)
    }

    fn dimensions(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self
            .table
            .get(&tensor)?
            .dims
            .iter()
            .map(|&d| d as u32)
            .collect())
    }

    fn ty(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<TensorType> {
        self.table.get(&tensor)?;
        Ok(TensorType::Fp32)
    }

    fn data(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self
            .table
            .get(&tensor)?
            .data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect())
    }

    fn drop(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<()> {
        let tensor = self.table.delete(tensor)?;
        self.held_bytes -= (tensor.len() * 4) as u64;
        Ok(())
    }
}

impl inference::HostFrame for HostState {
    fn width(&mut self, frame: Resource<FrameHandle>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&frame)?.width())
    }

    fn height(&mut self, frame: Resource<FrameHandle>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&frame)?.height())
    }

    fn to_tensor(
        &mut self,
        frame: Resource<FrameHandle>,
        spec: WitPreprocess,
    ) -> wasmtime::Result<Result<Resource<Tensor>, Resource<InferError>>> {
        let frame = self.table.get(&frame)?.clone();
        // Sized before it is made: a 8192x8192 input is 805 MB.
        let bytes = u64::from(spec.width) * u64::from(spec.height) * 3 * 4;
        if let Err(e) = self.room_for(bytes, &format!("a {}x{} input", spec.width, spec.height)) {
            return self.fail(e);
        }
        let tensor = preprocess(&spec).and_then(|spec| frame.to_tensor(&spec));
        match tensor {
            Ok(tensor) => self.push_tensor(tensor),
            Err(e) => self.fail(e),
        }
    }

    fn placement(
        &mut self,
        frame: Resource<FrameHandle>,
        spec: WitPreprocess,
    ) -> wasmtime::Result<Placement> {
        let frame = self.table.get(&frame)?;
        let fit = Preprocess {
            width: spec.width,
            height: spec.height,
            letterbox: spec.letterbox,
            mean: [0.0; 3],
            std: [1.0; 3],
            layout: Layout::Nchw,
        }
        .fit(frame.width(), frame.height());
        Ok(Placement {
            scale_x: fit.scale_x,
            scale_y: fit.scale_y,
            pad_x: fit.pad_x as f32,
            pad_y: fit.pad_y as f32,
        })
    }

    fn augmented(
        &mut self,
        frame: Resource<FrameHandle>,
        spec: WitAugmentation,
    ) -> wasmtime::Result<(Resource<FrameHandle>, Motion)> {
        let spec = Augmentation {
            flip: spec.flip,
            hue: spec.hue,
            saturation: spec.saturation,
            value: spec.value,
            scale: spec.scale,
            translate: spec.translate,
            seed: spec.seed,
        };
        let (augmented, motion) = self.table.get(&frame)?.augmented(&spec);
        let motion = Motion {
            scale_x: motion.scale_x,
            scale_y: motion.scale_y,
            shift_x: motion.shift_x,
            shift_y: motion.shift_y,
        };
        Ok((self.table.push(Arc::new(augmented))?, motion))
    }

    fn drop(&mut self, frame: Resource<FrameHandle>) -> wasmtime::Result<()> {
        self.table.delete(frame)?;
        Ok(())
    }
}

fn preprocess(spec: &WitPreprocess) -> Result<Preprocess, InferError> {
    let channels = |name: &str, values: &[f32]| -> Result<[f32; 3], InferError> {
        values.try_into().map_err(|_| {
            InferError::new(
                ErrorKind::InvalidArgument,
                "preprocess",
                format!("`{name}` needs 3 values (R, G, B), not {}", values.len()),
            )
        })
    };
    Ok(Preprocess {
        width: spec.width,
        height: spec.height,
        letterbox: spec.letterbox,
        mean: channels("mean", &spec.mean)?,
        std: channels("std", &spec.std)?,
        layout: match spec.layout {
            inference::Layout::Nchw => Layout::Nchw,
            inference::Layout::Nhwc => Layout::Nhwc,
        },
    })
}

impl inference::HostDataset for HostState {
    fn len(&mut self, dataset: Resource<Dataset>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&dataset)?.0.len() as u32)
    }

    fn frame(
        &mut self,
        dataset: Resource<Dataset>,
        index: u32,
    ) -> wasmtime::Result<Result<Resource<FrameHandle>, Resource<InferError>>> {
        let frame = sample(self.table.get(&dataset)?, index).and_then(|s| Frame::open(&s.image));
        match frame {
            Ok(frame) => Ok(Ok(self.table.push(Arc::new(frame))?)),
            Err(e) => self.fail(e),
        }
    }

    fn label(
        &mut self,
        dataset: Resource<Dataset>,
        index: u32,
    ) -> wasmtime::Result<Result<inference::Label, Resource<InferError>>> {
        let label = sample(self.table.get(&dataset)?, index).map(|s| match &s.label {
            Label::Boxes(boxes) => inference::Label::Boxes(Detections::from_rows(
                boxes.iter().map(|&(corners, class)| (corners, 1.0, class)),
            )),
            Label::Class(class) => inference::Label::Class(class.clone()),
        });
        match label {
            Ok(label) => Ok(Ok(label)),
            Err(e) => self.fail(e),
        }
    }

    fn drop(&mut self, dataset: Resource<Dataset>) -> wasmtime::Result<()> {
        self.table.delete(dataset)?;
        Ok(())
    }
}

fn sample(dataset: &Dataset, index: u32) -> Result<&Sample, InferError> {
    dataset.0.get(index as usize).ok_or_else(|| {
        InferError::new(
            ErrorKind::InvalidArgument,
            "dataset",
            format!(
                "sample {index} is out of range (the dataset has {})",
                dataset.0.len()
            ),
        )
    })
}

fn value_infos(specs: &[crate::media::ValueSpec]) -> Vec<ValueInfo> {
    specs
        .iter()
        .map(|spec| ValueInfo {
            name: spec.name.clone(),
            dimensions: spec.dims.iter().map(|d| d.map(|d| d as u32)).collect(),
        })
        .collect()
}

impl inference::HostGraph for HostState {
    fn inputs(&mut self, graph: Resource<Graph>) -> wasmtime::Result<Vec<ValueInfo>> {
        Ok(value_infos(self.table.get(&graph)?.0.inputs()))
    }

    fn outputs(&mut self, graph: Resource<Graph>) -> wasmtime::Result<Vec<ValueInfo>> {
        Ok(value_infos(self.table.get(&graph)?.0.outputs()))
    }

    fn nodes(&mut self, graph: Resource<Graph>) -> wasmtime::Result<Vec<NodeInfo>> {
        let model = &self.table.get(&graph)?.0;
        let nodes = model.proto().graph.as_ref().map_or(&[][..], |g| &g.node);
        Ok(nodes
            .iter()
            .map(|node| NodeInfo {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
                inputs: node.input.clone(),
                outputs: node.output.clone(),
            })
            .collect())
    }

    fn metadata(&mut self, graph: Resource<Graph>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.table.get(&graph)?.0.metadata().into_iter().collect())
    }

    fn weights(
        &mut self,
        graph: Resource<Graph>,
        names: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<NamedTensor>, Resource<InferError>>> {
        match self.table.get(&graph)?.0.weights(&names) {
            Ok(weights) => self.push_tensors(weights),
            Err(e) => self.fail(e),
        }
    }

    fn with_weights(
        &mut self,
        graph: Resource<Graph>,
        weights: Vec<NamedTensor>,
    ) -> wasmtime::Result<Result<Resource<Graph>, Resource<InferError>>> {
        let weights = self.take_tensors(weights)?;
        match self.table.get(&graph)?.0.with_weights(&weights) {
            Ok(model) => self.push_graph(model),
            Err(e) => self.fail(e),
        }
    }

    fn init_execution_context(
        &mut self,
        graph: Resource<Graph>,
        extra_outputs: Vec<String>,
    ) -> wasmtime::Result<Result<Resource<ExecutionContext>, Resource<InferError>>> {
        let model = self.table.get(&graph)?.0.clone();
        let bytes = graph_bytes(&model);
        if let Err(e) = self.room_for(bytes, &format!("a session of {}", model.name())) {
            return self.fail(e);
        }
        let options = self.session_options();
        let session = if extra_outputs.is_empty() {
            model.session(&options)
        } else {
            model
                .with_outputs(&extra_outputs)
                .and_then(|m| m.session(&options))
        };
        match session {
            Ok(session) => {
                self.held_bytes += bytes;
                Ok(Ok(self.table.push(ExecutionContext(session, bytes))?))
            }
            Err(e) => self.fail(e),
        }
    }

    fn save(
        &mut self,
        graph: Resource<Graph>,
        path: String,
    ) -> wasmtime::Result<Result<(), Resource<InferError>>> {
        let bytes = self.table.get(&graph)?.0.to_bytes();
        match self.sandbox.write(&path, &bytes) {
            Some(Ok(())) => Ok(Ok(())),
            Some(Err(e)) => self.fail(InferError::new(
                ErrorKind::InvalidArgument,
                &path,
                format!("cannot write the model: {e}"),
            )),
            None => self.fail(InferError::new(
                ErrorKind::NotFound,
                &path,
                "not in a directory the job grants for writing",
            )),
        }
    }

    fn drop(&mut self, graph: Resource<Graph>) -> wasmtime::Result<()> {
        let graph = self.table.delete(graph)?;
        self.held_bytes -= graph_bytes(&graph.0);
        Ok(())
    }
}

impl inference::HostGraphExecutionContext for HostState {
    fn compute(
        &mut self,
        context: Resource<ExecutionContext>,
        inputs: Vec<NamedTensor>,
    ) -> wasmtime::Result<Result<Vec<NamedTensor>, Resource<InferError>>> {
        let inputs = self.take_tensors(inputs)?;
        let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let deadline = self.deadline;
        match self.table.get_mut(&context)?.0.run_until(&named, deadline) {
            Ok(outputs) => self.push_tensors(outputs),
            Err(e) => self.fail(e),
        }
    }

    fn drop(&mut self, context: Resource<ExecutionContext>) -> wasmtime::Result<()> {
        let context = self.table.delete(context)?;
        self.held_bytes -= context.1;
        Ok(())
    }
}
