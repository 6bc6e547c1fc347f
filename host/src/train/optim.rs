//! Optimizers: SGD with momentum and AdamW, both with weight decay, stepping weights held
//! as candle variables. State lives beside each weight; a step that would write a
//! non-finite value writes nothing.

use candle_core::{Tensor as Dense, Var};

/// Which update rule, with its constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `v = momentum v + (g + decay w); w -= lr v` (PyTorch's SGD).
    Sgd { momentum: f64 },
    /// Adam with decoupled weight decay: `w -= lr (m̂ / (√v̂ + eps) + decay w)`.
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

impl Optimizer {
    pub fn sgd(momentum: f64) -> Self {
        Optimizer::Sgd { momentum }
    }

    pub fn adamw() -> Self {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// A weight's optimizer state.
#[derive(Default)]
pub(super) struct State {
    first: Option<Dense>,
    second: Option<Dense>,
}

/// The new value of `weight` after one step with `grad`; the state advances only when the
/// caller commits (see `Session::step`).
pub(super) fn update(
    optimizer: Optimizer,
    weight: &Var,
    grad: &Dense,
    state: &State,
    step: u64,
    learning_rate: f64,
    weight_decay: f64,
) -> candle_core::Result<(Dense, State)> {
    let w = weight.as_tensor().detach();
    match optimizer {
        Optimizer::Sgd { momentum } => {
            let g = if weight_decay != 0.0 {
                grad.add(&w.affine(weight_decay, 0.0)?)?
            } else {
                grad.clone()
            };
            let v = match &state.first {
                Some(v) if momentum != 0.0 => v.affine(momentum, 0.0)?.add(&g)?,
                _ => g,
            };
            let new = w.sub(&v.affine(learning_rate, 0.0)?)?;
            Ok((
                new,
                State {
                    first: Some(v),
                    second: None,
                },
            ))
        }
        Optimizer::AdamW { beta1, beta2, eps } => {
            let m = match &state.first {
                Some(m) => m.affine(beta1, 0.0)?.add(&grad.affine(1.0 - beta1, 0.0)?)?,
                None => grad.affine(1.0 - beta1, 0.0)?,
            };
            let g2 = grad.sqr()?;
            let v = match &state.second {
                Some(v) => v.affine(beta2, 0.0)?.add(&g2.affine(1.0 - beta2, 0.0)?)?,
                None => g2.affine(1.0 - beta2, 0.0)?,
            };
            let m_hat = m.affine(1.0 / (1.0 - beta1.powi(step as i32)), 0.0)?;
            let v_hat = v.affine(1.0 / (1.0 - beta2.powi(step as i32)), 0.0)?;
            let direction = m_hat.div(&v_hat.sqrt()?.affine(1.0, eps)?)?;
            let direction = if weight_decay != 0.0 {
                direction.add(&w.affine(weight_decay, 0.0)?)?
            } else {
                direction
            };
            let new = w.sub(&direction.affine(learning_rate, 0.0)?)?;
            Ok((
                new,
                State {
                    first: Some(m),
                    second: Some(v),
                },
            ))
        }
    }
}
