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

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor as Dense, WithDType};
use rayon::prelude::*;

use super::pointwise::{Act, Real, with_elements};

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
                    for (d, s) in dst[first..]
                        .iter_mut()
                        .step_by(stride)
                        .zip(&src[x_lo..x_hi])
                    {
                        *d += *s;
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
) -> (Vec<T>, Partial<T>) {
    let plane = g.plane();
    let (image, out) = (g.c_in * g.h * g.w, g.c_out * plane);
    let mut dx = vec![T::zero(); g.n * image];
    let threads = inner_threads(g.n);
    let zero = || Partial {
        dw: vec![T::zero(); w.len()],
        dbias: vec![T::zero(); g.c_out],
    };
    let partial = dx
        .par_chunks_mut(image)
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
                *sum = row.iter().fold(T::zero(), |s, &v| s + v);
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
    (dx, partial)
}

/// A contiguous slice of a storage, or an error naming the op.
fn contiguous<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("conv2d: a strided operand (make it contiguous first)");
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// A convolution on the autodiff tape, with its bias (if it is given one) and its
/// activation; the output before the activation is kept for backward.
struct Op {
    conv: Conv2d,
    activation: Option<Act>,
    before: Mutex<Option<CpuStorage>>,
}

impl Op {
    fn forward(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::new(self.conv, l1.dims(), l2.dims())?;
        if let Some((_, l3)) = bias
            && l3.shape().elem_count() != g.c_out
        {
            candle_core::bail!("a bias of {:?} for {} output channels", l3.dims(), g.c_out);
        }
        fn typed<T: Real>(
            op: &Op,
            g: &Geometry,
            (s1, l1): (&CpuStorage, &Layout),
            (s2, l2): (&CpuStorage, &Layout),
            bias: Option<(&CpuStorage, &Layout)>,
        ) -> candle_core::Result<CpuStorage> {
            let bias = bias.map(|(s, l)| contiguous::<T>(s, l)).transpose()?;
            let (x, w) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
            let (y, before) = forward(g, x, w, bias, op.activation);
            *op.before.lock().unwrap_or_else(|e| e.into_inner()) = before.map(T::storage);
            Ok(T::storage(y))
        }
        let y = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                typed::<f32>(self, &g, (s1, l1), (s2, l2), bias)?
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                typed::<f64>(self, &g, (s1, l1), (s2, l2), bias)?
            }
            _ => candle_core::bail!("conv2d: the input and the kernel must both be f32 or f64"),
        };
        Ok((y, Shape::from((g.n, g.c_out, g.oh, g.ow))))
    }

    /// The gradients of the input, the kernel and the bias (shaped as `bias_shape`).
    fn backward(
        &self,
        x: &Dense,
        w: &Dense,
        y: &Dense,
        dy: &Dense,
        bias_shape: Option<&Shape>,
    ) -> candle_core::Result<(Dense, Dense, Option<Dense>)> {
        let g = Geometry::new(self.conv, x.dims(), w.dims())?;
        fn typed<T: Real>(
            op: &Op,
            g: &Geometry,
            [x, w, y, dy]: [&Dense; 4],
            bias_shape: Option<&Shape>,
        ) -> candle_core::Result<(Dense, Dense, Option<Dense>)> {
            let before = op.before.lock().unwrap_or_else(|e| e.into_inner());
            let dy = dy.contiguous()?;
            let name = "conv2d";
            let (dx, p) = with_elements::<T, _>(name, x, |x| {
                with_elements::<T, _>(name, w, |w| {
                    with_elements::<T, _>(name, y, |after| {
                        with_elements::<T, _>(name, &dy, |dy| {
                            let activated = match (op.activation, before.as_ref()) {
                                (None, _) => None,
                                (Some(act), Some(before)) => Some(Activated {
                                    act,
                                    before: before.as_slice::<T>()?,
                                    after,
                                }),
                                (Some(_), None) => candle_core::bail!(
                                    "conv2d: backward without its forward's values"
                                ),
                            };
                            Ok(backward(g, x, w, dy, activated))
                        })
                    })
                })
            })?????;
            Ok((
                Dense::from_vec(dx, x.shape(), x.device())?,
                Dense::from_vec(p.dw, w.shape(), w.device())?,
                bias_shape
                    .map(|s| Dense::from_vec(p.dbias, s, w.device()))
                    .transpose()?,
            ))
        }
        match x.dtype() {
            candle_core::DType::F32 => typed::<f32>(self, &g, [x, w, y, dy], bias_shape),
            _ => typed::<f64>(self, &g, [x, w, y, dy], bias_shape),
        }
    }
}

impl CustomOp2 for Op {
    fn name(&self) -> &'static str {
        "sedna-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Dense,
        w: &Dense,
        y: &Dense,
        dy: &Dense,
    ) -> candle_core::Result<(Option<Dense>, Option<Dense>)> {
        let (dx, dw, _) = self.backward(x, w, y, dy, None)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Op {
    fn name(&self) -> &'static str {
        "sedna-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Dense,
        w: &Dense,
        bias: &Dense,
        y: &Dense,
        dy: &Dense,
    ) -> candle_core::Result<(Option<Dense>, Option<Dense>, Option<Dense>)> {
        let (dx, dw, dbias) = self.backward(x, w, y, dy, Some(bias.shape()))?;
        Ok((Some(dx), Some(dw), dbias))
    }
}

/// `activation(x ⊛ w + bias)` on the autodiff tape with this module's backward.
pub fn conv2d(
    x: &Dense,
    w: &Dense,
    bias: Option<&Dense>,
    conv: Conv2d,
    activation: Option<Act>,
) -> candle_core::Result<Dense> {
    let op = Op {
        conv,
        activation,
        before: Mutex::new(None),
    };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match bias {
        None => x.apply_op2(&w, op),
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
    }
}
