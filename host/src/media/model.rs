//! ONNX models: read, checked, edited (initializers, extra outputs), written, and run.
//!
//! The model is kept as its protobuf (`tract_onnx::pb`, prost types) so that the host can
//! read its metadata and initializers and write a fine-tuned copy without a second
//! library; sessions are made from its bytes on the active backend.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ort::session::RunOptions;
use prost::Message as _;
use tract_onnx::pb::{self, tensor_proto::DataType, type_proto};

use super::backend::{BackendKind, backend};
use super::{ErrorKind, InferError, Tensor};

/// A model input or output as the model declares it; `None` is a dynamic dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueSpec {
    pub name: String,
    pub dims: Vec<Option<usize>>,
}

impl ValueSpec {
    /// Whether a tensor of `dims` fits this declaration.
    pub fn accepts(&self, dims: &[usize]) -> bool {
        self.dims.len() == dims.len()
            && self
                .dims
                .iter()
                .zip(dims)
                .all(|(want, got)| want.is_none_or(|w| w == *got))
    }

    /// The declared shape, `?` for dynamic dimensions.
    pub fn shape(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
            .collect();
        format!("[{}]", dims.join(", "))
    }
}

/// A parsed ONNX model with a name for messages (usually its path).
#[derive(Clone, Debug)]
pub struct Model {
    name: String,
    proto: pb::ModelProto,
    inputs: Vec<ValueSpec>,
    outputs: Vec<ValueSpec>,
}

impl Model {
    /// Reads and checks the ONNX file at `path`.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        let bytes = super::read_file(path, "model")?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Parses and checks an ONNX model held in memory.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self, InferError> {
        let invalid = |why: String| {
            InferError::new(
                ErrorKind::InvalidEncoding,
                name,
                format!("not a valid ONNX model: {why}"),
            )
        };
        let proto = pb::ModelProto::decode(bytes).map_err(|e| invalid(e.to_string()))?;
        Self::from_proto(name, proto).map_err(|e| invalid(e.message))
    }

    /// Checks a model built in memory (for tools and tests that write their own models).
    pub fn from_proto(name: &str, mut proto: pb::ModelProto) -> Result<Self, InferError> {
        let invalid = |why: &str| InferError::new(ErrorKind::InvalidEncoding, name, why);
        if proto.ir_version <= 0 {
            return Err(invalid("it has no IR version"));
        }
        if let Some(graph) = proto.graph.as_mut() {
            name_open_dimensions(graph);
        }
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| invalid("it has no graph"))?;
        if graph.node.is_empty() || graph.output.is_empty() {
            return Err(invalid("its graph has no nodes or no outputs"));
        }
        let initialised: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = graph
            .input
            .iter()
            .filter(|i| !initialised.contains(&i.name.as_str()))
            .map(value_spec)
            .collect();
        let outputs = graph.output.iter().map(value_spec).collect();
        Ok(Model {
            name: name.to_string(),
            proto,
            inputs,
            outputs,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn inputs(&self) -> &[ValueSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueSpec] {
        &self.outputs
    }

    pub fn proto(&self) -> &pb::ModelProto {
        &self.proto
    }

    /// The model's `metadata_props`: where it declares its task, classes and input.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.proto
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect()
    }

    fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked at load")
    }

    fn graph_mut(&mut self) -> &mut pb::GraphProto {
        self.proto.graph.as_mut().expect("checked at load")
    }

    /// Where the initializer `name` is in the graph.
    fn initializer(&self, name: &str) -> Result<usize, InferError> {
        self.graph()
            .initializer
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| {
                self.error(
                    ErrorKind::NotFound,
                    format!("no initializer named `{name}`"),
                )
            })
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> InferError {
        InferError::new(kind, &self.name, message)
    }

    /// The float initializers called `names` (the weights an estimator trains).
    pub fn weights(&self, names: &[String]) -> Result<Vec<(String, Tensor)>, InferError> {
        names
            .iter()
            .map(|name| {
                let proto = &self.graph().initializer[self.initializer(name)?];
                Ok((name.clone(), self.tensor_from_proto(proto)?))
            })
            .collect()
    }

    fn tensor_from_proto(&self, proto: &pb::TensorProto) -> Result<Tensor, InferError> {
        if proto.data_type != DataType::Float as i32 {
            return Err(self.error(
                ErrorKind::Unsupported,
                format!(
                    "initializer `{}` is not float32 (ONNX type {})",
                    proto.name, proto.data_type
                ),
            ));
        }
        let dims = proto.dims.iter().map(|&d| d.max(0) as usize).collect();
        let data = if proto.raw_data.is_empty() {
            proto.float_data.clone()
        } else {
            proto
                .raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        Tensor::new(&proto.name, dims, data)
            .map_err(|e| self.error(ErrorKind::InvalidEncoding, e.to_string()))
    }

    /// A copy with these initializers replaced; each must exist with the same shape.
    pub fn with_weights(&self, weights: &[(String, Tensor)]) -> Result<Model, InferError> {
        let mut model = self.clone();
        for (name, tensor) in weights {
            if tensor.data.iter().any(|v| !v.is_finite()) {
                return Err(self.error(
                    ErrorKind::InvalidArgument,
                    format!("weight `{name}` holds NaN or infinite values"),
                ));
            }
            let index = self.initializer(name)?;
            let proto = &mut model.graph_mut().initializer[index];
            let dims: Vec<i64> = tensor.dims.iter().map(|&d| d as i64).collect();
            if proto.dims != dims {
                return Err(self.error(
                    ErrorKind::InvalidArgument,
                    format!(
                        "weight `{name}` has dimensions {:?}, the model's has {:?}",
                        tensor.dims, proto.dims
                    ),
                ));
            }
            *proto = float_initializer(name, tensor);
        }
        Ok(model)
    }

    /// A copy that also returns these intermediate values, e.g. the backbone's features
    /// that a trainable head reads.
    pub fn with_outputs(&self, names: &[String]) -> Result<Model, InferError> {
        let mut model = self.clone();
        for name in names {
            if model.outputs.iter().any(|o| &o.name == name) {
                continue;
            }
            let produced = self.graph().node.iter().any(|n| n.output.contains(name));
            if !produced {
                return Err(self.error(
                    ErrorKind::NotFound,
                    format!("no node produces a value named `{name}`"),
                ));
            }
            let info = value_info(name, DataType::Float, None);
            model.outputs.push(value_spec(&info));
            model.graph_mut().output.push(info);
        }
        Ok(model)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Writes the model to `path` through a temporary file, so a reader never sees half.
    pub fn save(&self, path: &Path) -> Result<(), InferError> {
        crate::files::write_atomically(path, &self.to_bytes()).map_err(|e| {
            InferError::new(
                ErrorKind::InvalidArgument,
                path.display().to_string(),
                format!("cannot write the model: {e:#}"),
            )
        })
    }

    /// A session on the active backend.
    pub fn session(&self, options: &SessionOptions) -> Result<Session, InferError> {
        let backend = backend().map_err(|e| self.error(ErrorKind::Runtime, e))?;
        let runtime = |e: ort::Error| self.error(ErrorKind::Runtime, e.to_string());
        let mut builder = ort::session::Session::builder(backend.environment())
            .map_err(runtime)?
            .with_intra_threads(options.intra_threads)
            .map_err(|e| runtime(e.into()))?;
        if backend.kind == BackendKind::OnnxRuntime {
            // Idle worker threads would spin for a while after each run, taking the cores
            // from the host's other sessions and plugins (an edge device has few).
            builder = builder
                .with_intra_op_spinning(false)
                .map_err(|e| runtime(e.into()))?
                .with_memory_pattern(false)
                .map_err(|e| runtime(e.into()))?;
        }
        let inner = builder.commit_from_memory(&self.to_bytes()).map_err(|e| {
            self.error(
                ErrorKind::InvalidEncoding,
                format!("the {} backend cannot load the model: {e}", backend.kind),
            )
        })?;
        Ok(Session {
            model: self.name.clone(),
            inputs: self.inputs.clone(),
            inner,
        })
    }
}

/// How a session runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Threads one model run may use.
    pub intra_threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// One model loaded on the backend. `run` takes `&mut self`: one session per worker.
pub struct Session {
    model: String,
    inputs: Vec<ValueSpec>,
    inner: ort::session::Session,
}

impl Session {
    pub fn inputs(&self) -> &[ValueSpec] {
        &self.inputs
    }

    /// Runs the model on named inputs (checked against the model's declarations) and
    /// returns every output, by name.
    pub fn run(&mut self, inputs: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>, InferError> {
        self.run_until(inputs, None)
    }

    /// [`Session::run`], stopped at `deadline` (a plugin call's) where the backend can
    /// stop a run mid-way: ONNX Runtime can, tract cannot.
    pub fn run_until(
        &mut self,
        inputs: &[(&str, &Tensor)],
        deadline: Option<Instant>,
    ) -> Result<Vec<(String, Tensor)>, InferError> {
        let error = |kind, message: String| InferError::new(kind, &self.model, message);
        for spec in &self.inputs {
            let Some((_, tensor)) = inputs.iter().find(|(name, _)| *name == spec.name) else {
                return Err(error(
                    ErrorKind::InvalidArgument,
                    format!("input `{}` {} was not given", spec.name, spec.shape()),
                ));
            };
            if !spec.accepts(&tensor.dims) {
                return Err(error(
                    ErrorKind::InvalidArgument,
                    format!(
                        "input `{}` must be {} but the tensor is {:?}",
                        spec.name,
                        spec.shape(),
                        tensor.dims
                    ),
                ));
            }
        }
        if let Some((name, _)) = inputs
            .iter()
            .find(|(name, _)| !self.inputs.iter().any(|s| s.name == *name))
        {
            let known: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(error(
                ErrorKind::InvalidArgument,
                format!(
                    "the model has no input `{name}` (its inputs: {})",
                    known.join(", ")
                ),
            ));
        }
        let runtime = |e: ort::Error| error(ErrorKind::Runtime, e.to_string());
        let mut values = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let view = ort::value::TensorRef::from_array_view((
                tensor.dims.as_slice(),
                tensor.data.as_slice(),
            ))
            .map_err(runtime)?;
            values.push((
                Cow::Borrowed(*name),
                ort::session::SessionInputValue::from(view),
            ));
        }
        let past = |deadline: Instant| Instant::now() >= deadline;
        let stopped = || {
            error(
                ErrorKind::Runtime,
                "stopped: the call's deadline passed".into(),
            )
        };
        let options = match deadline {
            Some(deadline) if past(deadline) => return Err(stopped()),
            Some(_) => Some(Arc::new(RunOptions::new().map_err(runtime)?)),
            None => None,
        };
        let outputs = match (deadline, &options) {
            (Some(deadline), Some(options)) => {
                let _watch = super::deadline::watch(deadline, options.clone());
                self.inner.run_with_options(values, options).map_err(|e| {
                    if past(deadline) {
                        stopped()
                    } else {
                        runtime(e)
                    }
                })?
            }
            _ => self.inner.run(values).map_err(runtime)?,
        };
        let mut result = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| {
                InferError::new(
                    ErrorKind::Unsupported,
                    &self.model,
                    format!("output `{name}` is not a float32 tensor: {e}"),
                )
            })?;
            let dims = shape.iter().map(|&d| d.max(0) as usize).collect();
            result.push((
                name.to_string(),
                Tensor {
                    dims,
                    data: data.to_vec(),
                },
            ));
        }
        Ok(result)
    }
}

fn value_spec(info: &pb::ValueInfoProto) -> ValueSpec {
    let dims = match info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tensor)) => tensor
            .shape
            .as_ref()
            .map(|shape| {
                shape
                    .dim
                    .iter()
                    .map(|d| match d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                            Some(v as usize)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    ValueSpec {
        name: info.name.clone(),
        dims,
    }
}

/// A graph input or output declaration; `dims` of `None` leaves the shape open.
pub fn value_info(name: &str, ty: DataType, dims: Option<&[Option<usize>]>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let shape = dims.map(|dims| pb::TensorShapeProto {
        dim: dims
            .iter()
            .enumerate()
            .map(|(i, d)| Dimension {
                value: Some(match d {
                    Some(d) => Value::DimValue(*d as i64),
                    None => Value::DimParam(format!("{name}_{i}")),
                }),
                ..Default::default()
            })
            .collect(),
    });
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: ty as i32,
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Gives every open dimension of the graph's inputs and outputs a name: some exporters
/// write `-1` or leave a dimension empty (`[-1, 3, ?, ?]`), which tract cannot translate,
/// while a named dimension (`image_2`) is open to both backends alike.
fn name_open_dimensions(graph: &mut pb::GraphProto) {
    use pb::tensor_shape_proto::dimension::Value;
    for value in graph.input.iter_mut().chain(graph.output.iter_mut()) {
        let Some(type_proto::Value::TensorType(tensor)) =
            value.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        for (i, dim) in tensor
            .shape
            .iter_mut()
            .flat_map(|s| s.dim.iter_mut())
            .enumerate()
        {
            let open = match &dim.value {
                None => true,
                Some(Value::DimValue(v)) => *v <= 0,
                Some(Value::DimParam(p)) => p.is_empty(),
            };
            if open {
                dim.value = Some(Value::DimParam(format!("{}_{i}", value.name)));
            }
        }
    }
}

/// A float32 initializer holding `tensor` (little-endian raw data, as exporters write it).
pub fn float_initializer(name: &str, tensor: &Tensor) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: tensor.dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    use tract_onnx::prelude::*;

    use super::*;
    use crate::media::ModelBuilder;

    #[test]
    fn open_dimensions_are_named_so_that_tract_reads_the_model() {
        let built = ModelBuilder::new("any-size")
            .input("image", &[Some(1), Some(3), None, None])
            .node("GlobalAveragePool", &["image"], &["logits"], &[])
            .output("logits", &[Some(1), Some(3), Some(1), Some(1)])
            .build()
            .unwrap();
        // As some exporters write it: [-1, 3, ?, ?].
        let mut proto = built.proto().clone();
        let input = &mut proto.graph.as_mut().unwrap().input[0];
        let Some(type_proto::Value::TensorType(tensor)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            unreachable!()
        };
        let dim = |value| Dimension {
            value,
            ..Default::default()
        };
        tensor.shape.as_mut().unwrap().dim = vec![
            dim(Some(Value::DimValue(-1))),
            dim(Some(Value::DimValue(3))),
            dim(None),
            dim(None),
        ];
        let model = Model::from_proto("exported", proto).unwrap();
        let read = tract_onnx::onnx()
            .model_for_read(&mut model.to_bytes().as_slice())
            .and_then(|m| m.into_typed());
        assert!(read.is_ok(), "{:?}", read.err());
        let dims = model.inputs()[0].dims.clone();
        assert_eq!(dims, [None, Some(3), None, None]);
    }
}
