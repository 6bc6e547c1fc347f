//! Writes ONNX models from Rust: how the project makes its own models (the example's
//! base detector, the tests' small nets) with no Python and no download.

use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};

use super::model::{Model, float_initializer, value_info};
use super::{InferError, Tensor};

/// The ONNX operator set the models are written for.
pub const OPSET: i64 = 13;
/// ONNX IR version 8 (the one opset 13 models are written with).
const IR_VERSION: i64 = 8;

/// A node attribute.
#[derive(Clone, Debug)]
pub enum Attr {
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
    Float(&'static str, f32),
}

/// Builds a graph node by node: inputs, float weights, nodes, outputs and metadata.
pub struct ModelBuilder {
    name: String,
    graph: pb::GraphProto,
    metadata: Vec<(String, String)>,
}

impl ModelBuilder {
    pub fn new(name: &str) -> Self {
        ModelBuilder {
            name: name.to_string(),
            graph: pb::GraphProto {
                name: name.to_string(),
                ..Default::default()
            },
            metadata: Vec::new(),
        }
    }

    /// A float32 graph input; `None` dimensions are dynamic.
    pub fn input(&mut self, name: &str, dims: &[Option<usize>]) -> &mut Self {
        self.graph
            .input
            .push(value_info(name, DataType::Float, Some(dims)));
        self
    }

    /// A float32 initializer (a weight).
    pub fn weight(&mut self, name: &str, tensor: &Tensor) -> &mut Self {
        self.graph.initializer.push(float_initializer(name, tensor));
        self
    }

    /// An int64 initializer (a shape, axes or indices).
    pub fn ints(&mut self, name: &str, dims: &[usize], values: &[i64]) -> &mut Self {
        self.graph.initializer.push(pb::TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        self
    }

    /// A node of the standard domain.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[Attr],
    ) -> &mut Self {
        let index = self.graph.node.len();
        self.graph.node.push(pb::NodeProto {
            name: format!("{op}_{index}"),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.iter().map(attribute).collect(),
            ..Default::default()
        });
        self
    }

    /// A float32 graph output.
    pub fn output(&mut self, name: &str, dims: &[Option<usize>]) -> &mut Self {
        self.graph
            .output
            .push(value_info(name, DataType::Float, Some(dims)));
        self
    }

    /// A `metadata_props` entry (task, class names, input conventions).
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }

    pub fn build(&self) -> Result<Model, InferError> {
        let proto = pb::ModelProto {
            ir_version: IR_VERSION,
            producer_name: "sedna".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            graph: Some(self.graph.clone()),
            metadata_props: self
                .metadata
                .iter()
                .map(|(key, value)| pb::StringStringEntryProto {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            ..Default::default()
        };
        Model::from_proto(&self.name, proto)
    }
}

fn attribute(attr: &Attr) -> pb::AttributeProto {
    let (name, mut proto) = match attr {
        Attr::Int(name, i) => (
            name,
            pb::AttributeProto {
                r#type: AttributeType::Int as i32,
                i: *i,
                ..Default::default()
            },
        ),
        Attr::Ints(name, ints) => (
            name,
            pb::AttributeProto {
                r#type: AttributeType::Ints as i32,
                ints: ints.clone(),
                ..Default::default()
            },
        ),
        Attr::Float(name, f) => (
            name,
            pb::AttributeProto {
                r#type: AttributeType::Float as i32,
                f: *f,
                ..Default::default()
            },
        ),
    };
    proto.name = name.to_string();
    proto
}
