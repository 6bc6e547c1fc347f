//! The values a graph's nodes pass each other: float tensors (on the autodiff tape when a
//! trainable weight reaches them) and the small integer tensors of shape arithmetic
//! (`Shape`, `Gather`, `Concat` feeding a `Reshape`), which are computed on the host and
//! never differentiated.

use candle_core::{DType, Device, Tensor as Dense};
use tract_onnx::pb::{self, tensor_proto::DataType};

/// One value of the graph.
#[derive(Clone, Debug)]
pub enum Value {
    Float(Dense),
    Int(Ints),
}

/// A row-major integer tensor (shapes, axes, indices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ints {
    pub dims: Vec<usize>,
    pub data: Vec<i64>,
}

impl Ints {
    pub fn vector(data: Vec<i64>) -> Self {
        Ints {
            dims: vec![data.len()],
            data,
        }
    }

    pub fn scalar(value: i64) -> Self {
        Ints {
            dims: Vec::new(),
            data: vec![value],
        }
    }
}

impl Value {
    pub fn float(&self) -> Result<&Dense, String> {
        match self {
            Value::Float(t) => Ok(t),
            Value::Int(_) => Err("an integer tensor where a float one is needed".into()),
        }
    }

    /// The value as integers: shape arithmetic, or a float tensor holding whole numbers
    /// (some exporters write shapes as floats).
    pub fn ints(&self) -> Result<Ints, String> {
        match self {
            Value::Int(i) => Ok(i.clone()),
            Value::Float(t) => {
                let dims = t.dims().to_vec();
                let data = t
                    .flatten_all()
                    .and_then(|t| t.to_dtype(DType::F64))
                    .and_then(|t| t.to_vec1::<f64>())
                    .map_err(|e| e.to_string())?;
                Ok(Ints {
                    dims,
                    data: data.into_iter().map(|v| v as i64).collect(),
                })
            }
        }
    }

    pub fn dims(&self) -> Vec<usize> {
        match self {
            Value::Float(t) => t.dims().to_vec(),
            Value::Int(i) => i.dims.clone(),
        }
    }

    /// Bytes the value holds (what a session counts against its memory cap).
    pub fn bytes(&self) -> u64 {
        match self {
            Value::Float(t) => (t.elem_count() * t.dtype().size_in_bytes()) as u64,
            Value::Int(i) => (i.data.len() * 8) as u64,
        }
    }
}

/// An ONNX tensor (an initializer or a `Constant`'s value) as a value in `dtype`.
pub fn from_proto(proto: &pb::TensorProto, dtype: DType) -> Result<Value, String> {
    let dims: Vec<usize> = proto.dims.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = dims.iter().product();
    let raw = &proto.raw_data;
    if !proto.external_data.is_empty() {
        return Err(format!(
            "tensor `{}` is stored outside the model file (external data), which the training engine does not read: export the model as one file",
            proto.name
        ));
    }
    let float = |data: Vec<f64>| -> Result<Value, String> {
        if data.len() != count {
            return Err(format!(
                "tensor `{}` declares {count} elements and holds {}",
                proto.name,
                data.len()
            ));
        }
        Dense::from_vec(data, dims.as_slice(), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .map(Value::Float)
            .map_err(|e| e.to_string())
    };
    let ints = |data: Vec<i64>| -> Result<Value, String> {
        if data.len() != count {
            return Err(format!(
                "tensor `{}` declares {count} elements and holds {}",
                proto.name,
                data.len()
            ));
        }
        Ok(Value::Int(Ints {
            dims: dims.clone(),
            data,
        }))
    };
    match DataType::try_from(proto.data_type) {
        Ok(DataType::Float) if raw.is_empty() => {
            float(proto.float_data.iter().map(|&v| v as f64).collect())
        }
        Ok(DataType::Float) => float(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect(),
        ),
        Ok(DataType::Double) if raw.is_empty() => float(proto.double_data.clone()),
        Ok(DataType::Double) => float(
            raw.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        Ok(DataType::Int64) if raw.is_empty() => ints(proto.int64_data.clone()),
        Ok(DataType::Int64) => ints(
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        Ok(DataType::Int32) if raw.is_empty() => {
            ints(proto.int32_data.iter().map(|&v| v as i64).collect())
        }
        Ok(DataType::Int32) => ints(
            raw.chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
        Ok(DataType::Int8) if !raw.is_empty() => {
            ints(raw.iter().map(|&b| b as i8 as i64).collect())
        }
        Ok(DataType::Bool) | Ok(DataType::Uint8) if !raw.is_empty() => {
            ints(raw.iter().map(|&b| b as i64).collect())
        }
        Ok(DataType::Bool) | Ok(DataType::Uint8) | Ok(DataType::Int8) => {
            ints(proto.int32_data.iter().map(|&v| v as i64).collect())
        }
        Ok(DataType::Float16) | Ok(DataType::Bfloat16) => Err(format!(
            "tensor `{}` is half precision, which the training engine does not train: export the model in float32 (Ultralytics: without `half=True`)",
            proto.name
        )),
        _ => Err(format!(
            "tensor `{}` has ONNX element type {}, which the training engine does not read",
            proto.name, proto.data_type
        )),
    }
}

/// A float value written back as an ONNX tensor named `name` of element type `data_type`
/// (float or double, as the model had it).
pub fn to_proto(name: &str, tensor: &Dense, data_type: i32) -> Result<pb::TensorProto, String> {
    let flat = tensor.flatten_all().map_err(|e| e.to_string())?;
    let raw_data = if data_type == DataType::Double as i32 {
        let data = flat.to_dtype(DType::F64).and_then(|t| t.to_vec1::<f64>());
        data.map_err(|e| e.to_string())?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    } else {
        let data = flat.to_dtype(DType::F32).and_then(|t| t.to_vec1::<f32>());
        data.map_err(|e| e.to_string())?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    };
    Ok(pb::TensorProto {
        name: name.to_string(),
        dims: tensor.dims().iter().map(|&d| d as i64).collect(),
        data_type,
        raw_data,
        ..Default::default()
    })
}
