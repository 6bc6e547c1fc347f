//! Losses the host computes on a model output, each the mean over the batch's elements
//! (cross-entropy: over its samples), so that a learning rate means the same at any
//! batch size.

use candle_core::{DType, Device, Tensor as Dense};

/// A loss on one output against a target the caller gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Logits `[N, C]` against class indices `[N]`: softmax cross-entropy.
    CrossEntropy,
    /// Logits against 0/1 targets of the same shape: sigmoid binary cross-entropy.
    BceWithLogits,
    /// Mean squared error.
    Mse,
    /// Mean absolute error.
    L1,
    /// Huber loss with `beta = 1`: squared below 1, absolute above.
    SmoothL1,
}

impl Loss {
    pub const NAMES: &[(&str, Loss)] = &[
        ("cross_entropy", Loss::CrossEntropy),
        ("bce_with_logits", Loss::BceWithLogits),
        ("mse", Loss::Mse),
        ("l1", Loss::L1),
        ("smooth_l1", Loss::SmoothL1),
    ];

    /// The loss of `output` against `target` (`target_dims`, row-major values), as a
    /// scalar on the output's tape.
    pub fn compute(
        self,
        output: &Dense,
        target_dims: &[usize],
        target: &[f32],
    ) -> Result<Dense, String> {
        let e = |e: candle_core::Error| e.to_string();
        let dtype = output.dtype();
        if self == Loss::CrossEntropy {
            let (n, classes) = match output.dims() {
                [n, c] => (*n, *c),
                dims => {
                    return Err(format!(
                        "cross-entropy needs logits [N, classes]; the output is {dims:?}"
                    ));
                }
            };
            if target.len() != n {
                return Err(format!(
                    "cross-entropy needs one class index per sample: {n} samples, {} targets",
                    target.len()
                ));
            }
            let mut one_hot = vec![0f64; n * classes];
            for (i, &class) in target.iter().enumerate() {
                if class < 0.0 || class.fract() != 0.0 || class as usize >= classes {
                    return Err(format!(
                        "target {i} is {class}, not a class index below {classes}"
                    ));
                }
                one_hot[i * classes + class as usize] = 1.0;
            }
            let one_hot = Dense::from_vec(one_hot, (n, classes), &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(e)?;
            let max = output.max_keepdim(1).map_err(e)?.detach();
            let shifted = output.broadcast_sub(&max).map_err(e)?;
            let log_sum = shifted
                .exp()
                .and_then(|t| t.sum_keepdim(1))
                .and_then(|t| t.log())
                .map_err(e)?;
            let log_p = shifted.broadcast_sub(&log_sum).map_err(e)?;
            return log_p
                .mul(&one_hot)
                .and_then(|t| t.sum_all())
                .and_then(|t| t.affine(-1.0 / n as f64, 0.0))
                .map_err(e);
        }
        if target_dims != output.dims() {
            return Err(format!(
                "the target is {target_dims:?} and the output {:?}: they must match",
                output.dims()
            ));
        }
        let target = Dense::from_vec(target.to_vec(), target_dims, &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(e)?;
        let per_element = match self {
            Loss::BceWithLogits => {
                // max(x, 0) - x t + log(1 + e^-|x|): no overflow for large |x|.
                let softplus = output
                    .abs()
                    .and_then(|a| a.neg())
                    .and_then(|a| a.exp())
                    .and_then(|a| a.affine(1.0, 1.0))
                    .and_then(|a| a.log())
                    .map_err(e)?;
                output
                    .relu()
                    .and_then(|r| r.sub(&output.mul(&target)?))
                    .and_then(|r| r.add(&softplus))
                    .map_err(e)?
            }
            Loss::Mse => output.sub(&target).and_then(|d| d.sqr()).map_err(e)?,
            Loss::L1 => output.sub(&target).and_then(|d| d.abs()).map_err(e)?,
            Loss::SmoothL1 => {
                let a = output.sub(&target).and_then(|d| d.abs()).map_err(e)?;
                let m = a.minimum(1f64).map_err(e)?;
                m.sqr()
                    .and_then(|q| q.affine(0.5, 0.0))
                    .and_then(|q| q.add(&a.sub(&m)?))
                    .map_err(e)?
            }
            Loss::CrossEntropy => unreachable!("handled above"),
        };
        per_element.mean_all().map_err(e)
    }
}

impl std::str::FromStr for Loss {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Loss::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, loss)| *loss)
            .ok_or_else(|| {
                let names: Vec<&str> = Loss::NAMES.iter().map(|(n, _)| *n).collect();
                format!("unknown loss `{text}`: use one of {}", names.join(", "))
            })
    }
}

/// A scalar tensor's value.
pub fn scalar(t: &Dense) -> Result<f64, String> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.to_scalar::<f64>())
        .map_err(|e| e.to_string())
}
