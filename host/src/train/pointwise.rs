//! The per-element and per-channel ops of a CNN, forward and backward, one pass each over
//! the session's thread pool: sigmoid, SiLU and ReLU (also applied by a convolution to its
//! own output), and the per-channel affine of a BatchNormalization that no convolution
//! precedes (after a convolution it folds into the kernel: see `fuse`).
//!
//! Composed from candle's ops, each of these was several tensors and passes (a sigmoid
//! through tanh: two affines, a tanh and their backward; a channel affine: a broadcast
//! multiply and add whose backward reduces over batch and plane on one thread). On a YOLO
//! they cost more than the convolutions.

use candle_core::{
    CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor as Dense, WithDType,
};
use rayon::prelude::*;

/// Elements per parallel task: enough to spread a layer over the pool, few enough tasks
/// that scheduling them does not show.
const CHUNK: usize = 1 << 14;

/// The float types the engine trains in (f32; f64 for gradient checks).
pub(super) trait Real: WithDType {
    fn exp(self) -> Self;
}

impl Real for f32 {
    #[inline(always)]
    fn exp(self) -> Self {
        exp_f32(self)
    }
}

impl Real for f64 {
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// `e^x` by Cephes' polynomial, within a few ulp of `f32::exp`, written without branches
/// or calls so that the loops it sits in vectorise (libm's `expf` is a call per element,
/// and sigmoids were a third of a YOLO's forward). Inputs are clamped to where `e^x` is a
/// normal float; NaN stays NaN.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds a float below 2^22 to a whole number.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // x - n ln 2, with ln 2 in two parts so that the product loses nothing.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    (p * r * r + r + 1.0) * scale
}

/// `1 / (1 + e^-x)`, without a branch so that it vectorises: `e^-x` overflows to infinity
/// (f64) or is clamped (f32), and either way the quotient is 0, never NaN.
#[inline(always)]
fn logistic<T: Real>(x: T) -> T {
    T::one() / (T::one() + (T::zero() - x).exp())
}

/// The sum of `values` in eight running sums, so that the loop vectorises (one running
/// sum is a chain of dependent scalar adds).
pub(super) fn sum<T: Real>(values: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        lanes.iter_mut().zip(chunk).for_each(|(s, &v)| *s += v);
    }
    let tail = chunks.remainder().iter().fold(T::zero(), |s, &v| s + v);
    lanes.iter().fold(tail, |s, &v| s + v)
}

/// The contiguous elements of a storage.
fn elements<'a, T: Real>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: a strided operand (make it contiguous first)");
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// Runs `f` on the elements of a contiguous CPU tensor.
pub(super) fn with_elements<T: Real, R>(
    op: &str,
    t: &Dense,
    f: impl FnOnce(&[T]) -> R,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{op}: the training engine runs on the CPU");
    };
    Ok(f(elements(op, cpu, layout)?))
}

/// A new tensor of `shape` holding `values`.
fn tensor<T: Real>(values: Vec<T>, shape: &Shape) -> Result<Dense> {
    Dense::from_vec(values, shape.clone(), &Device::Cpu)
}

/// An elementwise activation: its value, and its derivative from the input and the value.
trait Activation: Copy + Send + Sync + 'static {
    fn value<T: Real>(self, x: T) -> T;
    fn slope<T: Real>(self, x: T, y: T) -> T;
}

/// `σ(x) = 1 / (1 + e^-x)`; its slope `σ (1 - σ)` comes from the value alone.
#[derive(Clone, Copy)]
struct Sigmoid;

impl Activation for Sigmoid {
    #[inline(always)]
    fn value<T: Real>(self, x: T) -> T {
        logistic(x)
    }
    #[inline(always)]
    fn slope<T: Real>(self, _x: T, y: T) -> T {
        y * (T::one() - y)
    }
}

/// `x σ(x)` (YOLO's activation: ONNX exports it as Sigmoid then Mul); its slope
/// `σ (1 + x (1 - σ))` recomputes σ rather than keep it.
#[derive(Clone, Copy)]
struct Silu;

impl Activation for Silu {
    #[inline(always)]
    fn value<T: Real>(self, x: T) -> T {
        x * logistic(x)
    }
    #[inline(always)]
    fn slope<T: Real>(self, x: T, _y: T) -> T {
        let s = logistic(x);
        s * (T::one() + x * (T::one() - s))
    }
}

/// `max(x, 0)`; its slope is 1 where the input is positive.
#[derive(Clone, Copy)]
struct Relu;

impl Activation for Relu {
    #[inline(always)]
    fn value<T: Real>(self, x: T) -> T {
        if x > T::zero() { x } else { T::zero() }
    }
    #[inline(always)]
    fn slope<T: Real>(self, x: T, _y: T) -> T {
        if x > T::zero() { T::one() } else { T::zero() }
    }
}

/// The elementwise activations: standalone, or applied by a convolution to its own
/// output (SiLU and ReLU; see `fuse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Sigmoid,
    Silu,
    Relu,
}

impl Act {
    /// `y = act(z)`.
    pub(super) fn apply<T: Real>(self, z: &[T], y: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: `has_avx2` found AVX2 on this CPU.
            return unsafe { self.apply_avx2(z, y) };
        }
        self.apply_each(z, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_avx2<T: Real>(self, z: &[T], y: &mut [T]) {
        self.apply_each(z, y)
    }

    #[inline(always)]
    fn apply_each<T: Real>(self, z: &[T], y: &mut [T]) {
        #[inline(always)]
        fn each<T: Real, A: Activation>(a: A, z: &[T], y: &mut [T]) {
            y.iter_mut().zip(z).for_each(|(y, &z)| *y = a.value(z));
        }
        match self {
            Act::Sigmoid => each(Sigmoid, z, y),
            Act::Silu => each(Silu, z, y),
            Act::Relu => each(Relu, z, y),
        }
    }

    /// `dz = dy act'(z)`, given `y = act(z)`.
    pub(super) fn gradient<T: Real>(self, z: &[T], y: &[T], dy: &[T], dz: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: `has_avx2` found AVX2 on this CPU.
            return unsafe { self.gradient_avx2(z, y, dy, dz) };
        }
        self.gradient_each(z, y, dy, dz)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn gradient_avx2<T: Real>(self, z: &[T], y: &[T], dy: &[T], dz: &mut [T]) {
        self.gradient_each(z, y, dy, dz)
    }

    #[inline(always)]
    fn gradient_each<T: Real>(self, z: &[T], y: &[T], dy: &[T], dz: &mut [T]) {
        #[inline(always)]
        fn each<T: Real, A: Activation>(a: A, z: &[T], y: &[T], dy: &[T], dz: &mut [T]) {
            let n = dz.len();
            let (z, y, dy) = (&z[..n], &y[..n], &dy[..n]);
            for (i, dz) in dz.iter_mut().enumerate() {
                *dz = dy[i] * a.slope(z[i], y[i]);
            }
        }
        match self {
            Act::Sigmoid => each(Sigmoid, z, y, dy, dz),
            Act::Silu => each(Silu, z, y, dy, dz),
            Act::Relu => each(Relu, z, y, dy, dz),
        }
    }
}

/// Whether this CPU runs AVX2: the activations' loops, compiled for it, run twice the
/// lanes of the SSE2 every x86-64 has (the build targets the baseline so that its
/// binaries run on any x86-64).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

impl Act {
    /// `act(x)`, in parallel over the pool.
    pub fn forward(self, x: &Dense) -> Result<Dense> {
        fn typed<T: Real>(act: Act, x: &Dense) -> Result<Dense> {
            let y = with_elements::<T, _>("activation", x, |x| {
                let mut y = vec![T::zero(); x.len()];
                y.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .for_each(|(y, x)| act.apply(x, y));
                y
            })?;
            tensor(y, x.shape())
        }
        let x = x.contiguous()?;
        match x.dtype() {
            DType::F32 => typed::<f32>(self, &x),
            DType::F64 => typed::<f64>(self, &x),
            other => candle_core::bail!("an activation of {other:?} values: floats only"),
        }
    }

    /// The gradient of [`Act::forward`]'s input from its output's: `x` and `y` are its
    /// input and output.
    pub fn backward(self, x: &Dense, y: &Dense, dy: &Dense) -> Result<Dense> {
        fn typed<T: Real>(act: Act, x: &Dense, y: &Dense, dy: &Dense) -> Result<Dense> {
            let name = "activation";
            let dx = with_elements::<T, _>(name, x, |x| {
                with_elements::<T, _>(name, y, |y| {
                    with_elements::<T, _>(name, dy, |dy| {
                        let mut dx = vec![T::zero(); x.len()];
                        dx.par_chunks_mut(CHUNK)
                            .zip(x.par_chunks(CHUNK))
                            .zip(y.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                            .for_each(|((dx, x), (y, dy))| act.gradient(x, y, dy, dx));
                        dx
                    })
                })
            })???;
            tensor(dx, x.shape())
        }
        let (x, y, dy) = (x.contiguous()?, y.contiguous()?, dy.contiguous()?);
        match x.dtype() {
            DType::F32 => typed::<f32>(self, &x, &y, &dy),
            _ => typed::<f64>(self, &x, &y, &dy),
        }
    }
}

/// The sizes of `x` seen per channel: `[batch, channels, plane]`, checked against a
/// per-channel operand of `channels` elements.
fn planes(op: &str, x: &[usize], channels: usize) -> Result<(usize, usize, usize)> {
    if x.len() < 2 || x[1] != channels {
        candle_core::bail!(
            "{op}: an input of {x:?} for {channels} channels (the channels are axis 1)"
        );
    }
    Ok((x[0], channels, x[2..].iter().product()))
}

/// `y = x scale[c] + shift[c]` over the pool.
fn affine_forward<T: Real>(x: &[T], scale: &[T], shift: &[T], plane: usize) -> Vec<T> {
    let channels = shift.len();
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(plane.max(1))
        .zip(x.par_chunks(plane.max(1)))
        .enumerate()
        .with_min_len(CHUNK / plane.max(1))
        .for_each(|(i, (y, x))| {
            let c = i % channels;
            let (a, b) = (scale[c], shift[c]);
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * a + b);
        });
    y
}

/// The gradients of [`affine_forward`]'s input, scale and shift: `dy scale[c]`,
/// `Σ dy x` and `Σ dy` over batch and plane. Each plane is one task; its two sums are
/// added over the batch afterwards, in batch order.
fn affine_backward<T: Real>(
    x: &[T],
    scale: &[T],
    dy: &[T],
    channels: usize,
    plane: usize,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let plane = plane.max(1);
    let mut dx = vec![T::zero(); x.len()];
    let sums: Vec<(T, T)> = dx
        .par_chunks_mut(plane)
        .zip(x.par_chunks(plane).zip(dy.par_chunks(plane)))
        .enumerate()
        .with_min_len(CHUNK / plane)
        .map(|(i, (dx, (x, dy)))| {
            let a = scale[i % channels];
            let (mut dxy, mut dsum) = (T::zero(), T::zero());
            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                *dx = dy * a;
                dxy += dy * x;
                dsum += dy;
            }
            (dxy, dsum)
        })
        .collect();
    let (mut dscale, mut dshift) = (vec![T::zero(); channels], vec![T::zero(); channels]);
    for (i, (dxy, dsum)) in sums.into_iter().enumerate() {
        dscale[i % channels] += dxy;
        dshift[i % channels] += dsum;
    }
    (dx, dscale, dshift)
}

/// `x scale[c] + shift[c]` (`scale` and `shift` of `C` elements, `x` of `[N, C, ...]`):
/// inference-form BatchNormalization.
pub fn channel_affine(x: &Dense, scale: &Dense, shift: &Dense) -> Result<Dense> {
    fn typed<T: Real>(x: &Dense, scale: &Dense, shift: &Dense) -> Result<Dense> {
        let op = "channel affine";
        let (_, _, plane) = planes(op, x.dims(), shift.elem_count())?;
        if scale.elem_count() != shift.elem_count() {
            candle_core::bail!(
                "{op}: {} scales for {} shifts",
                scale.elem_count(),
                shift.elem_count()
            );
        }
        let y = with_elements::<T, _>(op, x, |x| {
            with_elements::<T, _>(op, scale, |scale| {
                with_elements::<T, _>(op, shift, |shift| affine_forward(x, scale, shift, plane))
            })
        })???;
        tensor(y, x.shape())
    }
    let (x, scale, shift) = (
        x.contiguous()?,
        scale.flatten_all()?.contiguous()?,
        shift.flatten_all()?.contiguous()?,
    );
    match x.dtype() {
        DType::F32 => typed::<f32>(&x, &scale, &shift),
        DType::F64 => typed::<f64>(&x, &scale, &shift),
        other => candle_core::bail!("channel affine: a float input, not {other:?}"),
    }
}

/// The gradients of [`channel_affine`]'s input, scale and shift (the last two of `C`
/// elements) from its output's.
pub fn channel_affine_backward(x: &Dense, scale: &Dense, dy: &Dense) -> Result<[Dense; 3]> {
    fn typed<T: Real>(x: &Dense, scale: &Dense, dy: &Dense) -> Result<[Dense; 3]> {
        let op = "channel affine";
        let (_, channels, plane) = planes(op, x.dims(), scale.elem_count())?;
        let (dx, dscale, dshift) = with_elements::<T, _>(op, x, |x| {
            with_elements::<T, _>(op, scale, |scale| {
                with_elements::<T, _>(op, dy, |dy| affine_backward(x, scale, dy, channels, plane))
            })
        })???;
        Ok([
            tensor(dx, x.shape())?,
            tensor(dscale, &Shape::from(channels))?,
            tensor(dshift, &Shape::from(channels))?,
        ])
    }
    let (x, scale, dy) = (
        x.contiguous()?,
        scale.flatten_all()?.contiguous()?,
        dy.contiguous()?,
    );
    match x.dtype() {
        DType::F32 => typed::<f32>(&x, &scale, &dy),
        _ => typed::<f64>(&x, &scale, &dy),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_vectorised_exp_is_libm_s_within_a_few_ulp() {
        let mut worst = 0f32;
        for i in -90_000..=90_000 {
            let x = i as f32 / 1000.0;
            let (ours, libm) = (super::exp_f32(x), x.clamp(-87.0, 88.0).exp());
            worst = worst.max((ours - libm).abs() / libm);
        }
        assert!(worst < 4.0 * f32::EPSILON, "relative error {worst:e}");
        assert!(super::exp_f32(f32::NAN).is_nan());
        assert!(super::exp_f32(-1e30) > 0.0 && super::exp_f32(1e30).is_finite());
    }
}
