//! ONNX operators over candle's tensors, in forms whose backward candle computes right.
//!
//! Each operator is written with candle ops that have a gradient, and where candle's own
//! op has a wrong or missing backward it is written another way: nearest `Resize` is a
//! broadcast and a reshape (candle's upsample backward overwrites the gradient already
//! accumulated for its input: every YOLO neck reads the upsampled tensor twice); `MaxPool`
//! with padding or overlapping windows is a maximum of shifted slices; `Sigmoid` goes
//! through `tanh`, whose backward stays finite for large inputs; `Softmax` subtracts a
//! detached maximum; `Conv` is im2col and GEMM both ways (`conv`). Every gradient is checked against central differences in the tests.

use candle_core::{DType, Device, Tensor as Dense};
use tract_onnx::pb;

use super::conv::{Conv2d, conv2d};
use super::pointwise::{self, Act};
use super::value::{Ints, Value, from_proto};

/// The operators the engine evaluates and differentiates.
pub const SUPPORTED: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Exp",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Pow",
    "Reciprocal",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Upsample",
];

/// What an operator gets: its node, its inputs (`None` for an omitted optional one), the
/// model's opset and the float type the session computes in.
pub struct Call<'a> {
    pub node: &'a pb::NodeProto,
    pub inputs: Vec<Option<&'a Value>>,
    pub opset: i64,
    pub dtype: DType,
}

type Outcome = Result<Vec<Value>, String>;

fn fail<T>(error: candle_core::Error) -> Result<T, String> {
    Err(describe(error))
}

/// A candle error's message without the backtrace it carries when `RUST_BACKTRACE` is set.
pub fn describe(error: candle_core::Error) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or_default().to_string()
}

macro_rules! c {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return fail(e),
        }
    };
}

impl<'a> Call<'a> {
    fn attr(&self, name: &str) -> Option<&'a pb::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    fn float_attr(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    fn ints_attr(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    pub(super) fn input(&self, index: usize) -> Result<&'a Value, String> {
        self.inputs
            .get(index)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {index} is missing"))
    }

    pub(super) fn optional(&self, index: usize) -> Option<&'a Value> {
        self.inputs.get(index).copied().flatten()
    }

    pub(super) fn x(&self, index: usize) -> Result<Dense, String> {
        match self.input(index)? {
            Value::Float(t) => Ok(t.clone()),
            Value::Int(i) => ints_to_float(i, self.dtype),
        }
    }

    /// An axes-like list: from input `index` (newer opsets) or the attribute `name`.
    fn list(&self, index: usize, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.optional(index) {
            Some(value) => Ok(Some(value.ints()?.data)),
            None => Ok(self.ints_attr(name)),
        }
    }
}

fn ints_to_float(ints: &Ints, dtype: DType) -> Result<Dense, String> {
    let data: Vec<f64> = ints.data.iter().map(|&v| v as f64).collect();
    Dense::from_vec(data, ints.dims.as_slice(), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .map_err(|e| e.to_string())
}

/// A possibly negative axis of a rank-`rank` tensor, checked.
fn axis(axis: i64, rank: usize) -> Result<usize, String> {
    let resolved = if axis < 0 { axis + rank as i64 } else { axis };
    if resolved < 0 || resolved >= rank as i64 {
        return Err(format!("axis {axis} is outside a rank-{rank} tensor"));
    }
    Ok(resolved as usize)
}

/// Runs one node.
pub fn run(call: &Call) -> Outcome {
    let op = call.node.op_type.as_str();
    let float = |t: Dense| Ok(vec![Value::Float(t)]);
    match op {
        "Identity" | "Dropout" => Ok(vec![call.input(0)?.clone()]),
        "Constant" => constant(call),
        "ConstantOfShape" => constant_of_shape(call),
        "Shape" => shape(call),
        "Cast" => cast(call),
        "Add" | "Sub" | "Mul" | "Div" => binary(call, op),
        "Pow" => pow(call),
        "Abs" => float(c!(call.x(0)?.abs())),
        "Neg" => float(c!(call.x(0)?.neg())),
        "Exp" => float(c!(call.x(0)?.exp())),
        "Log" => float(c!(call.x(0)?.log())),
        "Sqrt" => float(c!(call.x(0)?.sqrt())),
        "Reciprocal" => float(c!(call.x(0)?.recip())),
        "Tanh" => float(c!(call.x(0)?.tanh())),
        "Relu" => float(c!(Act::Relu.forward(&call.x(0)?))),
        "Sigmoid" => float(c!(Act::Sigmoid.forward(&call.x(0)?))),
        "LeakyRelu" => {
            let x = call.x(0)?;
            let alpha = call.float_attr("alpha", 0.01) as f64;
            let negative = c!(c!(x.neg()).relu());
            float(c!(c!(x.relu()) - c!(negative.affine(alpha, 0.0))))
        }
        "HardSigmoid" => {
            let alpha = call.float_attr("alpha", 0.2) as f64;
            let beta = call.float_attr("beta", 0.5) as f64;
            float(hard_sigmoid(&call.x(0)?, alpha, beta)?)
        }
        "HardSwish" => {
            let x = call.x(0)?;
            float(c!(x.mul(&hard_sigmoid(&x, 1.0 / 6.0, 0.5)?)))
        }
        "Clip" => clip(call),
        "Softmax" | "LogSoftmax" => softmax(call, op == "LogSoftmax"),
        "Conv" => Ok(vec![Value::Float(conv_block(call, None, None)?.output)]),
        "Gemm" => gemm(call),
        "MatMul" => matmul(call),
        "BatchNormalization" => batch_norm(call),
        "MaxPool" => pool(call, Pool::Max),
        "AveragePool" => pool(call, Pool::Average),
        "GlobalAveragePool" | "GlobalMaxPool" => global_pool(call, op == "GlobalMaxPool"),
        "Flatten" => {
            let x = call.x(0)?;
            let at = axis_inclusive(call.int("axis", 1), x.rank())?;
            let outer: usize = x.dims()[..at].iter().product();
            let inner: usize = x.dims()[at..].iter().product();
            float(c!(x.reshape((outer, inner))))
        }
        "Reshape" => reshape(call),
        "Transpose" => {
            let x = call.x(0)?;
            let perm: Vec<usize> = match call.ints_attr("perm") {
                Some(perm) => perm
                    .iter()
                    .map(|&p| axis(p, x.rank()))
                    .collect::<Result<_, _>>()?,
                None => (0..x.rank()).rev().collect(),
            };
            float(c!(x.permute(perm)))
        }
        "Concat" => concat(call),
        "Split" => split(call),
        "Slice" => slice(call),
        "Squeeze" => squeeze(call),
        "Unsqueeze" => unsqueeze(call),
        "Gather" => gather(call),
        "Resize" | "Upsample" => resize(call),
        "ReduceMean" | "ReduceSum" => reduce(call, op == "ReduceMean"),
        _ => Err(format!("the training engine has no operator `{op}`")),
    }
}

fn axis_inclusive(value: i64, rank: usize) -> Result<usize, String> {
    if value == rank as i64 {
        return Ok(rank);
    }
    axis(value, rank)
}

fn constant(call: &Call) -> Outcome {
    if let Some(a) = call.attr("value") {
        let tensor = a.t.as_ref().ok_or("`value` holds no tensor")?;
        return Ok(vec![from_proto(tensor, call.dtype)?]);
    }
    if let Some(a) = call.attr("value_float") {
        return Ok(vec![Value::Float(c!(
            Dense::new(a.f, &Device::Cpu).and_then(|t| t.to_dtype(call.dtype))
        ))]);
    }
    if let Some(a) = call.attr("value_floats") {
        return Ok(vec![Value::Float(c!(Dense::new(
            a.floats.as_slice(),
            &Device::Cpu
        )
        .and_then(|t| t.to_dtype(call.dtype))))]);
    }
    if let Some(a) = call.attr("value_int") {
        return Ok(vec![Value::Int(Ints::scalar(a.i))]);
    }
    if let Some(a) = call.attr("value_ints") {
        return Ok(vec![Value::Int(Ints::vector(a.ints.clone()))]);
    }
    Err("a Constant without a value this engine reads (value, value_float(s), value_int(s))".into())
}

fn constant_of_shape(call: &Call) -> Outcome {
    let dims: Vec<usize> = call
        .input(0)?
        .ints()?
        .data
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let count: usize = dims.iter().product();
    let fill = match call.attr("value").and_then(|a| a.t.as_ref()) {
        Some(t) => from_proto(t, call.dtype)?,
        None => Value::Float(c!(Dense::zeros(1, call.dtype, &Device::Cpu))),
    };
    match fill {
        Value::Float(t) => {
            let v = c!(c!(t.flatten_all()).to_dtype(DType::F64));
            let v: f64 = c!(c!(v.get(0)).to_scalar());
            Ok(vec![Value::Float(c!(Dense::full(
                v,
                dims.as_slice(),
                &Device::Cpu
            )
            .and_then(|t| t.to_dtype(call.dtype))))])
        }
        Value::Int(i) => Ok(vec![Value::Int(Ints {
            dims,
            data: vec![i.data.first().copied().unwrap_or(0); count],
        })]),
    }
}

fn shape(call: &Call) -> Outcome {
    let dims = call.input(0)?.dims();
    let rank = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clamp(call.int("start", 0));
    let end = clamp(call.int("end", rank));
    let data = dims[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(vec![Value::Int(Ints::vector(data))])
}

/// ONNX element types that are integers (or booleans), by their enum value.
fn is_integer_type(to: i64) -> bool {
    matches!(to, 2..=7 | 9 | 12 | 13)
}

fn cast(call: &Call) -> Outcome {
    let value = call.input(0)?;
    let to = call.int("to", 1);
    Ok(vec![match (value, is_integer_type(to)) {
        (Value::Int(_), true) => value.clone(),
        (Value::Float(_), true) => Value::Int(value.ints()?),
        (Value::Int(i), false) => Value::Float(ints_to_float(i, call.dtype)?),
        (Value::Float(_), false) => value.clone(),
    }])
}

fn binary(call: &Call, op: &str) -> Outcome {
    if let (Value::Int(a), Value::Int(b)) = (call.input(0)?, call.input(1)?) {
        return Ok(vec![Value::Int(int_binary(a, b, op)?)]);
    }
    let (a, b) = (call.x(0)?, call.x(1)?);
    let out = match op {
        "Add" => a.broadcast_add(&b),
        "Sub" => a.broadcast_sub(&b),
        "Mul" => a.broadcast_mul(&b),
        _ => a.broadcast_div(&b),
    };
    Ok(vec![Value::Float(c!(out))])
}

fn int_binary(a: &Ints, b: &Ints, op: &str) -> Result<Ints, String> {
    let f = |x: i64, y: i64| -> Result<i64, String> {
        // ONNX integer division truncates toward zero.
        let value = match op {
            "Add" => x.checked_add(y),
            "Sub" => x.checked_sub(y),
            "Mul" => x.checked_mul(y),
            _ => x.checked_div(y),
        };
        value.ok_or_else(|| format!("integer {op} of {x} and {y} overflows or divides by zero"))
    };
    let (long, short, swapped) = if a.data.len() >= b.data.len() {
        (a, b, false)
    } else {
        (b, a, true)
    };
    if short.data.len() != 1 && short.data.len() != long.data.len() {
        return Err(format!(
            "integer operands of shapes {:?} and {:?} do not broadcast",
            a.dims, b.dims
        ));
    }
    let data = long
        .data
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let y = short.data[if short.data.len() == 1 { 0 } else { i }];
            if swapped { f(y, x) } else { f(x, y) }
        })
        .collect::<Result<_, _>>()?;
    Ok(Ints {
        dims: long.dims.clone(),
        data,
    })
}

fn pow(call: &Call) -> Outcome {
    let x = call.x(0)?;
    let e = match call.input(1)? {
        Value::Float(t) if t.elem_count() == 1 => {
            let t = c!(c!(t.flatten_all()).to_dtype(DType::F64));
            c!(c!(t.get(0)).to_scalar::<f64>())
        }
        Value::Int(i) if i.data.len() == 1 => i.data[0] as f64,
        _ => return Err("Pow with a tensor exponent (only a single number is supported)".into()),
    };
    let out = if e == 2.0 {
        c!(x.sqr())
    } else if e == 1.0 {
        x
    } else if e == 0.5 {
        c!(x.sqrt())
    } else {
        c!(x.powf(e))
    };
    Ok(vec![Value::Float(out)])
}

/// `x σ(x)` for a `Mul` of `input` by its sigmoid (see [`super::fuse`]).
pub fn silu(call: &Call, input: &str) -> Outcome {
    Ok(vec![Value::Float(c!(
        Act::Silu.forward(&silu_input(call, input)?)
    ))])
}

/// The input of a fused SiLU (`input`, one of the `Mul`'s two).
pub fn silu_input(call: &Call, input: &str) -> Result<Dense, String> {
    let at = call.node.input.iter().position(|i| i == input);
    call.x(at.ok_or_else(|| format!("it does not read `{input}`"))?)
}

fn hard_sigmoid(x: &Dense, alpha: f64, beta: f64) -> Result<Dense, String> {
    x.affine(alpha, beta)
        .and_then(|t| t.clamp(0f32, 1f32))
        .map_err(|e| e.to_string())
}

fn scalar_of(value: Option<&Value>) -> Result<Option<f64>, String> {
    match value {
        None => Ok(None),
        Some(Value::Float(t)) => {
            let t = c!(c!(t.flatten_all()).to_dtype(DType::F64));
            Ok(Some(c!(c!(t.get(0)).to_scalar::<f64>())))
        }
        Some(Value::Int(i)) => Ok(i.data.first().map(|&v| v as f64)),
    }
}

fn clip(call: &Call) -> Outcome {
    let x = call.x(0)?;
    let (min, max) = if call.opset >= 11 {
        (scalar_of(call.optional(1))?, scalar_of(call.optional(2))?)
    } else {
        (
            call.attr("min").map(|a| a.f as f64),
            call.attr("max").map(|a| a.f as f64),
        )
    };
    let mut out = x;
    if let Some(min) = min {
        out = c!(out.maximum(min));
    }
    if let Some(max) = max {
        out = c!(out.minimum(max));
    }
    Ok(vec![Value::Float(out)])
}

/// A softmax's input as the axis it normalises sees it: before opset 13 the axis splits
/// the tensor into a 2-D matrix whose rows sum to one.
pub fn softmax_view(call: &Call, x: &Dense) -> Result<(Dense, usize), String> {
    let default = if call.opset >= 13 { -1 } else { 1 };
    let at = axis(call.int("axis", default), x.rank())?;
    Ok(if call.opset < 13 {
        let outer: usize = x.dims()[..at].iter().product();
        (c!(x.reshape((outer, x.elem_count() / outer.max(1)))), 1)
    } else {
        (x.clone(), at)
    })
}

fn softmax(call: &Call, log: bool) -> Outcome {
    let x = call.x(0)?;
    let (work, dim) = softmax_view(call, &x)?;
    let max = c!(c!(work.max_keepdim(dim)).detach().contiguous());
    let shifted = c!(work.broadcast_sub(&max));
    let exp = c!(shifted.exp());
    let sum = c!(exp.sum_keepdim(dim));
    let out = if log {
        c!(shifted.broadcast_sub(&c!(sum.log())))
    } else {
        c!(exp.broadcast_div(&sum))
    };
    Ok(vec![Value::Float(c!(out.reshape(x.dims())))])
}

/// Per-axis padding `(begin, end)` of a 2-D window op from `pads` or `auto_pad`.
fn window_pads(
    call: &Call,
    input: (usize, usize),
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
) -> Result<[(usize, usize); 2], String> {
    let auto = call.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    match auto.as_str() {
        "NOTSET" | "" => {
            let pads = call.ints_attr("pads").unwrap_or_else(|| vec![0; 4]);
            if pads.len() != 4 || pads.iter().any(|&p| p < 0) {
                return Err(format!("pads {pads:?} are not four non-negative numbers"));
            }
            Ok([
                (pads[0] as usize, pads[2] as usize),
                (pads[1] as usize, pads[3] as usize),
            ])
        }
        "VALID" => Ok([(0, 0), (0, 0)]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let one = |i: usize, k: usize, s: usize, d: usize| {
                let out = i.div_ceil(s);
                let total = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(i);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            };
            Ok([
                one(input.0, kernel.0, stride.0, dilation.0),
                one(input.1, kernel.1, stride.1, dilation.1),
            ])
        }
        other => Err(format!("auto_pad `{other}` is not an ONNX value")),
    }
}

fn pair(call: &Call, name: &str) -> Result<(usize, usize), String> {
    match call.ints_attr(name).as_deref() {
        None => Ok((1, 1)),
        Some([a, b]) if *a > 0 && *b > 0 => Ok((*a as usize, *b as usize)),
        Some(other) => Err(format!(
            "`{name}` is {other:?}: the engine supports 2-D windows (two positive numbers)"
        )),
    }
}

/// `x` padded with `value` by `pads` on the last two axes.
fn pad2d(x: &Dense, pads: [(usize, usize); 2], value: f64) -> Result<Dense, String> {
    let mut out = x.clone();
    for (axis, (begin, end)) in [(2usize, pads[0]), (3usize, pads[1])] {
        if begin == 0 && end == 0 {
            continue;
        }
        if value == 0.0 {
            out = c!(out.pad_with_zeros(axis, begin, end));
            continue;
        }
        let mut dims = out.dims().to_vec();
        let mut parts = Vec::new();
        if begin > 0 {
            dims[axis] = begin;
            parts.push(c!(Dense::full(value, dims.as_slice(), &Device::Cpu)
                .and_then(|t| t.to_dtype(x.dtype()))));
        }
        parts.push(out.clone());
        if end > 0 {
            dims[axis] = end;
            parts.push(c!(Dense::full(value, dims.as_slice(), &Device::Cpu)
                .and_then(|t| t.to_dtype(x.dtype()))));
        }
        out = c!(Dense::cat(&parts, axis));
    }
    Ok(out)
}

/// A convolution as its backward needs it: the input it convolved (padded, where the
/// node's padding was uneven), the kernel (folded from a normalisation, when one
/// follows), its geometry and activation, and its output before and after the activation.
pub struct Convolution {
    pub input: Dense,
    /// Uneven padding put around the node's input to make `input`: its gradient is cropped
    /// by it.
    pub pads: Option<[(usize, usize); 2]>,
    pub kernel: Dense,
    pub conv: Conv2d,
    pub activation: Option<Act>,
    pub output: Dense,
    pub before: Option<Dense>,
}

/// A `BatchNormalization`'s parameters (scale, shift, mean, variance) and epsilon.
pub struct Norm {
    pub params: [Dense; 4],
    pub epsilon: f64,
}

impl Norm {
    pub fn of(call: &Call) -> Result<Self, String> {
        Ok(Norm {
            params: [call.x(1)?, call.x(2)?, call.x(3)?, call.x(4)?],
            epsilon: call.float_attr("epsilon", 1e-5) as f64,
        })
    }

    /// `x factor[c] + offset[c]` for `channels` channels.
    pub fn affine(&self, channels: usize) -> Result<(Dense, Dense), String> {
        let [scale, shift, mean, var] = &self.params;
        if self.params.iter().any(|t| t.elem_count() != channels) {
            return Err(format!(
                "{channels} channels to normalise (axis 1 of its input), but scale, shift, mean and variance of {}, {}, {} and {} values",
                scale.elem_count(),
                shift.elem_count(),
                mean.elem_count(),
                var.elem_count()
            ));
        }
        let inv = c!(c!(var.affine(1.0, self.epsilon)).sqrt()).recip();
        let factor = c!(scale.mul(&c!(inv)));
        let offset = c!(shift.sub(&c!(mean.mul(&factor))));
        Ok((
            factor.flatten_all().map_err(describe)?,
            offset.flatten_all().map_err(describe)?,
        ))
    }
}

/// The kernel and bias a convolution of kernel `w` and bias `bias` convolves with when
/// the normalisation `norm` follows it: its per-channel factor folds into the kernel and
/// its offset into the bias, so the gradients reach the kernel, the conv bias and the
/// normalisation's scale and shift through those few numbers instead of every pixel.
pub fn folded(
    w: &Dense,
    bias: Option<&Dense>,
    norm: Option<&Norm>,
) -> Result<(Dense, Option<Dense>), String> {
    let Some(norm) = norm else {
        return Ok((w.clone(), bias.cloned()));
    };
    let channels = w.dims().first().copied().unwrap_or(0);
    let (factor, offset) = norm.affine(channels)?;
    let kernel = c!(w.broadcast_mul(&c!(factor.reshape((channels, 1, 1, 1)))));
    let bias = match bias {
        Some(b) => c!(offset.add(&c!(c!(b.flatten_all()).mul(&factor)))),
        None => offset,
    };
    Ok((kernel, Some(bias)))
}

/// A `Conv`, the `BatchNormalization` `norm` it alone feeds, and `activation`, as one
/// convolution (see [`super::fuse`]); a plain `Conv` without the last two.
pub fn conv_block(
    conv: &Call,
    norm: Option<&Call>,
    activation: Option<Act>,
) -> Result<Convolution, String> {
    let norm = norm
        .map(|n| Norm::of(n).map_err(|m| format!("its normalisation `{}`: {m}", n.node.name)))
        .transpose()?;
    let bias = conv.optional(2).map(Value::float).transpose()?;
    let (kernel, bias) = folded(&conv.x(1)?, bias, norm.as_ref())?;
    convolve(conv, kernel, bias, activation)
}

/// The convolution of `call`'s input by `w` (its kernel, or one folded from it), plus
/// `bias` per output channel, through `activation`.
fn convolve(
    call: &Call,
    w: Dense,
    bias: Option<Dense>,
    activation: Option<Act>,
) -> Result<Convolution, String> {
    let x = call.x(0)?;
    if x.rank() != 4 || w.rank() != 4 {
        return Err(format!(
            "a {}-D convolution (input {:?}): the engine supports 2-D convolutions",
            x.rank().saturating_sub(2),
            x.dims()
        ));
    }
    let group = call.int("group", 1).max(1) as usize;
    let stride = pair(call, "strides")?;
    let dilation = pair(call, "dilations")?;
    if stride.0 != stride.1 || dilation.0 != dilation.1 {
        return Err(format!(
            "strides {stride:?} or dilations {dilation:?} differ between height and width"
        ));
    }
    let (_, _, h, wi) = c!(x.dims4());
    let (_, _, kh, kw) = c!(w.dims4());
    let pads = window_pads(call, (h, wi), (kh, kw), stride, dilation)?;
    let symmetric = pads[0].0 == pads[0].1 && pads[1].0 == pads[1].1 && pads[0].0 == pads[1].0;
    let (input, padding, uneven) = if symmetric {
        (x, pads[0].0, None)
    } else {
        (pad2d(&x, pads, 0.0)?, 0, Some(pads))
    };
    let conv = Conv2d {
        stride: stride.0,
        padding,
        dilation: dilation.0,
        groups: group,
    };
    let done = c!(conv2d(&input, &w, bias.as_ref(), conv, activation));
    Ok(Convolution {
        input,
        pads: uneven,
        kernel: w,
        conv,
        activation,
        output: done.y,
        before: done.before,
    })
}

fn gemm(call: &Call) -> Outcome {
    let mut a = call.x(0)?;
    let mut b = call.x(1)?;
    if call.int("transA", 0) != 0 {
        a = c!(a.t());
    }
    if call.int("transB", 0) != 0 {
        b = c!(b.t());
    }
    let alpha = call.float_attr("alpha", 1.0) as f64;
    let beta = call.float_attr("beta", 1.0) as f64;
    let mut y = c!(a.matmul(&b));
    if alpha != 1.0 {
        y = c!(y.affine(alpha, 0.0));
    }
    if let Some(cv) = call.optional(2) {
        let mut cv = cv.float()?.clone();
        if beta != 1.0 {
            cv = c!(cv.affine(beta, 0.0));
        }
        y = c!(y.broadcast_add(&cv));
    }
    Ok(vec![Value::Float(y)])
}

fn matmul(call: &Call) -> Outcome {
    let (mut a, mut b) = (call.x(0)?, call.x(1)?);
    let (vector_a, vector_b) = (a.rank() == 1, b.rank() == 1);
    if vector_a {
        a = c!(a.unsqueeze(0));
    }
    if vector_b {
        b = c!(b.unsqueeze(1));
    }
    let mut y = if a.rank() == 2 && b.rank() == 2 {
        c!(a.matmul(&b))
    } else {
        c!(a.broadcast_matmul(&b))
    };
    if vector_b {
        y = c!(y.squeeze(y.rank() - 1));
    }
    if vector_a {
        y = c!(y.squeeze(y.rank() - if vector_b { 1 } else { 2 }));
    }
    Ok(vec![Value::Float(y)])
}

/// Inference-form batch normalisation with frozen statistics: the running mean and variance
/// are constants, the scale and shift train.
fn batch_norm(call: &Call) -> Outcome {
    let x = call.x(0)?;
    let channels = if x.rank() < 2 { 0 } else { x.dims()[1] };
    let (factor, offset) = Norm::of(call)?.affine(channels)?;
    Ok(vec![Value::Float(c!(pointwise::channel_affine(
        &x, &factor, &offset
    )))])
}

#[derive(Clone, Copy, PartialEq)]
enum Pool {
    Max,
    Average,
}

/// Every `stride`-th element of `x` along `axis`, starting at 0, `count` of them.
fn subsample(x: &Dense, axis: usize, stride: usize, count: usize) -> Result<Dense, String> {
    if stride == 1 {
        return Ok(x.clone());
    }
    let have = x.dims()[axis];
    let wanted = count * stride;
    let x = if have < wanted {
        c!(x.pad_with_zeros(axis, 0, wanted - have))
    } else {
        c!(x.narrow(axis, 0, wanted))
    };
    let mut dims = x.dims().to_vec();
    dims[axis] = count;
    dims.insert(axis + 1, stride);
    let split = c!(x.reshape(dims.as_slice()));
    c!(split.narrow(axis + 1, 0, 1))
        .squeeze(axis + 1)
        .map_err(|e| e.to_string())
}

/// Max or average pooling of any window, stride and padding, as a reduction over the
/// window's shifted slices (candle's pools differentiate only windows equal to strides,
/// and its max pool's gradient is scaled wrong).
/// A 2-D pool's window: kernel, stride and padding per axis.
pub struct Window {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub pads: [(usize, usize); 2],
}

impl Window {
    pub fn of(call: &Call) -> Result<Window, String> {
        let x = call.x(0)?;
        if x.rank() != 4 {
            return Err(format!(
                "pooling a rank-{} tensor: the engine supports 2-D pools",
                x.rank()
            ));
        }
        if call.attr("kernel_shape").is_none() {
            return Err("a pool without `kernel_shape`".into());
        }
        let kernel = pair(call, "kernel_shape")?;
        let stride = pair(call, "strides")?;
        if call.int("ceil_mode", 0) != 0 || pair(call, "dilations")? != (1, 1) {
            return Err("pooling with ceil_mode or dilations (the engine supports neither)".into());
        }
        let (_, _, h, w) = c!(x.dims4());
        let pads = window_pads(call, (h, w), kernel, stride, (1, 1))?;
        Ok(Window {
            kernel,
            stride,
            pads,
        })
    }
}

fn pool(call: &Call, kind: Pool) -> Outcome {
    let x = call.x(0)?;
    let Window {
        kernel,
        stride,
        pads,
    } = Window::of(call)?;
    let (_, _, h, w) = c!(x.dims4());
    let no_pads = pads == [(0, 0), (0, 0)];
    // candle's max-pool backward scales the gradient by the window's share of maxima
    // (a quarter for a unique maximum in 2x2): only its average pool is used.
    if kind == Pool::Average
        && no_pads
        && kernel == stride
        && h % kernel.0 == 0
        && w % kernel.1 == 0
    {
        return Ok(vec![Value::Float(c!(
            x.avg_pool2d_with_stride(kernel, stride)
        ))]);
    }
    let fill = if kind == Pool::Max {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    let padded = pad2d(&x, pads, fill)?;
    let (ph, pw) = (h + pads[0].0 + pads[0].1, w + pads[1].0 + pads[1].1);
    if ph < kernel.0 || pw < kernel.1 {
        return Err(format!("a {kernel:?} window over a {h}x{w} input"));
    }
    let out_h = (ph - kernel.0) / stride.0 + 1;
    let out_w = (pw - kernel.1) / stride.1 + 1;
    let window = |t: &Dense, i: usize, j: usize| -> Result<Dense, String> {
        let t = c!(t.narrow(2, i, (out_h - 1) * stride.0 + 1));
        let t = c!(t.narrow(3, j, (out_w - 1) * stride.1 + 1));
        subsample(&subsample(&t, 2, stride.0, out_h)?, 3, stride.1, out_w)
    };
    let mut acc: Option<Dense> = None;
    for i in 0..kernel.0 {
        for j in 0..kernel.1 {
            let part = window(&padded, i, j)?;
            acc = Some(match (acc, kind) {
                (None, _) => part,
                (Some(a), Pool::Max) => c!(a.maximum(&part)),
                (Some(a), Pool::Average) => c!(a.add(&part)),
            });
        }
    }
    let acc = acc.expect("a window has at least one element");
    if kind == Pool::Max {
        return Ok(vec![Value::Float(acc)]);
    }
    let area = (kernel.0 * kernel.1) as f64;
    if call.int("count_include_pad", 0) != 0 || no_pads {
        return Ok(vec![Value::Float(c!(acc.affine(1.0 / area, 0.0)))]);
    }
    // Divide each window by the number of real (unpadded) elements it covers.
    let ones = c!(Dense::ones((1, 1, h, w), x.dtype(), &Device::Cpu));
    let ones = pad2d(&ones, pads, 0.0)?;
    let mut count: Option<Dense> = None;
    for i in 0..kernel.0 {
        for j in 0..kernel.1 {
            let part = window(&ones, i, j)?;
            count = Some(match count {
                None => part,
                Some(c) => c!(c.add(&part)),
            });
        }
    }
    let count = count.expect("a window has at least one element");
    Ok(vec![Value::Float(c!(acc.broadcast_div(&count)))])
}

fn global_pool(call: &Call, max: bool) -> Outcome {
    let x = call.x(0)?;
    let mut out = x.clone();
    for axis in 2..x.rank() {
        out = if max {
            c!(out.max_keepdim(axis))
        } else {
            c!(out.mean_keepdim(axis))
        };
    }
    Ok(vec![Value::Float(out)])
}

fn reshape(call: &Call) -> Outcome {
    let value = call.input(0)?;
    let dims = value.dims();
    let spec = call.input(1)?.ints()?.data;
    let allow_zero = call.int("allowzero", 0) != 0;
    let mut out: Vec<i64> = spec
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if d == 0 && !allow_zero {
                dims.get(i).map(|&d| d as i64).ok_or_else(|| {
                    format!("shape {spec:?} copies dimension {i} of a {dims:?} tensor")
                })
            } else {
                Ok(d)
            }
        })
        .collect::<Result<_, _>>()?;
    let total: usize = dims.iter().product();
    if let Some(at) = out.iter().position(|&d| d == -1) {
        let known: i64 = out.iter().filter(|&&d| d != -1).product();
        if known <= 0 || total as i64 % known != 0 {
            return Err(format!("cannot reshape {dims:?} into {spec:?}"));
        }
        out[at] = total as i64 / known;
    }
    let out: Vec<usize> = out.iter().map(|&d| d.max(0) as usize).collect();
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {dims:?} into {spec:?}"));
    }
    Ok(vec![match value {
        Value::Float(t) => Value::Float(c!(t.reshape(out.as_slice()))),
        Value::Int(i) => Value::Int(Ints {
            dims: out,
            data: i.data.clone(),
        }),
    }])
}

fn concat(call: &Call) -> Outcome {
    let parts: Vec<&Value> = call.inputs.iter().flatten().copied().collect();
    if parts.iter().all(|p| matches!(p, Value::Int(_))) {
        let mut data = Vec::new();
        for part in &parts {
            let ints = part.ints()?;
            if ints.dims.len() > 1 {
                return Err("concatenating integer tensors of rank above 1".into());
            }
            data.extend(ints.data);
        }
        return Ok(vec![Value::Int(Ints::vector(data))]);
    }
    let tensors: Vec<Dense> = (0..call.inputs.len())
        .filter(|&i| call.optional(i).is_some())
        .map(|i| call.x(i))
        .collect::<Result<_, _>>()?;
    let Some(first) = tensors.first() else {
        return Err("Concat of no inputs".into());
    };
    let at = axis(call.int("axis", 0), first.rank())?;
    Ok(vec![Value::Float(c!(Dense::cat(&tensors, at)))])
}

fn split(call: &Call) -> Outcome {
    let x = call.x(0)?;
    let at = axis(call.int("axis", 0), x.rank())?;
    let size = x.dims()[at];
    let outputs = call.node.output.len();
    let sizes: Vec<usize> = match call.list(1, "split")? {
        Some(sizes) => sizes.iter().map(|&s| s.max(0) as usize).collect(),
        None => {
            let each = size.div_ceil(outputs.max(1));
            (0..outputs)
                .map(|i| each.min(size.saturating_sub(i * each)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != size || sizes.len() != outputs {
        return Err(format!(
            "split sizes {sizes:?} do not divide axis {at} of {:?} into {outputs} parts",
            x.dims()
        ));
    }
    let mut start = 0;
    let mut out = Vec::new();
    for s in sizes {
        out.push(Value::Float(c!(x.narrow(at, start, s))));
        start += s;
    }
    Ok(out)
}

fn slice(call: &Call) -> Outcome {
    let value = call.input(0)?;
    let dims = value.dims();
    let (starts, ends, axes, steps) = if call.opset >= 10 {
        (
            call.input(1)?.ints()?.data,
            call.input(2)?.ints()?.data,
            call.optional(3)
                .map(|v| v.ints())
                .transpose()?
                .map(|i| i.data),
            call.optional(4)
                .map(|v| v.ints())
                .transpose()?
                .map(|i| i.data),
        )
    } else {
        (
            call.ints_attr("starts").unwrap_or_default(),
            call.ints_attr("ends").unwrap_or_default(),
            call.ints_attr("axes"),
            None,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    let mut out = value.clone();
    for (((&start, &end), &ax), &step) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
        let at = axis(ax, dims.len())?;
        let size = dims[at] as i64;
        if step != 1 {
            return Err(format!(
                "Slice with step {step} (the engine slices with step 1)"
            ));
        }
        let clamp = |v: i64| (if v < 0 { v + size } else { v }).clamp(0, size);
        let (begin, finish) = (clamp(start), clamp(end));
        let len = (finish - begin).max(0) as usize;
        out = match out {
            Value::Float(t) => Value::Float(c!(t.narrow(at, begin as usize, len))),
            Value::Int(i) if i.dims.len() == 1 => Value::Int(Ints::vector(
                i.data[begin as usize..begin as usize + len].to_vec(),
            )),
            Value::Int(_) => return Err("slicing an integer tensor of rank above 1".into()),
        };
    }
    Ok(vec![out])
}

fn squeeze(call: &Call) -> Outcome {
    let value = call.input(0)?;
    let dims = value.dims();
    let axes: Vec<usize> = match call.list(1, "axes")? {
        Some(axes) => axes
            .iter()
            .map(|&a| axis(a, dims.len()))
            .collect::<Result<_, _>>()?,
        None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
    };
    let kept: Vec<usize> = (0..dims.len())
        .filter(|i| !axes.contains(i))
        .map(|i| dims[i])
        .collect();
    reshaped(value, kept)
}

fn unsqueeze(call: &Call) -> Outcome {
    let value = call.input(0)?;
    let dims = value.dims();
    let axes = call.list(1, "axes")?.ok_or("Unsqueeze without axes")?;
    let rank = dims.len() + axes.len();
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Result<_, _>>()?;
    axes.sort_unstable();
    let mut out = dims.clone();
    for a in axes {
        out.insert(a, 1);
    }
    reshaped(value, out)
}

fn reshaped(value: &Value, dims: Vec<usize>) -> Outcome {
    Ok(vec![match value {
        Value::Float(t) => Value::Float(c!(t.reshape(dims.as_slice()))),
        Value::Int(i) => Value::Int(Ints {
            dims,
            data: i.data.clone(),
        }),
    }])
}

fn gather(call: &Call) -> Outcome {
    let data = call.input(0)?;
    let indices = call.input(1)?.ints()?;
    let dims = data.dims();
    let at = axis(call.int("axis", 0), dims.len())?;
    let size = dims[at] as i64;
    let resolved: Vec<i64> = indices
        .data
        .iter()
        .map(|&i| {
            let r = if i < 0 { i + size } else { i };
            if r < 0 || r >= size {
                Err(format!("index {i} is outside axis {at} of size {size}"))
            } else {
                Ok(r)
            }
        })
        .collect::<Result<_, _>>()?;
    let mut out_dims = dims[..at].to_vec();
    out_dims.extend(&indices.dims);
    out_dims.extend(&dims[at + 1..]);
    match data {
        Value::Int(i) if i.dims.len() == 1 => Ok(vec![Value::Int(Ints {
            dims: out_dims,
            data: resolved.iter().map(|&r| i.data[r as usize]).collect(),
        })]),
        Value::Int(_) => Err("gathering from an integer tensor of rank above 1".into()),
        Value::Float(t) => {
            let index = c!(Dense::new(
                resolved.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                &Device::Cpu
            ));
            let picked = c!(c!(t.contiguous()).index_select(&index, at));
            Ok(vec![Value::Float(c!(picked.reshape(out_dims.as_slice())))])
        }
    }
}

/// Nearest-neighbour upsampling by whole factors, as a broadcast and a reshape.
fn resize(call: &Call) -> Outcome {
    let x = call.x(0)?;
    let mode = call.string("mode").unwrap_or_else(|| "nearest".into());
    if mode != "nearest" {
        return Err(format!(
            "Resize mode `{mode}` (the engine resizes with `nearest` only)"
        ));
    }
    let dims = x.dims().to_vec();
    let scales_at = if call.opset < 11 { 1 } else { 2 };
    let factors: Vec<f64> = if call.node.op_type == "Upsample" {
        scales(call.optional(1).or(None))?.unwrap_or_else(|| {
            call.attr("scales")
                .map(|a| a.floats.iter().map(|&f| f as f64).collect())
                .unwrap_or_default()
        })
    } else {
        match (
            scales(call.optional(scales_at))?,
            call.optional(3).filter(|_| call.opset >= 11),
        ) {
            (Some(s), _) if !s.is_empty() => s,
            (_, Some(sizes)) => sizes
                .ints()?
                .data
                .iter()
                .zip(&dims)
                .map(|(&s, &d)| s as f64 / d as f64)
                .collect(),
            _ => return Err("Resize without scales or sizes".into()),
        }
    };
    if factors.len() != dims.len() || dims.len() != 4 {
        return Err(format!(
            "Resize of a {dims:?} tensor by {factors:?} (the engine resizes 4-D tensors)"
        ));
    }
    let whole = |f: f64| f >= 1.0 && (f - f.round()).abs() < 1e-6;
    if factors[0] != 1.0 || factors[1] != 1.0 || !whole(factors[2]) || !whole(factors[3]) {
        return Err(format!(
            "Resize by {factors:?} (the engine upsamples height and width by whole factors)"
        ));
    }
    let (sh, sw) = (factors[2].round() as usize, factors[3].round() as usize);
    for factor in [sh, sw] {
        nearest_is_repeat(call, factor)?;
    }
    // (The backward sums each sh x sw block of the gradient: see `backward`.)
    let (n, ch, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let y = c!(x.reshape((n, ch, h, 1, w, 1)));
    let y = c!(y.broadcast_as((n, ch, h, sh, w, sw)));
    Ok(vec![Value::Float(c!(y.reshape((n, ch, h * sh, w * sw))))])
}

/// Checks that Resize's coordinate mode and rounding pick source pixel `i / factor` for
/// output pixel `i` (what the broadcast computes), and refuses the combinations that do not.
fn nearest_is_repeat(call: &Call, factor: usize) -> Result<(), String> {
    if call.node.op_type == "Upsample" || call.opset < 11 {
        return Ok(());
    }
    let mode = call
        .string("coordinate_transformation_mode")
        .unwrap_or_else(|| "half_pixel".into());
    let rounding = call
        .string("nearest_mode")
        .unwrap_or_else(|| "round_prefer_floor".into());
    let f = factor as f64;
    for i in 0..factor * 3 {
        let x = match mode.as_str() {
            "half_pixel" | "pytorch_half_pixel" => (i as f64 + 0.5) / f - 0.5,
            "asymmetric" => i as f64 / f,
            other => {
                return Err(format!(
                    "Resize with coordinate_transformation_mode `{other}` (the engine upsamples with `half_pixel` or `asymmetric`)"
                ));
            }
        };
        let picked = match rounding.as_str() {
            "floor" => x.floor(),
            "ceil" => x.ceil(),
            "round_prefer_ceil" => (x + 0.5).floor(),
            _ => (x - 0.5).ceil(),
        }
        .max(0.0) as usize;
        if picked != i / factor {
            return Err(format!(
                "Resize by {factor} with `{mode}` and `{rounding}` is not a plain repeat of pixels (the engine supports those that are)"
            ));
        }
    }
    Ok(())
}

fn scales(value: Option<&Value>) -> Result<Option<Vec<f64>>, String> {
    match value {
        None => Ok(None),
        Some(Value::Float(t)) => {
            let v = c!(c!(t.flatten_all()).to_dtype(DType::F64));
            Ok(Some(c!(v.to_vec1::<f64>())))
        }
        Some(Value::Int(i)) => Ok(Some(i.data.iter().map(|&v| v as f64).collect())),
    }
}

fn reduce(call: &Call, mean: bool) -> Outcome {
    let x = call.x(0)?;
    let rank = x.rank();
    let from_input = call.node.op_type == "ReduceSum" && call.opset >= 13 || call.opset >= 18;
    let axes = if from_input {
        call.optional(1)
            .map(|v| v.ints())
            .transpose()?
            .map(|i| i.data)
    } else {
        call.ints_attr("axes")
    };
    let mut axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a.iter().map(|&a| axis(a, rank)).collect::<Result<_, _>>()?,
        _ => (0..rank).collect(),
    };
    axes.sort_unstable();
    let keep = call.int("keepdims", 1) != 0;
    let mut out = x;
    for &a in axes.iter().rev() {
        out = if mean {
            c!(out.mean_keepdim(a))
        } else {
            c!(out.sum_keepdim(a))
        };
        if !keep {
            out = c!(out.squeeze(a));
        }
    }
    Ok(vec![Value::Float(out)])
}
