//! Reverse mode over the steps a forward ran, node by node, with the gradients kept per
//! value name.
//!
//! candle's own autodiff was the first engine here: it records every tensor op, and its
//! backward gives each value a zero tensor and adds every gradient to it, two passes over
//! every activation, and it cannot skip the input gradient of a layer no weight precedes.
//! On a small YOLO that was 40% of a step. Here the heavy steps (convolutions with their
//! normalisation and activation, activations, concatenation, split, elementwise
//! arithmetic, layout changes) have their gradients written out, a value's first gradient
//! is kept as it comes, and only inputs that a trainable weight precedes get one. Every
//! other operator runs again on its own with its inputs as candle variables and candle
//! differentiates that one node (`through`): exact, and cheap for the small operators it
//! is used for. Every gradient is checked against central differences in the tests.

use std::collections::HashMap;

use candle_core::{Tensor as Dense, Var};

use super::ops::{self, Call, Convolution, Norm};
use super::pointwise::{self, Act};
use super::value::Value;

type Outcome = Result<Vec<Option<Dense>>, String>;

fn fail(error: candle_core::Error) -> String {
    ops::describe(error)
}

/// The gradients of a backward, by value name.
#[derive(Default)]
pub struct Gradients(HashMap<String, Dense>);

impl Gradients {
    /// Adds `gradient` to `name`'s (the first one is kept as it is).
    pub fn add(&mut self, name: &str, gradient: Dense) -> Result<(), String> {
        match self.0.remove(name) {
            None => {
                self.0.insert(name.to_string(), gradient);
            }
            Some(sum) => {
                let sum = sum.add(&gradient).map_err(fail)?;
                self.0.insert(name.to_string(), sum);
            }
        }
        Ok(())
    }

    /// Takes `name`'s gradient: a value's gradient is complete once every node reading it
    /// has run backward, and is not needed after its own node's.
    pub fn take(&mut self, name: &str) -> Option<Dense> {
        self.0.remove(name)
    }
}

/// Runs `f` on `inputs` with those marked in `wanted` as candle variables and returns the
/// gradients of `sum(outputs · gradients)` for them: candle's autodiff over the little
/// graph `f` builds.
pub fn through(
    inputs: &[Dense],
    wanted: &[bool],
    f: impl FnOnce(&[Dense]) -> Result<Vec<Dense>, String>,
    gradients: &[Option<&Dense>],
) -> Outcome {
    let vars: Vec<Option<Var>> = inputs
        .iter()
        .zip(wanted)
        .map(|(t, &want)| want.then(|| Var::from_tensor(t)).transpose())
        .collect::<candle_core::Result<_>>()
        .map_err(fail)?;
    let fed: Vec<Dense> = inputs
        .iter()
        .zip(&vars)
        .map(|(t, v)| {
            v.as_ref()
                .map_or_else(|| t.clone(), |v| v.as_tensor().clone())
        })
        .collect();
    let outputs = f(&fed)?;
    let mut surrogate: Option<Dense> = None;
    for (out, g) in outputs.iter().zip(gradients) {
        let Some(g) = g else { continue };
        let term = out
            .mul(&g.to_dtype(out.dtype()).map_err(fail)?)
            .and_then(|t| t.sum_all())
            .map_err(fail)?;
        surrogate = Some(match surrogate {
            None => term,
            Some(s) => s.add(&term).map_err(fail)?,
        });
    }
    let Some(surrogate) = surrogate else {
        return Ok(vec![None; inputs.len()]);
    };
    let grads = surrogate.backward().map_err(fail)?;
    Ok(vars
        .iter()
        .map(|v| v.as_ref().and_then(|v| grads.get(v.as_tensor()).cloned()))
        .collect())
}

/// The float inputs of `call` as tensors (integer ones and absent ones as `None`).
fn floats(call: &Call) -> Vec<Option<Dense>> {
    call.inputs
        .iter()
        .map(|v| match v {
            Some(Value::Float(t)) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// `gradient` summed over the axes along which an operand of `dims` was broadcast.
fn unbroadcast(gradient: Dense, dims: &[usize]) -> Result<Dense, String> {
    if gradient.dims() == dims {
        return Ok(gradient);
    }
    let rank = gradient.rank();
    let mut padded = vec![1usize; rank.saturating_sub(dims.len())];
    padded.extend_from_slice(dims);
    let mut g = gradient;
    for (axis, &d) in padded.iter().enumerate() {
        if d == 1 && g.dims()[axis] != 1 {
            g = g.sum_keepdim(axis).map_err(fail)?;
        }
    }
    g.reshape(dims).map_err(fail)
}

/// The gradients of a node's inputs from its outputs' (`outputs` are the values the
/// forward made; `wanted[i]` says whether input `i` needs one).
pub fn node(
    call: &Call,
    outputs: &[Value],
    gradients: &[Option<&Dense>],
    wanted: &[bool],
) -> Outcome {
    let op = call.node.op_type.as_str();
    let n = call.inputs.len();
    let mut out: Vec<Option<Dense>> = vec![None; n];
    let x = |i: usize| call.x(i);
    let g0 = || gradients.first().copied().flatten().cloned();
    let want = |i: usize| wanted.get(i).copied().unwrap_or(false);
    match op {
        "Identity" | "Dropout" => out[0] = g0(),
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            if let Some(g) = g0() {
                out[0] = Some(g.reshape(call.input(0)?.dims()).map_err(fail)?);
            }
        }
        "Transpose" => {
            if let Some(g) = g0() {
                let rank = g.rank();
                let perm: Vec<usize> = match call.node.attribute.iter().find(|a| a.name == "perm") {
                    Some(a) => a
                        .ints
                        .iter()
                        .map(|&p| p.rem_euclid(rank as i64) as usize)
                        .collect(),
                    None => (0..rank).rev().collect(),
                };
                let mut inverse = vec![0; rank];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i;
                }
                out[0] = Some(g.permute(inverse).map_err(fail)?);
            }
        }
        "Concat" => {
            if let Some(g) = g0() {
                let rank = g.rank() as i64;
                let axis = call
                    .node
                    .attribute
                    .iter()
                    .find(|a| a.name == "axis")
                    .map_or(0, |a| a.i)
                    .rem_euclid(rank.max(1)) as usize;
                let mut at = 0;
                for (i, input) in call.inputs.iter().enumerate() {
                    let Some(input) = input else { continue };
                    let size = input.dims().get(axis).copied().unwrap_or(0);
                    if want(i) {
                        out[i] = Some(g.narrow(axis, at, size).map_err(fail)?);
                    }
                    at += size;
                }
            }
        }
        "Split" => {
            let Some(Value::Float(first)) = outputs.first() else {
                return Ok(out);
            };
            let input = x(0)?;
            let axis = (0..input.rank())
                .find(|&a| input.dims()[a] != first.dims()[a])
                .or_else(|| {
                    call.node
                        .attribute
                        .iter()
                        .find(|a| a.name == "axis")
                        .map(|a| a.i.rem_euclid(input.rank() as i64) as usize)
                })
                .unwrap_or(0);
            let parts: Vec<Dense> = outputs
                .iter()
                .zip(gradients)
                .map(|(o, g)| match (o, g) {
                    (_, Some(g)) => Ok((*g).clone()),
                    (Value::Float(o), None) => o.zeros_like().map_err(fail),
                    (Value::Int(_), None) => Err("a split of integers has no gradient".into()),
                })
                .collect::<Result<_, String>>()?;
            out[0] = Some(Dense::cat(&parts, axis).map_err(fail)?);
        }
        "Add" | "Sub" if !matches!(call.input(0)?, Value::Int(_)) => {
            if let Some(g) = g0() {
                for (i, slot) in out.iter_mut().enumerate().take(2.min(n)) {
                    if !want(i) {
                        continue;
                    }
                    let part = unbroadcast(g.clone(), &call.input(i)?.dims())?;
                    *slot = Some(if op == "Sub" && i == 1 {
                        part.neg().map_err(fail)?
                    } else {
                        part
                    });
                }
            }
        }
        "Mul" if !matches!(call.input(0)?, Value::Int(_)) => {
            if let Some(g) = g0() {
                for (i, slot) in out.iter_mut().enumerate().take(2.min(n)) {
                    if !want(i) {
                        continue;
                    }
                    let other = x(1 - i)?;
                    let part = g.broadcast_mul(&other).map_err(fail)?;
                    *slot = Some(unbroadcast(part, &call.input(i)?.dims())?);
                }
            }
        }
        "Sigmoid" | "Relu" => {
            if let (Some(g), Some(Value::Float(y))) = (g0(), outputs.first()) {
                let act = if op == "Sigmoid" {
                    Act::Sigmoid
                } else {
                    Act::Relu
                };
                out[0] = Some(act.backward(&x(0)?, y, &g).map_err(fail)?);
            }
        }
        "BatchNormalization" => {
            if let Some(g) = g0() {
                let input = x(0)?;
                let channels = if input.rank() < 2 { 0 } else { input.dims()[1] };
                let norm = Norm::of(call)?;
                let (factor, _) = norm.affine(channels)?;
                let [dx, dfactor, doffset] =
                    pointwise::channel_affine_backward(&input, &factor, &g).map_err(fail)?;
                if want(0) {
                    out[0] = Some(dx);
                }
                let params: Vec<Dense> = norm.params.to_vec();
                let wanted: Vec<bool> = (1..5).map(want).collect();
                if wanted.iter().any(|&w| w) {
                    let grads = through(
                        &params,
                        &wanted,
                        |p| {
                            let norm = Norm {
                                params: [p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone()],
                                epsilon: norm.epsilon,
                            };
                            let (f, o) = norm.affine(channels)?;
                            Ok(vec![f, o])
                        },
                        &[Some(&dfactor), Some(&doffset)],
                    )?;
                    for (i, g) in grads.into_iter().enumerate() {
                        out[i + 1] = g;
                    }
                }
            }
        }
        "Resize" | "Upsample" => {
            if let (Some(g), true) = (g0(), want(0)) {
                // Nearest, by whole factors: each input pixel's gradient is the sum of its
                // block.
                let (input, output) = (call.input(0)?.dims(), g.dims().to_vec());
                let &[n, c, h, w] = input.as_slice() else {
                    return fallback(call, gradients, wanted);
                };
                let (sh, sw) = (output[2] / h.max(1), output[3] / w.max(1));
                out[0] = Some(
                    g.reshape((n, c, h, sh, w, sw))
                        .and_then(|t| t.sum(5))
                        .and_then(|t| t.sum(3))
                        .map_err(fail)?,
                );
            }
        }
        "MaxPool" => {
            if let (Some(g), true) = (g0(), want(0)) {
                out[0] = Some(max_pool_backward(&x(0)?, &ops::Window::of(call)?, &g)?);
            }
        }
        "Softmax" | "LogSoftmax" => {
            if let (Some(g), Some(Value::Float(y))) = (g0(), outputs.first()) {
                let (y, axis) = ops::softmax_view(call, y)?;
                let g = g.reshape(y.shape()).map_err(fail)?;
                let dx = if op == "Softmax" {
                    // y (g - Σ g y)
                    let dot = g.mul(&y).and_then(|t| t.sum_keepdim(axis)).map_err(fail)?;
                    g.broadcast_sub(&dot).and_then(|t| t.mul(&y))
                } else {
                    // g - e^y Σ g
                    let sum = g.sum_keepdim(axis).map_err(fail)?;
                    y.exp()
                        .and_then(|e| e.broadcast_mul(&sum))
                        .and_then(|t| g.sub(&t))
                };
                let shape = call.input(0)?.dims();
                out[0] = Some(dx.and_then(|d| d.reshape(shape)).map_err(fail)?);
            }
        }
        _ => return fallback(call, gradients, wanted),
    }
    Ok(out)
}

/// The gradient of a max pool's input: each window's output gradient goes to the first
/// maximum of the window (padding never wins).
fn max_pool_backward(x: &Dense, window: &ops::Window, dy: &Dense) -> Result<Dense, String> {
    use rayon::prelude::*;
    fn typed<T: pointwise::Real>(
        x: &Dense,
        window: &ops::Window,
        dy: &Dense,
    ) -> Result<Dense, String> {
        let &[_, _, h, w] = x.dims() else {
            return Err(format!("a max pool of {:?}", x.dims()));
        };
        let &[_, _, oh, ow] = dy.dims() else {
            return Err(format!("a max pool's gradient of {:?}", dy.dims()));
        };
        let (x, dy) = (
            x.contiguous().map_err(fail)?,
            dy.contiguous().map_err(fail)?,
        );
        let ops::Window {
            kernel,
            stride,
            pads,
        } = *window;
        let dx = pointwise::with_elements::<T, _>("max pool", &x, |x| {
            pointwise::with_elements::<T, _>("max pool", &dy, |dy| {
                let mut dx = vec![T::zero(); x.len()];
                dx.par_chunks_mut(h * w)
                    .zip(x.par_chunks(h * w).zip(dy.par_chunks(oh * ow)))
                    .for_each(|(dx, (x, dy))| {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut best: Option<(usize, T)> = None;
                                for ky in 0..kernel.0 {
                                    let iy = (oy * stride.0 + ky) as isize - pads[0].0 as isize;
                                    if iy < 0 || iy >= h as isize {
                                        continue;
                                    }
                                    for kx in 0..kernel.1 {
                                        let ix = (ox * stride.1 + kx) as isize - pads[1].0 as isize;
                                        if ix < 0 || ix >= w as isize {
                                            continue;
                                        }
                                        let at = iy as usize * w + ix as usize;
                                        if best.is_none_or(|(_, v)| x[at] > v) {
                                            best = Some((at, x[at]));
                                        }
                                    }
                                }
                                if let Some((at, _)) = best {
                                    dx[at] += dy[oy * ow + ox];
                                }
                            }
                        }
                    });
                dx
            })
        })
        .map_err(fail)?
        .map_err(fail)?;
        Dense::from_vec(dx, x.shape(), &candle_core::Device::Cpu).map_err(fail)
    }
    match x.dtype() {
        candle_core::DType::F32 => typed::<f32>(x, window, dy),
        _ => typed::<f64>(x, window, dy),
    }
}

/// Any other operator: run again alone on its float inputs as variables, differentiated
/// by candle.
fn fallback(call: &Call, gradients: &[Option<&Dense>], wanted: &[bool]) -> Outcome {
    let inputs = floats(call);
    let present: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i].is_some()).collect();
    let tensors: Vec<Dense> = present
        .iter()
        .map(|&i| inputs[i].clone().expect("present"))
        .collect();
    let want: Vec<bool> = present
        .iter()
        .map(|&i| wanted.get(i).copied().unwrap_or(false))
        .collect();
    let grads = through(
        &tensors,
        &want,
        |fed| {
            let mut values: Vec<Option<Value>> = call.inputs.iter().map(|v| v.cloned()).collect();
            for (&i, t) in present.iter().zip(fed) {
                values[i] = Some(Value::Float(t.clone()));
            }
            let again = Call {
                node: call.node,
                inputs: values.iter().map(Option::as_ref).collect(),
                opset: call.opset,
                dtype: call.dtype,
            };
            ops::run(&again)?
                .into_iter()
                .map(|v| match v {
                    Value::Float(t) => Ok(t),
                    Value::Int(_) => Ok(
                        Dense::zeros((), call.dtype, &candle_core::Device::Cpu).map_err(fail)?
                    ),
                })
                .collect()
        },
        gradients,
    )?;
    let mut out = vec![None; call.inputs.len()];
    for (&i, g) in present.iter().zip(grads) {
        out[i] = g;
    }
    Ok(out)
}

/// The gradients of a convolution chain's inputs: the convolution's (input, kernel,
/// bias) and its normalisation's (scale, shift, mean, variance), in that order, those in
/// `wanted` only.
pub fn convolution(
    done: &Convolution,
    conv: &Call,
    norm: Option<&Call>,
    gradient: &Dense,
    wanted: &[bool; 7],
) -> Result<[Option<Dense>; 7], String> {
    let grads = super::conv::conv2d_backward(
        &done.input,
        &done.kernel,
        done.conv,
        done.activation,
        &done.output,
        done.before.as_ref(),
        gradient,
        wanted[0],
    )
    .map_err(fail)?;
    let mut out: [Option<Dense>; 7] = Default::default();
    if let Some(dx) = grads.dx {
        out[0] = Some(match done.pads {
            None => dx,
            Some([(top, _), (left, _)]) => {
                let [h, w] = [2, 3].map(|a| conv.inputs[0].map_or(0, |v| v.dims()[a]));
                dx.narrow(2, top, h)
                    .and_then(|t| t.narrow(3, left, w))
                    .map_err(fail)?
            }
        });
    }
    if !wanted[1..].iter().any(|&w| w) {
        return Ok(out);
    }
    // Back through the folding of the normalisation into the kernel and bias: with
    // f = scale / sqrt(var + eps), kernel = w f and bias = shift - mean f + b f.
    let (dkernel, dbias) = (grads.dw, grads.dbias);
    let w = conv.x(1)?;
    let b = conv.optional(2).map(Value::float).transpose()?;
    let Some(norm) = norm.map(Norm::of).transpose()? else {
        out[1] = Some(dkernel);
        out[2] = b.is_some().then_some(dbias);
        return Ok(out);
    };
    let channels = w.dims()[0];
    let (factor, _) = norm.affine(channels)?;
    let per_channel = |t: &Dense| t.reshape((channels, 1, 1, 1));
    out[1] = Some(
        per_channel(&factor)
            .and_then(|f| dkernel.broadcast_mul(&f))
            .map_err(fail)?,
    );
    // d f = Σ dkernel w (over each output channel's kernel) + dbias b.
    let mut dfactor = dkernel
        .mul(&w)
        .and_then(|t| t.flatten_from(1))
        .and_then(|t| t.sum(1))
        .map_err(fail)?;
    if let Some(b) = b {
        let b = b.flatten_all().map_err(fail)?;
        out[2] = Some(dbias.mul(&factor).map_err(fail)?);
        dfactor = dfactor.add(&dbias.mul(&b).map_err(fail)?).map_err(fail)?;
    }
    let [scale, _, mean, var] = &norm.params;
    let inv = var
        .affine(1.0, norm.epsilon)
        .and_then(|t| t.sqrt())
        .and_then(|t| t.recip())
        .and_then(|t| t.flatten_all())
        .map_err(fail)?;
    // f depends on scale (and, were they trained, on the variance); the offset on shift,
    // mean and f.
    let through_offset = dfactor
        .sub(
            &dbias
                .mul(&mean.flatten_all().map_err(fail)?)
                .map_err(fail)?,
        )
        .map_err(fail)?;
    out[3] = Some(
        through_offset
            .mul(&inv)
            .and_then(|t| t.reshape(scale.shape()))
            .map_err(fail)?,
    );
    out[4] = Some(dbias.reshape(norm.params[1].shape()).map_err(fail)?);
    if wanted[5] || wanted[6] {
        // The statistics never train (they are fixed inputs); should a model make them
        // trainable, candle differentiates the folding.
        let grads = through(
            &norm.params,
            &[false, false, wanted[5], wanted[6]],
            |p| {
                let n = Norm {
                    params: [p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone()],
                    epsilon: norm.epsilon,
                };
                let (f, o) = n.affine(channels)?;
                Ok(vec![f, o])
            },
            &[Some(&dfactor), Some(&dbias)],
        )?;
        out[5] = grads[2].clone();
        out[6] = grads[3].clone();
    }
    Ok(out)
}
