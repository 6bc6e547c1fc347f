//! BatchNormalization that learns its statistics (PyTorch's training mode), for a session
//! asked to: each forward normalises with its batch's own mean and variance, and moves
//! the running ones toward them, so that a model trained on new looks also normalises them
//! right at inference. The default stays the inference form (`ops`, frozen statistics,
//! folded into the convolution before it), which a round of a few dozen images cannot
//! drift.

use candle_core::Tensor as Dense;

use super::ops::describe;

/// What BatchNormalization does with its running mean and variance in a session.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Statistics {
    /// The model's running statistics normalise; only scale and shift train.
    #[default]
    Frozen,
    /// Batch statistics normalise, and the running ones move toward them:
    /// `running = momentum x running + (1 - momentum) x batch`, with this momentum or,
    /// when `None`, each node's own `momentum` attribute (ONNX's sense, 0.9 by default).
    Learn { momentum: Option<f64> },
}

/// One forward of a normalisation over its batch's statistics, as its backward and the
/// running statistics' update need it.
pub struct Normalised {
    pub y: Dense,
    /// The input centred and scaled to unit variance, `[N, C, L]`.
    pub xhat: Dense,
    /// `1 / sqrt(variance + epsilon)`, `[1, C, 1]`.
    pub inv_std: Dense,
    /// The batch's mean and its unbiased variance (PyTorch's running update), `[C]`.
    pub mean: Dense,
    pub variance: Dense,
}

fn c<T>(result: candle_core::Result<T>) -> Result<T, String> {
    result.map_err(describe)
}

/// `[N, C, L]` of an input `[N, C, ...]`.
fn planes(x: &Dense) -> Result<(usize, usize, usize), String> {
    match x.dims() {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        dims => Err(format!(
            "an input of {dims:?}: normalisation needs a batch and channel axis"
        )),
    }
}

/// Sum over the batch and spatial axes of `[N, C, L]`, kept as `[1, C, 1]`.
fn per_channel(t: &Dense) -> Result<Dense, String> {
    c(t.sum_keepdim(2).and_then(|t| t.sum_keepdim(0)))
}

/// `x` normalised with its own statistics, then scaled and shifted per channel.
pub fn forward(
    x: &Dense,
    scale: &Dense,
    shift: &Dense,
    epsilon: f64,
) -> Result<Normalised, String> {
    let (n, channels, l) = planes(x)?;
    if scale.elem_count() != channels || shift.elem_count() != channels {
        return Err(format!(
            "{channels} channels to normalise, but {} scales and {} shifts",
            scale.elem_count(),
            shift.elem_count()
        ));
    }
    let count = (n * l) as f64;
    if count < 2.0 {
        return Err(format!(
            "one value per channel (input {:?}): batch statistics need at least two; raise `batch_size`",
            x.dims()
        ));
    }
    let x3 = c(x.reshape((n, channels, l)))?;
    let mean = c(per_channel(&x3)?.affine(1.0 / count, 0.0))?;
    let centred = c(x3.broadcast_sub(&mean))?;
    let biased = c(per_channel(&c(centred.sqr())?)?.affine(1.0 / count, 0.0))?;
    let inv_std = c(biased
        .affine(1.0, epsilon)
        .and_then(|v| v.sqrt())
        .and_then(|v| v.recip()))?;
    let xhat = c(centred.broadcast_mul(&inv_std))?;
    let (scale, shift) = (
        c(scale.reshape((1, channels, 1)))?,
        c(shift.reshape((1, channels, 1)))?,
    );
    let y = c(xhat
        .broadcast_mul(&scale)
        .and_then(|t| t.broadcast_add(&shift))
        .and_then(|t| t.reshape(x.dims())))?;
    Ok(Normalised {
        y,
        xhat,
        inv_std,
        mean: c(mean.flatten_all())?,
        variance: c(biased
            .affine(count / (count - 1.0), 0.0)
            .and_then(|v| v.flatten_all()))?,
    })
}

/// The gradients of the input, scale and shift from the output's `dy`: through the
/// batch's statistics too (each input moves every output of its channel through them).
pub fn backward(done: &Normalised, scale: &Dense, dy: &Dense) -> Result<[Dense; 3], String> {
    let (n, channels, l) = c(done.xhat.dims3())?;
    let count = (n * l) as f64;
    let dy3 = c(dy.reshape((n, channels, l)))?;
    let dshift = per_channel(&dy3)?;
    let dscale = per_channel(&c(dy3.mul(&done.xhat))?)?;
    // dx = scale / std / M (M dy - sum dy - xhat sum(dy xhat))
    let factor = c(scale
        .reshape((1, channels, 1))
        .and_then(|s| s.mul(&done.inv_std))
        .and_then(|s| s.affine(1.0 / count, 0.0)))?;
    let dx = c(dy3
        .affine(count, 0.0)
        .and_then(|t| t.broadcast_sub(&dshift))
        .and_then(|t| t.sub(&done.xhat.broadcast_mul(&dscale)?))
        .and_then(|t| t.broadcast_mul(&factor))
        .and_then(|t| t.reshape(dy.dims())))?;
    Ok([dx, c(dscale.flatten_all())?, c(dshift.flatten_all())?])
}

/// `momentum x running + (1 - momentum) x batch`, in `running`'s shape.
pub fn running(running: &Dense, batch: &Dense, momentum: f64) -> Result<Dense, String> {
    c(running.affine(momentum, 0.0).and_then(|r| {
        r.add(
            &batch
                .affine(1.0 - momentum, 0.0)?
                .reshape(running.shape())?,
        )
    }))
}
