//! 2-D convolution as im2col and GEMM, forward and backward, as one candle custom op.
//!
//! candle's own convolution backward computes the input's gradient with a naive
//! transposed convolution and the kernel's with a convolution whose kernel is the whole
//! output (an im2col as large as the image times the output): on a YOLO it took 10x its
//! forward. Here both gradients are GEMMs over the same columns the forward uses (the
//! kernel's: output gradient times columns; the input's: kernel times output gradient,
//! folded back by col2im), each image of a batch on its own thread of the session's pool.
//! A 1x1 kernel reads the input as its columns; a bias is where the GEMM starts, and its
//! gradient the output gradient's sum per channel, in the same pass; an activation (see
//! `fuse`) runs on each image's output while it is in cache, and its gradient likewise.

use candle_core::{DType, Device, Shape, Tensor as Dense, WithDType};
use rayon::prelude::*;

use super::pointwise::{self, Act, Real, with_elements};

/// Stride, symmetric padding and dilation (the same along both axes) and groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    groups: usize,
    /// Input and output channels per group.
    cin_g: usize,
    cout_g: usize,
    /// Rows of a column matrix: `cin_g * kh * kw`.
    k: usize,
    conv: Conv2d,
}

impl Geometry {
    fn new(conv: Conv2d, x: &[usize], w: &[usize]) -> candle_core::Result<Self> {
        let (&[n, c_in, h, wi], &[c_out, cin_g, kh, kw]) = (x, w) else {
            candle_core::bail!(
                "a 2-D convolution needs [N, C, H, W] inputs and kernels, not {x:?} and {w:?}"
            );
        };
        let groups = conv.groups.max(1);
        if kh == 0 || kw == 0 || conv.stride == 0 || conv.dilation == 0 {
            candle_core::bail!(
                "a kernel {w:?} with stride {} and dilation {}: none may be 0",
                conv.stride,
                conv.dilation
            );
        }
        if c_in != cin_g * groups || c_out % groups != 0 {
            candle_core::bail!(
                "a kernel {w:?} does not fit an input of {c_in} channels in {groups} groups"
            );
        }
        let span = |size: usize, k: usize| {
            let reach = conv.dilation * (k - 1) + 1;
            (size + 2 * conv.padding)
                .checked_sub(reach)
                .map(|d| d / conv.stride + 1)
        };
        let (Some(oh), Some(ow)) = (span(h, kh), span(wi, kw)) else {
            candle_core::bail!("a {kh}x{kw} kernel does not fit a {h}x{wi} input");
        };
        Ok(Geometry {
            n,
            c_in,
            h,
            w: wi,
            c_out,
            kh,
            kw,
            oh,
            ow,
            groups,
            cin_g,
            cout_g: c_out / groups,
            k: cin_g * kh * kw,
            conv,
        })
    }

    fn plane(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1x1 kernel at stride 1 without padding: the columns are the input itself.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.conv.stride == 1 && self.conv.padding == 0
    }

    /// The output positions `o < out` whose input position `o * stride + tap * dilation -
    /// padding` lies inside `[0, size)`, as a range, and that offset.
    fn valid(&self, out: usize, size: usize, tap: usize) -> (usize, usize, isize) {
        let c = self.conv;
        let offset = (tap * c.dilation) as isize - c.padding as isize;
        let s = c.stride as isize;
        let lo = if offset < 0 { (-offset + s - 1) / s } else { 0 };
        let hi = (size as isize - offset + s - 1)
            .div_euclid(s)
            .clamp(0, out as isize);
        (lo.min(hi) as usize, hi as usize, offset)
    }
}

/// The columns of one group of one image: `[k, oh * ow]`.
fn im2col<T: WithDType>(g: &Geometry, x: &[T], col: &mut [T]) {
    let (hw, plane, stride) = (g.h * g.w, g.plane(), g.conv.stride);
    for c in 0..g.cin_g {
        for i in 0..g.kh {
            let (y_lo, y_hi, y_off) = g.valid(g.oh, g.h, i);
            for j in 0..g.kw {
                let (x_lo, x_hi, x_off) = g.valid(g.ow, g.w, j);
                let row = &mut col[((c * g.kh + i) * g.kw + j) * plane..][..plane];
                row.fill(T::zero());
                if x_lo >= x_hi {
                    continue;
                }
                for oy in y_lo..y_hi {
                    let iy = (oy as isize * stride as isize + y_off) as usize;
                    let src = &x[c * hw + iy * g.w..][..g.w];
                    let dst = &mut row[oy * g.ow..][..g.ow];
                    let first = (x_lo as isize * stride as isize + x_off) as usize;
                    if stride == 1 {
                        dst[x_lo..x_hi].copy_from_slice(&src[first..first + (x_hi - x_lo)]);
                    } else {
                        for (d, s) in dst[x_lo..x_hi]
                            .iter_mut()
                            .zip(src[first..].iter().step_by(stride))
                        {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// Adds columns back onto the input positions they were read from.
fn col2im<T: WithDType>(g: &Geometry, col: &[T], dx: &mut [T]) {
    let (hw, plane, stride) = (g.h * g.w, g.plane(), g.conv.stride);
    for c in 0..g.cin_g {
        for i in 0..g.kh {
            let (y_lo, y_hi, y_off) = g.valid(g.oh, g.h, i);
            for j in 0..g.kw {
                let (x_lo, x_hi, x_off) = g.valid(g.ow, g.w, j);
                let row = &col[((c * g.kh + i) * g.kw + j) * plane..][..plane];
                if x_lo >= x_hi {
                    continue;
                }
                for oy in y_lo..y_hi {
                    let iy = (oy as isize * stride as isize + y_off) as usize;
                    let dst = &mut dx[c * hw + iy * g.w..][..g.w];
                    let src = &row[oy * g.ow..][..g.ow];
                    let first = (x_lo as isize * stride as isize + x_off) as usize;
                    let src = &src[x_lo..x_hi];
                    if stride == 1 {
                        // Without `step_by` the loop vectorises.
                        let dst = &mut dst[first..first + src.len()];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s);
                    } else {
                        for (d, s) in dst[first..].iter_mut().step_by(stride).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

/// A row-major matrix operand: its values, and whether it is read transposed.
struct Operand<'a, T> {
    data: &'a [T],
    /// Columns of the matrix as stored.
    stride: usize,
    transposed: bool,
}

impl<'a, T> Operand<'a, T> {
    fn plain(data: &'a [T], stride: usize) -> Self {
        Operand {
            data,
            stride,
            transposed: false,
        }
    }

    fn transposed(data: &'a [T], stride: usize) -> Self {
        Operand {
            data,
            stride,
            transposed: true,
        }
    }

    /// (column stride, row stride) of the matrix as read.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (self.stride as isize, 1)
        } else {
            (1, self.stride as isize)
        }
    }
}

/// `dst [m, n] (+)= a [m, k] · b [k, n]`, all row-major.
fn gemm<T: WithDType>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    a: Operand<T>,
    b: Operand<T>,
    accumulate: bool,
    threads: usize,
) {
    let (a_cs, a_rs) = a.strides();
    let (b_cs, b_rs) = b.strides();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    assert!(dst.len() >= m * n, "the destination holds the product");
    // SAFETY: the strides describe matrices inside the slices (checked by the callers'
    // geometry), the destination does not alias the operands, and T is f32 or f64.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Threads for the GEMMs of one image: the whole pool when the batch cannot fill it.
fn inner_threads(images: usize) -> usize {
    let pool = rayon::current_num_threads();
    if images >= pool { 1 } else { pool }
}

/// The columns of one group of one image: the input itself for a pointwise convolution,
/// else `im2col` into `buffer`.
fn columns<'a, T: WithDType>(g: &Geometry, xg: &'a [T], buffer: &'a mut Vec<T>) -> &'a [T] {
    if g.pointwise() {
        return &xg[..g.k * g.plane()];
    }
    buffer.resize(g.k * g.plane(), T::zero());
    im2col(g, xg, buffer);
    buffer
}

/// One image's convolution into `z` (which starts as the bias, if any).
fn convolve<T: Real>(g: &Geometry, b: usize, x: &[T], w: &[T], bias: Option<&[T]>, z: &mut [T]) {
    let plane = g.plane();
    if let Some(bias) = bias {
        for (row, &value) in z.chunks_mut(plane).zip(bias) {
            row.fill(value);
        }
    }
    let mut buffer = Vec::new();
    for group in 0..g.groups {
        let xg = &x[(b * g.c_in + group * g.cin_g) * g.h * g.w..];
        let col = columns(g, xg, &mut buffer);
        gemm(
            &mut z[group * g.cout_g * plane..],
            (g.cout_g, plane, g.k),
            Operand::plain(&w[group * g.cout_g * g.k..], g.k),
            Operand::plain(col, plane),
            bias.is_some(),
            inner_threads(g.n),
        );
    }
}

/// The output, and with an activation the output before it (which backward needs). Each
/// image's activation runs right after its convolution, while the values are in cache.
fn forward<T: Real>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    activation: Option<Act>,
) -> (Vec<T>, Option<Vec<T>>) {
    let image = g.c_out * g.plane();
    let mut z = vec![T::zero(); g.n * image];
    let Some(act) = activation else {
        z.par_chunks_mut(image)
            .enumerate()
            .for_each(|(b, z)| convolve(g, b, x, w, bias, z));
        return (z, None);
    };
    let mut y = vec![T::zero(); g.n * image];
    z.par_chunks_mut(image)
        .zip(y.par_chunks_mut(image))
        .enumerate()
        .for_each(|(b, (z, y))| {
            convolve(g, b, x, w, bias, z);
            act.apply(z, y);
        });
    (y, Some(z))
}

/// The gradients of one image's part of the kernel and of the bias.
struct Partial<T> {
    dw: Vec<T>,
    dbias: Vec<T>,
}

/// The activation of a convolution in backward: which, and its input and output.
struct Activated<'a, T> {
    act: Act,
    before: &'a [T],
    after: &'a [T],
}

/// The gradients of the input, the kernel and the bias (the sum per channel of the
/// gradient before the activation) from the output's.
fn backward<T: Real>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    dy: &[T],
    activated: Option<Activated<T>>,
    want_dx: bool,
) -> (Option<Vec<T>>, Partial<T>) {
    let plane = g.plane();
    let (image, out) = (g.c_in * g.h * g.w, g.c_out * plane);
    // Without an input gradient to make, each image still needs a chunk to work in.
    let mut dx = vec![T::zero(); if want_dx { g.n * image } else { g.n }];
    let chunk = if want_dx { image } else { 1 };
    let threads = inner_threads(g.n);
    let zero = || Partial {
        dw: vec![T::zero(); w.len()],
        dbias: vec![T::zero(); g.c_out],
    };
    let partial = dx
        .par_chunks_mut(chunk)
        .enumerate()
        .map(|(b, dx)| {
            let mut partial = zero();
            let mut dz = Vec::new();
            let dyb = &dy[b * out..][..out];
            let dyb = match &activated {
                None => dyb,
                Some(a) => {
                    dz.resize(out, T::zero());
                    let at = b * out..(b + 1) * out;
                    a.act
                        .gradient(&a.before[at.clone()], &a.after[at], dyb, &mut dz);
                    &dz
                }
            };
            for (sum, row) in partial.dbias.iter_mut().zip(dyb.chunks(plane)) {
                *sum = pointwise::sum(row);
            }
            let (mut buffer, mut dcol) = (Vec::new(), Vec::new());
            for group in 0..g.groups {
                let xg = &x[(b * g.c_in + group * g.cin_g) * g.h * g.w..];
                let dyg = &dyb[group * g.cout_g * plane..];
                let wg = &w[group * g.cout_g * g.k..];
                let col = columns(g, xg, &mut buffer);
                // dW [cout_g, k] += dY [cout_g, plane] · colᵀ [plane, k]
                gemm(
                    &mut partial.dw[group * g.cout_g * g.k..],
                    (g.cout_g, g.k, plane),
                    Operand::plain(dyg, plane),
                    Operand::transposed(col, plane),
                    true,
                    threads,
                );
                if !want_dx {
                    continue;
                }
                // dcol [k, plane] = Wᵀ [k, cout_g] · dY [cout_g, plane], folded back onto
                // the input (a pointwise convolution's columns are the input).
                let dxg = &mut dx[group * g.cin_g * g.h * g.w..];
                let target = if g.pointwise() {
                    &mut dxg[..g.k * plane]
                } else {
                    dcol.resize(g.k * plane, T::zero());
                    &mut dcol[..]
                };
                gemm(
                    target,
                    (g.k, plane, g.cout_g),
                    Operand::transposed(wg, g.k),
                    Operand::plain(dyg, plane),
                    false,
                    threads,
                );
                if !g.pointwise() {
                    col2im(g, &dcol, dxg);
                }
            }
            partial
        })
        .reduce(zero, |mut a, b| {
            a.dw.iter_mut().zip(&b.dw).for_each(|(a, b)| *a += *b);
            a.dbias.iter_mut().zip(&b.dbias).for_each(|(a, b)| *a += *b);
            a
        });
    (want_dx.then_some(dx), partial)
}

/// A convolution's output, and with an activation its output before it (which the
/// backward needs).
pub struct Convolved {
    pub y: Dense,
    pub before: Option<Dense>,
}

/// The gradients of a convolution's input (when asked for), kernel and bias.
pub struct Gradients {
    pub dx: Option<Dense>,
    pub dw: Dense,
    pub dbias: Dense,
}

/// `activation(x ⊛ w + bias)`, `x` `[N, C, H, W]` and `w` `[C_out, C / groups, kh, kw]`.
pub fn conv2d(
    x: &Dense,
    w: &Dense,
    bias: Option<&Dense>,
    conv: Conv2d,
    activation: Option<Act>,
) -> candle_core::Result<Convolved> {
    let g = Geometry::new(conv, x.dims(), w.dims())?;
    if let Some(b) = bias
        && b.elem_count() != g.c_out
    {
        candle_core::bail!("a bias of {:?} for {} output channels", b.dims(), g.c_out);
    }
    let shape = Shape::from((g.n, g.c_out, g.oh, g.ow));
    fn typed<T: Real>(
        g: &Geometry,
        [x, w]: [&Dense; 2],
        bias: Option<&Dense>,
        activation: Option<Act>,
        shape: &Shape,
    ) -> candle_core::Result<Convolved> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let bias = bias.map(|b| b.contiguous()).transpose()?;
        let (y, before) = with_elements::<T, _>("conv2d", &x, |x| {
            with_elements::<T, _>("conv2d", &w, |w| match &bias {
                Some(b) => {
                    with_elements::<T, _>("conv2d", b, |b| forward(g, x, w, Some(b), activation))
                }
                None => Ok(forward(g, x, w, None, activation)),
            })
        })???;
        Ok(Convolved {
            y: Dense::from_vec(y, shape, &Device::Cpu)?,
            before: before
                .map(|z| Dense::from_vec(z, shape, &Device::Cpu))
                .transpose()?,
        })
    }
    match (x.dtype(), w.dtype()) {
        (DType::F32, DType::F32) => typed::<f32>(&g, [x, w], bias, activation, &shape),
        (DType::F64, DType::F64) => typed::<f64>(&g, [x, w], bias, activation, &shape),
        _ => candle_core::bail!("conv2d: the input and the kernel must both be f32 or f64"),
    }
}

/// The gradients of [`conv2d`] from its output's, `dy`: `y` and `before` are what it
/// returned. The input's only when `want_dx` (an input no weight precedes needs none).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    x: &Dense,
    w: &Dense,
    conv: Conv2d,
    activation: Option<Act>,
    y: &Dense,
    before: Option<&Dense>,
    dy: &Dense,
    want_dx: bool,
) -> candle_core::Result<Gradients> {
    let g = Geometry::new(conv, x.dims(), w.dims())?;
    fn typed<T: Real>(
        g: &Geometry,
        [x, w, y, dy]: [&Dense; 4],
        activation: Option<Act>,
        before: Option<&Dense>,
        want_dx: bool,
    ) -> candle_core::Result<Gradients> {
        let (x, dy) = (x.contiguous()?, dy.contiguous()?);
        let name = "conv2d";
        let (dx, p) = with_elements::<T, _>(name, &x, |x| {
            with_elements::<T, _>(name, w, |w| {
                with_elements::<T, _>(name, y, |after| {
                    with_elements::<T, _>(name, &dy, |dy| match (activation, before) {
                        (None, _) => Ok(backward(g, x, w, dy, None, want_dx)),
                        (Some(act), Some(before)) => {
                            with_elements::<T, _>(name, before, |before| {
                                let activated = Activated { act, before, after };
                                backward(g, x, w, dy, Some(activated), want_dx)
                            })
                        }
                        (Some(_), None) => candle_core::bail!(
                            "conv2d: backward without the output before its activation"
                        ),
                    })
                })
            })
        })?????;
        Ok(Gradients {
            dx: dx
                .map(|dx| Dense::from_vec(dx, x.shape(), &Device::Cpu))
                .transpose()?,
            dw: Dense::from_vec(p.dw, w.shape(), &Device::Cpu)?,
            dbias: Dense::from_vec(p.dbias, g.c_out, &Device::Cpu)?,
        })
    }
    match x.dtype() {
        DType::F32 => typed::<f32>(&g, [x, w, y, dy], activation, before, want_dx),
        _ => typed::<f64>(&g, [x, w, y, dy], activation, before, want_dx),
    }
}
