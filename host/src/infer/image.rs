//! Frames and their pre-processing into model inputs, natively: decode, resize or
//! letterbox (bilinear, half-pixel centres, as OpenCV's `INTER_LINEAR`), scale to [0, 1],
//! normalise per channel and lay out as NCHW or NHWC, in one pass over the output.

use std::path::Path;

use super::{ErrorKind, InferError, Tensor};

/// A decoded RGB image.
#[derive(Clone, Debug)]
pub struct Frame {
    name: String,
    image: image::RgbImage,
}

impl Frame {
    /// Decodes the image file at `path` (PNG or JPEG).
    pub fn open(path: &Path) -> Result<Self, InferError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::InvalidArgument,
            };
            InferError::new(kind, &name, format!("cannot read the image: {e}"))
        })?;
        Self::decode(&name, &bytes)
    }

    /// Decodes an encoded image (PNG or JPEG) held in memory.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Self, InferError> {
        let image = image::load_from_memory(bytes).map_err(|e| {
            InferError::new(
                ErrorKind::InvalidEncoding,
                name,
                format!("cannot decode the image (PNG and JPEG are supported): {e}"),
            )
        })?;
        Ok(Frame {
            name: name.to_string(),
            image: image.into_rgb8(),
        })
    }

    /// A frame from packed RGB pixels (a video decoder's output, say).
    pub fn from_rgb(
        name: &str,
        width: u32,
        height: u32,
        pixels: Vec<u8>,
    ) -> Result<Self, InferError> {
        let image = image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| {
            InferError::new(
                ErrorKind::InvalidArgument,
                name,
                format!(
                    "{width}x{height} RGB needs {} bytes",
                    width as usize * height as usize * 3
                ),
            )
        })?;
        Ok(Frame {
            name: name.to_string(),
            image,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn width(&self) -> u32 {
        self.image.width()
    }

    pub fn height(&self) -> u32 {
        self.image.height()
    }

    pub fn pixels(&self) -> &image::RgbImage {
        &self.image
    }

    /// The model input for this frame, as `spec` describes it.
    pub fn to_tensor(&self, spec: &Preprocess) -> Result<Tensor, InferError> {
        spec.check()
            .map_err(|why| InferError::new(ErrorKind::InvalidArgument, &self.name, why))?;
        if self.width() == 0 || self.height() == 0 {
            return Err(InferError::new(
                ErrorKind::InvalidArgument,
                &self.name,
                "the image is empty",
            ));
        }
        let (out_w, out_h) = (spec.width as usize, spec.height as usize);
        let fit = spec.fit(self.width(), self.height());
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * spec.std[c]));
        let offset: [f32; 3] = std::array::from_fn(|c| -spec.mean[c] / spec.std[c]);
        let pad: [f32; 3] = std::array::from_fn(|c| PAD_VALUE * scale[c] + offset[c]);

        // Source coordinates of each output column and row inside the fitted area.
        let columns = samples(fit.width, self.width());
        let rows = samples(fit.height, self.height());
        let src = self.image.as_raw();
        let stride = self.width() as usize * 3;
        let plane = out_w * out_h;
        let mut data = vec![0.0f32; plane * 3];
        let mut store = |x: usize, y: usize, rgb: [f32; 3]| match spec.layout {
            Layout::Nchw => {
                for c in 0..3 {
                    data[c * plane + y * out_w + x] = rgb[c];
                }
            }
            Layout::Nhwc => data[(y * out_w + x) * 3..][..3].copy_from_slice(&rgb),
        };
        for y in 0..out_h {
            let inside_y = y.checked_sub(fit.pad_y as usize).and_then(|r| rows.get(r));
            for x in 0..out_w {
                let inside_x = x
                    .checked_sub(fit.pad_x as usize)
                    .and_then(|c| columns.get(c));
                let (Some(row), Some(col)) = (inside_y, inside_x) else {
                    store(x, y, pad);
                    continue;
                };
                let top = &src[row.low * stride..];
                let bottom = &src[row.high * stride..];
                let rgb = std::array::from_fn(|c| {
                    let at = |line: &[u8], i: usize| line[i * 3 + c] as f32;
                    let upper =
                        at(top, col.low) + (at(top, col.high) - at(top, col.low)) * col.weight;
                    let lower = at(bottom, col.low)
                        + (at(bottom, col.high) - at(bottom, col.low)) * col.weight;
                    (upper + (lower - upper) * row.weight) * scale[c] + offset[c]
                });
                store(x, y, rgb);
            }
        }
        let dims = match spec.layout {
            Layout::Nchw => vec![1, 3, out_h, out_w],
            Layout::Nhwc => vec![1, out_h, out_w, 3],
        };
        Ok(Tensor { dims, data })
    }
}

/// The grey YOLO exporters pad letterboxed images with.
const PAD_VALUE: f32 = 114.0;

/// Element order of an image tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// How a frame becomes a model input.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    /// Keep the aspect ratio and pad (centred) instead of stretching.
    pub letterbox: bool,
    /// Per channel (RGB), on the [0, 1] scale.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub layout: Layout,
}

/// Where the scaled image lies inside the model input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub width: u32,
    pub height: u32,
    pub pad_x: u32,
    pub pad_y: u32,
    pub scale_x: f32,
    pub scale_y: f32,
}

impl Fit {
    /// A point in model-input pixels, in the original image's pixels.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.pad_x as f32) / self.scale_x,
            (y - self.pad_y as f32) / self.scale_y,
        )
    }
}

impl Preprocess {
    /// The largest input side accepted (a guard against absurd allocations).
    pub const MAX_SIDE: u32 = 8192;

    pub fn check(&self) -> Result<(), String> {
        if !(1..=Self::MAX_SIDE).contains(&self.width)
            || !(1..=Self::MAX_SIDE).contains(&self.height)
        {
            return Err(format!(
                "input size {}x{} must be between 1 and {} on each side",
                self.width,
                self.height,
                Self::MAX_SIDE
            ));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(format!(
                "mean {:?} must be finite and std {:?} positive",
                self.mean, self.std
            ));
        }
        Ok(())
    }

    /// Where an image of `width` x `height` lands in the model input.
    pub fn fit(&self, width: u32, height: u32) -> Fit {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        if !self.letterbox {
            return Fit {
                width: self.width,
                height: self.height,
                pad_x: 0,
                pad_y: 0,
                scale_x: self.width as f32 / w,
                scale_y: self.height as f32 / h,
            };
        }
        let scale = (self.width as f32 / w).min(self.height as f32 / h);
        let fitted_w = ((w * scale).round() as u32).clamp(1, self.width);
        let fitted_h = ((h * scale).round() as u32).clamp(1, self.height);
        Fit {
            width: fitted_w,
            height: fitted_h,
            pad_x: (self.width - fitted_w) / 2,
            pad_y: (self.height - fitted_h) / 2,
            scale_x: fitted_w as f32 / w,
            scale_y: fitted_h as f32 / h,
        }
    }
}

/// A bilinear sample: the two neighbouring source indices and the weight of the second.
struct Sample {
    low: usize,
    high: usize,
    weight: f32,
}

/// Half-pixel-centre sample positions of `out` outputs over `src` source pixels.
fn samples(out: u32, src: u32) -> Vec<Sample> {
    let ratio = src as f32 / out as f32;
    let last = src as usize - 1;
    (0..out)
        .map(|i| {
            let at = ((i as f32 + 0.5) * ratio - 0.5).max(0.0);
            let low = (at.floor() as usize).min(last);
            Sample {
                low,
                high: (low + 1).min(last),
                weight: at - low as f32,
            }
        })
        .collect()
}
